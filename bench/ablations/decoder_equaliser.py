"""What the decoder equaliser changes: the same latents decoded with and without it.

The samples' per-image spectrum distance sat outside the real images' IQR because the VAE
decoder loses high-band power (docs/results.md, "Spectrum gap"); neither a stronger spectral
term nor an adversarial decoder closed it. The decoder equaliser (`jax_mri_ldm/equaliser.py`)
is a radial gain filter fitted on the training split's reconstructions. This probe takes a
diffusion run that has one (rerun its VAE command with `--config.model.equaliser=True`, then
its diffusion command) and scores, against the real test split's mean curve
(`spectrum_probe.score`): the real validation images, their reconstructions, and samples of
each `--samplers` setting at guidance `--guidance` (`--per_class` per class, image i seeded by
fold_in(PRNGKey(0), i)), each decoded both ways from the same latents; plus the test split's
PSNR / SSIM both ways.

Run from the repository root::

  python bench/ablations/decoder_equaliser.py --workdir=runs/ldm --guidance=1 \\
      --samplers=default,ddpm --out=runs/exp/equaliser

Writes ``<out>/decoder_equaliser.json``, ``.md`` and ``.png`` (real test slices above samples
without and with the equaliser, with 2x centre crops).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench"), os.path.dirname(os.path.abspath(__file__))]

import decoder_adversarial as da  # noqa: E402  (its before/after figure)
import quality_curve as qc  # noqa: E402
import spectrum_probe as sp  # noqa: E402

from jax_mri_ldm import atomic, equaliser  # noqa: E402
from jax_mri_ldm.evaluation import metrics  # noqa: E402
from jax_mri_ldm.sampler_settings import SamplerSpec  # noqa: E402


def spec_of(run, name: str, guidance: float) -> SamplerSpec:
    """'default' (the run's default sampler) or a sampler name with its default steps."""
    base = run.default_spec() if name == "default" else SamplerSpec(name, None, 1.0)
    return dataclasses.replace(base, guidance_scale=guidance)


def both_ways(images_raw: np.ndarray, gains: np.ndarray) -> dict[str, np.ndarray]:
    """{'as trained': images, 'equalised': the same images through the equaliser}."""
    return {"as trained": images_raw, "equalised": np.asarray(equaliser.apply(images_raw, gains))}


def probe(flags) -> dict:
    """Every row of the probe (see the module docstring)."""
    from jax_mri_ldm import pipeline  # heavy

    run = pipeline.load_ldm(flags.workdir)
    gains = run.vae.equaliser
    if gains is None:
        sys.exit(f"{flags.workdir} has no decoder equaliser; see this script's docstring.")
    raw = dataclasses.replace(run, vae=run.vae.without_equaliser())
    train, val, test = qc.load_splits(run)
    ref, period = qc.generator_train(run, train).images, qc.latent_period(run)
    out = {"workdir": flags.workdir, "guidance": flags.guidance, "per_class": flags.per_class}
    out.update(gains=[float(g) for g in gains], rows={}, recon={}, images={}, seconds={})
    sets = {"real validation": val.images}
    for tag, x in both_ways(raw.vae.reconstruct(val.images), gains).items():
        sets[f"reconstructions of validation, {tag}"] = x
    for tag, x in both_ways(raw.vae.reconstruct(test.images), gains).items():
        out["recon"][tag] = {
            "psnr": float(np.mean(np.asarray(metrics.psnr(test.images, x)))),
            "ssim": float(np.mean(np.asarray(metrics.ssim(test.images, x)))),
        }
    labels = np.repeat(np.arange(len(run.class_names)), flags.per_class).astype(np.int32)
    for name in flags.samplers.split(","):
        t0 = time.time()
        x = raw.sample_images(labels, 0, spec_of(run, name, flags.guidance), 16)
        out["seconds"][name] = time.time() - t0
        for tag, y in both_ways(x, gains).items():
            sets[f"{name} samples, {tag}"] = y
            out["images"][f"{name}, {tag}"] = y
    for name, images in sets.items():
        out["rows"][name] = sp.score(images, test.images, ref, period)
        print(f"[equaliser] {name}: {out['rows'][name]}", flush=True)
    out["images"]["test"] = test.images
    return out


def render(res: dict) -> str:
    """decoder_equaliser.md: spectrum rows, then test PSNR / SSIM, each way."""
    title = (
        f"# Decoder equaliser: `{res['workdir']}`, w = {res['guidance']:g}, "
        f"{res['per_class']} per class"
    )
    return "\n".join([title, "", *da.tables(res, ["test reconstructions", "PSNR", "SSIM"]), ""])


def main(_argv) -> None:
    flags = FLAGS
    os.makedirs(flags.out, exist_ok=True)
    res = probe(flags)
    images = res.pop("images")
    test = images.pop("test")
    da.figure(
        {"images": {"test": test, "samples": images}},
        os.path.join(flags.out, "decoder_equaliser.png"),
    )
    atomic.write_text(os.path.join(flags.out, "decoder_equaliser.json"), json.dumps(res, indent=1))
    atomic.write_text(os.path.join(flags.out, "decoder_equaliser.md"), render(res))
    print(render(res))


if __name__ == "__main__":
    from absl import app
    from absl import flags as absl_flags

    absl_flags.DEFINE_string("workdir", "runs/ldm", "finished diffusion run with an equaliser")
    absl_flags.DEFINE_string("out", "runs/exp/equaliser", "output folder")
    absl_flags.DEFINE_float("guidance", 1.0, "classifier-free guidance of the samples")
    absl_flags.DEFINE_integer("per_class", 32, "samples per class")
    absl_flags.DEFINE_string("samplers", "default,ddpm", "'default' and/or sampler names")
    FLAGS = absl_flags.FLAGS
    app.run(main)
