"""Section 7: memorisation, nearest-neighbour realism, and the difference maps of section 1.

The search compares every synthetic image with every training image and its mirror image
(a mirrored copy of a training slice is a copy too); real test images, never seen by the
generator, give the reference distribution of nearest-train SSIM. Far below it = unlike every
real slice (unrealistic); above every held-out image (the test split, plus fresh slices on the
binary built-in set: `data.calibration_slices`) = closer to a training image than any new
slice is (memorised).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_mri_ldm import plots
from jax_mri_ldm.evaluation import neighbours, scoring
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, img, table

HEADER = "## 7. Memorisation and realism"


def _search(ctx: Context, x: np.ndarray) -> tuple[dict, np.ndarray]:
    """memorisation_report against train + mirrored train (indices into that stack)."""
    tr = ctx.seen_by_generator.images  # training split + any extra training images
    refs, groups = scoring.with_mirrors(tr)  # (2T, H, W, 1), (2T,)
    search = min(int(ctx.cfg.memorisation_search_size), int(x.shape[1]))
    mem = neighbours.memorisation_report(
        x,
        refs,
        ctx.test.images,
        metric="ssim",
        search_size=search,
        top_k=5,
        train_groups=groups,
        train_own=ctx.shared["ref"].train_own,  # the controls' reference: one search, one rule
        calibration=ctx.calibration_images,
        calibration_nn=ctx.shared["ref"].calibration_nn,  # searched once, by the controls
    )
    extra = len(ctx.seen_by_generator) - len(ctx.train)
    mem["reference"] = "training images and their mirror images" + (
        f" (incl. {extra} extra training images)" if extra else ""
    )
    cal = ctx.calibration
    mem["calibration"] = None if cal is None else {"source": SOURCE, "counts": cal.counts()}
    return mem, refs


SOURCE = "fresh built-in slices (config.memorisation_calibration_per_class)"


def _difference_maps(ctx: Context, x, y, mem: dict, refs: np.ndarray) -> dict:
    K = ctx.num_classes
    per_cls = max(1, ctx.cfg.difference_pairs // K)
    idx = np.concatenate([np.flatnonzero(y == c)[:per_cls] for c in range(K)])
    nn_all = np.asarray(mem["synthetic_to_train"]["index"])
    nn = nn_all[idx]
    diff = np.abs(x[idx] - refs[nn])
    out = {
        "synthetic_index": idx.tolist(),
        "nearest_train_index": (nn % len(ctx.seen_by_generator)).tolist(),
        "nearest_is_mirrored": (nn >= len(ctx.seen_by_generator)).tolist(),
        "nearest_ssim": [mem["synthetic_to_train"]["score"][i] for i in idx],
        "mean_abs_difference": diff.reshape(len(idx), -1).mean(axis=1).tolist(),
        "mean_abs_difference_all_synthetic": float(np.mean(np.abs(x - refs[nn_all]))),
    }
    ctx.figures["difference_maps"] = plots.save_pairs_figure(
        x[idx],
        refs[nn],
        ctx.figure_path("difference_maps"),
        ("synthetic", "most similar real"),
        titles=[
            f"{ctx.class_names[y[i]]}, mean |d| {d:.3f}"
            for i, d in zip(idx, out["mean_abs_difference"], strict=True)
        ],
        suptitle="D = |x - x_hat|: synthetic vs its most similar training image (SSIM search)",
    )
    return out


# Nearest-training SSIM ratios (synthetic / real test) outside [LOW, HIGH] are read as too
# far from every real slice (unrealistic) or as closer to the training set than new patients
# are (low novelty, short of flagged copies).
REALISM_RATIO_LOW = 0.8
REALISM_RATIO_HIGH = 1.5


def realism(mem: dict) -> dict:
    """The samples' median nearest-training SSIM against the real test images', and a reading."""
    syn = mem["synthetic_to_train"]["summary"]["median"]
    real = mem["test_to_train"]["summary"]["median"]
    ratio = syn / real if real > 0 else None
    if ratio is None:
        reading = "undefined"
    elif mem["fraction_flagged"] > 0.01:
        reading = "too close: part of the set copies training images"
    elif ratio < REALISM_RATIO_LOW:
        reading = "too far: the samples are unlike every real slice (unrealistic)"
    elif ratio > REALISM_RATIO_HIGH:
        reading = (
            "low novelty: much closer to the training images than real unseen images are "
            "(no flagged copies; expect look-alike samples)"
        )
    else:
        reading = "as close to the training images as real unseen images are"
    return {"synthetic_median": syn, "real_test_median": real, "ratio": ratio, "reading": reading}


def compute(ctx: Context) -> dict[str, Any]:
    x, y = ctx.shared["syn"]
    mem, refs = _search(ctx, x)
    ctx.figures["memorisation_hist"] = plots.save_memorisation_histogram(
        mem, ctx.figure_path("memorisation_hist")
    )
    pairs = mem["nearest_pairs"]
    ctx.figures["memorisation_pairs"] = plots.save_pairs_figure(
        x[[p["synthetic"] for p in pairs]],
        refs[[p["train"] for p in pairs]],
        ctx.figure_path("memorisation_pairs"),
        ("synthetic", "nearest train"),
        titles=[f"SSIM {p['score']:.3f}" for p in pairs],
        suptitle="the five synthetic images closest to a training image (or its mirror)",
    )
    diff = _difference_maps(ctx, x, y, mem, refs)
    return {
        "memorisation": {**mem, "flagged_count": len(mem["flagged"])},
        "realism": realism(mem),
        "difference_maps": diff,
    }


def _relative_lines(me: dict) -> list[str]:
    rel = me.get("relative")
    if rel is None:  # reports written before the relative rule
        return []
    n, k = len(me["synthetic_to_train"]["score"]), len(rel["flagged"])
    st, rt = rel["synthetic"]["summary"], rel["test"]["summary"]
    L = [
        "**Relative rule** (`neighbours.relative_distance`, after Alaa et al. 2022): each "
        "nearest distance (1 - SSIM) divided by that training image's own distance to its "
        "nearest other training image; below 1 an image is closer to the slice than every "
        "other training slice is. Flagged: below every held-out image's ratio "
        f"({rel['threshold']:.4f}). **{k} of {n} synthetic images flagged "
        f"({100 * rel['fraction_flagged']:.1f} %).** It looks past smoothness: a smooth, "
        "typical slice lands near many look-alikes without being closer to any of them than "
        "they are to each other (the controls table checks both rules).",
        "",
    ]
    rows = [
        ["synthetic", *(f(st[q]) for q in ("min", "median", "mean"))],
        ["held-out", *(f(rt[q]) for q in ("min", "median", "mean"))],
    ]
    return L + table(["relative distance", "min", "median", "mean"], rows)


def _held_out(me: dict) -> str:
    """Who sets the thresholds: the real test images, or the test split plus fresh slices."""
    n = me.get("threshold_images")
    if not me.get("calibration_to_train"):
        return "real test image is"
    m = n - len(me["test_to_train"]["score"])
    return (
        f"one of {n} held-out images is ({n - m} real test images and {m} fresh built-in "
        "slices never trained on; n held-out images flag 1/(n+1) of honest new images by chance)"
    )


def render(r: dict) -> str:
    me, re_, fig = r["memorisation"], r["realism"], r["figures"]
    st, rt = me["synthetic_to_train"]["summary"], me["test_to_train"]["summary"]
    L = [HEADER, ""]
    L += [
        f"For every synthetic image the most similar training image or mirrored training image "
        f"by SSIM (images resized to {me['search_size']} px); real test images, never seen by "
        "the generator, give the reference distribution. A synthetic image is flagged when it "
        f"is closer to a training image than every {_held_out(me)} (SSIM > "
        f"{me['threshold']:.4f}). **{me['flagged_count']} of "
        f"{len(me['synthetic_to_train']['score'])} synthetic images flagged "
        f"({100 * me['fraction_flagged']:.1f} %).**",
        "",
    ]
    q = ("mean", "median", "p95", "max")
    rows = [
        ["synthetic -> train", *(f(st[k]) for k in q)],
        ["real test -> train", *(f(rt[k]) for k in q)],
    ]
    if me.get("calibration_to_train"):
        ct = me["calibration_to_train"]["summary"]
        rows.append(["fresh slices -> train", *(f(ct[k]) for k in q)])
    L += table(["nearest-train SSIM", "mean", "median", "p95", "max"], rows)
    L += _relative_lines(me)
    L += [
        f"**Realism (nearest-neighbour SSIM):** the median synthetic image is "
        f"{f(re_['ratio'], 2)}x as close to its nearest training image as the median real test "
        f"image ({f(re_['synthetic_median'])} vs {f(re_['real_test_median'])}): "
        f"{re_['reading']}.",
        "",
        img(fig["memorisation_hist"], "memorisation histogram"),
        "",
        img(fig["memorisation_pairs"], "five nearest pairs"),
        "",
    ]
    return "\n".join(L)
