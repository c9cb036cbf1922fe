"""How much SSIM a reconstruction that drops the built-in phantom's acquisition noise can keep.

The built-in slices end with Rician noise (`phantom._acquire`). A VAE with a 16x16x16 latent
cannot store per-pixel noise, so the best it can do is the slice's expected value given its
anatomy. This probe draws each slice as shipped and `--draws` more times from the same random
stream with only the noise redrawn (every other draw identical, min-max normalisation
included), and scores, against the shipped slice:

* the mean of the redrawn copies (an estimate of the noise-free expectation, which keeps the
  Rician background bias; error variance shrinks as 1 / draws);
* Gaussian-smoothed copies of the shipped slice (a plain denoiser) at a few widths.

SSIM and PSNR are the report's (`evaluation.metrics`). The medians say how far below 1 a
reconstruction that does not reproduce the noise must land.

Run from the repository root::

  python bench/phantom_noise_floor.py --size=128 --per_class=64

Prints a markdown table and writes it with the per-image values to ``--out`` (JSON) if given.
"""

from __future__ import annotations

import json
import os
import sys
from unittest import mock

import numpy as np
from absl import app, flags
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jax_mri_ldm.data import phantom  # noqa: E402
from jax_mri_ldm.evaluation import metrics  # noqa: E402

SIZE = flags.DEFINE_integer("size", 128, "slice size in pixels (the recommended VAE's 128)")
PER_CLASS = flags.DEFINE_integer("per_class", 64, "slices per class (generator indices 0..n-1)")
SEED = flags.DEFINE_integer("seed", 0, "built-in dataset seed (config.data.builtin.seed)")
DRAWS = flags.DEFINE_integer("draws", 16, "noise redraws averaged into the expected slice")
SMOOTH = flags.DEFINE_list("smooth", ["0.5", "0.75", "1.0"], "Gaussian widths (px) to score")
OUT = flags.DEFINE_string("out", None, "optional JSON output path")


class _Renoise:
    """Wraps a numpy Generator: same draws, but `standard_normal` (the noise) comes from
    `noise_rng` (the original draw is still consumed, so the stream stays aligned)."""

    def __init__(self, rng: np.random.Generator, noise_rng: np.random.Generator):
        self._rng, self._noise_rng = rng, noise_rng

    def __getattr__(self, name):
        return getattr(self._rng, name)

    def standard_normal(self, size=None, dtype=np.float64):
        self._rng.standard_normal(size, dtype=dtype)
        return self._noise_rng.standard_normal(size, dtype=dtype)


def _redraw(seed: int, c: int, k: int, size: int, draw: int) -> np.ndarray:
    """Slice k of class c with its noise redrawn from stream `draw` (everything else shipped)."""
    orig = phantom._acquire
    noise_rng = np.random.default_rng([seed, c, k, 1000 + draw])
    renoised = lambda rng, *a: orig(_Renoise(rng, noise_rng), *a)  # noqa: E731
    with mock.patch.object(phantom, "_acquire", renoised):
        return phantom.generate_slice(np.random.default_rng([seed, c, k]), c, size)


def draw_pairs(size: int, per_class: int, seed: int, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """(shipped, expected) stacks (N, size, size, 1), slice k of class c from rng [seed, c, k]."""
    shipped, expected = [], []
    for c in (0, 1):
        for k in range(per_class):
            shipped.append(phantom.generate_slice(np.random.default_rng([seed, c, k]), c, size))
            redrawn = [_redraw(seed, c, k, size, d) for d in range(draws)]
            expected.append(np.mean(redrawn, axis=0))
    return np.stack(shipped)[..., None], np.stack(expected)[..., None]


def score(noisy: np.ndarray, approx: np.ndarray) -> dict:
    """Median and IQR of per-image SSIM and PSNR of `approx` against `noisy`."""
    s = np.asarray(metrics.ssim(approx, noisy))
    p = np.asarray(metrics.psnr(approx, noisy))
    q = lambda v: [float(np.percentile(v, k)) for k in (25, 50, 75)]  # noqa: E731
    return {"ssim": q(s), "psnr": q(p)}


def probe(size: int, per_class: int, seed: int, draws: int, widths: list[float]) -> dict:
    """Scores of each noise-free approximation against the shipped slices."""
    noisy, clean = draw_pairs(size, per_class, seed, draws)
    rows = {f"expected slice (mean of {draws} noise redraws)": score(noisy, clean)}
    for w in widths:
        smooth = ndimage.gaussian_filter(noisy, sigma=(0, w, w, 0))
        rows[f"Gaussian smoothing {w:g} px"] = score(noisy, smooth)
    return {"size": size, "per_class": per_class, "seed": seed, "draws": draws, "rows": rows}


def table(result: dict) -> str:
    """The rows as a markdown table."""
    lines = ["| approximation | SSIM median [IQR] | PSNR dB median [IQR] |", "|---|---|---|"]
    for name, r in result["rows"].items():
        s, p = r["ssim"], r["psnr"]
        lines.append(
            f"| {name} | {s[1]:.3f} [{s[0]:.3f}, {s[2]:.3f}] "
            f"| {p[1]:.2f} [{p[0]:.2f}, {p[2]:.2f}] |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    result = probe(
        SIZE.value, PER_CLASS.value, SEED.value, DRAWS.value, [float(w) for w in SMOOTH.value]
    )
    print(table(result))
    if OUT.value:
        with open(OUT.value, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
