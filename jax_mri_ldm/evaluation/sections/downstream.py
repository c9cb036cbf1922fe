"""Section 8: the downstream study (does adding synthetic slices help a real-data classifier?).

Scored on every real image held out from the generator (`evaluation_set`: the splits of
`downstream_eval_splits`), with paired gains and the synthetic-amount sweep of `study`; the
reading guide is docs/evaluation.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_mri_ldm import plots
from jax_mri_ldm.evaluation import study
from jax_mri_ldm.evaluation.context import Context, Nulls
from jax_mri_ldm.evaluation.markdown import ci, img, nulls_note, table
from jax_mri_ldm.evaluation.sections.classifier import classifier_kwargs

HEADER = "## 8. Downstream study"


def _ci_reason(summ: dict, eval_counts: dict[str, int]) -> str:
    if summ.get("mean") is None:
        return (
            "no finite per-seed value: the metric is undefined on this evaluation set "
            f"(counts {eval_counts}) for every seed"
        )
    return f"a 95 % CI needs >= 2 finite per-seed values; got n={summ.get('n')}"


def _explain_runs(nulls: Nulls, path: str, runs: list, names, eval_counts) -> None:
    for i, r in enumerate(runs):
        for m in names:
            if r.get(m) is None:
                nulls.null(
                    f"{path}.per_seed.{i}.{m}",
                    f"{m} is undefined when the evaluation set lacks a class "
                    f"(counts {eval_counts})",
                )


def _explain_paired(nulls: Nulls, path: str, comp: dict, eval_counts) -> None:
    for m, summ in comp.items():
        for k in ("mean", "half_width"):
            if summ.get(k) is None:
                nulls.null(f"{path}.{m}.{k}", _ci_reason(summ, eval_counts))
        for i, v in enumerate(summ.get("per_seed", [])):
            if v is None:
                nulls.null(f"{path}.{m}.per_seed.{i}", "undefined in either arm for this seed")


def explain_nulls(nulls: Nulls, ds: dict, eval_counts: dict[str, int]) -> None:
    """Records why each null number of the study is null."""
    names = ds["config"]["metric_names"]
    for arm, a in ds["arms"].items():
        _explain_runs(nulls, f"downstream.arms.{arm}", a["per_seed"], names, eval_counts)
        for m, summ in a["summary"].items():
            for k in ("mean", "half_width"):
                if summ.get(k) is None:
                    nulls.null(
                        f"downstream.arms.{arm}.summary.{m}.{k}", _ci_reason(summ, eval_counts)
                    )
    for name, comp in ds["comparisons"].items():
        _explain_paired(nulls, f"downstream.comparisons.{name}", comp, eval_counts)
    for i, row in enumerate(ds.get("syn_sweep", {}).get("rows", [])):
        path = f"downstream.syn_sweep.rows.{i}"
        _explain_runs(nulls, path, row["per_seed"], names, eval_counts)
        _explain_paired(nulls, f"{path}.summary", row["summary"], eval_counts)
        _explain_paired(nulls, f"{path}.gain", row["gain"], eval_counts)
    for m, eq in ds["real_data_equivalence"].items():
        for k, v in eq.items():
            if v is None:
                reason = (
                    "|real - half| < 1e-6 on seed means: there is no gap to recover"
                    if k == "gap_recovered"
                    else "no finite per-seed value of this arm"
                )
                nulls.null(f"downstream.real_data_equivalence.{m}.{k}", reason)


def describe_diff(summ: dict, what: str) -> str:
    m, h = summ.get("mean"), summ.get("half_width")
    if m is None:
        return f"{what}: undefined"
    if h is None:
        return f"{what} changed by {m:+.3f} (one seed: no interval, so no conclusion)"
    lo, hi = m - h, m + h
    if _gain_established(summ):
        verdict = "an improvement"
    elif hi < 0:
        verdict = "a deterioration"
    else:
        verdict = "no detectable effect (the interval includes 0)"
    return f"{what} changed by {m:+.3f} (95 % CI [{lo:+.3f}, {hi:+.3f}]): {verdict}"


def interpret_downstream(
    ds: dict, fidelity: float | None, real_fidelity: float | None, fid_ratio: float | None
) -> str:
    """Plain-language reading of the downstream study, from its numbers only.

    Args:
      ds: `study.downstream_study` output.
      fidelity: overall class fidelity of the synthetic images.
      real_fidelity: the domain classifier's accuracy on real test images (section 3).
      fid_ratio: synthetic FID / real-train-vs-test FID (same n), or None.

    Returns:
      A paragraph of markdown.
    """
    comps = ds["comparisons"]
    parts = []
    if "real+syn - real" in comps:
        parts.append(
            describe_diff(
                comps["real+syn - real"]["accuracy"],
                "Adding synthetic images to all real images: accuracy",
            )
            + "; "
            + describe_diff(comps["real+syn - real"]["auc"], "AUC")
            + "."
        )
    if "half+syn - half" in comps:
        parts.append(
            describe_diff(
                comps["half+syn - half"]["accuracy"],
                "With half the real data, adding synthetic images: accuracy",
            )
            + "; "
            + describe_diff(comps["half+syn - half"]["auc"], "AUC")
            + "."
        )
    eq = ds.get("real_data_equivalence", {}).get("accuracy")
    if eq and eq.get("gap_recovered") is not None:
        parts.append(
            f"Share of the half -> all-real accuracy gap recovered by the synthetic images: "
            f"{eq['gap_recovered']:.2f} (1 = worth the missing real half, 0 = worth nothing)."
        )
    syn = ds["arms"].get("syn", {}).get("summary", {}).get("accuracy")
    real = ds["arms"].get("real", {}).get("summary", {}).get("accuracy")
    if syn and real and syn["mean"] is not None and real["mean"] is not None:
        parts.append(
            f"A classifier trained on synthetic images only reaches {syn['mean']:.3f} accuracy "
            f"on the real evaluation images vs {real['mean']:.3f} when trained on real ones."
        )
    limits = "; ".join(_limits(ds, real, fidelity, real_fidelity, fid_ratio))
    helped_all, helped_half = _helped(comps, "real+syn - real"), _helped(comps, "half+syn - half")
    if helped_all:
        parts.append(f"Caveats: {limits}.")
    elif helped_half:
        full = "it did not" if "real+syn - real" in comps else "it was not measured"
        parts.append(
            "Synthetic data measurably helped only with half the real data (a gain whose "
            f"interval excludes 0); with all real images {full}. Caveats: {limits}."
        )
    else:
        parts.append(f"Synthetic data did not measurably help here. Likely limits: {limits}.")
    return " ".join(parts)


def _gain_established(summ: dict) -> bool:
    """Whether a paired difference's interval lies above 0."""
    m, h = summ.get("mean"), summ.get("half_width")
    return m is not None and h is not None and m - h > 0


