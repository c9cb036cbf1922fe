"""Scores any labelled image set against the run's real images, the same way for all sets.

The controls, the guidance sweep, the main set and the sampler table are all scored by
`score_set`, so a metric's verdict on the controls carries over to the synthetic sets:

* feature FID / KID vs the real test split and precision / recall / density / coverage in the
  report's feature space (per class too);
* class fidelity under the domain classifier;
* spectrum distance (of the set's mean spectrum) and grid score (median), see `spectrum`;
* nearest-training-image SSIM (median; realism) and the memorised fraction: images closer to a
  training image, or to its mirror image, than every held-out image (test split plus any
  calibration images) is; 'memorised_relative' measures that distance in units of the training
  image's own nearest-neighbour distance (`neighbours.relative_distance`) and flags images
  below every held-out image's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import cache, neighbours, prdc, setmetrics, spectrum
from jax_mri_ldm.evaluation.context import Nulls

SCALARS: tuple[str, ...] = (
    "fid",
    "kid",
    "precision",
    "recall",
    "density",
    "coverage",
    "fidelity",
    "spectrum",
    "grid",
    "nn_ssim",
    "memorised",
    "memorised_relative",
)
"""The per-set numbers `score_set` returns, in table order."""


@dataclasses.dataclass
class Reference:
    """The real images every set is scored against, prepared once.

    Attributes:
      class_names: label id -> name.
      embed: images -> features of the report's feature space.
      test_feats / test_labels: features and labels of the real test split.
      classify: images -> class probabilities (the domain classifier), or None.
      train_images: the generator's training images (nearest-neighbour search).
      test_nn: (n_test,) nearest-train SSIM of every real test image.
      threshold: memorisation threshold (the highest nearest-train SSIM of a held-out image:
        test split plus any calibration images).
      train_own: (2T,) SSIM of every training image (then every mirror image) to its nearest
        other training image or mirror image.
      relative_threshold: the relative rule's threshold (the lowest held-out image's).
      spectrum_mean: (R,) mean log radial spectrum of the test split.
      period: the latent grid period in pixels (None: image size not a multiple).
      search_size: side of the SSIM search.
      kid_subsets / kid_subset_size / prdc_k: estimator settings.
      calibration_nn: the calibration images' `nearest_train_match` (None: no calibration
        images), kept so the memorisation section does not search them again.
    """

    class_names: tuple[str, ...]
    embed: Callable[[np.ndarray], np.ndarray]
    test_feats: np.ndarray
    test_labels: np.ndarray
    classify: Callable[[np.ndarray], np.ndarray] | None
    train_images: np.ndarray
    test_nn: np.ndarray
    threshold: float
    train_own: np.ndarray
    relative_threshold: float
    spectrum_mean: np.ndarray
    period: int | None
    search_size: int
    kid_subsets: int
    kid_subset_size: int
    prdc_k: int
    calibration_nn: dict | None = None


def with_mirrors(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the training images then their mirror images (2T, H, W, 1), groups (2T,)): the
    nearest-train search's references; a slice and its mirror image share one group."""
    return np.concatenate([train, train[:, :, ::-1]]), np.tile(np.arange(len(train)), 2)


def nearest_train_match(train: np.ndarray, images: np.ndarray, search_size: int) -> dict:
    """`nearest_neighbours` of each image among the training images and their mirror images
    (indices into that (2T,) stack)."""
    return neighbours.nearest_neighbours(
        images, with_mirrors(train)[0], "ssim", search_size=search_size
    )


def nearest_train(train: np.ndarray, images: np.ndarray, search_size: int) -> np.ndarray:
    """(N,) SSIM of each image to its nearest training image or mirrored training image."""
    return np.asarray(nearest_train_match(train, images, search_size)["score"])


def train_own_scores(
    train: np.ndarray, search_size: int, cache_dir: str | None = None
) -> np.ndarray:
    """(2T,) SSIM of every training image and mirror image to its nearest other slice (a slice,
    its mirror image and its twins are one group); kept in `cache_dir` (None: not cached)."""
    refs, groups = with_mirrors(train)
    twin = neighbours.TWIN_SSIM
    return cache.cached_array(
        cache_dir,
        "train_own",
        (train, int(search_size), twin),
        lambda: neighbours.own_neighbour_scores(
            refs, groups, search_size=search_size, twin_ssim=twin
        ),
    )


def relative_to_train(ref: Reference, match: dict) -> np.ndarray:
    """(N,) relative nearest-train distances of a `nearest_train_match` result."""
    return neighbours.relative_distance(match["score"], match["index"], ref.train_own, True)


def build_reference(
    test_images: np.ndarray,
    test_labels: np.ndarray,
    train_images: np.ndarray,
    class_names: Sequence[str],
    embed: Callable[[np.ndarray], np.ndarray],
    classify: Callable[[np.ndarray], np.ndarray] | None,
    period: int | None,
    search_size: int,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    prdc_k: int = prdc.DEFAULT_K,
    calibration_images: np.ndarray | None = None,
    cache_dir: str | None = None,
) -> Reference:
    """Prepares the test features, spectra and nearest-train scores once.

    `calibration_images` (M, H, W, 1): more held-out images that set both memorisation
    thresholds together with the test images (`data.calibration_slices`); test_nn stays the
    test split's. `cache_dir`: where the training images' self-search is kept
    (`cache.run_cache_dir`; None: recomputed every time).
    """
    search = min(int(search_size), int(test_images.shape[1]))
    match = nearest_train_match(train_images, test_images, search)
    own = train_own_scores(train_images, search, cache_dir)
    test_nn = np.asarray(match["score"])
    cal = None
    if calibration_images is not None:
        cal = nearest_train_match(train_images, calibration_images, search)
    match = neighbours.held_out_nn(match, cal)
    rel = neighbours.relative_distance(match["score"], match["index"], own, True)
    return Reference(
        class_names=tuple(class_names),
        embed=embed,
        test_feats=embed(test_images),
        test_labels=np.asarray(test_labels),
        classify=classify,
        train_images=train_images,
        test_nn=test_nn,
        threshold=float(np.max(match["score"])),
        train_own=own,
        relative_threshold=float(rel.min()),
        spectrum_mean=rs_mean(test_images),
        period=period,
        search_size=search,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        prdc_k=prdc_k,
        calibration_nn=cal,
    )


