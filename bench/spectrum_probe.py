"""Where the samples' spectrum distance comes from: real images, VAE decoding, each sampler.

The report's spectrum score (section 12) is per image: the RMS over radii between an image's
log10 relative radial power spectrum and the mean curve of the real test split. Its median over
the samples is judged against the real validation images' interquartile range. Samples pass
through the VAE decoder, so the decoder's own loss of high-frequency power is a floor under
theirs. This probe scores, against the same test mean:

* the real validation and test images (the real spread);
* VAE reconstructions (posterior mean) of the validation images (what decoding alone costs;
  through the run's decoder equaliser when it has one, as the samples are decoded);
* ``--per_class`` samples per class from each sampler at guidance ``--guidance`` (EMA weights,
  image i seeded by fold_in(PRNGKey(0), i) as the pipeline does, the same seeds per sampler).

Per set: median and IQR of the per-image distance, the set distance (RMS between mean curves),
the mean log10 power difference to the test mean in three radius bands (low: r < R/4, mid:
R/4 <= r < 5R/8, high: above; R = half the image size), the median grid score and the median
nearest-training-image SSIM (with mirrored training images, as the report searches).

Run from the repository root::

  python bench/spectrum_probe.py --workdir=runs/ldm --guidance=2 --per_class=32

Writes ``<out>/spectrum_probe.json`` and ``<out>/spectrum_probe.md`` (default ``--out``:
``<workdir>/../spectrum_probe``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quality_curve as qc  # noqa: E402  (bench/quality_curve.py: the run's splits)

from configs import report as report_cfg  # noqa: E402
from jax_mri_ldm import atomic  # noqa: E402
from jax_mri_ldm.evaluation import scoring, spectrum  # noqa: E402
from jax_mri_ldm.evaluation.markdown import f, table  # noqa: E402
from jax_mri_ldm.sampler_settings import SamplerSpec  # noqa: E402

NN_SEARCH_SIZE = report_cfg.get_config("paper").memorisation_search_size  # as the report's

SAMPLERS = (("ddim", 50, 1.0), ("ddim", 50, 0.0), ("dpmpp_2m", 25, 0.0), ("dpmpp_2m", 10, 0.0))
"""(sampler, steps, eta) of the rows: the report's few-step samplers (DDPM is too slow here)."""


def band_means(diff: np.ndarray) -> dict[str, float]:
    """Mean of a (R,) log-power difference curve over the low, mid and high radius bands."""
    r = len(diff)
    cuts = (0, r // 4, (5 * r) // 8, r)
    names = ("low", "mid", "high")
    return {n: float(diff[a:b].mean()) for n, a, b in zip(names, cuts[:-1], cuts[1:], strict=True)}


def score(images: np.ndarray, test: np.ndarray, train: np.ndarray, period: int | None) -> dict:
    """The probe's numbers for one set (see the module docstring)."""
    d = spectrum.spectrum_distance(images, test)  # (N,)
    diff = spectrum.radial_spectrum(images).mean(axis=0) - spectrum.radial_spectrum(test).mean(
        axis=0
    )  # (R,)
    out: dict[str, Any] = {
        "n": int(len(images)),
        "median": float(np.median(d)),
        "iqr": [float(q) for q in np.percentile(d, [25, 75])],
        "set_distance": float(spectrum.set_spectrum_distance(images, test)),
        "bands": band_means(diff),
        "nn_ssim": float(np.median(scoring.nearest_train(train, images, NN_SEARCH_SIZE))),
    }
    out["grid"] = float(np.median(spectrum.grid_score(images, period))) if period else None
    return out


def probe(workdir: str, guidance: float, per_class: int) -> dict:
    """Every set of the probe for the latest checkpoint of the run in `workdir`."""
    from jax_mri_ldm import pipeline  # heavy

    run = pipeline.load_ldm(workdir)
    train, val, test = qc.load_splits(run)
    ref_train, period = qc.generator_train(run, train).images, qc.latent_period(run)
    sets = {"real validation": val.images, "real test": test.images}
    sets["VAE reconstructions of validation"] = run.vae.reconstruct(val.images)
    out = {"workdir": workdir, "guidance": guidance, "per_class": per_class, "rows": {}}
    for name, images in sets.items():
        out["rows"][name] = score(images, test.images, ref_train, period)
    labels = np.repeat(np.arange(len(run.class_names)), per_class).astype(np.int32)
    for sampler, steps, eta in SAMPLERS:
        spec = SamplerSpec(sampler, steps, eta, guidance)
        t0 = time.time()
        images = run.sample_images(labels, 0, spec, 16)
        row = score(images, test.images, ref_train, period)
        row["seconds"] = time.time() - t0
        out["rows"][spec.name(run.schedule.num_timesteps)] = row
        print(f"[probe] {spec.name(run.schedule.num_timesteps)}: {row}", flush=True)
    return out


def render(res: dict) -> str:
    """spectrum_probe.md: one row per set."""
    head = ["set", "n", "spectrum median [IQR]", "set distance", "low", "mid", "high"]
    head += ["grid", "NN-SSIM"]
    rows = [
        [name, r["n"], f"{f(r['median'])} [{f(r['iqr'][0])}, {f(r['iqr'][1])}]"]
        + [f(r["set_distance"]), *(f(r["bands"][b], 2) for b in ("low", "mid", "high"))]
        + [f(r["grid"]), f(r["nn_ssim"])]
        for name, r in res["rows"].items()
    ]
    L = [
        f"# Spectrum probe: `{res['workdir']}`, w = {res['guidance']:g}, "
        f"{res['per_class']} samples per class",
        "",
        "Distances to the real test split's mean log10 radial spectrum; low / mid / high = mean "
        "log10 power difference to it per radius band (negative: less power than real).",
        "",
    ]
    return "\n".join(L + table(head, rows))


def main(argv: list[str]) -> None:
    del argv
    from absl import flags

    FLAGS = flags.FLAGS
    out = FLAGS.out or os.path.join(os.path.dirname(FLAGS.workdir.rstrip("/")), "spectrum_probe")
    os.makedirs(out, exist_ok=True)
    res = probe(FLAGS.workdir, FLAGS.guidance, FLAGS.per_class)
    atomic.write_json(os.path.join(out, "spectrum_probe.json"), res, indent=1)
    atomic.write_text(os.path.join(out, "spectrum_probe.md"), render(res))
    print(f"[probe] wrote {out}/spectrum_probe.md")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "Diffusion run directory (train.py configs/ldm.py).")
    flags.DEFINE_string("out", None, "Output directory (default: <workdir>/../spectrum_probe).")
    flags.DEFINE_float("guidance", 3.0, "Classifier-free guidance w of every sampler.")
    flags.DEFINE_integer("per_class", 32, "Samples per class per sampler.")
    flags.mark_flag_as_required("workdir")
    app.run(main)
