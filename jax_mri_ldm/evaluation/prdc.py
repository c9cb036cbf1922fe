"""Precision, recall, density and coverage of a generated set in a feature space.

Precision and recall follow Kynkäänniemi et al. (2019): the real manifold is the union of balls
around each real feature with radius its distance to its k-th nearest real neighbour; precision
is the share of generated features inside it (are samples realistic?), recall the share of real
features inside the generated manifold (does the generator cover the data?). Density and
coverage follow Naeem et al. (2020): density counts how many real balls hold each sample
(divided by k; about 1 for a sample set drawn like the real one, robust to real outliers) and
coverage is the share of real balls that hold at least one sample.

The real manifold is, as in both papers, the real training distribution: the report uses the
run's training split (`Reference`), which is dense enough that a k-NN ball no longer swallows
noisy, blurred or gridded copies of real images; a few dozen test images are not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_K = 5
"""Neighbours defining the ball radii (Naeem et al. recommend 5)."""


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) squared Euclidean distances in float64."""
    d = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    """(N,) squared distance of each row to its k-th nearest other row."""
    d = _sq_dists(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def _checked(real_feats, fake_feats) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as float64 (N, D) and (M, D) arrays with N, M >= 2."""
    r = np.asarray(real_feats, np.float64)
    f = np.asarray(fake_feats, np.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D); got {r.shape} and {f.shape}.")
    if min(r.shape[0], f.shape[0]) < 2:
        raise ValueError(f"PRDC needs >= 2 images per side; got {r.shape[0]} and {f.shape[0]}.")
    return r, f


def _clip_k(k: int, r: np.ndarray, f: np.ndarray) -> int:
    """k clipped to [1, min(N, M) - 1]: a ball needs k other members on both sides."""
    return int(max(1, min(k, r.shape[0] - 1, f.shape[0] - 1)))


def prdc(real_feats, fake_feats, k: int = DEFAULT_K, recall_k: int | None = None) -> dict:
    """Precision, recall, density and coverage of `fake_feats` against `real_feats`.

    Args:
      real_feats: (N, D) features of real images.
      fake_feats: (M, D) features of the images to judge.
      k: neighbours for the ball radii; clipped to min(N, M) - 1.
      recall_k: neighbours for the balls around the judged features that recall counts real
        features in (None: `k`). Those balls are made of the judged set alone, which may be a
        few dozen images where the real manifold has hundreds, so they get their own k.

    Returns:
      {'precision', 'recall', 'density', 'coverage', 'k', 'recall_k', 'n_real', 'n_fake'}.

    Raises:
      ValueError: fewer than two rows on a side, or mismatched feature dimensions.
    """
    r, f = _checked(real_feats, fake_feats)
    k = _clip_k(k, r, f)
    rk = _clip_k(k if recall_k is None else recall_k, r, f)
    r_rad, f_rad = _kth_radius(r, k), _kth_radius(f, rk)
    d = _sq_dists(r, f)  # (N, M)
    inside_real = d < r_rad[:, None]  # sample j inside real ball i
    return {
        "precision": float(np.mean(inside_real.any(axis=0))),
        "recall": float(np.mean((d < f_rad[None, :]).any(axis=1))),
        "density": float(np.sum(inside_real) / (k * f.shape[0])),
        "coverage": float(np.mean(d.min(axis=1) < r_rad)),
        "k": k,
        "recall_k": rk,
        "n_real": int(r.shape[0]),
        "n_fake": int(f.shape[0]),
    }


def recall_covered(real_feats, fake_feats, recall_k: int = DEFAULT_K) -> np.ndarray:
    """(N,) bool: which real features recall counts as covered by the judged set.

    The per-image form of `prdc`'s recall (its mean), so two judged sets can be compared on
    the same real features, e.g. in a paired test of which covers more of the manifold.
    """
    r, f = _checked(real_feats, fake_feats)
    return (_sq_dists(r, f) < _kth_radius(f, _clip_k(recall_k, r, f))[None, :]).any(axis=1)


def prdc_per_class(
    real_feats,
    real_labels,
    fake_feats,
    fake_labels,
    class_names,
    k: int = DEFAULT_K,
    recall_k: int | None = None,
) -> dict:
    """`prdc` overall and within each class (None for a class with < 2 images on a side).

    Args:
      real_feats: (N, D); real_labels: (N,) ids.
      fake_feats: (M, D); fake_labels: (M,) ids.
      class_names: id -> name.
      k, recall_k: see `prdc`.

    Returns:
      {'overall': prdc dict, 'per_class': {name: prdc dict or None}}.
    """
    rl, fl = np.asarray(real_labels), np.asarray(fake_labels)
    out = {"overall": prdc(real_feats, fake_feats, k, recall_k), "per_class": {}}
    for c, name in enumerate(class_names):
        rs, fs = np.asarray(real_feats)[rl == c], np.asarray(fake_feats)[fl == c]
        ok = min(len(rs), len(fs)) >= 2
        out["per_class"][name] = prdc(rs, fs, k, recall_k) if ok else None
    return out


REFERENCES = ("train", "test")
"""Real sets PRDC can measure against: the run's training split (the real data distribution,
as in Kynkäänniemi et al. and Naeem et al.) or its test split."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """The real manifold that precision / recall / density / coverage measure against.

    Attributes:
      split: which real split the manifold is made of (one of `REFERENCES`).
      embed: images -> PRDC features (the report's space, possibly at its own input size).
      feats / labels: (N, D) features and (N,) labels of that split.
      class_names: label id -> name.
      k: neighbours of the ball radii.
      input_size: side the encoder sees for PRDC (None: the space's own resolution).
      recall_k: k of the judged set's own balls, which recall uses (None: `k`).
      equal_n: per-class image counts at which recall and coverage are measured (None: each
        set's own size). Both depend on the judged set's size, so a number validated on
        controls of n images only means the same for a synthetic set of n images: a larger
        set is scored as the mean over `subsets` random per-class subsets of these counts (a
        smaller one whole; 'n_fake_equal' says which size was used).
      subsets: how many subsets that mean takes.
    """

    split: str
    embed: Callable[[np.ndarray], np.ndarray]
    feats: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    k: int
    input_size: int | None
    recall_k: int | None = None
    equal_n: tuple[int, ...] | None = None
    subsets: int = 20

    def describe(self) -> dict:
        """JSON for report.json: which reference, how many images (per class), k, and the
        side the encoder saw ('features_at'), recall's k and the equal-n counts."""
        counts = {n: int(np.sum(self.labels == c)) for c, n in enumerate(self.class_names)}
        size = "the space's own size" if self.input_size is None else f"{self.input_size} px"
        eq = (
            None if self.equal_n is None else dict(zip(self.class_names, self.equal_n, strict=True))
        )
        return {"split": self.split, "n": int(len(self.feats)), "n_per_class": counts,
                "k": self.k, "features_at": size, "recall_k": self.recall_k or self.k,
                "equal_n_per_class": eq, "equal_n_subsets": self.subsets}  # fmt: skip


def build_reference(
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    embed: Callable[[np.ndarray], np.ndarray],
    k: int = DEFAULT_K,
    input_size: int | None = None,
) -> Reference:
    """Embeds the real reference split once.

    Raises:
      ValueError: `split` is not one of `REFERENCES`.
    """
    if split not in REFERENCES:
        raise ValueError(f"PRDC reference {split!r}: use one of {', '.join(REFERENCES)}.")
    return Reference(
        split, embed, embed(images), np.asarray(labels), tuple(class_names), int(k), input_size
    )


N_DEPENDENT = ("recall", "coverage")
"""The numbers that depend on the judged set's size: coverage grows with it (more samples to
land in real balls), recall at a fixed k falls (its own k-NN balls shrink); precision and
density are means over samples and do not."""


def score(ref: Reference, images: np.ndarray, labels: np.ndarray) -> dict:
    """`prdc_per_class` of a labelled image set against `ref` (raises ValueError like `prdc`)."""
    return score_features(ref, ref.embed(images), np.asarray(labels))


def score_features(ref: Reference, feats: np.ndarray, labels: np.ndarray) -> dict:
    """`score` from features already embedded by `ref`; with `ref.equal_n`, recall and
    coverage of a set larger than those counts are means over random subsets of them, with
    their standard deviation and the classes left without a per-class value under 'equal_n'."""
    res = prdc_per_class(ref.feats, ref.labels, feats, labels, ref.class_names, ref.k, ref.recall_k)
    if ref.equal_n is None:
        return res
    counts = [int(np.sum(labels == c)) for c in range(len(ref.class_names))]
    target = [min(n, int(m)) for n, m in zip(counts, ref.equal_n, strict=True)]
    if sum(target) < 2:  # no PRDC at that size (tiny held-out splits): scored whole
        target = counts
    if target == counts:  # already at (or below) the validated size: scored whole
        _set_n_used(res, target, ref.class_names)
        res["equal_n"] = {"n_per_class": target, "subsets": 0, "std": {}, "undefined": []}
        return res
    runs = [
        prdc_per_class(
            ref.feats, ref.labels, feats[i], labels[i], ref.class_names, ref.k, ref.recall_k
        )  # fmt: skip
        for i in _subsets(labels, target, ref.subsets)
    ]
    std, undefined = _average_into(res, runs)
    _set_n_used(res, target, ref.class_names)
    res["equal_n"] = {"n_per_class": target, "subsets": len(runs), "std": std,
                      "undefined": undefined}  # fmt: skip
    return res


def _set_n_used(res: dict, target: Sequence[int], class_names: Sequence[str]) -> None:
    """Records the per-class and total size recall and coverage were measured at."""
    res["overall"]["n_fake_equal"] = int(sum(target))
    for name, n in zip(class_names, target, strict=True):
        if res["per_class"][name] is not None:
            res["per_class"][name]["n_fake_equal"] = int(n)


def _subsets(labels: np.ndarray, counts: Sequence[int], num: int) -> list[np.ndarray]:
    """`num` sorted index sets, each with counts[c] random images of class c (fixed seed)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(num):
        parts = [rng.choice(np.flatnonzero(labels == c), n, replace=False)
                 for c, n in enumerate(counts)]  # fmt: skip
        out.append(np.sort(np.concatenate(parts)).astype(np.int64))
    return out


def _average_into(res: dict, runs: list[dict]) -> tuple[dict, list[str]]:
    """Replaces the n-dependent numbers of `res` by their means over `runs`.

    A class with fewer than 2 images in a subset has no per-class recall or coverage at that
    size (None); its precision and density, from the whole set, stay.

    Returns:
      ({key: overall standard deviation}, [classes left without recall and coverage]).
    """
    std, undefined = {}, []
    for key in N_DEPENDENT:
        vals = [r["overall"][key] for r in runs]
        res["overall"][key], std[key] = float(np.mean(vals)), float(np.std(vals))
    for name, block in res["per_class"].items():
        parts = [r["per_class"][name] for r in runs]
        if block is None:
            continue
        if any(p is None for p in parts):
            undefined.append(name)
        for key in N_DEPENDENT:
            block[key] = None if name in undefined else float(np.mean([p[key] for p in parts]))
    return std, undefined


KEYS = ("precision", "recall", "density", "coverage")
"""The four numbers, in table order."""


def rescore_row(ref: Reference, row: dict, images, labels, nulls, path: str) -> dict:
    """Puts PRDC against `ref` into a `scoring.score_set` row (replacing its 'prdc' block and
    the four scalars), so every scored set is measured against the same real manifold.

    Args:
      ref: the PRDC reference.
      row: the set's row (changed in place and returned).
      images / labels: the set's images and labels.
      nulls: a `context.Nulls`; reasons go to `<path>.prdc...` and `<path>.<key>`.
      path: the set's dotted path in report.json.
    """
    for key in [k for k in nulls.reasons if k.startswith(f"{path}.prdc")]:
        del nulls.reasons[key]  # reasons of the block this call replaces
    try:
        res = score(ref, images, labels)
    except ValueError as e:
        nulls.null(f"{path}.prdc", str(e))
        res = None
    for name, v in (res or {}).get("per_class", {}).items():
        if v is None:
            nulls.null(f"{path}.prdc.per_class.{name}", "fewer than 2 images of the class")
    null_undefined(nulls, f"{path}.prdc", res)
    row["prdc"] = res
    for k in KEYS:
        row[k] = res["overall"][k] if res else None
        if res is not None:
            nulls.reasons.pop(f"{path}.{k}", None)
        elif f"{path}.{k}" not in nulls.reasons:
            nulls.null(f"{path}.{k}", "too few images for this estimate")
    return row


def null_undefined(nulls, path: str, res: dict | None) -> None:
    """Reasons for per-class recall / coverage left undefined at the held-out size."""
    for name in ((res or {}).get("equal_n") or {}).get("undefined", []):
        for key in N_DEPENDENT:
            nulls.null(f"{path}.per_class.{name}.{key}", "fewer than 2 images of the class "
                       "in a held-out-size subset")  # fmt: skip
