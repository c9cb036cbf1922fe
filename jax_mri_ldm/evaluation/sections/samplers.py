"""Section 10: sampler comparison at the main w, and the fastest sampler that matches DDPM.

"Matches DDPM" is judged on the per-image metrics that passed the controls (fidelity,
nearest-train SSIM, spectrum distance, grid score): the sampler's value must lie within DDPM's
95 % interval or on its better side. The interval is a percentile bootstrap of the median for
the continuous metrics and a Wilson interval for fidelity (a 0/1 outcome per image, whose
bootstrap collapses to a point when DDPM's few images are all classified right). Set-level
numbers (FID, precision, recall) are shown but too noisy at DDPM's few images to decide.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jax_mri_ldm import plots
from jax_mri_ldm.evaluation import scoring
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, img, nulls_note, table, verdict
from jax_mri_ldm.evaluation.sections import common
from jax_mri_ldm.evaluation.sections.guidance import ROW_DETAIL
from jax_mri_ldm.pipeline import SamplerSpec

HEADER = "## 10. Sampler comparison"
# per-image metric -> (per-image key, statistic, higher is better); higher None: closer to
# DDPM's is better (two-sided). Fidelity is the mean of a 0/1 outcome per image.
PER_IMAGE = {
    "fidelity": ("correct", np.mean, True),
    "nn_ssim": ("nn_ssim", np.median, True),
    "spectrum": ("spectrum", np.median, False),
    "grid": ("grid", np.median, None),
}


def ddpm_interval(metric: str, values: np.ndarray) -> tuple[float, float]:
    """DDPM's 95 % interval of a PER_IMAGE metric: Wilson for fidelity, else a bootstrap."""
    if metric == "fidelity":
        return scoring.proportion_interval(values)
    return scoring.bootstrap_interval(values, PER_IMAGE[metric][1])


def _row(ctx: Context, i: int, sampler: str, steps, spacing: str, eta: float) -> tuple:
    w = ctx.shared["main_w"]
    spec = SamplerSpec(
        sampler,
        None if sampler == "ddpm" else steps,
        eta,
        w,
        spacing,
        bool(ctx.cfg.use_ema),
    )
    n = ctx.cfg.ddpm_per_class if sampler == "ddpm" else ctx.cfg.sampler_per_class
    gen, T = ctx.shared["gen"], ctx.run.schedule.num_timesteps
    x, y = gen.generate(spec, n)
    row, per = common.score_row(ctx, x, y, f"samplers.rows.{i}")
    timing = gen.timing(spec, n)
    for k in ("compile_seconds", "seconds_per_image"):
        if timing[k] is None:
            ctx.nulls.null(
                f"samplers.rows.{i}.{k}",
                "all batches came from the cache of another section (not timed here)",
            )
    r = spec.resolved(T)
    out = {
        "name": r.name(T),
        "sampler": sampler,
        "steps": r.steps,
        "spacing": r.spacing,
        "eta": r.eta,
        "guidance": w,
        "images_per_class": n,
        "real_fid_same_n": common.ref_fid_same_n(ctx, [n] * ctx.num_classes),
        **timing,
        **row,
    }
    if out["real_fid_same_n"] is None:
        ctx.nulls.null(f"samplers.rows.{i}.real_fid_same_n", "too few real images at this n")
    n_show = min(4, n)
    return out, per, (r.name(T), common.first_per_class(x, y, ctx.num_classes, n_show))


def _matches(ddpm: dict, other: dict, metrics: list[str]) -> dict[str, bool]:
    out = {}
    for m in metrics:
        key, stat, higher = PER_IMAGE[m]
        if key not in ddpm or key not in other:
            continue
        lo, hi = ddpm_interval(m, ddpm[key])
        v = float(stat(other[key]))
        out[m] = bool(lo <= v <= hi or (higher is True and v > hi) or (higher is False and v < lo))
    return out


