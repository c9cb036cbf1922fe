"""Section 6: within-class diversity (mean pairwise MS-SSIM) of the main set and real sets."""

from __future__ import annotations

from typing import Any

from jax_mri_ldm.evaluation import metrics, setmetrics
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
        }
    }


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
    return "\n".join(L + nulls_note(r["null_reasons"], ["diversity."]))
