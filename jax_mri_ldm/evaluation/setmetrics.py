"""Per-set metrics shared by the report sections: class fidelity, FID/KID per class,
diversity, equal-n subsets, and the guidance rule (which only trusts validated metrics)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import metrics
from jax_mri_ldm.evaluation.context import Nulls


def per_class_subset(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Sorted indices holding counts[c] random images of each class c."""
    rng = np.random.default_rng(seed)
    parts = []
    for c, n in enumerate(counts):
        members = np.flatnonzero(labels == c)
        parts.append(rng.choice(members, min(int(n), members.size), replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def fidelity(
    nulls: Nulls, path: str, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict:
    """Fraction of images the classifier assigns to their label: per class and overall."""
    pred = np.argmax(probs, axis=-1)
    out: dict[str, Any] = {"per_class": {}}
    for c, name in enumerate(class_names):
        sel = labels == c
        out["per_class"][name] = (
            float(np.mean(pred[sel] == c))
            if sel.any()
            else nulls.null(f"{path}.per_class.{name}", f"no {name} images in this set")
        )
    out["overall"] = float(np.mean(pred == labels)) if labels.size else None
    if labels.size == 0:
        nulls.null(f"{path}.overall", "empty set")
    return out


def fid_kid(
    nulls: Nulls,
    path: str,
    fa: np.ndarray,
    la: np.ndarray,
    fb: np.ndarray,
    lb: np.ndarray,
    class_names: Sequence[str],
    kid_subsets: int,
    kid_subset_size: int,
) -> dict:
    """FID and KID of set a vs set b, overall and per class (with the counts used)."""

    def block(sub: str, xa: np.ndarray, xb: np.ndarray) -> dict:
        p = f"{path}.{sub}"
        short = f"needs >= 2 images on each side; has {xa.shape[0]} vs {xb.shape[0]}"
        if min(xa.shape[0], xb.shape[0]) < 2:
            for k in ("fid", "kid", "kid_std"):
                nulls.null(f"{p}.{k}", short)
            return {
                "fid": None,
                "kid": None,
                "kid_std": None,
                "n_a": xa.shape[0],
                "n_b": xb.shape[0],
            }
        fid = nulls.value(f"{p}.fid", lambda: metrics.fid(xa, xb))
        try:
            kid_mean, kid_std = metrics.kid(
                xa, xb, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=0
            )
        except ValueError as e:
            nulls.null(f"{p}.kid", str(e))
            nulls.null(f"{p}.kid_std", str(e))
            kid_mean = kid_std = None
        else:
            kid_mean = nulls.finite(f"{p}.kid", kid_mean)
            kid_std = nulls.finite(f"{p}.kid_std", kid_std)
        return {
            "fid": fid,
            "kid": kid_mean,
            "kid_std": kid_std,
            "n_a": int(xa.shape[0]),
            "n_b": int(xb.shape[0]),
        }

    out = {"overall": block("overall", fa, fb), "per_class": {}}
    for c, name in enumerate(class_names):
        out["per_class"][name] = block(f"per_class.{name}", fa[la == c], fb[lb == c])
    return out


def diversity(
    nulls: Nulls,
    path: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    max_pairs: int,
) -> dict:
    """Mean pairwise MS-SSIM within each class (lower = more diverse) and their mean."""
    out: dict[str, Any] = {"per_class": {}}
    for c, name in enumerate(class_names):
        x = images[labels == c]
        p = f"{path}.per_class.{name}"
        if x.shape[0] < 2:
            out["per_class"][name] = nulls.null(
                p, f"needs >= 2 {name} images for a pair; this set has {x.shape[0]}"
            )
            continue
        out["per_class"][name] = nulls.value(
            p, lambda x=x: metrics.mean_pairwise_ms_ssim(x, max_pairs=max_pairs, seed=0)
        )
    vals = [v for v in out["per_class"].values() if v is not None]
    out["mean"] = float(np.mean(vals)) if vals else None
    if not vals:
        nulls.null(f"{path}.mean", "no class has >= 2 images")
    return out


def _class_bars(
    real_recall: Mapping[str, float | None], real_fidelity: float | None
) -> dict[str, float]:
    """Class -> its real bar: the class's recall, or the overall accuracy where it is unknown."""
    return {k: (real_fidelity or 0.0) if v is None else v for k, v in real_recall.items()}


def _class_margin(row: dict, bars: Mapping[str, float]) -> float | None:
    """Worst shortfall of a row's per-class fidelity below its bar (None: a class is unscored)."""
    per = (row.get("fidelity_detail") or {}).get("per_class") or {}
    if any(per.get(name) is None for name in bars):
        return None
    return min(per[name] - bar for name, bar in bars.items())


def _margin_fn(real_fidelity: float | None, real_recall: Mapping[str, float | None] | None):
    """(row -> fidelity margin, per-class bars or None): worst class when recalls are known."""
    if real_recall and any(v is not None for v in real_recall.values()):
        bars = _class_bars(real_recall, real_fidelity)
        return (lambda r: _class_margin(r, bars)), bars
    bar = real_fidelity or 0.0

    def overall(r: dict) -> float | None:
        return None if r["fidelity"] is None else r["fidelity"] - bar

    return overall, None


def _rule(per_class: bool, tolerance: float) -> str:
    what = "class fidelity is at least the"
    if per_class:
        what = "every class's fidelity is at least its"
    return (
        f"lowest feature FID among the w whose {what} real test value (the domain classifier on "
        f"real test images) minus {tolerance:g}; if none qualifies, the w with the best fidelity "
        "margin; w = 0 (unconditional) is never recommended; a metric that failed the controls "
        "(section 11) takes no part"
    )


def choose_guidance(
    rows: Sequence[dict],
    real_fidelity: float | None,
    tolerance: float,
    trusted: Sequence[str] = ("fidelity", "fid"),
    real_recall: Mapping[str, float | None] | None = None,
    images_per_class: int | None = None,
) -> dict:
    """The sweep's rule: lowest FID among w whose class fidelity is within `tolerance` of real.

    With `real_recall` (the domain classifier's recall per class on real test images) a w
    qualifies only if every class's fidelity is at least that class's recall - tolerance, so a
    w that keeps one class (say, tumour) under-guided cannot hide behind the other class's
    surplus in the overall mean; a class whose recall is unknown is held to the overall
    accuracy, and a row missing a class's fidelity does not qualify. Without recalls, the
    overall fidelity against `real_fidelity`. The tolerance is at least one image of a class
    (1 / images_per_class), the resolution of a per-class fraction, so a small sweep does not
    reject every w over a single image. Only metrics in `trusted` (those that ranked the
    controls correctly) take part: without a trusted fidelity every w qualifies; without a
    trusted FID the qualifying w with the best fidelity margin wins; with neither, no w is
    chosen ('chosen' is None). w = 0 (unconditional) is never recommended unless it is the only
    w swept.

    Args:
      rows: sweep rows with 'guidance', 'fidelity', 'fid' (and 'fidelity_detail.per_class').
      real_fidelity: the domain classifier's accuracy on real test images (None: bar = 0).
      tolerance: allowed shortfall below the real value.
      trusted: the trustworthy metrics among 'fidelity' and 'fid'.
      real_recall: class name -> the classifier's recall on real test images of that class.
      images_per_class: sweep images per class (None: no resolution floor on the tolerance).

    Returns:
      {'chosen': w or None, 'threshold' (overall bar, float), 'threshold_per_class' (class ->
      bar, or None), 'tolerance' (as applied), 'rule', 'qualified': [w...], 'decided_by'}.
    """
    use_fid, use_fidelity = "fid" in trusted, "fidelity" in trusted
    margin, bars = _margin_fn(real_fidelity, real_recall)
    if images_per_class:
        tolerance = max(tolerance, 1.0 / images_per_class)
    rows = [r for r in rows if r["guidance"] != 0.0] or list(rows)
    if use_fidelity:
        qualified = [r for r in rows if (m := margin(r)) is not None and m >= -tolerance - 1e-12]
    else:
        qualified = list(rows)
    with_fid = [r for r in qualified if r["fid"] is not None] if use_fid else []
    rule = _rule(bars is not None, tolerance)
    threshold = (real_fidelity or 0.0) - tolerance
    per_class = None if bars is None else {k: v - tolerance for k, v in bars.items()}
    out = {"threshold": threshold, "threshold_per_class": per_class, "tolerance": tolerance}
    out.update(rule=rule, qualified=[float(r["guidance"]) for r in qualified])
    if with_fid:
        best = min(with_fid, key=lambda r: (r["fid"], r["guidance"]))
        return {
            **out,
            "chosen": float(best["guidance"]),
            "decided_by": "lowest FID among the qualifying w",
        }
    if not use_fidelity:
        return {**out, "chosen": None, "decided_by": "no trustworthy metric: no w chosen"}
    cands = [r for r in rows if margin(r) is not None] or list(rows)
    best = min(
        cands,
        key=lambda r: (
            -(margin(r) if margin(r) is not None else -math.inf),
            r["fid"] if (use_fid and r["fid"] is not None) else math.inf,
            r["guidance"],
        ),
    )
    why = "no w qualified (or no trusted FID): best fidelity margin"
    return {**out, "chosen": float(best["guidance"]), "decided_by": why}
