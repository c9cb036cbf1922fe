"""Section 6: within-class diversity of the main set and the real sets: mean pairwise MS-SSIM
(structure) and the spread of brightness and contrast across images (`intensity.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import intensity, metrics, setmetrics
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, nulls_note, table
from jax_mri_ldm.evaluation.sections import common

HEADER = "## 6. Diversity"


def compute(ctx: Context) -> dict[str, Any]:
    x, y = ctx.shared["syn"]
    pairs = ctx.cfg.diversity_max_pairs
    names = ctx.class_names
    tr = ctx.train
    return {
        "diversity": {
            "synthetic": setmetrics.diversity(ctx.nulls, "diversity.synthetic", x, y, names, pairs),
            "real_test": common.test_diversity(ctx),
            "real_train": setmetrics.diversity(
                ctx.nulls, "diversity.real_train", tr.images, tr.labels, names, pairs
            ),
            "max_pairs_per_class": pairs,
            "ms_ssim_scales": metrics.ms_ssim_num_scales(*x.shape[1:3]),
            "intensity": _intensity(ctx, x, y),
        }
    }


def _intensity(ctx: Context, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Intensity diversity per class against the held-out images (validation + test)."""
    parts = {k: p for k, p in (("val", ctx.val), ("test", ctx.test)) if len(p)}
    ho = tuple(
        np.concatenate([getattr(p, a) for p in parts.values()]) for a in ("images", "labels")
    )
    tr = (ctx.train.images, ctx.train.labels)
    seed = int(ctx.cfg.controls_seed)
    per_class = intensity.score_classes(tr, ho, (x, y), ctx.class_names, seed)
    for name, v in per_class.items():
        if isinstance(v, str):  # the reason it has no score
            ctx.nulls.null(f"diversity.intensity.per_class.{name}", v)
            per_class[name] = None
    return {"held_out": "+".join(parts), "per_class": per_class}


def render(r: dict) -> str:
    dv = r["diversity"]
    names = list(dv["synthetic"]["per_class"])
    L = [HEADER, ""]
    L += [
        f"Mean pairwise MS-SSIM within each class ({dv['ms_ssim_scales']} scales, up to "
        f"{dv['max_pairs_per_class']} random pairs per class); lower means more diverse. A "
        "generator that collapses onto a few modes scores above the real sets.",
        "",
    ]
    rows = [
        [name, *(f(dv[key]["per_class"][cn]) for cn in names), f(dv[key]["mean"])]
        for key, name in (
            ("synthetic", "synthetic"),
            ("real_test", "real test"),
            ("real_train", "real train (reference)"),
        )
    ]
    L += table(["set", *names, "mean"], rows)
    L += _render_intensity(dv["intensity"])
    return "\n".join(L + nulls_note(r["null_reasons"], ["diversity."]))


def _render_intensity(iv: dict[str, Any]) -> list[str]:
    """The intensity-diversity table: per class, the real held-out images, their controls and
    the synthetic set, then the synthetic set's bootstrap intervals."""
    L = [
        "",
        f"**Intensity diversity** against the real held-out images ({iv['held_out']}): each "
        "image's foreground brightness (median) and contrast (90th - 10th percentile). "
        "`distance` = Wasserstein distance of both to the real training split's, in training "
        "IQRs; `spread` = IQR across images / the held-out images' (1 = as diverse as real, "
        "below 1 = narrower). The controls are the held-out images with brightness and "
        "contrast pulled halfway to their means (`collapse`), noise and blur; the distance is "
        "trusted for a class only where the real images beat all three. The synthetic set is "
        "scored at the held-out n; its brackets are 95 % bootstrap intervals of its distance "
        "minus the real one and of its spreads.",
        "",
    ]
    rows = []
    for cls, v in iv["per_class"].items():
        if v is None:
            rows.append([cls, "n/a", "", "", "", ""])
            continue
        for name, s in v["rows"].items():
            if name == "patch_shuffle":  # keeps every pixel: a tie by construction
                continue
            cells = [f(s[k]) for k in ("distance", *_SPREADS)]
            trust = ""
            if name == "synthetic":
                ci = v["synthetic_intervals"]
                cells = [
                    c + _bracket(ci.get(k))
                    for c, k in zip(cells, ("distance_gap", *_SPREADS), strict=True)
                ]
                trust = "yes" if v["trusted"] else "**no**"
            rows.append([f"{cls} (n = {v['n']})", name, *cells, trust])
    heads = ["class", "set", "distance [gap]", "brightness spread", "contrast spread", "trusted"]
    return L + table(heads, rows)


_SPREADS = ("brightness_spread_ratio", "contrast_spread_ratio")


def _bracket(ci: list[float] | None) -> str:
    return "" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"
