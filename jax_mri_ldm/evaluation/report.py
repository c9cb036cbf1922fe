"""Evaluation report of a finished latent-diffusion run: report.md, PNG figures, report.json.

`write_report(ldm_workdir, out_dir, preset)` reads everything from the LDM run directory (its
config, split.json, EMA weights and the frozen VAE copy) plus the VAE run it points to (for the
VAE loss curve), runs the sections of `evaluation/sections/` in dependency order and writes:

* ``report.md``   the commands, a run summary, the headline, sections 1-12 and timings;
* ``report.json`` every number in the report, with a top-level ``headline``; a metric that
  cannot be computed is ``null`` and its dotted JSON path is listed in ``null_reasons``;
* ``figures/*.png`` small PNGs (<= ~300 KB each, so the report can be committed).

Every metric is computed on the held-out TEST split; training images appear only where the
question is about them (memorisation, the real-vs-real references, the study's training sets);
the validation split is the real held-out control set (section 11). The sizes and knobs come
from `configs/report.py` (presets paper / demo / tiny). Each section module has
``compute(ctx) -> dict`` (its report.json keys) and ``render(report) -> markdown``; markdown
is rendered from the finished report.json alone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from jax_mri_ldm import atomic, config_loader
from jax_mri_ldm import data as data_lib
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.evaluation import runinfo
from jax_mri_ldm.evaluation.context import FALLBACK_NULL_REASON, Context, clean, walk_nulls
from jax_mri_ldm.evaluation.generator import SyntheticImages
from jax_mri_ldm.evaluation.markdown import table
from jax_mri_ldm.evaluation.resume import RESUME_SUBDIR, ResumeStore
from jax_mri_ldm.evaluation.sections import (
    classifier,
    common,
    controls,
    diversity,
    downstream,
    fid_kid,
    fidelity,
    guidance,
    headline,
    memorisation,
    paper_figures,
    samplers,
    spectrum,
    summary,
    vae,
)

RENDER_ORDER = (
    summary,
    headline,
    paper_figures,
    vae,
    classifier,
    fidelity,
    fid_kid,
    diversity,
    memorisation,
    downstream,
    guidance,
    samplers,
    controls,
    spectrum,
)
"""The sections of report.md, in order (Timings follow)."""

SECTION_HEADERS: tuple[str, ...] = (
    *summary.HEADERS,
    *(m.HEADER for m in RENDER_ORDER[1:]),
    "## Timings",
)
"""Every header `report.md` contains, in order."""

# (timing label, compute step) in dependency order.
COMPUTE_ORDER: tuple[tuple[str, Callable[[Context], dict]], ...] = (
    ("VAE reconstruction", vae.compute),
    ("loss curves", paper_figures.compute_losses),
    ("domain classifier", classifier.compute),
    ("feature space and controls", controls.compute),
    ("guidance sweep", guidance.compute),
    ("main synthetic set", guidance.compute_main_set),
    ("sample figures", paper_figures.compute_samples),
    ("class fidelity", fidelity.compute),
    ("FID/KID, precision/recall", fid_kid.compute),
    ("diversity", diversity.compute),
    ("memorisation and realism", memorisation.compute),
    ("spectrum and grid", spectrum.compute),
    ("downstream study", downstream.compute),
    ("sampler comparison", samplers.compute),
)

_POSITIVE = (
    "num_synthetic_per_class",
    "batch_size",
    "sampler_per_class",
    "ddpm_per_class",
    "classifier_steps",
    "seeds",
    "study_steps",
)


def resolve_settings(
    preset: str = "paper", config: ml_collections.ConfigDict | None = None, **overrides: Any
) -> ml_collections.ConfigDict:
    """configs/report.py:<preset> (or `config`) with `overrides` applied and checked.

    Args:
      preset: 'paper' | 'demo' | 'tiny' (ignored when `config` is given).
      config: a ready report config (e.g. from evaluate.py's --config flag).
      **overrides: fields to set (None values are ignored; 'features.steps' style keys reach
        nested fields).

    Returns:
      The config.

    Raises:
      ValueError: unknown preset or field, or a value out of range (named by its option).
    """
    if config is None:
        if preset not in ("paper", "demo", "tiny"):
            raise UserError(f"--config=configs/report.py:{preset}: use paper, demo or tiny.")
        config = config_loader.load_config("report", preset)
    c = ml_collections.ConfigDict(config.to_dict())
    for key, v in overrides.items():
        if v is None:
            continue
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node.get(p)
        if node is None or leaf not in node:
            raise UserError(f"unknown report option {key!r}; see configs/report.py.")
        node[leaf] = tuple(v) if isinstance(v, list) else v
    for key in _POSITIVE:
        if int(c[key]) < 1:
            raise UserError(f"--config.{key}={c[key]} must be >= 1.")
    if int(c.sweep_per_class) < 0:
        raise UserError(
            f"--config.sweep_per_class={c.sweep_per_class} must be >= 0 (0 = the main set's "
            "num_synthetic_per_class)."
        )
    if c.num_synthetic_per_class < 2:
        raise UserError("--config.num_synthetic_per_class must be >= 2 (diversity needs pairs).")
    if int(c.memorisation_calibration_per_class) < 0:
        raise UserError(
            f"--config.memorisation_calibration_per_class={c.memorisation_calibration_per_class}"
            " must be >= 0 (0 = the test split alone sets the memorisation thresholds)."
        )
    _check_downstream_options(c)
    return c


def _check_downstream_options(c: ml_collections.ConfigDict) -> None:
    """Refuses bad downstream-study options before any sampling (they are used in section 8)."""
    from jax_mri_ldm.evaluation.study import EVAL_SPLITS  # heavy: after the cheap checks

    splits = tuple(c.get("downstream_eval_splits", EVAL_SPLITS))
    if not splits or len(set(splits)) != len(splits) or set(splits) - set(EVAL_SPLITS):
        raise UserError(
            f"--config.downstream_eval_splits={splits}: use a non-empty subset of {EVAL_SPLITS} "
            "without repeats (splits the generator never trained on)."
        )
    multiples = [float(m) for m in c.get("downstream_syn_multiples", ())]
    if any(not m > 0 for m in multiples) or len(set(multiples)) != len(multiples):
        raise UserError(
            f"--config.downstream_syn_multiples={tuple(multiples)}: use distinct multiples > 0."
        )
    from jax_mri_ldm.evaluation import synthetic_mix

    try:
        synthetic_mix.check_settings(
            c.get("downstream_syn_share") or None, c.get("downstream_syn_keep_prob") or None
        )
    except ValueError as e:
        raise UserError(str(e)) from None


def _check_ldm_workdir(workdir: str) -> None:
    """Cheap checks with messages phrased for evaluation (before loading any arrays)."""
    stage = ckpt_lib.read_run_meta(workdir).get("stage")
    if stage != "ldm":
        raise UserError(
            f"--workdir={workdir} is a {stage!r} run, not a diffusion run; evaluate the workdir "
            "of `train.py --config=configs/ldm.py` (its VAE is found through it)."
        )
    if not os.path.exists(os.path.join(workdir, "split.json")):
        raise UserError(f"{workdir}/split.json is missing; the run directory is incomplete.")


def _load_data(run: Any) -> tuple[data_lib.ImageSet, dict[str, np.ndarray]]:
    data_cfg = ml_collections.ConfigDict(run.meta["vae"]["data"])
    ds = data_lib.load_imageset(data_cfg)
    if ds.fingerprint != run.meta.get("dataset_fingerprint"):
        raise data_lib.DataError(
            f"the data of the run in {run.workdir} (config.data.path={data_cfg.path!r}) changed "
            "since training (dataset fingerprint differs); restore the data or retrain."
        )
    split = data_lib.load_split(
        os.path.join(run.workdir, "split.json"),
        ds,
        near_duplicate_threshold=data_cfg.split.get("near_duplicate_threshold"),
    )
    return ds, split


def _context(workdir: str, out_dir: str, cfg: ml_collections.ConfigDict, log) -> Context:
    from jax_mri_ldm import pipeline  # heavy: after the cheap checks

    run = pipeline.load_ldm(workdir)
    ds, split = _load_data(run)
    tr, va, te = (ds.subset(split[k]) for k in ("train", "val", "test"))
    for name, part in (("train", tr), ("test", te)):
        if len(part) == 0:
            raise UserError(f"the {name} split of {workdir}/split.json is empty.")
    ctx = Context(cfg, run, workdir, ds, tr, va, te, out_dir, log=log)
    ctx.generator_train = data_lib.generator_train_set(run.meta, ds, tr, run.workdir)
    per_class = int(cfg.memorisation_calibration_per_class)
    ctx.calibration = data_lib.calibration_slices(run.meta, ds, ctx.seen_by_generator, per_class)
    h = run.latent_shape[0]
    period = run.image_size // h if run.image_size % h == 0 else None
    ok = period is not None and run.image_size % period == 0 and run.image_size >= 2 * period
    ctx.shared["period"] = period if ok else None
    ctx.shared["store"] = _resume_store(out_dir, cfg, log)
    ctx.shared["gen"] = SyntheticImages(
        run,
        cfg.batch_size,
        cfg.seed,
        progress=log,
        compile_options=dict(cfg.compile_options),
        store=ctx.shared["store"],
    )
    return ctx


def _resume_store(out_dir: str, cfg: ml_collections.ConfigDict, log) -> ResumeStore | None:
    """The store of a stopped report in `out_dir` (config.resume), announced when not empty."""
    if not cfg.resume:
        return None
    store = ResumeStore(os.path.join(out_dir, RESUME_SUBDIR))
    if n := store.count():
        log(f"[report] resuming: {n} stored results in {store.root}", flush=True)
    return store


def _assemble(ctx: Context, preset: str) -> dict:
    report = {"format": 2, "preset": preset, "settings": ctx.cfg.to_dict()}
    report.update(ctx.results)
    report["figures"] = {k: os.path.relpath(v, ctx.out_dir) for k, v in ctx.figures.items()}
    report["timings_seconds"] = ctx.timings
    store = ctx.shared.get("store")
    report["resumed"] = dict(store.hits) if store else None
    if store is None:
        ctx.nulls.null("resumed", "config.resume is off: nothing was kept or read back")
    if ctx.cfg.guidance_scale is None:
        ctx.nulls.null("settings.guidance_scale", "not set: the guidance sweep chose w (main_set)")
    for key in common.SAMPLER_FIELDS:
        if ctx.cfg[key] is None:
            ctx.nulls.null(f"settings.{key}", "None = the run's default sampler's (main_set)")
    _interval_nulls(ctx, "settings.guidance_interval", ctx.cfg.guidance_interval)
    _interval_nulls(ctx, "main_set.spec.guidance_interval", ctx.shared["main_interval"])
    for i, (_, steps, *_) in enumerate(ctx.cfg.samplers):
        if steps is None:
            ctx.nulls.null(f"settings.samplers.{i}.1", "None = all T steps of the schedule")
    report = clean(report)
    for p in walk_nulls(report):
        if p not in ctx.nulls.reasons:
            ctx.nulls.null(p, FALLBACK_NULL_REASON)
    report["null_reasons"] = dict(sorted(ctx.nulls.reasons.items()))
    return report


def _interval_nulls(ctx: Context, path: str, interval: Any) -> None:
    """Reasons for a guidance interval's nulls: none at all, or an unbounded upper end."""
    if interval is None:
        ctx.nulls.null(path, "None = every sampler step guided (no guidance interval)")
    elif interval[1] is None or not np.isfinite(interval[1]):
        ctx.nulls.null(f"{path}.1", "None = no upper bound on the guided noise levels")


def _render_timings(r: dict) -> str:
    L = ["## Timings", ""]
    L += table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in r["timings_seconds"].items()])
    ms = r["main_set"]
    spi = ms.get("seconds_per_image")
    L += [
        f"Main set: {ms['sampler']} w={ms['guidance']:g}, "
        f"{'n/a' if spi is None else f'{spi:.4f}'} s per image (batch {ms.get('batch_size')}).",
        "",
    ]
    resumed = r.get("resumed") or {}
    if any(resumed.values()):
        L += [
            f"Resumed from a stopped run: {resumed.get('sample_batches', 0)} sample batches and "
            f"{resumed.get('runs', 0)} classifier runs were read back, so the stage times above "
            "leave their cost out; seconds per image count those batches as they were timed when "
            "generated, by the earlier process (on another machine, if the run moved).",
            "",
        ]
    return "\n".join(L)


