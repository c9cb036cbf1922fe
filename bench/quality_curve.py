"""Quality against training updates: every kept checkpoint of an LDM run, scored like the report.

Quality against updates
-----------------------
To see what a longer run buys, keep its checkpoints while training
(``--config.train.keep_checkpoints=N`` and ``--config.train.checkpoint_every_epochs=E``), then,
from the repository root::

  python bench/quality_curve.py --workdir=runs/ldm                 # every kept checkpoint
  python bench/quality_curve.py --workdir=runs/ldm --steps=1508,3016 --per_class=32 \\
      --out=runs/quality_curve --config=configs/report.py:paper --config.classifier_steps=600

It works on a finished run or one still training (the checkpoints already on disk). For each
step it loads that step's EMA weights through `pipeline.load_ldm(workdir, step)`, samples
``--per_class`` images per class with the run's default sampler (`run.default_spec()`; the
report config's main-sampler fields override it, e.g. ``--config.sampler=dpmpp_2m
--config.steps=10 --config.eps_scale=0.99``; seeded per image as the pipeline does, the same
seeds at every step, so rows are paired) and scores them
with the report's own code (`evaluation.scoring.score_set`) against the real test split:

* ``fid_ratio``: feature FID of the samples vs the test split, divided by the FID of the real
  validation split vs the test split, both at the same number of images per class
  (``fid_ratio_train`` is the report headline's form: a real-train subset at equal n instead);
* per-class class fidelity under the domain classifier (trained once per curve on the real
  training split), with its 95 % Wilson interval, next to that classifier's recall per class on
  the real test images (at 64 images per class it is about +-0.07 to +-0.10, too wide to
  decide a bar a few hundredths away: docs/results.md, "LDM at 4,750 updates");
* ``grid_ratio``: median latent-grid score of the samples / that of the real test images;
* ``nn_ssim_ratio``: median nearest-training-image SSIM of the samples / that of the real test
  images; ``memorised``: the fraction flagged as copies.

The feature space is ``--space`` (default ``random``: the untrained multi-scale network the
report's controls pick on real data). Sizes and the classifier settings come from
``--config`` (configs/report.py, any field overridable). ``CPU min`` is the time to reach a
step summed from the run's ``metrics.jsonl`` (each training log window's images / images per
second): training steps only, on the machine that trained; evaluation, checkpointing, latent
encoding and the VAE stage are not in it (the VAE's own training minutes are reported apart).

Writes, atomically and again after every step (a long curve is readable while it runs):
``<out>/curve.json``, ``<out>/curve.md`` (one table row per step) and ``<out>/grid_step<N>.png``
(per class a row of samples above a row of real test images). Default ``--out``:
``<workdir>/../quality_curve``.

Every step builds its sampler anew, so each compiles the same program; with
``JAX_COMPILATION_CACHE_DIR`` set, the steps after the first reuse the first one's compile.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from jax_mri_ldm import atomic, plots
from jax_mri_ldm import data as data_lib
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.engine.loop import total_steps
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.evaluation import cache as eval_cache
from jax_mri_ldm.evaluation import domain_classifier, features, scoring, setmetrics, spectrum
from jax_mri_ldm.evaluation.context import Nulls, clean
from jax_mri_ldm.evaluation.markdown import f, table

SPACES = ("random", "contrastive", "classifier")
"""Feature spaces `--space` takes (the report's candidates, evaluation/features.py)."""

Embed = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- steps and time


def kept_steps(workdir: str) -> list[int]:
    """Steps of the complete checkpoints on disk, ascending."""
    ckpt_lib.read_run_meta(workdir)  # clear errors for a missing / empty run directory
    checkpointer = ckpt_lib.Checkpointer(workdir)
    try:
        return sorted(int(s) for s in checkpointer.all_steps())
    finally:
        checkpointer.close()


def parse_steps(values: Sequence[str] | None) -> list[int] | None:
    """`--steps=1508,3016` -> [1508, 3016]; None or empty -> None (every kept step)."""
    if not values:
        return None
    bad = [v for v in values if not v.strip().isdigit()]
    if bad:
        raise UserError(f"--steps: {bad} are not step numbers; use e.g. --steps=1508,3016.")
    return [int(v) for v in values]


def select_steps(available: Sequence[int], requested: Sequence[int] | None) -> list[int]:
    """`requested` (ascending, deduplicated) or every available step; all must be on disk."""
    if not requested:
        return sorted(available)
    missing = sorted(set(requested) - set(available))
    if missing:
        raise UserError(
            f"--steps: no checkpoint on disk for step(s) {missing}; kept steps are "
            f"{sorted(available)}. Train with a larger --config.train.keep_checkpoints."
        )
    return sorted(set(int(s) for s in requested))


def window_seconds(rows: Sequence[dict], batch_size: int) -> list[tuple[int, int, float]]:
    """(first step, last step, seconds) of each training log window of metrics.jsonl.

    A window's seconds are its images (steps since the previous train record x the batch)
    divided by its `images_per_sec`: time inside training steps only.
    """
    out, prev = [], 0
    for rec in rows:
        ips = rec.get("images_per_sec")
        if isinstance(ips, int | float) and ips > 0 and rec["step"] > prev:
            out.append((prev, int(rec["step"]), (rec["step"] - prev) * batch_size / ips))
        prev = int(rec["step"])
    return out


def training_minutes(windows: Sequence[tuple[int, int, float]], step: int) -> float | None:
    """Training minutes to reach `step` (a window cut by `step` counts pro rata); None when
    the log does not reach `step`."""
    if not windows or windows[-1][1] < step:
        return None
    seconds = 0.0
    for lo, hi, s in windows:
        if hi <= step:
            seconds += s
        elif lo < step:
            seconds += s * (step - lo) / (hi - lo)
    return seconds / 60.0


def run_windows(workdir: str, batch_size: int) -> list[tuple[int, int, float]]:
    """The training log windows of a run directory (empty without metrics.jsonl)."""
    return window_seconds(log_lib.read_metrics(workdir, "train"), batch_size)


def vae_minutes(run: Any) -> float | None:
    """Training minutes of the VAE run the diffusion run was trained on (None if not found)."""
    vae_dir = run.meta.get("vae", {}).get("source_workdir")
    if not vae_dir or not os.path.isdir(os.path.join(vae_dir, "checkpoints")):
        return None
    meta = ckpt_lib.read_run_meta(vae_dir)
    batch = int(meta.get("global_batch_size", meta["config"]["train"]["batch_size"]))
    windows = run_windows(vae_dir, batch)
    return sum(s for *_, s in windows) / 60.0 if windows else None


def run_length(run: Any) -> int:
    """Planned updates of the whole run (its config and steps per epoch)."""
    return total_steps(run.config, int(run.meta["steps_per_epoch"]))


# ----------------------------------------------------------------------------- real reference


@dataclasses.dataclass
class RealData:
    """The run's real splits, the scoring reference and the once-per-curve real numbers.

    Attributes:
      train / val / test: the run's splits (`data.ImageSet`).
      ref: the report's scoring reference (test features, classifier, nearest-train SSIMs).
      space: description of the feature space.
      real_recall: the domain classifier's recall per class on the real test images.
      test_grid: (n_test,) grid score of each real test image (None: no latent period).
      val_feats / train_feats: features of the real validation / training split.
    """

    train: Any
    val: Any
    test: Any
    ref: scoring.Reference
    space: str
    real_recall: dict[str, float | None]
    test_grid: np.ndarray | None
    val_feats: np.ndarray
    train_feats: np.ndarray


def load_splits(run: Any) -> tuple[Any, Any, Any]:
    """(train, val, test) ImageSets of the run's data and split.json; refuses changed data."""
    ds = data_lib.load_imageset(ml_collections.ConfigDict(run.meta["vae"]["data"]))
    if ds.fingerprint != run.meta.get("dataset_fingerprint"):
        raise data_lib.DataError(
            f"the data of the run in {run.workdir} changed since training (dataset fingerprint "
            "differs); restore the data or retrain."
        )
    split = data_lib.load_split(os.path.join(run.workdir, "split.json"), ds)
    return tuple(ds.subset(split[k]) for k in ("train", "val", "test"))


def generator_train(run: Any, train: Any) -> Any:
    """The run's training split plus its extra training images (the memorisation reference)."""
    ds = data_lib.load_imageset(ml_collections.ConfigDict(run.meta["vae"]["data"]))
    return data_lib.generator_train_set(run.meta, ds, train, run.workdir)


def calibration(run: Any, cfg: ml_collections.ConfigDict, seen: Any) -> np.ndarray | None:
    """The fresh held-out slices that set the memorisation thresholds, as the report draws
    them (config.memorisation_calibration_per_class; None off the binary built-in set)."""
    ds = data_lib.load_imageset(ml_collections.ConfigDict(run.meta["vae"]["data"]))
    per_class = int(cfg.memorisation_calibration_per_class)
    fresh = data_lib.calibration_slices(run.meta, ds, seen, per_class)
    return None if fresh is None else fresh.images


def latent_period(run: Any) -> int | None:
    """The decoder's upsampling period in pixels, as the report derives it (None: none)."""
    h = run.latent_shape[0]
    period = run.image_size // h if run.image_size % h == 0 else None
    ok = period is not None and run.image_size >= 2 * period
    return period if ok else None


def train_judge(cfg: ml_collections.ConfigDict, train: Any, num_classes: int):
    """The domain classifier of class fidelity, trained as the report's section 3 does."""
    clf, _ = domain_classifier.train_classifier(
        train.images,
        train.labels,
        seed=0,
        steps=int(cfg.classifier_steps),
        num_classes=num_classes,
        batch_size=int(cfg.classifier_batch_size),
        lr=float(cfg.classifier_lr),
        input_size=int(cfg.classifier_input_size),
        widths=tuple(cfg.classifier_widths),
    )
    return clf


def ssl_settings(cfg: ml_collections.ConfigDict) -> features.SSLSettings:
    """The encoder settings of `cfg.features` (configs/report.py)."""
    return features.SSLSettings.from_config(cfg.features)


def feature_space(
    space: str, cfg: ml_collections.ConfigDict, run: Any, train: Any, clf: Any
) -> tuple[Embed, str]:
    """(embed, description) of one of the report's candidate feature spaces (features.py)."""
    s = ssl_settings(cfg)
    size = f"{sum(s.widths)}-d, {s.input_size} px"
    if space == "random":
        return features.random_encoder_embed(s), f"untrained multi-scale CNN ({size})"
    if space == "contrastive":
        key = features.cache_key(s, run.meta.get("dataset_fingerprint", ""), train.ids)
        cache = eval_cache.run_cache_dir(run.workdir)  # the report's cache, shared with it
        params, _ = features.load_or_train(train.images, s, cache, key, log=print)
        desc = f"self-supervised (SimCLR) multi-scale CNN ({size}), {s.steps} steps"
        return features.encoder_embed(params, s.widths, s.input_size), desc
    if space == "classifier":
        embed = lambda x: domain_classifier.classify(clf, x)[1]  # noqa: E731
        return embed, "domain classifier penultimate layer"
    raise UserError(f"--space={space}: use one of {', '.join(SPACES)}.")


def prepare_real(
    run: Any, cfg: ml_collections.ConfigDict, space: str, nulls: Nulls, log: Callable
) -> RealData:
    """Splits, domain classifier, feature space and scoring reference, built once."""
    train, val, test = load_splits(run)
    if len(val) < 2 or len(test) < 2:
        raise UserError(f"{run.workdir}/split.json needs >= 2 validation and test images.")
    log(f"[curve] domain classifier: {cfg.classifier_steps} steps on {len(train)} images")
    clf = train_judge(cfg, train, len(run.class_names))
    classify = lambda x: domain_classifier.classify(clf, x)[0]  # noqa: E731
    embed, desc = feature_space(space, cfg, run, train, clf)
    period = latent_period(run)
    seen = generator_train(run, train)
    # nearest-train search: seen = the split + extra training images
    ref = scoring.build_reference(
        test.images, test.labels, seen.images, run.class_names, embed, classify, period,
        cfg.memorisation_search_size, cfg.kid_subsets, cfg.kid_subset_size,
        int(cfg.features.prdc_k), calibration_images=calibration(run, cfg, seen),
        cache_dir=eval_cache.run_cache_dir(run.workdir),
    )  # fmt: skip
    recall = setmetrics.fidelity(
        nulls, "real_recall", classify(test.images), test.labels, run.class_names
    )["per_class"]
    grid = spectrum.grid_score(test.images, period) if period else None
    return RealData(
        train, val, test, ref, desc, recall, grid, embed(val.images), embed(train.images)
    )


# ----------------------------------------------------------------------------- one step


def equal_n_fid(
    nulls: Nulls, path: str, fa, la, fb, lb, counts: Sequence[int], real: RealData
) -> float | None:
    """FID vs the test split of set a and of set b, each cut to `counts` images per class;
    returns FID(a) / FID(b) (None when either is undefined or FID(b) is 0)."""
    ia = setmetrics.per_class_subset(la, counts, seed=2)
    ib = setmetrics.per_class_subset(lb, counts, seed=1)
    ref, names = real.ref, real.ref.class_names
    fids = []
    for tag, feats, labels, idx in (("synthetic", fa, la, ia), ("real", fb, lb, ib)):
        fk = setmetrics.fid_kid(
            nulls,
            f"{path}.{tag}",
            feats[idx],
            labels[idx],
            ref.test_feats,
            ref.test_labels,
            names,
            ref.kid_subsets,
            ref.kid_subset_size,
        )
        fids.append(fk["overall"]["fid"])
    if fids[0] is None or not fids[1]:
        nulls.null(path, "one of the two FIDs is n/a or 0")
        return None
    return fids[0] / fids[1]


def fid_ratios(nulls: Nulls, path: str, feats, labels, real: RealData) -> dict[str, float | None]:
    """Synthetic FID over the real-vs-real FID at equal n: vs val (and vs a train subset)."""
    K = len(real.ref.class_names)
    out = {}
    for key, split, rf in (
        ("fid_ratio", real.val, real.val_feats),
        ("fid_ratio_train", real.train, real.train_feats),
    ):
        n = [min(int(np.sum(labels == c)), int(np.sum(split.labels == c))) for c in range(K)]
        out[key] = equal_n_fid(nulls, f"{path}.{key}", feats, labels, rf, split.labels, n, real)
        out[f"{key}_n_per_class"] = n
    return out


def load_step(workdir: str, step: int) -> Any:
    """The run at checkpoint `step` (`pipeline.load_ldm`; EMA and raw weights)."""
    from jax_mri_ldm import pipeline  # heavy

    return pipeline.load_ldm(workdir, step)


def curve_spec(run: Any, cfg: ml_collections.ConfigDict) -> Any:
    """The curve's sampler: the report's main sampler (`sections.common.main_spec`, the run's
    default with the config's sampler fields that are set, e.g. ``--config.eps_scale``) at the
    config's `guidance_scale`, or the run default's w when it is None (the curve runs no sweep)."""
    from jax_mri_ldm.evaluation.sections import common

    w = cfg.guidance_scale
    w = run.default_spec().guidance_scale if w is None else w
    return common.main_spec(types.SimpleNamespace(cfg=cfg, run=run), w)


def sample_run(
    run: Any, spec: Any, per_class: int, seed: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(images (K*n, H, W, 1), labels (K*n,)) of sampler `spec`, image i seeded by
    fold_in(PRNGKey(seed), i) as the pipeline does."""

    labels = np.repeat(np.arange(len(run.class_names)), per_class).astype(np.int32)
    return run.sample_images(labels, seed, spec, batch_size), labels


def score_step(images: np.ndarray, labels: np.ndarray, real: RealData, nulls: Nulls, path: str):
    """The curve's numbers for one step's samples (the report's scoring, its ratios)."""
    row, per = scoring.score_set(real.ref, images, labels, nulls, path)
    return step_numbers(row, per, images, labels, real, nulls, path)


def step_numbers(row: dict, per: dict, images, labels, real: RealData, nulls: Nulls, path: str):
    """`score_step` from `scoring.score_set`'s (row, per-image) of `images`."""
    out: dict[str, Any] = fid_ratios(nulls, path, real.ref.embed(images), labels, real)
    out["fid"] = row["fid"]
    out["fidelity"] = row.get("fidelity_detail", {}).get("per_class")
    out["fidelity_interval"] = fidelity_intervals(per, labels, real.ref.class_names)
    grid = None
    if real.test_grid is not None and "grid" in per:
        grid = spectrum.summary_vs_real(per["grid"], real.test_grid)
    out["grid_ratio"] = grid["ratio"] if grid else None
    out["grid_within_real_iqr"] = grid["within_real_iqr"] if grid else None
    real_nn = float(np.median(real.ref.test_nn))
    out["nn_ssim_ratio"] = row["nn_ssim"] / real_nn if real_nn > 0 else None
    for k in ("nn_ssim", "memorised", "spectrum", "precision", "recall", "density", "coverage"):
        out[k] = row.get(k)
    return out


def fidelity_intervals(per: dict, labels: np.ndarray, names: Sequence[str]) -> dict | None:
    """Per class, the 95 % Wilson interval of class fidelity (the report's, section 10): a
    curve of 32-64 images per class cannot separate steps closer than this."""
    if "correct" not in per:
        return None
    out = {}
    for c, name in enumerate(names):
        sel = labels == c
        out[name] = list(scoring.proportion_interval(per["correct"][sel])) if sel.any() else None
    return out


def save_step_grid(
    path: str, images: np.ndarray, labels: np.ndarray, real: RealData, title: str, k: int
) -> str:
    """Per class: a row of `k` samples above a row of `k` real test images."""
    rows = []
    for c, name in enumerate(real.ref.class_names):
        rows.append((f"{name}\nsamples", images[labels == c][:k]))
        rows.append((f"{name}\nreal test", real.test.images[real.test.labels == c][:k]))
    return plots.save_rows_figure(rows, path, title=title)


# ----------------------------------------------------------------------------- outputs


def _with_interval(value: float | None, interval: Sequence[float] | None) -> str:
    """`0.81 [0.75, 0.86]`, or the value alone when there is no interval."""
    if interval is None or value is None:
        return f(value, 2)
    return f"{f(value, 2)} [{f(interval[0], 2)}, {f(interval[1], 2)}]"


def render_markdown(curve: dict) -> str:
    """curve.md: settings in one paragraph, then one table row per step."""
    names = list(curve["real_recall"])
    head = ["step", "% of run", "CPU min", "fid_ratio", "fid_ratio (train)"]
    head += [f"fidelity {n}" for n in names] + ["grid ratio", "nn_ssim ratio", "memorised"]
    rows = []
    for r in curve["rows"]:
        fid, ci = r["fidelity"] or {}, r.get("fidelity_interval") or {}
        rows.append(
            [str(r["step"]), f(r["percent_of_run"], 1), f(r["cpu_minutes"], 2)]
            + [f(r["fid_ratio"], 2), f(r["fid_ratio_train"], 2)]
            + [_with_interval(fid.get(n), ci.get(n)) for n in names]
            + [f(r["grid_ratio"], 2), f(r["nn_ssim_ratio"], 2), f(r["memorised"], 3)]
        )
    recall = ", ".join(f"{n} {f(v, 2)}" for n, v in curve["real_recall"].items())
    L = [f"# Quality against updates: `{curve['workdir']}`", ""]
    L += [
        f"{curve['sampler']}, {curve['per_class']} images per class per step (same seeds at "
        f"every step), EMA weights; feature space: {curve['feature_space']}. The run plans "
        f"{curve['run_length']} updates; CPU min = training steps only (VAE stage: "
        f"{f(curve['vae_cpu_minutes'], 2)} min more). Domain classifier recall on real test "
        f"images: {recall}. Ratios are synthetic / real (1 = as real): fid_ratio = FID of "
        "the samples vs the real test split over that of the real val split, at equal n per "
        "class; fid_ratio (train) = the same with a real-train subset (the report headline's "
        "form); fidelity [95 % Wilson interval]; grid and nn_ssim = medians over the real "
        "test images' medians.",
        "",
    ]
    return "\n".join(L + table(head, rows))


def write_outputs(out_dir: str, curve: dict) -> None:
    """curve.json and curve.md, atomically."""
    atomic.write_json(os.path.join(out_dir, "curve.json"), clean(curve), indent=1)
    atomic.write_text(os.path.join(out_dir, "curve.md"), render_markdown(clean(curve)))


# ----------------------------------------------------------------------------- the curve


def curve_header(
    run: Any, spec: Any, real: RealData, space: str, per_class: int, seed: int
) -> dict:
    """The curve's settings and once-per-curve numbers (before any row)."""
    return {
        "workdir": os.path.abspath(run.workdir),
        "run_length": run_length(run),
        "sampler": f"{spec.name(run.schedule.num_timesteps)} w={spec.guidance_scale:g}",
        "per_class": per_class,
        "seed": seed,
        "space": space,
        "feature_space": real.space,
        "real_recall": real.real_recall,
        "vae_cpu_minutes": vae_minutes(run),
        "cpu_minutes_note": "training steps only (metrics.jsonl windows), not eval/checkpoints",
        "rows": [],
    }


def curve_row(run: Any, step: int, scores: dict, windows, grid_png: str, seconds: float) -> dict:
    """One step's row: position in the run, training minutes, scores, figure."""
    return {
        "step": int(step),
        "percent_of_run": 100.0 * step / max(run_length(run), 1),
        "cpu_minutes": training_minutes(windows, step),
        "final": run.final,
        **scores,
        "grid_png": os.path.basename(grid_png),
        "eval_seconds": seconds,
    }


def curve_step(
    run: Any,
    index: int,
    real: RealData,
    cfg: ml_collections.ConfigDict,
    per_class: int,
    windows: Sequence[tuple[int, int, float]],
    nulls: Nulls,
    out_dir: str,
) -> dict:
    """Samples, scores and draws one checkpoint; returns its row."""
    t0 = time.perf_counter()
    spec = curve_spec(run, cfg)
    images, labels = sample_run(run, spec, per_class, int(cfg.seed), int(cfg.batch_size))
    scores = score_step(images, labels, real, nulls, f"rows.{index}")
    pct = 100.0 * run.step / max(run_length(run), 1)
    title = f"step {run.step} ({pct:.0f} % of the run): samples above real test images"
    path = os.path.join(out_dir, f"grid_step{run.step}.png")
    k = min(per_class, int(cfg.figure_images))
    png = save_step_grid(path, images, labels, real, title, k)
    return curve_row(run, run.step, scores, windows, png, time.perf_counter() - t0)


def run_curve(
    workdir: str,
    out_dir: str,
    cfg: ml_collections.ConfigDict,
    steps: Sequence[int] | None = None,
    per_class: int = 32,
    space: str = "random",
    log: Callable[..., None] = print,
) -> dict:
    """Scores every kept (or each requested) checkpoint of an LDM run; writes the outputs.

    Args:
      workdir: the diffusion run directory.
      out_dir: where curve.json, curve.md and grid_step<N>.png go.
      cfg: the report settings (configs/report.py): classifier, features, estimator sizes,
        `seed` and `batch_size` of the sampler.
      steps: checkpoint steps to score (None: every kept one).
      per_class: images per class per step.
      space: feature space (`SPACES`).
      log: progress printer.

    Returns:
      The curve.json content.
    """
    if space not in SPACES:
        raise UserError(f"--space={space}: use one of {', '.join(SPACES)}.")
    if per_class < 2:
        raise UserError(f"--per_class={per_class} must be >= 2 (FID needs pairs).")
    todo = select_steps(kept_steps(workdir), steps)
    nulls = Nulls()
    run = load_step(workdir, todo[0])
    real = prepare_real(run, cfg, space, nulls, log)
    curve = curve_header(run, curve_spec(run, cfg), real, space, per_class, int(cfg.seed))
    batch = int(run.meta.get("global_batch_size", run.config.train.batch_size))
    windows = run_windows(workdir, batch)
    for i, step in enumerate(todo):
        run = run if i == 0 else load_step(workdir, step)
        row = curve_step(run, i, real, cfg, per_class, windows, nulls, out_dir)
        curve["rows"].append(row)
        curve["null_reasons"] = dict(sorted(nulls.reasons.items()))
        write_outputs(out_dir, curve)
        log(f"[curve] step {step}: fid_ratio {f(row['fid_ratio'], 2)}, {row['eval_seconds']:.0f} s")
    return clean(curve)


# ----------------------------------------------------------------------------- entry point


def define_flags() -> None:
    """The command-line flags (defined only when run as a script)."""
    from absl import flags
    from ml_collections import config_flags

    flags.DEFINE_string("workdir", None, "Diffusion run directory (train.py configs/ldm.py).")
    flags.DEFINE_string("out", None, "Output directory (default: <workdir>/../quality_curve).")
    flags.DEFINE_list("steps", None, "Checkpoint steps (default: every kept checkpoint).")
    flags.DEFINE_integer("per_class", 32, "Images per class per step.")
    flags.DEFINE_enum("space", "random", list(SPACES), "Feature space of FID.")
    config_flags.DEFINE_config_file("config", "configs/report.py", "Report settings[:preset].")
    flags.DEFINE_bool("quiet", False, "No progress lines.")
    flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    """Parses the flags and runs `run_curve`; user errors exit 2 with one line."""
    del argv
    from absl import flags

    from jax_mri_ldm.cli import setup_logging, user_error, user_errors

    FLAGS = flags.FLAGS
    setup_logging()
    out = FLAGS.out or os.path.join(
        os.path.dirname(os.path.abspath(FLAGS.workdir)), "quality_curve"
    )
    try:
        curve = run_curve(
            FLAGS.workdir,
            out,
            FLAGS.config,
            parse_steps(FLAGS.steps),
            FLAGS.per_class,
            FLAGS.space,
            log=(lambda *a, **k: None) if FLAGS.quiet else print,
        )
    except user_errors() as e:
        sys.exit(user_error(str(e)))
    print(f"curve: {os.path.join(out, 'curve.md')} ({len(curve['rows'])} steps)")


if __name__ == "__main__":
    from absl import app

    from jax_mri_ldm.cli import parse_flags

    define_flags()
    app.run(main, flags_parser=parse_flags)