def _helped(comps: dict, name: str) -> bool:
    """Whether comparison `name` has an accuracy or AUC gain whose interval excludes 0."""
    comp = comps.get(name, {})
    return any(_gain_established(comp.get(metric) or {}) for metric in ("accuracy", "auc"))


def _limits(ds: dict, real: dict | None, fidelity, real_fidelity, fid_ratio) -> list[str]:
    """Reasons, read off the numbers, why synthetic data may not have helped."""
    limits = []
    n_eval = sum(_eval_counts(ds).values())
    if real and real["mean"] is not None and real["mean"] >= 0.95:
        limits.append(f"the real-only baseline is already at {real['mean']:.3f} (ceiling)")
    if fidelity is not None and real_fidelity is not None and fidelity < real_fidelity - 0.05:
        filtered = ds["config"].get("syn_keep_prob") is not None
        limits.append(
            f"class fidelity of the synthetic images ({fidelity:.3f}) is below the classifier's "
            f"accuracy on real test images ({real_fidelity:.3f}), so part of the synthetic set "
            + ("is off-label (the label filter drops what its classifier sees as such)"
               if filtered else "acts as label noise")
        )  # fmt: skip
    if fid_ratio is not None and fid_ratio > 2.0:
        limits.append(
            f"the domain FID is {fid_ratio:.1f}x the real-vs-real reference: the synthetic "
            "images are separable from real ones in feature space"
        )
    if n_eval < 100:
        limits.append(f"the evaluation set has only {n_eval} real images, so intervals are wide")
    if len(ds["config"]["seeds"]) < 5:
        limits.append(f"only {len(ds['config']['seeds'])} seed(s) were run")
    limits.append(
        "the generator learned from the same real training images, so it can add variation "
        "but no information the real set lacks"
    )
    return limits


def _eval_counts(ds: dict) -> dict[str, int]:
    """Class counts of the set that scored the study (`real_test` in reports before 'real_eval')."""
    data = ds["data"]
    return data.get("real_eval") or data["real_test"]


def evaluation_set(ctx: Context) -> tuple[tuple, dict[str, Any]]:
    """The real evaluation set (`study.evaluation_set` of the configured splits) and its JSON."""
    parts = {"val": ctx.val, "test": ctx.test}
    requested = tuple(ctx.cfg.downstream_eval_splits)
    (x, y), used, note = study.evaluation_set(
        {k: (v.images, v.labels) for k, v in parts.items()}, requested
    )
    info: dict[str, Any] = {
        "requested": list(requested),
        "splits": list(used),
        "per_split": {k: parts[k].counts() for k in used},
        "size": int(y.shape[0]),
    }
    if note:
        info["fallback"] = note
    return (x, y), info


