"""Section 9: the guidance sweep and the main synthetic set it chooses w for."""

from __future__ import annotations

import dataclasses
from typing import Any

from jax_mri_ldm import plots
from jax_mri_ldm.evaluation import setmetrics
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, img, nulls_note, table
from jax_mri_ldm.evaluation.sections import common

HEADER = "## 9. Guidance sweep"
ROW_DETAIL = (".fid_kid.", ".diversity_detail.", ".fidelity_detail.", ".prdc")


def sweep_size(cfg: Any) -> int:
    """Images per class per w: `sweep_per_class`, or the main set's size when that is 0.

    At the main set's size the chosen w's row is the main set itself (image i of a setting is
    the same for every n, evaluation/generator.py), so the w is judged on the images the report
    then scores, not on a smaller draw whose class fidelity can cross the bar by one image.
    """
    return int(cfg.sweep_per_class) or int(cfg.num_synthetic_per_class)


def _sweep_rows(ctx: Context) -> list[dict]:
    rows = []
    for w in ctx.cfg.guidance_scales:
        x, y = ctx.shared["gen"].generate(common.main_spec(ctx, w), sweep_size(ctx.cfg))
        row, _ = common.score_row(ctx, x, y, f"guidance_sweep.rows.{len(rows)}")
        rows.append({"guidance": float(w), **row})
    return rows


def _choose(ctx: Context, sweep: dict) -> float:
    c = ctx.cfg
    if c.guidance_scale is not None:
        sweep.update(chosen=float(c.guidance_scale), rule="set by --config.guidance_scale")
        sweep["decided_by"] = "user"
    elif sweep["rows"]:
        use = common.trusted(ctx, ("fidelity", "fid"))
        sweep.update(
            setmetrics.choose_guidance(
                sweep["rows"],
                ctx.shared["real_fidelity"],
                c.fidelity_tolerance,
                use,
                real_recall=ctx.shared.get("real_recall"),
                images_per_class=sweep_size(c),
            )
        )
    if sweep.get("chosen") is None:
        default = ctx.run.default_spec().guidance_scale
        why = "no sweep" if not sweep["rows"] else sweep.get("decided_by", "")
        sweep.update(chosen=float(default), rule=f"{why}: the sampler's default w")
        sweep.setdefault("decided_by", "default")
    return float(sweep["chosen"])


def _figures(ctx: Context, sweep: dict) -> None:
    ctx.figures["guidance_sweep"] = plots.save_guidance_figure(
        sweep, ctx.figure_path("guidance_sweep")
    )
    n_show = min(4, sweep_size(ctx.cfg))
    rows = []
    for w in ctx.cfg.guidance_scales:
        x, y = ctx.shared["gen"].generate(common.main_spec(ctx, w), sweep_size(ctx.cfg))
        rows.append((f"w={w:g}", common.first_per_class(x, y, ctx.num_classes, n_show)))
    order = ", ".join(ctx.class_names)
    ctx.figures["guidance_samples"] = plots.save_rows_figure(
        rows,
        ctx.figure_path("guidance_samples"),
        title=f"same noise, growing w: {n_show} per class ({order}) per row",
    )


def compute(ctx: Context) -> dict[str, Any]:
    T = ctx.run.schedule.num_timesteps
    rows = _sweep_rows(ctx)
    n = [sweep_size(ctx.cfg)] * ctx.num_classes
    spec = common.main_spec(ctx, 0).resolved(T)
    test_div = common.test_diversity(ctx)
    sweep: dict[str, Any] = {
        "sampler": spec.name(T),
        "spacing": spec.spacing,
        "images_per_class": sweep_size(ctx.cfg),
        "is_main_set_size": sweep_size(ctx.cfg) == int(ctx.cfg.num_synthetic_per_class),
        "rows": rows,
        "real_fidelity": ctx.shared["real_fidelity"],
        "real_recall": ctx.shared.get("real_recall"),
        "real_fid": common.ref_fid_same_n(ctx, n) if rows else None,
        "real_diversity": test_div["mean"],
    }
    if rows and sweep["real_fid"] is None:
        ctx.nulls.null("guidance_sweep.real_fid", "too few real images for FID at this n")
    main_w = _choose(ctx, sweep)
    if sweep["real_diversity"] is None:
        reason = ctx.nulls.reasons["diversity.real_test.mean"]
        ctx.nulls.null("guidance_sweep.real_diversity", reason)
    if rows:
        _figures(ctx, sweep)
    ctx.shared["main_w"] = main_w
    return {"guidance_sweep": sweep}


