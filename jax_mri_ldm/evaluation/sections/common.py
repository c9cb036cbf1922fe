"""Helpers shared by the sections that score synthetic sets (sweep, main set, samplers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import metrics, prdc, scoring, setmetrics
from jax_mri_ldm.evaluation.context import FALLBACK_NULL_REASON, Context
from jax_mri_ldm.sampler_settings import SamplerSpec, spec_with

# The report config's main-sampler fields (None = the run's default); read by `main_spec`.
SAMPLER_FIELDS = ("sampler", "steps", "spacing", "eta", "eps_scale", "guidance_interval")


def main_spec(ctx: Context, w: float) -> SamplerSpec:
    """The main sampler at guidance w: the run's default sampler (`LDMPipeline.default_spec`)
    with the report config's sampler fields where they are set."""
    c = ctx.cfg
    spec = spec_with(ctx.run.default_spec(), {k: c.get(k) for k in SAMPLER_FIELDS})
    return dataclasses.replace(spec, guidance_scale=float(w), use_ema=bool(c.use_ema))


def spectrum_reference_set(ctx: Context) -> np.ndarray:
    """Real held-out images whose spectra give the real spread (val, or train without val):
    scored against the test split's mean spectrum, like every synthetic set."""
    return ctx.val.images if len(ctx.val) >= 2 else ctx.train.images


def score_row(
    ctx: Context, images: np.ndarray, labels: np.ndarray, path: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`scoring.score_set` plus mean within-class MS-SSIM diversity, nulls explained."""
    row, per = scoring.score_set(ctx.shared["ref"], images, labels, ctx.nulls, path)
    if "prdc_ref" in ctx.shared:  # the report's PRDC manifold (sections/controls.py)
        prdc.rescore_row(ctx.shared["prdc_ref"], row, images, labels, ctx.nulls, path)
    div = setmetrics.diversity(
        ctx.nulls,
        f"{path}.diversity_detail",
        images,
        labels,
        ctx.class_names,
        ctx.cfg.diversity_max_pairs,
    )
    row.update(diversity=div["mean"], diversity_detail=div)
    for key, sub in (("fid", "fid_kid.overall.fid"), ("kid", "fid_kid.overall.kid")):
        if row[key] is None:
            reason = ctx.nulls.reasons.get(f"{path}.{sub}", FALLBACK_NULL_REASON)
            ctx.nulls.null(f"{path}.{key}", reason)
    if row["diversity"] is None:
        ctx.nulls.null(f"{path}.diversity", ctx.nulls.reasons[f"{path}.diversity_detail.mean"])
    return row, per


def ref_fid_same_n(ctx: Context, n_per_class: Sequence[int]) -> float | None:
    """FID of a random real-train subset (n_per_class[c] of class c) vs the test split."""
    idx = setmetrics.per_class_subset(ctx.train.labels, n_per_class, seed=1)
    try:
        return float(metrics.fid(ctx.shared["train_feats"][idx], ctx.shared["ref"].test_feats))
    except ValueError:
        return None


def trusted(ctx: Context, names: Sequence[str]) -> list[str]:
    """The metrics among `names` that passed the controls (all of them without controls)."""
    tab = ctx.shared.get("trust", {}).get("metrics", {})
    if not tab:
        return list(names)
    return [n for n in names if tab.get(n, {}).get("trustworthy") is True]


def first_per_class(x: np.ndarray, y: np.ndarray, k: int, n: int) -> np.ndarray:
    """The first n images of each of the k classes, class after class."""
    return np.concatenate([x[y == c][:n] for c in range(k)])


def test_diversity(ctx: Context) -> dict:
    """Within-class MS-SSIM diversity of the real test split (computed once)."""
    if "test_diversity" not in ctx.shared:
        ctx.shared["test_diversity"] = setmetrics.diversity(
            ctx.nulls,
            "diversity.real_test",
            ctx.test.images,
            ctx.test.labels,
            ctx.class_names,
            ctx.cfg.diversity_max_pairs,
        )
    return ctx.shared["test_diversity"]