def sweep_plan(
    train_counts: dict[str, int], multiples, pool: int
) -> tuple[tuple[float, ...], list[dict]]:
    """The sweep multiples whose synthetic counts fit the main set (`pool` per class), and one
    {'multiple', 'needs', 'reason'} per multiple left out."""
    half = study.half_sizes(list(train_counts.values()), study.HALF_FRACTION)
    keep, skipped = [], []
    for m, counts in zip(multiples, study.sweep_counts(half, multiples), strict=True):
        if max(counts) <= pool:
            keep.append(float(m))
            continue
        needs = dict(zip(train_counts, counts, strict=True))
        reason = (
            f"needs {needs} synthetic images per class; the main set has {pool} per class "
            "(raise --config.num_synthetic_per_class)"
        )
        skipped.append({"multiple": float(m), "needs": needs, "reason": reason})
    return tuple(keep), skipped


def compute(ctx: Context) -> dict[str, Any]:
    x, y = ctx.shared["syn"]
    tr = ctx.train
    (ev_x, ev_y), eval_info = evaluation_set(ctx)
    cfg = ctx.cfg
    multiples, skipped = sweep_plan(
        tr.counts(), cfg.downstream_syn_multiples, cfg.num_synthetic_per_class
    )
    ds = study.downstream_study(
        (tr.images, tr.labels),
        (ev_x, ev_y),
        (x, y),
        n_per_class=cfg.num_synthetic_per_class,
        seeds=tuple(range(cfg.seeds)),
        syn_multiples=multiples,
        steps=cfg.study_steps,
        progress=lambda line: ctx.log(f"  {line}"),
        class_names=ctx.class_names,
        memo=store.result if (store := ctx.shared.get("store")) else None,
        syn_share=cfg.downstream_syn_share or None,  # 0: no fixed share
        syn_keep_prob=cfg.downstream_syn_keep_prob or None,  # 0: keep all
        **classifier_kwargs(ctx),
    )
    ds["data"]["real_test"] = ctx.test.counts()  # the test split alone, as before 'real_eval'
    ds["eval_set"] = eval_info
    if skipped:
        ds.setdefault("syn_sweep", {"baseline": "half", "rows": []})["skipped"] = skipped
    explain_nulls(ctx.nulls, ds, ds["data"]["real_eval"])
    fid_ratio = ctx.results["fid_kid"]["ratio_synthetic_to_real_train"]
    real_fidelity = ctx.shared["real_fidelity"]
    text = interpret_downstream(ds, ctx.shared["syn_fidelity"], real_fidelity, fid_ratio)
    splits = " + ".join(eval_info["splits"])
    ctx.figures["downstream"] = plots.save_downstream_figure(
        ds, ctx.figure_path("downstream"), ds["config"]["metric_names"], f"real {splits}"
    )
    return {"downstream": {**ds, "interpretation": text}}


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def describe_eval_set(dsr: dict) -> str:
    """'the real evaluation set: ...' with its splits and per-class counts (old reports: test)."""
    info = dsr.get("eval_set")
    if info is None:
        return f"the real test split ({_fmt_counts(_eval_counts(dsr))})"
    per = "; ".join(f"{s}: {_fmt_counts(c)}" for s, c in info["per_split"].items())
    text = (
        f"the real evaluation set, {' + '.join(info['splits'])} "
        f"split{'s' if len(info['splits']) > 1 else ''} ({info['size']} images: "
        f"{_fmt_counts(_eval_counts(dsr))}; {per}), held-out images that neither the VAE, the "
        "LDM nor any arm trained on"
    )
    if "fallback" in info:
        text += f" ({info['fallback']})"
    return text


def _sweep_rows(dsr: dict) -> list[list]:
    comp = dsr["comparisons"].get("half+syn - half")
    base = dsr["arms"].get("half+syn")
    rows = []
    if comp and base:
        n = dsr["config"]["n_per_class"]
        rows.append(
            [f"fixed N = {n} per class (headline)", ci(base["summary"]["accuracy"]),
             ci(base["summary"]["auc"]), ci(comp["accuracy"]), ci(comp["auc"])]
        )  # fmt: skip
    for row in dsr.get("syn_sweep", {}).get("rows", []):
        counts = _fmt_counts(row["synthetic_per_class"])
        used = [r["synthetic_used"] for r in row["per_seed"] if "synthetic_used" in r]
        if used:  # the label filter's kept counts, mean over seeds
            counts += "; kept " + ", ".join(
                f"{n} {np.mean([u[n] for u in used]):.0f}" for n in row["synthetic_per_class"]
            )
        s, g = row["summary"], row["gain"]
        rows.append(
            [f"{row['multiple']:g} x half ({counts})", ci(s["accuracy"]), ci(s["auc"]),
             ci(g["accuracy"]), ci(g["auc"])]
        )  # fmt: skip
    return rows


