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
"""Fewest held-out images of a class for its quartiles to mean anything."""


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
    """`distance` (mean over STATS of W1 to train / train IQR) and per-stat spread ratios."""
    out, dists = {}, []
    for j, name in enumerate(STATS):
        dists.append(_w1(stats[:, j], train[:, j]) / max(_iqr(train[:, j]), 1e-6))
        out[f"{name}_spread_ratio"] = _iqr(stats[:, j]) / max(_iqr(heldout[:, j]), 1e-6)
    return {"distance": float(np.mean(dists)), **out}


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
    real held-out images beat each of CONTROLS."""
    tr, ho = image_stats(train), image_stats(heldout)
    sets = control_sets(heldout, seed) | {"synthetic": synthetic[: len(heldout)]}
    rows = {name: score_set(image_stats(x), tr, ho) for name, x in sets.items()}
    real = rows["real held-out"]["distance"]
    bad = [n for n in CONTROLS if rows[n]["distance"] <= real]
    n_syn = min(len(synthetic), len(heldout))
    return {
        "n": len(heldout),
        "n_synthetic": n_syn,
        "rows": rows,
        "trusted": not bad,
        "failed_controls": bad,
    }


def score_classes(
    train: tuple[np.ndarray, np.ndarray],
    heldout: tuple[np.ndarray, np.ndarray],
    synthetic: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    seed: int,
) -> dict[str, dict[str, Any] | None]:
    """`score_class` per class of (images, labels) sets; None where the held-out class has
    fewer than MIN_IMAGES images or a set has none."""
    out: dict[str, dict[str, Any] | None] = {}
    for c, name in enumerate(class_names):
        parts = [x[y == c] for x, y in (train, heldout, synthetic)]
        ok = len(parts[1]) >= MIN_IMAGES and len(parts[0]) and len(parts[2])
        out[name] = score_class(*parts, seed=seed) if ok else None
    return out
