"""Section 4: class fidelity of the main set (the domain classifier's verdict per class)."""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import setmetrics
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, nulls_note, table
from jax_mri_ldm.evaluation.sections.controls import untrusted_note

HEADER = "## 4. Class fidelity"


def compute(ctx: Context) -> dict[str, Any]:
    x, y = ctx.shared["syn"]
    probs = ctx.shared["classify"](x)
    names = ctx.class_names
    fid = setmetrics.fidelity(ctx.nulls, "fidelity.synthetic", probs, y, names)
    ctx.shared["syn_fidelity"] = fid["overall"]
    return {
        "fidelity": {
            "synthetic": fid,
            "real_test": ctx.results["classifier"]["test_recall"],
            "mean_p_label_synthetic": {
                name: float(np.mean(probs[y == c, c])) for c, name in enumerate(names)
            },
        }
    }


def render(r: dict) -> str:
    fi = r["fidelity"]
    names = list(fi["synthetic"]["per_class"])
    L = [HEADER, ""]
    L += [
        "Fraction of images the domain classifier assigns to their conditioning label "
        f"(main synthetic set, {r['main_set']['images_per_class']} per class); for real test "
        "images the same number is the classifier's per-class recall, the level a perfect "
        "generator would reach" + untrusted_note(r, ["fidelity"]) + ".",
        "",
    ]
    rows = [
        [label, *(f(fi[key]["per_class"][cn]) for cn in names), f(fi[key]["overall"])]
        for key, label in (("synthetic", "synthetic"), ("real_test", "real test"))
    ]
    L += table(["set", *names, "overall"], rows)
    return "\n".join(L + nulls_note(r["null_reasons"], ["fidelity."]))