def render_sweep(dsr: dict) -> list[str]:
    """The synthetic-amount table (markdown lines; none without a sweep)."""
    sweep = dsr.get("syn_sweep")
    if not sweep:
        return []
    half = dsr["arms"]["half"]["train_counts"]["real"]
    L = [
        "How much synthetic data: half + synthetic at multiples of the half real set's size per "
        f"class ({_fmt_counts(half)}); gains over `half` are "
        "paired as above. The fixed-N row is the headline arm; its definition does not depend "
        "on the sweep."
        + (" With a fixed synthetic share (the recipe above), the rows differ in how many "
           "distinct synthetic images are drawn, not in their weight in training."
           if dsr["config"].get("syn_share") is not None else ""),
        "",
    ]  # fmt: skip
    L += table(
        ["synthetic per class", "accuracy", "AUC", "accuracy gain", "AUC gain"], _sweep_rows(dsr)
    )
    for sk in sweep.get("skipped", []):
        L += [f"- multiple {sk['multiple']:g} not run: {sk['reason']}."]
    return L + ([""] if sweep.get("skipped") else [])


def _and(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def describe_recipe(dsr: dict) -> list[str]:
    """How the '+syn' arms take in the synthetic images (markdown lines; none for the plain
    recipe: uniform draws over every synthetic image, and reports before the option)."""
    cfg = dsr["config"]
    share, keep = cfg.get("syn_share"), cfg.get("syn_keep_prob")
    if share is None and keep is None:
        return []
    mixed = [f"`{a}`" for a in ("real+syn", "half+syn") if a in dsr["arms"]]
    mixed += ["the sweep"] if dsr.get("syn_sweep", {}).get("rows") else []
    parts = []
    if share is not None:
        parts.append(
            f"synthetic images get {share:.0%} of each class's training draws in "
            f"{_and(mixed)}, however many there are"
        )
    if keep is not None:
        vet = {"real+syn": "`real` for `real+syn`", "half+syn": "`half` for `half+syn`"}
        vets = [v for a, v in vet.items() if a in dsr["arms"]]
        vets += ["`half` for the sweep"] if "the sweep" in mixed else []
        parts.append(
            "a label filter keeps the synthetic images that the same seed's classifier of the "
            f"arm's real images alone ({_and(vets)}) gives P(own label) >= {keep:g}; "
            "the arm table's synthetic count of a filtered arm is its mean kept count over "
            f"seeds (of {cfg['n_per_class']} drawn per class)"
        )
    return ["Recipe (evaluation/synthetic_mix.py): " + "; ".join(parts) + ".", ""]


def render(r: dict) -> str:
    dsr = r["downstream"]
    cfg = dsr["config"]
    names = cfg["metric_names"]
    L = [HEADER, ""]
    L += [
        f"{len(cfg['class_names'])}-class CNN (same architecture as section 3) trained per arm "
        f"and seed for {cfg['steps']} steps, scored on {describe_eval_set(dsr)}; "
        f"{len(cfg['seeds'])} seeds ({cfg['seeds']}), mean ± 95 % Student-t CI over seeds. "
        f"N = {cfg['n_per_class']} synthetic images per class from the main set (when N equals "
        "the main set size every seed uses all of it; seeds then vary the initialisation, the "
        "half split and the batch order).",
        "",
    ]
    L += describe_recipe(dsr)
    arm_rows = []
    for arm, a in dsr["arms"].items():
        counts = a["train_counts"]
        n_real, n_syn = sum(counts["real"].values()), sum(counts["synthetic"].values())
        cells = [ci(a["summary"][m]) for m in names]
        arm_rows.append([f"{arm}: {a['description']}", n_real, n_syn, *cells])
    L += table(["arm", "real", "synthetic", *names], arm_rows)
    comp_rows = [[k, *(ci(c[m]) for m in names)] for k, c in dsr["comparisons"].items()]
    L += [
        "Paired differences: the mean over seeds of each seed's difference (within a seed both "
        "arms share the classifier initialisation, the real half and the synthetic draw), "
        "± the paired Student-t 95 % CI:",
        "",
    ]
    L += table(["difference", *names], comp_rows)
    L += render_sweep(dsr)
    L += [
        img(r["figures"]["downstream"], "downstream study"),
        "",
        f"**Reading.** {dsr['interpretation']}",
        "",
    ]
    return "\n".join(L + nulls_note(r["null_reasons"], ["downstream."]))
