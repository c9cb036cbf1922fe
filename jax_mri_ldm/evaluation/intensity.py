"""Intensity diversity: how far a set's spread of brightness and contrast is from the real one.

Fidelity, FID, PRDC and NN-SSIM judge images; none of them sees a generator that draws every
slice at the same brightness and contrast. Per image this takes the foreground (pixels above
`FOREGROUND`) median (brightness) and 90th-10th percentile (contrast); per set and class, the
1-D Wasserstein distance of each statistic to the training set's, in units of the training
set's interquartile range (`distance`), and the spread (IQR) of each statistic relative to the
real held-out images' (`*_spread_ratio`, 1 = as diverse as real).

Controls, made from the real held-out images at the same n: `collapse` (each image's brightness
and contrast pulled halfway to the set's means: the failure looked for), `noise` and `blur`
(`controls.py`). The distance is trusted for a class only where it ranks the real held-out
images below each of them. Shuffled patches keep every pixel, so they score like the real
images by construction: this measures intensity diversity, not realism.

A bootstrap over the held-out and synthetic images gives 95 % intervals of the synthetic
set's distance minus the real one's and of its spread ratios: a gap whose interval excludes 0,
or a ratio whose interval excludes 1, is more than the sampling noise of n images per class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import controls

FOREGROUND = 0.1
"""Intensity above which a pixel is head, not background (images are min-max scaled to [0, 1])."""
STATS: tuple[str, ...] = ("brightness", "contrast")
"""Per-image statistics, in the column order of `image_stats`."""
COLLAPSE = 0.5
"""The collapse control keeps this fraction of each image's distance to the set's means."""
CONTROLS: tuple[str, ...] = ("collapse", "noise", "blur")
"""The corruptions the distance must rank below the real held-out images."""
MIN_IMAGES = 4
"""Fewest images of a class in each set for its quartiles to mean anything."""
RESAMPLES = 1000
"""Bootstrap resamples of the synthetic-vs-real intervals."""
MIN_IQR = 1e-6
"""A statistic whose IQR is below this in the training or held-out set has no scale."""


def image_stats(images: np.ndarray) -> np.ndarray:
    """(N, 2): foreground median and 90th-10th percentile of each image of (N, H, W[, 1])."""
    out = np.zeros((len(images), len(STATS)), np.float64)
    for i, im in enumerate(images):
        fg = im[im > FOREGROUND]
        if fg.size == 0:  # no head: the whole image
            fg = im.ravel()
        p10, p50, p90 = np.percentile(fg, [10, 50, 90])
        out[i] = (p50, p90 - p10)
    return out


def collapse(images: np.ndarray, keep: float = COLLAPSE) -> np.ndarray:
    """Each image's foreground brightness and contrast moved to `keep` of its distance to the
    set's means (background untouched): the same slices with less intensity diversity."""
    stats = image_stats(images)
    (m_all, s_all), out = stats.mean(0), images.copy()
    for i, (m, s) in enumerate(stats):
        m_new, s_new = m_all + keep * (m - m_all), s_all + keep * (s - s_all)
        fg = images[i] > FOREGROUND
        out[i][fg] = m_new + (images[i][fg] - m) * s_new / max(s, 1e-6)
    return np.clip(out, 0.0, 1.0)


def _iqr(v: np.ndarray) -> float:
    q25, q75 = np.percentile(v, [25, 75])
    return float(q75 - q25)


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    """1-D Wasserstein distance between two samples (quantile functions on a common grid)."""
    q = np.linspace(0.0, 1.0, 201)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def score_set(stats: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> dict[str, float]:
    """`distance` (mean over STATS of W1 to train / train IQR) and per-stat spread ratios.

    Raises:
      ValueError: a statistic has (near) zero IQR in the training or held-out set.
    """
    out, dists = {}, []
    for j, name in enumerate(STATS):
        scale, ref = _iqr(train[:, j]), _iqr(heldout[:, j])
        if min(scale, ref) < MIN_IQR:
            raise ValueError(f"the {name} of the training or held-out images has no spread")
        dists.append(_w1(stats[:, j], train[:, j]) / scale)
        out[f"{name}_spread_ratio"] = _iqr(stats[:, j]) / ref
    return {"distance": float(np.mean(dists)), **out}


def synthetic_intervals(
    train: np.ndarray, heldout: np.ndarray, synthetic: np.ndarray, seed: int
) -> dict[str, list[float]]:
    """95 % bootstrap intervals of the synthetic set's distance minus the held-out one's
    (`distance_gap`) and of its spread ratios, resampling both sets' per-image statistics."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(RESAMPLES):
        ho = heldout[rng.integers(0, len(heldout), len(heldout))]
        syn = synthetic[rng.integers(0, len(synthetic), len(synthetic))]
        try:
            real, fake = score_set(ho, train, ho), score_set(syn, train, ho)
        except ValueError:  # a resample without spread: skipped
            continue
        fake["distance_gap"] = fake.pop("distance") - real["distance"]
        for k, v in fake.items():
            draws.setdefault(k, []).append(v)
    return {
        k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()
    }


def control_sets(heldout: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """The real held-out images and their corruptions (shuffled patches: the tie shown)."""
    return {
        "real held-out": heldout,
        "collapse": collapse(heldout),
        "noise": controls.gaussian_noise(heldout, seed=seed),
        "blur": controls.gaussian_blur(heldout),
        "patch_shuffle": controls.patch_shuffle(heldout, seed=seed),
    }


def score_class(
    train: np.ndarray, heldout: np.ndarray, synthetic: np.ndarray, seed: int
) -> dict[str, Any]:
    """Every set of one class scored, the synthetic one at the held-out n; `trusted` when the
    real held-out images beat each of CONTROLS (a NaN beats nothing).

    Raises:
      ValueError: a statistic without spread (see `score_set`).
    """
    tr, ho = image_stats(train), image_stats(heldout)
    syn = synthetic[: len(heldout)]
    sets = control_sets(heldout, seed) | {"synthetic": syn}
    rows = {name: score_set(image_stats(x), tr, ho) for name, x in sets.items()}
    real = rows["real held-out"]["distance"]
    bad = [n for n in CONTROLS if not rows[n]["distance"] > real]
    return {
        "n": len(heldout),
        "n_synthetic": len(syn),
        "rows": rows,
        "synthetic_intervals": synthetic_intervals(tr, ho, image_stats(syn), seed),
        "trusted": bool(np.isfinite(real)) and not bad,
        "failed_controls": bad,
    }


def score_classes(
    train: tuple[np.ndarray, np.ndarray],
    heldout: tuple[np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    seed: int,
) -> dict[str, dict[str, Any] | str]:
    """`score_class` per class of (images, labels) sets, or the reason it has no score (fewer
    than MIN_IMAGES images in a set, or a statistic without spread)."""
    out: dict[str, dict[str, Any] | str] = {}
    for c, name in enumerate(class_names):
        parts = [x[y == c] for x, y in (train, heldout, synthetic)]
        if min(len(p) for p in parts) < MIN_IMAGES:
            out[name] = f"fewer than {MIN_IMAGES} training, held-out or synthetic images"
            continue
        try:
            out[name] = score_class(*parts, seed=seed)
        except ValueError as e:
            out[name] = str(e)
    return out
