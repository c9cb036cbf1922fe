"""Section 5: FID / KID and precision / recall / density / coverage in the chosen feature space.

Synthetic and real-train sets use the same number of images per class, so both carry the same
finite-sample bias; real train vs test and real val vs test give the real-vs-real scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import prdc, setmetrics
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, nulls_note, table
from jax_mri_ldm.evaluation.sections.controls import untrusted_note

HEADER = "## 5. Feature FID, KID, precision and recall"
PRDC_KEYS = ("precision", "recall", "density", "coverage")


def _fk(ctx: Context, path: str, fa, la, fb, lb) -> dict:
    c = ctx.cfg
    return setmetrics.fid_kid(
        ctx.nulls, path, fa, la, fb, lb, ctx.class_names, c.kid_subsets, c.kid_subset_size
    )


def _prdc(ctx: Context, path: str, images, labels) -> dict | None:
    try:
        res = prdc.score(ctx.shared["prdc_ref"], images, labels)
    except ValueError as e:
        ctx.nulls.null(path, str(e))
        return None
    for name, v in res["per_class"].items():
        if v is None:
            ctx.nulls.null(f"{path}.per_class.{name}", "fewer than 2 images of the class")
    prdc.null_undefined(ctx.nulls, path, res)
    return res


def compute(ctx: Context) -> dict[str, Any]:
    ref, (x, y) = ctx.shared["ref"], ctx.shared["syn"]
    tr, va, K = ctx.train, ctx.val, ctx.num_classes
    syn_feats, tr_feats = ref.embed(x), ctx.shared["train_feats"]
    n = [min(int(np.sum(y == c)), int(np.sum(tr.labels == c))) for c in range(K)]
    si = setmetrics.per_class_subset(y, n, seed=2)
    ti = setmetrics.per_class_subset(tr.labels, n, seed=1)
    te_f, te_l = ref.test_feats, ref.test_labels
    out: dict[str, Any] = {
        "features": ctx.results["feature_space"]["description"],
        "n_per_class": dict(zip(ctx.class_names, n, strict=True)),
        "synthetic_vs_test": _fk(
            ctx, "fid_kid.synthetic_vs_test", syn_feats[si], y[si], te_f, te_l
        ),
        "real_train_vs_test": _fk(
            ctx, "fid_kid.real_train_vs_test", tr_feats[ti], tr.labels[ti], te_f, te_l
        ),
        "real_val_vs_test": None,
    }
    val_feats = ref.embed(va.images) if len(va) else None
    if val_feats is not None:
        out["real_val_vs_test"] = _fk(
            ctx, "fid_kid.real_val_vs_test", val_feats, va.labels, te_f, te_l
        )
    else:
        ctx.nulls.null("fid_kid.real_val_vs_test", "the run's split has no validation images")
    f_syn = out["synthetic_vs_test"]["overall"]["fid"]
    f_ref = out["real_train_vs_test"]["overall"]["fid"]
    ratio = f_syn / f_ref if f_syn is not None and f_ref else None
    out["ratio_synthetic_to_real_train"] = ratio
    if ratio is None:
        ctx.nulls.null("fid_kid.ratio_synthetic_to_real_train", "one of the two FIDs is n/a or 0")
    pr = {"synthetic": _prdc(ctx, "prdc.synthetic", x, y)}
    pr["real_val"] = _prdc(ctx, "prdc.real_val", va.images, va.labels) if len(va) > 1 else None
    if pr["real_val"] is None and "prdc.real_val" not in ctx.nulls.reasons:
        ctx.nulls.null("prdc.real_val", "fewer than 2 validation images")
    pr["k"] = ctx.shared["prdc_ref"].k
    pr["reference"] = ctx.shared["prdc_ref"].describe()
    return {"fid_kid": out, "prdc": pr}


def _fid_rows(fk: dict, names: list[str]) -> list[list[str]]:
    rows = []
    for key, label in (
        ("synthetic_vs_test", "synthetic vs test"),
        ("real_train_vs_test", "real train vs test"),
        ("real_val_vs_test", "real val vs test"),
    ):
        b = fk.get(key)
        if b is None:
            rows.append([label] + ["n/a"] * (2 * len(names) + 2))
            continue
        rows.append(
            [
                f"{label} (n={b['overall']['n_a']} vs {b['overall']['n_b']})",
                f(b["overall"]["fid"]),
                *(f(b["per_class"][cn]["fid"]) for cn in names),
                f(b["overall"]["kid"], 4),
                *(f(b["per_class"][cn]["kid"], 4) for cn in names),
            ]
        )
    return rows


def _prdc_rows(pr: dict, names: list[str]) -> list[list[str]]:
    rows = []
    split = pr.get("reference", {}).get("split", "test")
    for key, label in (("synthetic", "synthetic"), ("real_val", "real val")):
        label = f"{label} vs {split}"
        b = pr.get(key)
        for scope in ("overall", *names):
            v = (
                None
                if b is None
                else (b["overall"] if scope == "overall" else b["per_class"][scope])
            )
            rows.append([label, scope, *(f(None if v is None else v[k]) for k in PRDC_KEYS)])
    return rows


def _prdc_reading(pr: dict) -> str:
    """How to read the PRDC table, naming the real manifold it measures against."""
    ref = pr.get("reference") or {"split": "test", "n": "?", "features_at": "?"}
    head = (
        "Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. "
        f"2020) against the real {ref['split']} split (n = {ref['n']}, k = {pr['k']}, "
        f"features at {ref['features_at']})"
    )
    if ref.get("recall_k") not in (None, pr["k"]):
        head += f"; recall's own k = {ref['recall_k']}, chosen on the controls (section 11)"
    if ref.get("equal_n_per_class"):
        head += (
            f"; recall and coverage depend on a set's size, so both are measured at the held-out "
            f"size the controls validated ({ref['equal_n_per_class']}; a larger set: mean of "
            f"{ref['equal_n_subsets']} random subsets; a smaller one, like the DDPM sampler row's, "
            "whole)"
        )
    if ref["split"] == "train":
        return (
            f"{head}, the real training distribution, as in both papers: precision = share of "
            "samples inside the real training manifold (realism), recall = share of the real "
            "manifold covered by the samples' manifold (diversity); real val (unseen by every "
            "model) vs train is what real images reach"
        )
    return (
        f"{head}: precision = share of samples inside the real manifold (realism), recall = "
        "share of real images inside the samples' manifold (coverage of the data); real val "
        "vs test is what real images reach"
    )


def render(r: dict) -> str:
    fk, pr = r["fid_kid"], r["prdc"]
    names = list(fk["n_per_class"])
    L = [HEADER, ""]
    L += [
        f"Features: {fk['features']} (chosen by the controls, section 11). Synthetic and "
        f"real-train sets use the same number of images per class ({fk['n_per_class']}, random "
        "subsets) so both carry the same finite-sample bias; real train vs real test is the "
        "real-vs-real scale, real val vs real test (both unseen by every model, but fewer "
        "images) a second one. KID is the unbiased cubic-kernel MMD² (can be slightly "
        "negative)" + untrusted_note(r, ["fid", "kid"]) + ".",
        "",
    ]
    header = ["comparison", "FID", *(f"FID {cn}" for cn in names), "KID"]
    L += table([*header, *(f"KID {cn}" for cn in names)], _fid_rows(fk, names))
    if fk.get("ratio_synthetic_to_real_train") is not None:
        L += [
            f"Synthetic FID is {fk['ratio_synthetic_to_real_train']:.2f}x the real-train-vs-test "
            "FID at equal n.",
            "",
        ]
    L += [_prdc_reading(pr) + untrusted_note(r, list(PRDC_KEYS)) + ".", ""]
    L += table(["set", "class", *PRDC_KEYS], _prdc_rows(pr, names))
    return "\n".join(L + nulls_note(r["null_reasons"], ["fid_kid.", "prdc."]))
