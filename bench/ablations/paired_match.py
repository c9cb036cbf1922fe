"""Few-step samplers against DDPM-1000 by a paired difference, from sampler_match's draws.

Why: the report (section 10) and `sampler_match.py` pass a sampler when its median lies inside
DDPM's 95 % bootstrap interval (or beyond it on the better side). That compares one noisy
point with the other draw's interval and ignores the point's own noise, so two draws of the
same distribution miss each other's interval often, and several verdicts were decided by
0.001-0.002 (docs/results.md, sessions 42-43). With `--paired`, draw i of both samplers shares
its starting noise and label, so the difference can be bootstrapped over the image pairs:

  d = |median(fast) - real| - |median(DDPM) - real|   (nn_ssim, grid: nearer the real median)
  d = median(fast) - median(DDPM)                     (spectrum distance: lower is better)

A sampler is *not worse* on a metric when the 95 % interval of d reaches 0 or below (d > 0
means farther from real / a larger distance). This reads the per-image arrays `sampler_match.py
--paired` cached (``<setting>_s<seed>_n<per_class>.npz``) and its `summary_paired.json` (the
real medians); it samples nothing. Run from the repository root::

  python bench/ablations/paired_match.py --dir=runs/match --out=runs/match/paired.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from jax_mri_ldm.evaluation import scoring  # noqa: E402

METRICS = ("nn_ssim", "grid", "spectrum")
REAL_SIDED = ("nn_ssim", "grid")  # judged by the distance to the real test images' median


def paired_statistic(metric: str, fast: np.ndarray, ddpm: np.ndarray, real: float | None):
    """d for one (resampled) set of pairs; > 0 means the fast sampler is worse."""
    if metric in REAL_SIDED:
        return abs(np.median(fast) - real) - abs(np.median(ddpm) - real)
    return np.median(fast) - np.median(ddpm)


def paired_check(
    metric: str,
    fast: np.ndarray,
    ddpm: np.ndarray,
    real: float | None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """d, its 95 % paired-bootstrap interval and whether the sampler is not worse than DDPM."""
    fast, ddpm = np.asarray(fast, np.float64), np.asarray(ddpm, np.float64)
    if fast.shape != ddpm.shape or fast.ndim != 1:
        raise ValueError(
            f"paired arrays must be (N,) of one length; got {fast.shape}, {ddpm.shape}"
        )
    if metric in REAL_SIDED and real is None:
        raise ValueError(f"{metric} needs the real median")
    pairs_ = np.stack([fast, ddpm], axis=1)  # (N, 2): resampled together, row by row
    stat = lambda p: paired_statistic(metric, p[:, 0], p[:, 1], real)  # noqa: E731
    lo, hi = scoring.bootstrap_interval(pairs_, stat, n=resamples, seed=seed)
    d = float(stat(pairs_))
    return {"d": d, "interval": [float(lo), float(hi)], "not_worse": bool(lo <= 0.0)}


def pairs(directory: str) -> list[tuple[str, int, str, str]]:
    """(setting file stem, seed, its npz, DDPM's npz at that seed) for every cached draw."""
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*_s*_n*.npz"))):
        stem, rest = os.path.basename(path)[:-4].rsplit("_s", 1)
        seed, n = rest.split("_n")
        ref = os.path.join(directory, f"ddpm_s{seed}_n{n}.npz")
        if stem != "ddpm" and os.path.exists(ref):
            out.append((stem, int(seed), path, ref))
    return out


def main(args: argparse.Namespace) -> None:
    with open(os.path.join(args.dir, "summary_paired.json")) as f:
        real = json.load(f)["real"]
    rows = []
    for stem, seed, path, ref in pairs(args.dir):
        fast, ddpm = np.load(path), np.load(ref)
        checks = {m: paired_check(m, fast[m], ddpm[m], real.get(m)) for m in METRICS}
        rows.append({"setting": stem, "seed": seed, "checks": checks})
        cells = [f"{m} d={c['d']:+.4f} [{c['interval'][0]:+.4f}, {c['interval'][1]:+.4f}]"
                 f" {'ok' if c['not_worse'] else 'WORSE'}" for m, c in checks.items()]  # fmt: skip
        print(f"{stem} seed {seed}: " + "; ".join(cells))
    with open(args.out, "w") as f:
        json.dump({"dir": args.dir, "real": real, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True, help="a sampler_match.py --paired output folder")
    p.add_argument("--out", required=True, help="where the JSON summary goes")
    main(p.parse_args())