def render_markdown(r: dict) -> str:
    """report.md from a finished report.json."""
    parts = [
        f"# Evaluation report: `{r['run']['ldm_workdir']}`",
        "",
        "All metrics use the held-out **test** split unless a row says otherwise. Every number "
        "is in `report.json`; `n/a` entries list their reason below each section.",
        "",
    ]
    parts += [m.render(r) for m in RENDER_ORDER]
    parts.append(_render_timings(r))
    return "\n".join(parts)


def write_report(
    ldm_workdir: str,
    out_dir: str | None = None,
    preset: str = "paper",
    *,
    config: ml_collections.ConfigDict | None = None,
    command: str | None = None,
    verbose: bool = True,
    **overrides: Any,
) -> dict:
    """Evaluates a finished LDM run and writes report.md, report.json and figures/ to out_dir.

    Args:
      ldm_workdir: the diffusion run directory (`train.py --config=configs/ldm.py`).
      out_dir: output directory; None = `runinfo.default_out_dir(ldm_workdir)`. Files the
        report owns (report.md, report.json, figures/) are overwritten; partial/
        (config.resume) holds finished batches and classifier runs while the report runs and
        is deleted at the end; nothing else is touched.
      preset: 'paper' | 'demo' | 'tiny' (configs/report.py), unless `config` is given.
      config: a report config (evaluate.py's --config).
      command: the command line that produced this call, shown in the report.
      verbose: print progress lines.
      **overrides: config fields (None = keep).

    Returns:
      The report.json content (dict) plus 'out_dir', 'report_md' and 'report_json' paths.

    Raises:
      ValueError / DataError: not an LDM run, missing split or data, bad option.
    """
    t_start = time.perf_counter()
    cfg = resolve_settings(preset, config, **overrides)
    out_dir = os.path.abspath(out_dir or runinfo.default_out_dir(ldm_workdir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out={out_dir} exists and is not a directory; choose another --out.")
    _check_ldm_workdir(ldm_workdir)
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    log = print if verbose else (lambda *a, **k: None)
    ctx = _context(ldm_workdir, out_dir, cfg, log)
    ctx.lap("load run and data")
    for label, step in COMPUTE_ORDER:
        ctx.results.update(step(ctx))
        ctx.lap(label)
    ctx.results.update(summary.compute(ctx, command))
    ctx.results.update(headline.compute(ctx))
    ctx.timings["total"] = time.perf_counter() - t_start
    report = _assemble(ctx, cfg.preset)
    md_path = os.path.join(out_dir, "report.md")
    json_path = os.path.join(out_dir, "report.json")
    atomic.write_text(json_path, json.dumps(report, indent=1, allow_nan=False))
    atomic.write_text(md_path, render_markdown(report))
    log(f"[report] wrote {md_path} ({ctx.timings['total']:.1f} s)")
    if ctx.shared.get("store"):
        ctx.shared["store"].remove()
    return {**report, "out_dir": out_dir, "report_md": md_path, "report_json": json_path}
