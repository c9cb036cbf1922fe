"""Section 10: sampler comparison at the main w, and the fastest sampler that matches DDPM.

"Matches DDPM" is judged on the per-image metrics that passed the controls (fidelity,
nearest-train SSIM, spectrum distance, grid score): the sampler's value must lie within DDPM's
95 % interval or on its better side. The better side of fidelity is higher and of the spectrum
distance lower. Nearest-train SSIM and the grid score have no better direction of their own
(an NN-SSIM above the real images' drifts towards copies, a grid score below theirs is no
gain), so for them a value beyond DDPM's interval passes only when it is at least as close to
the real test images' median as every value of that interval is. The interval is a percentile
bootstrap of the median for the continuous metrics and a Wilson interval for fidelity (a 0/1
outcome per image, whose bootstrap collapses to a point when DDPM's few images are all
classified right). Every check is kept with its numbers, and so is the literal reading
(inside DDPM's interval on every metric). Set-level numbers (FID, precision, recall) are shown
but too noisy at DDPM's few images to decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jax_mri_ldm import plots
from jax_mri_ldm.evaluation import scoring, spectrum
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, img, nulls_note, table, verdict
from jax_mri_ldm.evaluation.sections import common
from jax_mri_ldm.evaluation.sections.guidance import ROW_DETAIL
from jax_mri_ldm.sampler_settings import SamplerSpec, eps_scale_fits, spec_with

HEADER = "## 10. Sampler comparison"
# per-image metric -> (per-image key, statistic, better side): "higher", "lower", or "real"
# (closer to the real test images' median). Fidelity is the mean of a 0/1 outcome per image.
PER_IMAGE = {
    "fidelity": ("correct", np.mean, "higher"),
    "nn_ssim": ("nn_ssim", np.median, "real"),
    "spectrum": ("spectrum", np.median, "lower"),
    "grid": ("grid", np.median, "real"),
}


def ddpm_interval(metric: str, values: np.ndarray) -> tuple[float, float]:
    """DDPM's 95 % interval of a PER_IMAGE metric: Wilson for fidelity, else a bootstrap."""
    if metric == "fidelity":
        return scoring.proportion_interval(values)
    return scoring.bootstrap_interval(values, PER_IMAGE[metric][1])


def row_spec(entry: Sequence[Any], w: float, use_ema: bool, interval: Any = None) -> SamplerSpec:
    """The setting of a `cfg.samplers` entry: (sampler, steps, spacing[, eta[, eps_scale]]),
    eta 0 and eps_scale 1 (off) when left out, at guidance w guided in `interval` (the main
    sampler's; None = every step)."""
    sampler, steps, spacing, *rest = entry
    eta = float(rest[0]) if rest else 0.0
    eps_scale = float(rest[1]) if len(rest) > 1 else 1.0
    fields = {"sampler": sampler, "steps": steps, "eta": eta, "spacing": spacing}
    fields |= {"guidance_scale": float(w), "use_ema": bool(use_ema), "eps_scale": eps_scale}
    fields["guidance_interval"] = interval or ()  # () = every step (spec_with skips None)
    return spec_with(SamplerSpec(), fields)


def _row(ctx: Context, i: int, entry: Sequence[Any]) -> tuple:
    """One table row: the `cfg.samplers` entry `entry` at the main w, scored."""
    w = ctx.shared["main_w"]
    spec = row_spec(entry, w, ctx.cfg.use_ema, ctx.cfg.guidance_interval)
    sampler = spec.sampler
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
        "eps_scale": r.eps_scale,
        "guidance": w,
        "images_per_class": n,
        "real_fid_same_n": common.ref_fid_same_n(ctx, [n] * ctx.num_classes),
        **timing,
        **row,
        "spectrum_median": float(np.median(per["spectrum"])),  # the statistic DDPM's is judged by
    }
    if out["real_fid_same_n"] is None:
        ctx.nulls.null(f"samplers.rows.{i}.real_fid_same_n", "too few real images at this n")
    n_show = min(4, n)
    return out, per, (r.name(T), common.first_per_class(x, y, ctx.num_classes, n_show))


def check_metric(
    metric: str, ddpm_values: np.ndarray, values: np.ndarray, real: float | None = None
) -> dict[str, Any]:
    """One sampler's value of `metric` against DDPM's 95 % interval (see the module doc).

    Args:
      metric: a PER_IMAGE name.
      ddpm_values / values: per-image values of DDPM's and of the sampler's images.
      real: the real test images' statistic (used by the "real"-sided metrics; None: only
        inside the interval passes).

    Returns:
      'value', 'ddpm_value', 'ddpm_interval', 'real' (the "real"-sided metrics only),
      'within' and 'passes'.
    """
    _, stat, side = PER_IMAGE[metric]
    lo, hi = ddpm_interval(metric, ddpm_values)
    v = float(stat(values))
    within = lo <= v <= hi
    if side == "higher":
        beyond = v > hi
    elif side == "lower":
        beyond = v < lo
    else:  # at least as close to the real median as every value of DDPM's interval
        beyond = real is not None and abs(v - real) <= max(lo - real, 0.0, real - hi)
    out = {"value": v, "ddpm_value": float(stat(ddpm_values)), "ddpm_interval": [lo, hi]}
    if side == "real":  # the other sides have no real target: no key, not an n/a entry
        out["real"] = real
    return out | {"within": bool(within), "passes": bool(within or beyond)}


