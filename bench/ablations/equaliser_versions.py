"""The same decoder through no equaliser, an older gains file and the run's current gains.

Why: version 2 of the equaliser pooled the corner frequencies into the Nyquist radius, and on
128 px images that lifted the latent grid's harmonics on the Nyquist lines (docs/results.md,
"Built-in report on the 10,000-update VAE"). Refitting a run's equaliser changes its
reconstructions and samples; this probe measures by how much without a full report: the test
split's grid score, PSNR and SSIM of the posterior-mean reconstructions, the spectrum distance
of the validation reconstructions, and the spectrum distance and grid score of the report's
main set (same sampler and seeds as evaluate.py), each decoded raw and then through each set
of gains, with the real images' medians and interquartile ranges beside them.

Run from the repository root (save the old file before refitting)::

  cp runs/vae/equaliser.json old_equaliser.json
  python train.py --config=configs/vae.py:recommended --workdir=runs/vae   # refits
  cp runs/vae/equaliser.json runs/ldm/vae_equaliser.json  # what the LDM command copies
  python bench/ablations/equaliser_versions.py --workdir=runs/ldm --old=old_equaliser.json \\
      --guidance=5 --per_class=200 --out=runs/exp/equaliser_versions.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE]

from report_samples import load_run_data, main_set  # noqa: E402

from jax_mri_ldm import atomic, equaliser  # noqa: E402
from jax_mri_ldm.evaluation import metrics, spectrum  # noqa: E402


def quartiles(values: np.ndarray) -> dict[str, float]:
    """{'median', 'q25', 'q75'} of per-image scores."""
    q25, q50, q75 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return {"median": q50, "q25": q25, "q75": q75}


def decodings(raw: np.ndarray, gains: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """{name: the raw images through that name's gains (None: as decoded)}."""
    return {k: raw if g is None else np.asarray(equaliser.apply(raw, g)) for k, g in gains.items()}


def read_old(path: str, run) -> tuple[np.ndarray, int | None]:
    """(gains, version) of an older equaliser file, refused unless fitted for the run's VAE
    (when it records the VAE's hash) and of a length some version writes for its image size."""
    with open(path) as f:
        rec = json.load(f)
    gains = np.asarray(rec["gains"], np.float64)
    size = run.image_size
    lengths = {size // 2 + 1, equaliser.num_radii(size, size)}  # version 2, version 3
    sha = rec.get("vae_sha256")
    if sha is not None and sha != run.meta["vae"]["sha256"]:
        raise SystemExit(f"--old={path} was fitted for other VAE weights than {run.workdir}'s.")
    if len(gains) not in lengths:
        raise SystemExit(f"--old={path} holds {len(gains)} gains; {size}px needs one of {lengths}.")
    return gains, rec.get("version")


def probe(workdir: str, old: str, guidance: float, per_class: int) -> dict:
    """Every number of the probe (see the module docstring)."""
    run, ds, split = load_run_data(workdir)
    te, va = ds.subset(split["test"]).images, ds.subset(split["val"]).images
    old_gains, old_version = read_old(old, run)
    gains = {"raw": None, "old": old_gains, "current": run.vae.equaliser}
    raw_vae = run.vae.without_equaliser()
    recon = decodings(raw_vae.reconstruct(te), gains)  # (N, H, W, 1) each
    val_recon = decodings(raw_vae.reconstruct(va), gains)
    x, _, name = main_set(dataclasses.replace(run, vae=raw_vae), guidance, per_class)
    samples = decodings(x, gains)
    out = {
        "workdir": workdir,
        "old_file": old,
        "old_version": old_version,
        "sampler": name,
        "guidance": guidance,
        "num_samples": len(x),
        "real": {
            "test_grid": quartiles(spectrum.grid_score(te)),
            "val_spectrum": quartiles(spectrum.spectrum_distance(va, te)),
        },
    }
    for k in gains:
        out[k] = {
            "recon_grid": quartiles(spectrum.grid_score(recon[k])),
            "recon_psnr": float(np.mean(np.asarray(metrics.psnr(te, recon[k])))),
            "recon_ssim": float(np.mean(np.asarray(metrics.ssim(te, recon[k])))),
            "val_recon_spectrum": quartiles(spectrum.spectrum_distance(val_recon[k], te)),
            "sample_spectrum": quartiles(spectrum.spectrum_distance(samples[k], te)),
            "sample_grid": quartiles(spectrum.grid_score(samples[k])),
        }
    return out


def render(res: dict) -> str:
    """A markdown table of the medians, the real images' IQR in the header."""
    r = res["real"]
    iqr = {k: f"{v['q25']:.3f}-{v['q75']:.3f}" for k, v in r.items()}
    lines = [
        f"{res['workdir']}: {res['num_samples']} samples of {res['sampler']} at w = "
        f"{res['guidance']:g}; old gains {res['old_file']} (version {res['old_version']})",
        "",
        f"| decoder | recon grid (real {iqr['test_grid']}) | PSNR / SSIM | val recon spectrum "
        f"(real {iqr['val_spectrum']}) | sample spectrum | sample grid |",
        "|---|---|---|---|---|---|",
    ]
    for k in ("raw", "old", "current"):
        v = res[k]
        lines.append(
            f"| {k} | {v['recon_grid']['median']:.3f} | {v['recon_psnr']:.2f} / "
            f"{v['recon_ssim']:.4f} | {v['val_recon_spectrum']['median']:.3f} | "
            f"{v['sample_spectrum']['median']:.3f} | {v['sample_grid']['median']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="diffusion run with an equaliser")
    p.add_argument("--old", required=True, help="an older equaliser.json of the same VAE")
    p.add_argument("--guidance", type=float, required=True, help="the report's main-set w")
    p.add_argument("--per_class", type=int, default=200, help="main-set images per class")
    p.add_argument("--out", required=True, help="output JSON (a .md beside it)")
    a = p.parse_args()
    res = probe(a.workdir, a.old, a.guidance, a.per_class)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    atomic.write_text(a.out, json.dumps(res, indent=1))
    atomic.write_text(os.path.splitext(a.out)[0] + ".md", render(res))
    print(render(res))


if __name__ == "__main__":
    main()