def _fast_sampler(ctx: Context, rows: list[dict], pers: list[dict]) -> dict:
    ddpm = [i for i, r in enumerate(rows) if r["sampler"] == "ddpm"]
    if not ddpm:
        ctx.nulls.null("samplers.fast_sampler", "no DDPM row to compare against")
        return {"name": None, "matches_ddpm": None, "checks": {}}
    use = common.trusted(ctx, list(PER_IMAGE))
    checks = {
        rows[i]["name"]: _matches(pers[ddpm[0]], pers[i], use)
        for i in range(len(rows))
        if i not in ddpm
    }
    ok = [
        r
        for r in rows
        if r["name"] in checks and checks[r["name"]] and all(checks[r["name"]].values())
    ]
    timed = [r for r in ok if r["seconds_per_image"] is not None]
    best = min(timed or ok, key=lambda r: r["seconds_per_image"] or np.inf, default=None)
    if best is None:
        ctx.nulls.null(
            "samplers.fast_sampler.name", "no sampler matched DDPM on the trusted metrics"
        )
    return {
        "name": best["name"] if best else None,
        "matches_ddpm": bool(best),
        "metrics_used": use,
        "checks": checks,
        "rule": "fastest sampler whose trusted per-image metrics lie within (or beyond, on the "
        "better side) DDPM's 95 % interval (Wilson for fidelity, bootstrap of the median "
        "otherwise)",
    }


def compute(ctx: Context) -> dict[str, Any]:
    rows, pers, fig_rows = [], [], []
    for i, (sampler, steps, spacing, *rest) in enumerate(ctx.cfg.samplers):
        row, per, fig = _row(ctx, i, sampler, steps, spacing, float(rest[0]) if rest else 0.0)
        rows.append(row)
        pers.append(per)
        fig_rows.append(fig)
    ctx.figures["sampler_samples"] = plots.save_rows_figure(
        fig_rows,
        ctx.figure_path("sampler_samples"),
        title=f"w={ctx.shared['main_w']:g}, same starting noise per column where batch sizes match",
    )
    return {"samplers": {"rows": rows, "fast_sampler": _fast_sampler(ctx, rows, pers)}}


def render(r: dict) -> str:
    s, T = r["settings"], r["run"]["ldm_config"]["diffusion"]["num_timesteps"]
    L = [HEADER, ""]
    L += [
        f"All at w = {r['main_set']['guidance']:g}, EMA weights, the same seeds. Seconds per "
        "image = median wall time of one steady-state batch call (sampler + VAE decode, after "
        "ahead-of-time compilation) / batch size, on this machine; compile time is separate. "
        f"DDPM runs all T = {T} steps (about T network calls per image, twice that with "
        f"guidance), so it gets only {s['ddpm_per_class']} images per class in this preset "
        f"(others {s['sampler_per_class']}): its FID/diversity are noisier. Each FID has its "
        "real-train-vs-test reference at the same n. `batch` is the batch size the images were "
        "generated with (a row whose setting is the main set's reuses those images), and "
        "per-image time falls with batch size, so compare s / image at equal batch."
        + (
            f" **This preset compiles with {dict(s['compile_options'])}: its seconds per image "
            "are not representative.**"
            if s["compile_options"]
            else ""
        ),
        "",
    ]
    cols = ["fidelity", "fid", "real_fid_same_n", "precision", "recall", "spectrum", "grid"]
    cols += ["nn_ssim", "diversity"]
    rows = [
        [row["name"], row["spacing"], row["num_images"], *(f(row[k]) for k in cols)]
        + [f(row["seconds_per_image"], 4), row["batch_size"], f(row["compile_seconds"], 1)]
        for row in r["samplers"]["rows"]
    ]
    head = ["sampler", "spacing", "images", "fidelity", "FID", "real FID same n", "precision"]
    head += ["recall", "spectrum", "grid", "NN-SSIM", "diversity", "s / image", "batch"]
    L += table([*head, "compile s"], rows)
    fs = r["samplers"]["fast_sampler"]
    if fs.get("checks"):
        L += [
            f"**Fastest sampler that matches DDPM: {fs['name'] or 'none'}** "
            f"(matches: {verdict(fs['matches_ddpm'])}). Rule: {fs['rule']}; metrics used: "
            f"{', '.join(fs['metrics_used']) or 'none (no per-image metric passed the controls)'}.",
            "",
        ]
    L += [img(r["figures"]["sampler_samples"], "samples per sampler"), ""]
    return "\n".join(L + nulls_note(r["null_reasons"], ["samplers."], hide=ROW_DETAIL))