def _matches(
    ddpm: dict, other: dict, metrics: list[str], real: dict[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """`check_metric` for each of `metrics` that both per-image dicts carry."""
    out = {}
    for m in metrics:
        key = PER_IMAGE[m][0]
        if key in ddpm and key in other:
            out[m] = check_metric(m, ddpm[key], other[key], (real or {}).get(m))
    return out


def real_medians(test_nn: np.ndarray, test_grid: np.ndarray | None) -> dict[str, float]:
    """The median of each "real"-sided metric over the real test images' per-image values
    (grid: None when the image size has no latent period)."""
    out = {"nn_ssim": float(np.median(test_nn))}
    if test_grid is not None:
        out["grid"] = float(np.median(test_grid))
    return out


def real_reference(ctx: Context) -> dict[str, float]:
    """The real test images' median of each "real"-sided metric (the target it is judged by)."""
    period = ctx.shared.get("period")
    grid = None if period is None else spectrum.grid_score(ctx.test.images, period)
    return real_medians(ctx.shared["ref"].test_nn, grid)


def is_deterministic(row: dict) -> bool:
    """True for a sampler that adds no noise after the start (DDIM eta = 0, DPM-Solver++)."""
    return row["sampler"] == "dpmpp_2m" or (row["sampler"] == "ddim" and row["eta"] == 0)


def _fastest(rows: list[dict], names: set[str], default: str | None = None) -> dict | None:
    """The row among `names` with the fewest network evaluations per image (its steps); among
    equals the run's `default` sampler, then the lowest timed seconds per image (untimed
    last). Steps come first because two rows of equal cost differ in timing by noise alone,
    and a rerun of the same report must not pick another sampler."""

    def cost(r: dict) -> tuple:
        return (r["steps"], r["name"] != default, r["seconds_per_image"] or np.inf)

    return min((r for r in rows if r["name"] in names), key=cost, default=None)


def _fast_sampler(ctx: Context, rows: list[dict], pers: list[dict]) -> dict:
    ddpm = [i for i, r in enumerate(rows) if r["sampler"] == "ddpm"]
    if not ddpm:
        ctx.nulls.null("samplers.fast_sampler", "no DDPM row to compare against")
        return {"name": None, "matches_ddpm": None, "checks": {}}
    use, real = common.trusted(ctx, list(PER_IMAGE)), real_reference(ctx)
    detail = {
        rows[i]["name"]: _matches(pers[ddpm[0]], pers[i], use, real)
        for i in range(len(rows))
        if i not in ddpm
    }
    passing = {n for n, d in detail.items() if d and all(c["passes"] for c in d.values())}
    inside = {n for n, d in detail.items() if d and all(c["within"] for c in d.values())}
    det = {r["name"] for r in rows if r["name"] in passing and is_deterministic(r)}
    T = ctx.run.schedule.num_timesteps
    default = ctx.run.default_spec().resolved(T).name(T)
    best, strict, best_det = (_fastest(rows, s, default) for s in (passing, inside, det))
    if best is None:
        ctx.nulls.null(
            "samplers.fast_sampler.name", "no sampler matched DDPM on the trusted metrics"
        )
    return {
        "name": best["name"] if best else None,
        "matches_ddpm": bool(best),
        "deterministic": is_deterministic(best) if best else None,
        "fastest_deterministic": best_det["name"] if best_det else None,
        "fastest_inside_interval": strict["name"] if strict else None,
        "metrics_used": use,
        "real_reference": real,
        "checks": {n: {m: c["passes"] for m, c in d.items()} for n, d in detail.items()},
        "detail": detail,
        "rule": "fastest sampler (fewest network evaluations per image; among equals the "
        "run's default, then the lowest timed seconds per image) whose trusted per-image "
        "metrics lie within DDPM's 95 % "
        "interval (Wilson for fidelity, bootstrap of the median otherwise) or beyond it on "
        "the better side: higher fidelity, lower spectrum distance, NN-SSIM and grid score "
        "at least as close to the real test images' median as the whole interval",
    }


def _usable(ctx: Context) -> list:
    """The `cfg.samplers` entries this run's schedule can sample; an entry whose epsilon
    scaling it would amplify (`eps_scale_fits`) is left out, with the reason."""
    w, T = ctx.shared["main_w"], ctx.run.schedule.num_timesteps
    specs = [row_spec(e, w, ctx.cfg.use_ema, ctx.cfg.guidance_interval) for e in ctx.cfg.samplers]
    fits = [eps_scale_fits(s, ctx.run.schedule) for s in specs]
    if not all(fits):
        bad = [s.name(T) for s, ok in zip(specs, fits, strict=True) if not ok]
        ctx.nulls.null(
            "samplers.left_out",
            f"{', '.join(bad)}: this run's schedule would amplify the epsilon scaling "
            "(sampler_settings.eps_scale_fits, e.g. zero terminal SNR)",
        )
    return [e for e, ok in zip(ctx.cfg.samplers, fits, strict=True) if ok]


def compute(ctx: Context) -> dict[str, Any]:
    rows, pers, fig_rows = [], [], []
    for i, entry in enumerate(_usable(ctx)):
        row, per, fig = _row(ctx, i, entry)
        rows.append(row)
        pers.append(per)
        fig_rows.append(fig)
    ctx.figures["sampler_samples"] = plots.save_rows_figure(
        fig_rows,
        ctx.figure_path("sampler_samples"),
        title=f"w={ctx.shared['main_w']:g}, same starting noise per column where batch sizes match",
    )
    return {"samplers": {"rows": rows, "fast_sampler": _fast_sampler(ctx, rows, pers)}}


def _ddpm_size(s: dict) -> str:
    """The render's phrase on how many images the DDPM row has against the other rows."""
    n, others = s["ddpm_per_class"], s["sampler_per_class"]
    if n >= others:
        return f"yet it has at least as many images per class as the others ({n})"
    return f"so it gets only {n} images per class (others {others}): its FID/diversity are noisier"


def render(r: dict) -> str:
    s, T = r["settings"], r["run"]["ldm_config"]["diffusion"]["num_timesteps"]
    L = [HEADER, ""]
    L += [
        f"All at w = {r['main_set']['guidance']:g}, EMA weights, the same seeds. Seconds per "
        "image = median wall time of one steady-state batch call (sampler + VAE decode, after "
        "ahead-of-time compilation) / batch size, on this machine; compile time is separate. "
        f"DDPM runs all T = {T} steps (about T network calls per image, twice that with "
        f"guidance), {_ddpm_size(s)}. Each FID has its "
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
    cols = ["fidelity", "fid", "real_fid_same_n", "precision", "recall", "spectrum"]
    cols += ["spectrum_median", "grid", "nn_ssim", "diversity"]
    rows = [
        [row["name"], row["spacing"], row["num_images"], *(f(row[k]) for k in cols)]
        + [f(row["seconds_per_image"], 4), row["batch_size"], f(row["compile_seconds"], 1)]
        for row in r["samplers"]["rows"]
    ]
    head = ["sampler", "spacing", "images", "fidelity", "FID", "real FID same n", "precision"]
    head += ["recall", "spectrum (set)", "spectrum (median)", "grid", "NN-SSIM", "diversity"]
    L += table([*head, "s / image", "batch", "compile s"], rows)
    L += [
        "spectrum (set): distance of the set's mean spectrum to the test split's; spectrum "
        "(median): median per-image distance, the statistic the DDPM match and section 12 use.",
        "",
    ]
    fs = r["samplers"]["fast_sampler"]
    if fs.get("checks"):
        L += _render_checks(fs)
    L += [img(r["figures"]["sampler_samples"], "samples per sampler"), ""]
    return "\n".join(L + nulls_note(r["null_reasons"], ["samplers."], hide=ROW_DETAIL))


def _cell(c: dict) -> str:
    mark = "inside" if c["within"] else ("beyond, better" if c["passes"] else "**fails**")
    return f"{f(c['value'])} ({mark})"


def _render_checks(fs: dict) -> list[str]:
    """The match verdicts, then one row per sampler: each metric's value and its verdict."""
    det = fs.get("detail") or {}
    metrics = list(fs["metrics_used"])
    first = next((d for d in det.values() if d), {})
    ddpm = [
        f"{f(first[m]['ddpm_value'])} [{f(first[m]['ddpm_interval'][0])}, "
        f"{f(first[m]['ddpm_interval'][1])}]"
        for m in metrics
        if m in first
    ]
    real = fs.get("real_reference") or {}
    L = [
        f"**Fastest sampler that matches DDPM: {fs['name'] or 'none'}** "
        f"(matches: {verdict(fs['matches_ddpm'])}; deterministic: "
        f"{verdict(fs.get('deterministic'))}). Fastest deterministic match: "
        f"{fs.get('fastest_deterministic') or 'none'}; fastest inside DDPM's interval on every "
        f"metric: {fs.get('fastest_inside_interval') or 'none'}. Rule: {fs['rule']}; metrics "
        f"used: {', '.join(metrics) or 'none (no per-image metric passed the controls)'}. Real "
        "test medians: " + ", ".join(f"{k} {f(v)}" for k, v in real.items()) + ".",
        "",
    ]
    if not first:
        return L
    rows = [["DDPM (interval)", *ddpm]]
    rows += [[n, *(_cell(d[m]) for m in metrics if m in d)] for n, d in det.items() if d]
    return L + table(["sampler", *[m for m in metrics if m in first]], rows) + [""]