def compute_main_set(ctx: Context) -> dict[str, Any]:
    """Generates the main synthetic set at the chosen w (shared by sections 1 and 4-8)."""
    spec = common.main_spec(ctx, ctx.shared["main_w"])
    n = ctx.cfg.num_synthetic_per_class
    x, y = ctx.shared["gen"].generate(spec, n)
    ctx.shared["syn"] = (x, y)
    T = ctx.run.schedule.num_timesteps
    r = spec.resolved(T)
    ctx.shared["main_interval"] = r.guidance_interval
    timing = ctx.shared["gen"].timing(spec, n)
    return {
        "main_set": {
            "sampler": r.name(T),
            "spacing": r.spacing,
            "guidance": ctx.shared["main_w"],
            "images_per_class": n,
            "spec": dataclasses.asdict(r),  # what `sample.py --report=<this report>` samples with
            **timing,
        }
    }


def _is_main(sweep: dict) -> bool:
    """Whether a row of the sweep is the main set: swept at its size (a field reports before
    it lack) at the w the main set uses (a --config.guidance_scale may be one not swept)."""
    swept = any(row["guidance"] == sweep["chosen"] for row in sweep["rows"])
    return bool(sweep.get("is_main_set_size")) and swept


def _per_class(row: dict, name: str) -> float | None:
    return ((row.get("fidelity_detail") or {}).get("per_class") or {}).get(name)


def render(r: dict) -> str:
    gs = r["guidance_sweep"]
    L = [HEADER, ""]
    if not gs["rows"]:
        L += [f"No sweep was run; w = {gs['chosen']:g} ({gs['rule']}).", ""]
        return "\n".join(L + nulls_note(r["null_reasons"], ["guidance_sweep."], hide=ROW_DETAIL))
    L += [
        f"{gs['sampler']} ({gs['spacing']} spacing), {gs['images_per_class']} images per "
        "class per w, the same starting noise for every w"
        + (
            " (the main set's size: the row of its w holds the images of sections 4-8)"
            if _is_main(gs)
            else ""
        )
        + ". FID is overall vs the test split "
        f"(real train vs test at the same n: {f(gs['real_fid'])}); diversity is the mean "
        f"over classes (real test: {f(gs['real_diversity'])}); real test fidelity "
        f"(classifier accuracy): {f(gs['real_fidelity'])}.",
        "",
    ]
    recall = gs.get("real_recall") or {}
    cols = ("fid", "kid", "precision", "recall", "grid", "nn_ssim", "diversity")
    rows = [
        [
            f"{row['guidance']:g}",
            f(row.get("fidelity")),
            *(f(_per_class(row, name)) for name in recall),
            *(f(row.get(k), 4 if k == "kid" else 3) for k in cols),
        ]
        for row in gs["rows"]
    ]
    by_class = [f"fidelity {name} (real {f(v)})" for name, v in recall.items()]
    header = ["w", "fidelity", *by_class, "FID", "KID", "precision", "recall", "grid"]
    L += table([*header, "NN-SSIM", "diversity (MS-SSIM)"], rows)
    L += [
        f"**Recommended default: w = {gs['chosen']:g}.** Rule: {gs['rule']}; decided by: "
        f"{gs['decided_by']}"
        + (f"; qualifying w: {gs['qualified']}" if "qualified" in gs else "")
        + ". The main synthetic set (sections 4-8) uses this w.",
        "",
        img(r["figures"]["guidance_sweep"], "guidance sweep"),
        "",
        img(r["figures"]["guidance_samples"], "samples per w"),
        "",
    ]
    return "\n".join(L + nulls_note(r["null_reasons"], ["guidance_sweep."], hide=ROW_DETAIL))
