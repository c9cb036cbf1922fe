"""Section 8: the downstream study (does adding synthetic slices help a real-data classifier?)."""

from __future__ import annotations

from typing import Any

from jax_mri_ldm import plots
from jax_mri_ldm.evaluation import study
from jax_mri_ldm.evaluation.context import Context, Nulls
from jax_mri_ldm.evaluation.markdown import ci, img, nulls_note, table
from jax_mri_ldm.evaluation.sections.classifier import classifier_kwargs

HEADER = "## 8. Downstream study"


def explain_nulls(nulls: Nulls, ds: dict, test_counts: dict[str, int]) -> None:
    """Records why each null number of the study is null."""

    def ci_reason(summ: dict) -> str:
        if summ.get("mean") is None:
            return (
                "no finite per-seed value: the metric is undefined on this test split "
                f"(test counts {test_counts}) for every seed"
            )
        return f"a 95 % CI needs >= 2 finite per-seed values; got n={summ.get('n')}"

    for arm, a in ds["arms"].items():
        for i, r in enumerate(a["per_seed"]):
            for m in ds["config"]["metric_names"]:
                if r.get(m) is None:
                    nulls.null(
                        f"downstream.arms.{arm}.per_seed.{i}.{m}",
                        f"{m} is undefined when the test split lacks a class "
                        f"(test counts {test_counts})",
                    )
        for m, summ in a["summary"].items():
            for k in ("mean", "half_width"):
                if summ.get(k) is None:
                    nulls.null(f"downstream.arms.{arm}.summary.{m}.{k}", ci_reason(summ))
    for name, comp in ds["comparisons"].items():
        for m, summ in comp.items():
            for k in ("mean", "half_width"):
                if summ.get(k) is None:
                    nulls.null(f"downstream.comparisons.{name}.{m}.{k}", ci_reason(summ))
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
    if lo > 0:
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
      real_fidelity: the classifier's accuracy on real test images.
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
            f"on real test images vs {real['mean']:.3f} when trained on real ones."
        )
    helped = False
    if "real+syn - real" in comps:
        s = comps["real+syn - real"]["accuracy"]
        helped = s["mean"] is not None and s["half_width"] is not None
        helped = helped and s["mean"] - s["half_width"] > 0
    limits = _limits(ds, real, fidelity, real_fidelity, fid_ratio)
    if not helped:
        parts.append(
            "Synthetic data did not measurably help here. Likely limits: " + "; ".join(limits) + "."
        )
    else:
        parts.append("Caveats: " + "; ".join(limits) + ".")
    return " ".join(parts)


def _limits(ds: dict, real: dict | None, fidelity, real_fidelity, fid_ratio) -> list[str]:
    """Reasons, read off the numbers, why synthetic data may not have helped."""
    limits = []
    n_test = sum(ds["data"]["real_test"].values())
    if real and real["mean"] is not None and real["mean"] >= 0.95:
        limits.append(f"the real-only baseline is already at {real['mean']:.3f} (ceiling)")
    if fidelity is not None and real_fidelity is not None and fidelity < real_fidelity - 0.05:
        limits.append(
            f"class fidelity of the synthetic images ({fidelity:.3f}) is below the classifier's "
            f"accuracy on real test images ({real_fidelity:.3f}), so part of the synthetic set "
            "acts as label noise"
        )
    if fid_ratio is not None and fid_ratio > 2.0:
        limits.append(
            f"the domain FID is {fid_ratio:.1f}x the real-vs-real reference: the synthetic "
            "images are separable from real ones in feature space"
        )
    if n_test < 100:
        limits.append(f"the test split has only {n_test} images, so intervals are wide")
    if len(ds["config"]["seeds"]) < 5:
        limits.append(f"only {len(ds['config']['seeds'])} seed(s) were run")
    limits.append(
        "the generator learned from the same real training images, so it can add variation "
        "but no information the real set lacks"
    )
    return limits


def compute(ctx: Context) -> dict[str, Any]:
    x, y = ctx.shared["syn"]
    tr, te = ctx.train, ctx.test
    ds = study.downstream_study(
        (tr.images, tr.labels),
        (te.images, te.labels),
        (x, y),
        n_per_class=ctx.cfg.num_synthetic_per_class,
        seeds=tuple(range(ctx.cfg.seeds)),
        steps=ctx.cfg.study_steps,
        progress=lambda line: ctx.log(f"  {line}"),
        class_names=ctx.class_names,
        **classifier_kwargs(ctx),
    )
    explain_nulls(ctx.nulls, ds, te.counts())
    fid_ratio = ctx.results["fid_kid"]["ratio_synthetic_to_real_train"]
    real_fidelity = ctx.shared["real_fidelity"]
    text = interpret_downstream(ds, ctx.shared["syn_fidelity"], real_fidelity, fid_ratio)
    ctx.figures["downstream"] = plots.save_downstream_figure(
        ds, ctx.figure_path("downstream"), ds["config"]["metric_names"]
    )
    return {"downstream": {**ds, "interpretation": text}}


def render(r: dict) -> str:
    dsr = r["downstream"]
    cfg = dsr["config"]
    names = cfg["metric_names"]
    L = [HEADER, ""]
    L += [
        f"{len(cfg['class_names'])}-class CNN (same architecture as section 3) trained per arm "
        f"and seed for {cfg['steps']} steps, scored on the real test split; "
        f"{len(cfg['seeds'])} seeds ({cfg['seeds']}), mean ± 95 % Student-t CI over seeds. "
        f"N = {cfg['n_per_class']} synthetic images per class from the main set (when N equals "
        "the main set size every seed uses all of it; seeds then vary the initialisation, the "
        "half split and the batch order).",
        "",
    ]
    arm_rows = []
    for arm, a in dsr["arms"].items():
        counts = a["train_counts"]
        n_real, n_syn = sum(counts["real"].values()), sum(counts["synthetic"].values())
        cells = [ci(a["summary"][m]) for m in names]
        arm_rows.append([f"{arm}: {a['description']}", n_real, n_syn, *cells])
    L += table(["arm", "real", "synthetic", *names], arm_rows)
    comp_rows = [[k, *(ci(c[m]) for m in names)] for k, c in dsr["comparisons"].items()]
    L += ["Paired differences (same seed, same init, same half):", ""]
    L += table(["difference", *names], comp_rows)
    L += [
        img(r["figures"]["downstream"], "downstream study"),
        "",
        f"**Reading.** {dsr['interpretation']}",
        "",
    ]
    return "\n".join(L + nulls_note(r["null_reasons"], ["downstream."]))