def rs_mean(images: np.ndarray) -> np.ndarray:
    """(R,) mean log radial spectrum of a set."""
    return spectrum.radial_spectrum(images).mean(axis=0)


def per_image_scores(ref: Reference, images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image spectrum distance, grid score, nearest-train SSIM and relative distance."""
    match = nearest_train_match(ref.train_images, images, ref.search_size)
    out = {"nn_ssim": np.asarray(match["score"]), "nn_relative": relative_to_train(ref, match)}
    out["spectrum"] = spectrum.distance_to_mean(images, ref.spectrum_mean)
    if ref.period is not None:
        out["grid"] = spectrum.grid_score(images, ref.period)
    return out


def _prdc_block(ref: Reference, feats: np.ndarray, labels: np.ndarray, nulls: Nulls, path: str):
    try:
        res = prdc.prdc_per_class(
            ref.test_feats, ref.test_labels, feats, labels, ref.class_names, ref.prdc_k
        )
    except ValueError as e:
        nulls.null(f"{path}.prdc", str(e))
        return None
    for name, v in res["per_class"].items():
        if v is None:
            nulls.null(f"{path}.prdc.per_class.{name}", "fewer than 2 images of the class")
    return res


def score_set(
    ref: Reference, images: np.ndarray, labels: np.ndarray, nulls: Nulls, path: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every metric of one labelled set.

    Args:
      ref: the prepared real reference.
      images: (N, H, W, 1) in [0, 1].
      labels: (N,) ids.
      nulls: where reasons for null values go.
      path: this set's dotted path in report.json.

    Returns:
      (row, per_image): row holds 'num_images', the `SCALARS` and the details 'fid_kid',
      'prdc', 'fidelity_detail'; per_image holds arrays ('nn_ssim', 'spectrum', 'grid',
      'correct') for intervals.
    """
    labels = np.asarray(labels)
    feats = ref.embed(images)
    fk = setmetrics.fid_kid(
        nulls,
        f"{path}.fid_kid",
        feats,
        labels,
        ref.test_feats,
        ref.test_labels,
        ref.class_names,
        ref.kid_subsets,
        ref.kid_subset_size,
    )
    pr = _prdc_block(ref, feats, labels, nulls, path)
    per = per_image_scores(ref, images)
    row: dict[str, Any] = {"num_images": int(len(images)), "fid": fk["overall"]["fid"]}
    row["kid"] = fk["overall"]["kid"]
    for k in ("precision", "recall", "density", "coverage"):
        row[k] = pr["overall"][k] if pr else None
    row["fidelity"] = None
    if ref.classify is not None:
        probs = ref.classify(images)
        per["correct"] = (np.argmax(probs, axis=1) == labels).astype(np.float64)
        det = setmetrics.fidelity(nulls, f"{path}.fidelity_detail", probs, labels, ref.class_names)
        row["fidelity"], row["fidelity_detail"] = det["overall"], det
    row["spectrum"] = float(np.sqrt(np.mean((rs_mean(images) - ref.spectrum_mean) ** 2)))
    row["grid"] = float(np.median(per["grid"])) if "grid" in per else None
    row["nn_ssim"] = float(np.median(per["nn_ssim"]))
    row["memorised"] = float(np.mean(per["nn_ssim"] > ref.threshold))
    row["memorised_relative"] = float(np.mean(per["nn_relative"] < ref.relative_threshold))
    row.update(fid_kid=fk, prdc=pr)
    for k in SCALARS:
        if row[k] is None and f"{path}.{k}" not in nulls.reasons:
            nulls.null(f"{path}.{k}", _why_null(k, ref))
    return row, per


def _why_null(key: str, ref: Reference) -> str:
    if key == "grid":
        return "image size is not a multiple of the latent period"
    if key == "fidelity" and ref.classify is None:
        return "no domain classifier"
    return "too few images for this estimate"


def bootstrap_interval(
    values: np.ndarray, stat: Callable = np.median, n: int = 500, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of stat(values)."""
    v = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    draws = [stat(v[rng.integers(0, len(v), len(v))]) for _ in range(n)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def proportion_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of the mean of 0/1 values.

    A bootstrap of all-correct (or all-wrong) images resamples the same value every time and
    returns a zero-width interval; the Wilson interval keeps the uncertainty of a small n
    (8 of 8 correct: about [0.68, 1]).
    """
    v = np.asarray(values, np.float64)
    if v.size == 0 or np.any((v != 0) & (v != 1)):
        raise ValueError(f"proportion_interval needs a non-empty array of 0/1 values; got {v!r}.")
    n, p = v.size, float(v.mean())
    denom = 1.0 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))
