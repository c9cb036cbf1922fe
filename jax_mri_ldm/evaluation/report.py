"""Evaluation report of a finished latent-diffusion run: report.md, PNG figures, report.json.

`write_report(ldm_workdir, out_dir, preset)` reads everything from the LDM run directory (its
config, split.json, EMA weights and the frozen VAE copy) plus the VAE run it points to (for the
VAE loss curve), and writes into `out_dir`:

* ``report.md``   the exact commands, run/config/data/machine summary, then sections 1-10
  (paper figures, VAE reconstruction, domain classifier, class fidelity, domain FID/KID,
  diversity, memorisation, downstream study, guidance sweep, sampler comparison) and timings;
* ``report.json`` every number in the report; a metric that cannot be computed is ``null`` and
  its dotted JSON path is listed in ``null_reasons`` with the reason;
* ``figures/*.png`` small PNGs (<= ~300 KB each, so the report can be committed).

Every metric is computed on the held-out TEST split; training images appear only where the
question is about them (memorisation, the real-vs-real FID reference, the study's training sets).

Synthetic images. Each sampler setting (sampler, steps, spacing, guidance w) is compiled once per
batch size (ahead of time, so compile time and sampling time are measured separately) and
image ``i`` of a setting always has label ``i % num_classes`` and lies in batch ``i // B``
whose noise is ``fold_in(PRNGKey(seed), batch)``. Samples of a row do not depend on the other
rows of its batch, so the first ``n`` images per class of a setting are the same whether ``n`` or
``N > n`` were asked for: the guidance sweep, the main set and the sampler table share batches
instead of regenerating them, and all settings share their starting noise (common random
numbers), which makes the w and sampler comparisons paired.

Domain features. There is no Inception network for 1-channel brain MRI here; the penultimate
features of a normal-vs-tumour CNN trained on the real training split (`study.train_classifier`)
stand in for it, so "FID"/"KID" are domain-specific and comparable only within this report. To
give them a scale every table carries a real-vs-real reference computed with the same features:
real train vs real test with the same number of images per class as the synthetic set (so the
finite-sample bias is the same), and real val vs real test (both never seen by any model).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jax_mri_ldm import data as data_lib  # noqa: E402
from jax_mri_ldm import plots, sampling  # noqa: E402
from jax_mri_ldm.engine import checkpoint as ckpt_lib  # noqa: E402
from jax_mri_ldm.engine import logging as log_lib  # noqa: E402
from jax_mri_ldm.evaluation import metrics, study  # noqa: E402

SECTION_HEADERS: tuple[str, ...] = (
    "## Commands",
    "## Run summary",
    "## 1. Figures from the paper",
    "## 2. VAE reconstruction (test split)",
    "## 3. Domain classifier",
    "## 4. Class fidelity",
    "## 5. Domain FID and KID",
    "## 6. Diversity",
    "## 7. Memorisation",
    "## 8. Downstream study",
    "## 9. Guidance sweep",
    "## 10. Sampler comparison",
    "## Timings",
)
"""Every header `report.md` contains, in order."""

MAX_PNG_BYTES = 300_000
"""Figures larger than this are re-encoded (palette, then downscaled) to stay committable."""

_FALLBACK_NULL_REASON = "undefined (non-finite value)"
# Per-row details of the sweep / sampler tables that report.md does not show (JSON only).
_ROW_DETAIL = (".fid_kid.", ".diversity_detail.", ".fidelity_detail.")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --------------------------------------------------------------------------------------------
# Settings and presets
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One sampler setting: which sampler, how many network calls, spacing, guidance w.

    Attributes:
      sampler: 'ddpm' | 'ddim' | 'dpmpp_2m'.
      steps: network calls; None = all T of the schedule (what DDPM always does).
      spacing: timestep spacing (see sampling.timesteps_for).
      guidance: classifier-free guidance scale w.
      eta: DDIM stochasticity (0 deterministic, 1 ancestral); ignored by the other samplers.
    """

    sampler: str
    steps: int | None
    spacing: str
    guidance: float
    eta: float = 0.0

    def name(self, num_timesteps: int) -> str:
        """Human label, e.g. 'DPM-Solver++(2M) 25' or 'DDIM 50 η=1'."""
        pretty = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp_2m": "DPM-Solver++(2M)"}[self.sampler]
        eta = f" η={self.eta:g}" if self.sampler == "ddim" else ""
        return f"{pretty} {self.steps or num_timesteps}{eta}"


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """Sizes and knobs of one report; `PRESETS` holds three sets of defaults.

    Attributes:
      num_synthetic_per_class: size of the main synthetic set per class (sections 4-8); also the
        N of the downstream study's '+syn' arms.
      batch_size: images per sampler call (every setting is compiled for this batch size).
      seed: base seed of all synthetic images (batch b uses fold_in(PRNGKey(seed), b)).
      sampler: main sampler; with `steps` and `spacing` the setting of the main set.
      steps: main sampler steps.
      spacing: main timestep spacing.
      guidance_scale: w of the main set; None = chosen by the guidance sweep's rule.
      guidance_scales: the sweep's w values (empty: no sweep, main w = 3 unless given).
      sweep_per_class: images per class for each w of the sweep.
      fidelity_tolerance: sweep rule: a w qualifies when its class fidelity is at least the
        classifier's accuracy on real test images minus this.
      samplers: (sampler, steps or None for T, spacing, eta) rows of the sampler table (at
        main w); eta is DDIM's stochasticity (a 3-tuple means eta = 0).
      sampler_per_class: images per class per sampler row (except DDPM).
      ddpm_per_class: images per class for DDPM (about T network calls per image).
      classifier_steps: training steps of the domain classifier.
      classifier_batch_size: its batch size (also the study's).
      classifier_lr: its Adam learning rate (also the study's).
      classifier_input_size: its working resolution (also the study's).
      classifier_widths: its channels per block (the last one is the feature dimension).
      study_seeds: number of seeds of the downstream study (seeds 0..K-1).
      study_steps: classifier steps per (arm, seed) in the study.
      diversity_max_pairs: pairs per class for mean pairwise MS-SSIM.
      kid_subsets: KID subsets.
      kid_subset_size: KID subset size (clipped to the set sizes).
      memorisation_search_size: side length for the SSIM nearest-neighbour search.
      figure_images: images in the VAE figure and per class in sample grids.
      difference_pairs: synthetic images in the difference-map figure.
      use_ema: sample with the EMA weights (the paper's choice).
      compile_options: XLA options for the sampler/decoder compiles, as (name, value) pairs;
        the tiny preset turns LLVM optimisation off (3x faster compiles of a model that takes
        far longer to compile than to run), which makes its seconds/image unrepresentative.
    """

    num_synthetic_per_class: int = 200
    batch_size: int = 16
    seed: int = 0
    sampler: str = "ddim"
    steps: int | None = 50
    spacing: str = "uniform"
    eta: float = 1.0
    guidance_scale: float | None = None
    guidance_scales: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0)
    sweep_per_class: int = 32
    fidelity_tolerance: float = 0.05
    samplers: tuple[tuple, ...] = (
        ("ddpm", None, "uniform", 0.0),
        ("ddim", 50, "uniform", 0.0),
        ("ddim", 50, "uniform", 1.0),
        ("dpmpp_2m", 25, "logSNR", 0.0),
        ("dpmpp_2m", 10, "logSNR", 0.0),
    )
    sampler_per_class: int = 32
    ddpm_per_class: int = 4
    classifier_steps: int = 600
    classifier_batch_size: int = 32
    classifier_lr: float = 1e-3
    classifier_input_size: int | None = 64
    classifier_widths: tuple[int, ...] = (16, 32, 64, 128)
    study_seeds: int = 5
    study_steps: int = 300
    diversity_max_pairs: int = 500
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    memorisation_search_size: int = 64
    figure_images: int = 8
    difference_pairs: int = 4
    use_ema: bool = True
    compile_options: tuple[tuple[str, Any], ...] = ()


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # A few minutes on a 2-core CPU for the demo run (128 px, 8x16x16 latents, T=1000): the
    # sampler compiles (one per w and per sampler) and DDPM's 2 x 1000 UNet rows per image
    # dominate, hence few images per setting and a short downstream study.
    "demo": dict(
        num_synthetic_per_class=32,
        guidance_scales=(0.0, 1.0, 3.0, 5.0),  # every w is one more sampler compile
        sweep_per_class=8,
        sampler_per_class=4,
        ddpm_per_class=2,
        classifier_steps=150,
        classifier_batch_size=16,
        study_seeds=2,
        study_steps=60,
        diversity_max_pairs=100,
        kid_subsets=50,
    ),
    # Well under a minute on the tiny test run (32 px, 24 images, T=100): tests only.
    "tiny": dict(
        num_synthetic_per_class=8,
        batch_size=8,
        guidance_scales=(1.0, 3.0),  # every w is one more compile
        sweep_per_class=4,
        sampler_per_class=4,
        ddpm_per_class=4,
        classifier_steps=30,
        classifier_batch_size=8,
        classifier_lr=2e-3,
        classifier_input_size=32,
        classifier_widths=(8, 16),
        study_seeds=2,
        study_steps=10,
        diversity_max_pairs=20,
        kid_subsets=10,
        memorisation_search_size=32,
        figure_images=4,
        difference_pairs=2,
        compile_options=(("xla_backend_optimization_level", 0),),
    ),
}
"""Preset name -> overrides of the `ReportSettings` defaults (which are the paper preset)."""


def resolve_settings(preset: str = "paper", **overrides: Any) -> ReportSettings:
    """Preset defaults with `overrides` applied (None values are ignored).

    Args:
      preset: 'paper' | 'demo' | 'tiny'.
      **overrides: any `ReportSettings` field.

    Returns:
      The settings.

    Raises:
      ValueError: unknown preset or field, or a value out of range (named by its option).
    """
    if preset not in PRESETS:
        raise ValueError(f"--preset={preset} is not one of {', '.join(PRESETS)}.")
    fields = {f.name for f in dataclasses.fields(ReportSettings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown report option(s) {unknown}; valid: {sorted(fields)}.")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("guidance_scales", "classifier_widths", "samplers", "compile_options"):
        if key in values:
            values[key] = tuple(tuple(v) if isinstance(v, list) else v for v in values[key])
    s = ReportSettings(**values)
    positive = (
        "num_synthetic_per_class",
        "batch_size",
        "sampler_per_class",
        "ddpm_per_class",
        "classifier_steps",
        "study_seeds",
        "study_steps",
        "sweep_per_class",
    )
    for key in positive:
        if int(getattr(s, key)) < 1:
            raise ValueError(f"--{key}={getattr(s, key)} must be >= 1.")
    if s.num_synthetic_per_class < 2:
        raise ValueError("--num_synthetic_per_class must be >= 2 (diversity needs pairs).")
    if s.sampler not in sampling.SAMPLERS:
        raise ValueError(f"sampler={s.sampler} is not one of {sampling.SAMPLERS}.")
    return s


# --------------------------------------------------------------------------------------------
# Nulls with reasons
# --------------------------------------------------------------------------------------------


class _Nulls:
    """Records why a metric is null, keyed by its dotted path in report.json."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def null(self, path: str, reason: str) -> None:
        self.reasons[path] = reason

    def value(self, path: str, fn: Callable[[], Any], reason: str | None = None) -> float | None:
        """fn() as a finite float, or None with the reason (ValueError text or `reason`)."""
        try:
            v = fn()
        except ValueError as e:
            self.reasons[path] = reason or str(e)
            return None
        return self.finite(path, v, reason)

    def finite(self, path: str, v: Any, reason: str | None = None) -> float | None:
        if v is None or not math.isfinite(float(v)):
            self.reasons[path] = reason or _FALLBACK_NULL_REASON
            return None
        return float(v)


def _walk_nulls(obj: Any, path: str = "") -> list[str]:
    """Dotted paths of every None leaf (list items by index)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _walk_nulls(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out += _walk_nulls(v, f"{path}.{i}")
    elif obj is None:
        out.append(path)
    return out


def _clean(x: Any) -> Any:
    """numpy -> Python, tuples -> lists, non-finite floats -> None (recursively)."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------------------------
# Figures (new ones; the shared ones live in jax_mri_ldm.plots)
# --------------------------------------------------------------------------------------------


def shrink_png(path: str, max_bytes: int = MAX_PNG_BYTES) -> int:
    """Re-encodes a PNG as an optimised palette image (then downscales) until <= max_bytes.

    Args:
      path: the PNG, rewritten in place when it is larger than max_bytes.
      max_bytes: size limit.

    Returns:
      The final size in bytes.
    """
    size = os.path.getsize(path)
    if size <= max_bytes:
        return size
    img = Image.open(path).convert("RGB")
    scale = 1.0
    while True:
        w, h = img.size
        cur = img if scale == 1.0 else img.resize((int(w * scale), int(h * scale)), Image.LANCZOS)
        tmp = f"{path}.tmp{os.getpid()}.png"
        cur.quantize(colors=256).save(tmp, optimize=True)
        os.replace(tmp, path)
        size = os.path.getsize(path)
        if size <= max_bytes or scale < 0.3:
            return size
        scale *= 0.8


def _save(fig, path: str, dpi: int = 90) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    shrink_png(path)
    return path


def save_loss_curves_figure(
    vae_records: Sequence[dict],
    ldm_records: Sequence[dict],
    path: str,
    vae_reference: Sequence[tuple[float, float]],
    ldm_reference: Sequence[tuple[float, float]],
    vae_note: str = "",
) -> str:
    """Paper Fig. 4: VAE (left) and diffusion (right) training loss with the paper's points.

    Args:
      vae_records: metrics.jsonl 'train' records of the VAE run (need 'epoch', 'loss').
      ldm_records: the same for the LDM run.
      path: output PNG.
      vae_reference: the paper's (epoch, loss) points for the VAE.
      ldm_reference: the paper's (epoch, loss) points for the diffusion model.
      vae_note: text shown instead of the VAE curve when its records are missing.

    Returns:
      path.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    panels = (
        (axes[0], vae_records, vae_reference, "VAE: L1 + beta KL", vae_note),
        (axes[1], ldm_records, ldm_reference, "latent diffusion: eps-MSE", ""),
    )
    for ax, records, ref, title, note in panels:
        if records:
            ax.plot([r["epoch"] for r in records], [r["loss"] for r in records], lw=1.2)
            ax.lines[-1].set_label("this run (per log window)")
        elif note:
            ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)
        xs, ys = zip(*ref, strict=True)
        ax.plot(xs, ys, "--o", lw=1.0, ms=3, label="paper (Fig. 4)")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def save_pairs_figure(
    first: np.ndarray,
    second: np.ndarray,
    path: str,
    row_names: tuple[str, str],
    titles: Sequence[str] = (),
    suptitle: str = "",
) -> str:
    """Rows: first | second | |first - second| (shared colour bar), one column per pair.

    Args:
      first: (N, H, W, 1) images in [0, 1] (e.g. synthetic).
      second: (N, H, W, 1) images in [0, 1] (e.g. the nearest real image).
      path: output PNG.
      row_names: labels of the first two rows.
      titles: optional per-column titles.
      suptitle: figure title.

    Returns:
      path.
    """
    a = np.asarray(first, np.float32)[..., 0]
    b = np.asarray(second, np.float32)[..., 0]
    diff = np.abs(a - b)
    n = a.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.7 * n + 0.8, 5.4), squeeze=False)
    vmax = max(float(diff.max()), 1e-3)
    im = None
    for i in range(n):
        for r, (arr, cmap, top) in enumerate(
            ((a, "gray", 1.0), (b, "gray", 1.0), (diff, "magma", vmax))
        ):
            ax = axes[r, i]
            h = ax.imshow(arr[i], cmap=cmap, vmin=0, vmax=top)
            im = h if r == 2 else im
            ax.set_xticks([])
            ax.set_yticks([])
        if i < len(titles):
            axes[0, i].set_title(titles[i], fontsize=8)
    for r, name in enumerate((*row_names, "|difference|")):
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.colorbar(im, ax=list(axes[2]), fraction=0.03, pad=0.01)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return _save(fig, path)


def save_rows_figure(rows: Sequence[tuple[str, np.ndarray]], path: str, title: str = "") -> str:
    """One row of images per (name, images (n, H, W, 1)); names on the left.

    Args:
      rows: (row label, images in [0, 1]) pairs.
      path: output PNG.
      title: figure title.

    Returns:
      path.
    """
    ncols = max(1, max(len(im) for _, im in rows))
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.2 * ncols + 1.4, 1.25 * len(rows) + 0.4), squeeze=False
    )
    for r, (name, images) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(np.squeeze(images[c]), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def save_memorisation_histogram(mem: dict, path: str) -> str:
    """Histogram of nearest-train SSIM for synthetic vs real test images, threshold marked.

    Args:
      mem: `metrics.memorisation_report` output.
      path: output PNG.

    Returns:
      path.
    """
    syn = np.asarray(mem["synthetic_to_train"]["score"])
    ref = np.asarray(mem["test_to_train"]["score"])
    fig, ax = plt.subplots(figsize=(5.5, 3.3))
    lo, hi = float(min(syn.min(), ref.min())), float(max(syn.max(), ref.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 30)
    ax.hist(syn, bins=bins, alpha=0.6, density=True, label=f"synthetic -> train (n={syn.size})")
    ax.hist(ref, bins=bins, alpha=0.6, density=True, label=f"real test -> train (n={ref.size})")
    ax.axvline(mem["threshold"], color="k", ls="--", lw=1, label="closest real test (threshold)")
    ax.set_xlabel(f"{mem['metric'].upper()} to the nearest training image (higher = closer)")
    ax.set_ylabel("density")
    ax.set_title(f"memorisation: {100 * mem['fraction_flagged']:.1f}% flagged", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def save_guidance_figure(sweep: dict, path: str) -> str:
    """Fidelity, FID and diversity against w, with real references and the chosen w.

    Args:
      sweep: the report's 'guidance_sweep' section.
      path: output PNG.

    Returns:
      path.
    """
    rows = sweep["rows"]
    ws = [r["guidance"] for r in rows]
    panels = (
        ("class fidelity", "fidelity", sweep.get("real_fidelity"), "real test (classifier acc.)"),
        ("domain FID vs test", "fid", sweep.get("real_fid"), "real train vs test, same n"),
        ("mean pairwise MS-SSIM", "diversity", sweep.get("real_diversity"), "real test"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.0))
    for ax, (title, key, ref, ref_label) in zip(axes, panels, strict=True):
        ys = [np.nan if r[key] is None else r[key] for r in rows]
        ax.plot(ws, ys, "-o", ms=4, lw=1.2, label="synthetic")
        if ref is not None:
            ax.axhline(ref, color="gray", ls="--", lw=1, label=ref_label)
        if sweep.get("chosen") is not None:
            ax.axvline(sweep["chosen"], color="C3", ls=":", lw=1.2, label="chosen w")
        ax.set_xlabel("guidance scale w")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def save_downstream_figure(result: dict, path: str) -> str:
    """Bar chart: per arm mean +- 95 % CI of accuracy, AUC, sensitivity, specificity.

    Args:
      result: `study.downstream_study` output.
      path: output PNG.

    Returns:
      path.
    """
    arms = list(result["arms"])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(study.METRIC_NAMES))
    for i, arm in enumerate(arms):
        summ = result["arms"][arm]["summary"]
        means = [np.nan if summ[m]["mean"] is None else summ[m]["mean"] for m in study.METRIC_NAMES]
        errs = [summ[m]["half_width"] or 0.0 for m in study.METRIC_NAMES]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=arm)
    ax.set_xticks(x, study.METRIC_NAMES)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("real test split")
    ax.legend(fontsize=7, ncol=len(arms))
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# Synthetic images: one compiled sampler per setting, batches shared across sections
# --------------------------------------------------------------------------------------------


class SyntheticImages:
    """Generates and caches labelled synthetic images for sampler settings.

    Image i of a setting has label i % K and comes from batch i // B (noise
    fold_in(PRNGKey(seed), batch)), so asking for more images of a setting only adds batches.
    B is `batch_size`, or fewer when fewer images are asked for; images already generated at
    a larger B are reused rather than compiling the setting again for a smaller one.

    Args:
      run: a `train_ldm.LoadedLDM`.
      params: UNet parameters (EMA or raw).
      batch_size: images per sampler call.
      seed: base seed.
      progress: optional logging callback.
      compile_options: XLA compiler options for every compile (see ReportSettings).
    """

    def __init__(
        self,
        run: Any,
        params: Any,
        batch_size: int,
        seed: int,
        progress: Callable[[str], None] | None = None,
        compile_options: dict[str, Any] | None = None,
    ):
        self.run = run
        self.compile_options = dict(compile_options or {}) or None
        self.num_classes = len(run.class_names)
        self.params = jax.device_put(params)
        self.vae_params = jax.device_put(run.vae_params)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress
        self._decode = run.decode_fn()
        self._decoders: dict[int, Any] = {}
        self._compiled: dict[tuple, Any] = {}
        self._batches: dict[tuple, dict[int, np.ndarray]] = {}
        self.stats: dict[tuple, dict[str, Any]] = {}

    def _key(self, spec: SamplerSpec, batch: int) -> tuple:
        return (spec, batch)

    def _batch_for(self, spec: SamplerSpec, total: int) -> int:
        """Batch size for `total` images of a setting: a larger batch size whose cached
        batches already hold them (e.g. the main set, asked again by the sampler table) wins
        over compiling this setting again for a smaller batch."""
        for (sp, b), cache in sorted(self._batches.items(), key=lambda kv: -kv[0][1]):
            if sp == spec and all(i in cache for i in range(math.ceil(total / b))):
                return b
        return min(self.batch_size, total)

    def _get_compiled(self, spec: SamplerSpec, b: int):
        key = self._key(spec, b)
        if key in self._compiled:
            return self._compiled[key]
        t0 = time.perf_counter()
        fn = sampling.make_sample_fn(
            self.run.apply_fn(),
            self.run.schedule,
            self.run.latent_shape,
            sampler=spec.sampler,
            steps=spec.steps,
            guidance_scale=float(spec.guidance),
            null_label=self.run.null_label,
            spacing=spec.spacing,
            eta=float(spec.eta) if spec.sampler == "ddim" else 0.0,
            prediction=self.run.config.diffusion.prediction,
            clip_x0=self.run.x0_clip,
        )
        labels = jnp.zeros((b,), jnp.int32)
        lowered = fn.lower(self.params, labels, jax.random.PRNGKey(0))
        compiled = lowered.compile(compiler_options=self.compile_options)
        if b not in self._decoders:
            z = jax.ShapeDtypeStruct((b, *self.run.latent_shape), jnp.float32)
            self._decoders[b] = self._decode.lower(self.vae_params, z).compile(
                compiler_options=self.compile_options
            )
        self._compiled[key] = compiled
        self.stats[key] = {
            "compile_seconds": time.perf_counter() - t0,
            "batch_seconds": [],
            "batch_size": b,
        }
        return compiled

    def generate(self, spec: SamplerSpec, n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `n_per_class` images per class of a setting.

        Args:
          spec: the sampler setting.
          n_per_class: images per class.

        Returns:
          (images (K*n, H, W, 1) in [0, 1], labels (K*n,) int32 = arange % K).
        """
        total = self.num_classes * int(n_per_class)
        b = self._batch_for(spec, total)
        key = self._key(spec, b)
        cache = self._batches.setdefault(key, {})
        n_batches = math.ceil(total / b)
        missing = [i for i in range(n_batches) if i not in cache]
        if missing:
            compiled = self._get_compiled(spec, b)
            decode = self._decoders[b]
            base = jax.random.PRNGKey(self.seed)
            for i in missing:
                labels = jnp.asarray(np.arange(i * b, (i + 1) * b) % self.num_classes, jnp.int32)
                t0 = time.perf_counter()
                z = compiled(self.params, labels, jax.random.fold_in(base, i))
                images = np.asarray(decode(self.vae_params, z))  # (b, H, W, 1), blocks
                self.stats[key]["batch_seconds"].append(time.perf_counter() - t0)
                cache[i] = images
            if self.progress:
                name = spec.name(self.run.schedule.num_timesteps)
                self.progress(
                    f"  {name} w={spec.guidance:g}: {len(missing)} batch(es) of {b}, "
                    f"{np.median(self.stats[key]['batch_seconds']):.2f} s/batch"
                )
        images = np.concatenate([cache[i] for i in range(n_batches)])[:total]
        labels = (np.arange(total) % self.num_classes).astype(np.int32)
        return images, labels

    def clear(self) -> None:
        """Drops the generated images; compiled samplers and timings stay."""
        self._batches.clear()

    def timing(self, spec: SamplerSpec, n_per_class: int) -> dict[str, Any]:
        """Measured compile time and steady-state seconds per image of a generated setting."""
        b = self._batch_for(spec, self.num_classes * int(n_per_class))
        st = self.stats.get(self._key(spec, b))
        if not st or not st["batch_seconds"]:
            return {"compile_seconds": None, "seconds_per_image": None, "batch_size": b}
        return {
            "compile_seconds": st["compile_seconds"],
            "seconds_per_image": float(np.median(st["batch_seconds"])) / st["batch_size"],
            "batch_size": st["batch_size"],
            "batches_timed": len(st["batch_seconds"]),
        }


# --------------------------------------------------------------------------------------------
# Metric helpers
# --------------------------------------------------------------------------------------------


def classify(clf: study.TrainedClassifier, images: np.ndarray, chunk: int = 64):
    """Class probabilities and penultimate features of `images`, in fixed-shape chunks.

    The rows are padded to a multiple of `chunk` so that every set (train, test, each
    synthetic set) reuses one compiled classifier forward instead of compiling per set size.

    Args:
      clf: a trained domain classifier.
      images: (N, H, W, 1) in [0, 1].
      chunk: rows per jitted call.

    Returns:
      (probs (N, num_classes), feats (N, D)).
    """
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    pad = (-n) % chunk
    if pad:
        images = np.concatenate([images, np.repeat(images[:1], pad, axis=0)])
    probs = study.predict_proba(clf, images, batch_size=chunk)[:n]
    feats = study.extract_features(clf, images, batch_size=chunk)[:n]
    return probs, feats


def _per_class_subset(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """Sorted indices holding counts[c] random images of each class c."""
    rng = np.random.default_rng(seed)
    parts = []
    for c, n in enumerate(counts):
        members = np.flatnonzero(labels == c)
        parts.append(rng.choice(members, min(int(n), members.size), replace=False))
    return np.sort(np.concatenate(parts)).astype(np.int64)


def _fidelity(
    nulls: _Nulls, path: str, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict:
    """Fraction of images the classifier assigns to their label: per class and overall."""
    pred = np.argmax(probs, axis=-1)
    out: dict[str, Any] = {"per_class": {}}
    for c, name in enumerate(class_names):
        sel = labels == c
        out["per_class"][name] = (
            float(np.mean(pred[sel] == c))
            if sel.any()
            else nulls.null(f"{path}.per_class.{name}", f"no {name} images in this set")
        )
    out["overall"] = float(np.mean(pred == labels)) if labels.size else None
    if labels.size == 0:
        nulls.null(f"{path}.overall", "empty set")
    return out


def _fid_kid(
    nulls: _Nulls,
    path: str,
    fa: np.ndarray,
    la: np.ndarray,
    fb: np.ndarray,
    lb: np.ndarray,
    class_names: Sequence[str],
    s: ReportSettings,
) -> dict:
    """FID and KID of set a vs set b, overall and per class (with the counts used)."""

    def block(sub: str, xa: np.ndarray, xb: np.ndarray) -> dict:
        p = f"{path}.{sub}"
        short = f"needs >= 2 images on each side; has {xa.shape[0]} vs {xb.shape[0]}"
        if min(xa.shape[0], xb.shape[0]) < 2:
            for k in ("fid", "kid", "kid_std"):
                nulls.null(f"{p}.{k}", short)
            return {
                "fid": None,
                "kid": None,
                "kid_std": None,
                "n_a": xa.shape[0],
                "n_b": xb.shape[0],
            }
        fid = nulls.value(f"{p}.fid", lambda: metrics.fid(xa, xb))
        try:
            kid_mean, kid_std = metrics.kid(
                xa, xb, num_subsets=s.kid_subsets, subset_size=s.kid_subset_size, seed=0
            )
        except ValueError as e:
            nulls.null(f"{p}.kid", str(e))
            nulls.null(f"{p}.kid_std", str(e))
            kid_mean = kid_std = None
        else:
            kid_mean = nulls.finite(f"{p}.kid", kid_mean)
            kid_std = nulls.finite(f"{p}.kid_std", kid_std)
        return {
            "fid": fid,
            "kid": kid_mean,
            "kid_std": kid_std,
            "n_a": int(xa.shape[0]),
            "n_b": int(xb.shape[0]),
        }

    out = {"overall": block("overall", fa, fb), "per_class": {}}
    for c, name in enumerate(class_names):
        out["per_class"][name] = block(f"per_class.{name}", fa[la == c], fb[lb == c])
    return out


def _diversity(
    nulls: _Nulls,
    path: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    max_pairs: int,
) -> dict:
    """Mean pairwise MS-SSIM within each class (lower = more diverse) and their mean."""
    out: dict[str, Any] = {"per_class": {}}
    for c, name in enumerate(class_names):
        x = images[labels == c]
        p = f"{path}.per_class.{name}"
        if x.shape[0] < 2:
            out["per_class"][name] = nulls.null(
                p, f"needs >= 2 {name} images for a pair; this set has {x.shape[0]}"
            )
            continue
        out["per_class"][name] = nulls.value(
            p, lambda x=x: metrics.mean_pairwise_ms_ssim(x, max_pairs=max_pairs, seed=0)
        )
    vals = [v for v in out["per_class"].values() if v is not None]
    out["mean"] = float(np.mean(vals)) if vals else None
    if not vals:
        nulls.null(f"{path}.mean", "no class has >= 2 images")
    return out


def _set_metrics(
    nulls: _Nulls,
    path: str,
    images: np.ndarray,
    labels: np.ndarray,
    clf: study.TrainedClassifier,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    class_names: Sequence[str],
    s: ReportSettings,
) -> dict:
    """Fidelity, overall FID vs test and mean diversity of one synthetic set."""
    probs, feats = classify(clf, images)
    fid = _fid_kid(nulls, f"{path}.fid_kid", feats, labels, test_feats, test_labels, class_names, s)
    div = _diversity(
        nulls, f"{path}.diversity_detail", images, labels, class_names, s.diversity_max_pairs
    )
    fidelity = _fidelity(nulls, f"{path}.fidelity_detail", probs, labels, class_names)
    row = {
        "num_images": int(images.shape[0]),
        "fidelity": fidelity["overall"],
        "fid": fid["overall"]["fid"],
        "kid": fid["overall"]["kid"],
        "diversity": div["mean"],
        "fidelity_detail": fidelity,
        "fid_kid": fid,
        "diversity_detail": div,
    }
    for key, sub in (("fid", "fid_kid.overall.fid"), ("kid", "fid_kid.overall.kid")):
        if row[key] is None:
            nulls.null(f"{path}.{key}", nulls.reasons.get(f"{path}.{sub}", _FALLBACK_NULL_REASON))
    if row["diversity"] is None:
        nulls.null(f"{path}.diversity", nulls.reasons[f"{path}.diversity_detail.mean"])
    return row


def choose_guidance(rows: Sequence[dict], real_fidelity: float | None, tolerance: float) -> dict:
    """The sweep's rule: lowest FID among w with fidelity >= real_fidelity - tolerance.

    If no w reaches the fidelity bar (or FID is unavailable), the w with the highest fidelity
    wins (ties: lower FID, then lower w).

    Args:
      rows: sweep rows with 'guidance', 'fidelity', 'fid'.
      real_fidelity: the domain classifier's accuracy on real test images (None: bar = 0).
      tolerance: allowed shortfall below real_fidelity.

    Returns:
      {'chosen': w, 'threshold': bar, 'rule': text, 'qualified': [w...]}.
    """
    bar = (real_fidelity or 0.0) - tolerance
    # w = 0 is the unconditional model: it ignores the label, so it is no default for
    # class-conditional sampling (unless nothing else was swept).
    rows = [r for r in rows if r["guidance"] != 0.0] or list(rows)
    qualified = [r for r in rows if r["fidelity"] is not None and r["fidelity"] >= bar - 1e-12]
    with_fid = [r for r in qualified if r["fid"] is not None]
    if with_fid:
        best = min(with_fid, key=lambda r: (r["fid"], r["guidance"]))
        why = "lowest FID among the qualifying w"
    else:
        cands = [r for r in rows if r["fidelity"] is not None] or list(rows)
        best = min(
            cands,
            key=lambda r: (
                -(r["fidelity"] or 0.0),
                r["fid"] if r["fid"] is not None else math.inf,
                r["guidance"],
            ),
        )
        why = "no w qualified (or no FID): highest fidelity"
    return {
        "chosen": float(best["guidance"]),
        "threshold": bar,
        "qualified": [float(r["guidance"]) for r in qualified],
        "rule": (
            "lowest domain FID among the w whose class fidelity is at least the domain "
            f"classifier's accuracy on real test images minus {tolerance:g} (= {bar:.3f}); if "
            "none qualifies, the w with the highest fidelity; w = 0 (unconditional) is never "
            "recommended"
        ),
        "decided_by": why,
    }


# --------------------------------------------------------------------------------------------
# Commands, machine, config summary
# --------------------------------------------------------------------------------------------


def _load_repo_config(name: str, preset: str) -> ml_collections.ConfigDict | None:
    path = os.path.join(REPO_ROOT, "configs", f"{name}.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location(f"_report_cfg_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.get_config(preset)
    except Exception:  # noqa: BLE001  (a missing/changed config only loses the override list)
        return None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(d, tuple):
        d = list(d)
    return {prefix[:-1]: d}


def _format_override(v: Any) -> str:
    if isinstance(v, list):
        return shlex.quote("(" + ", ".join(repr(x) for x in v) + ("," if len(v) == 1 else "") + ")")
    return shlex.quote(str(v))


def train_command(stage: str, config: dict, workdir: str) -> str:
    """The `python train.py ...` command that reproduces a run's config.

    Args:
      stage: 'vae' or 'ldm' (selects configs/<stage>.py).
      config: the run's config as a dict (config.json / checkpoint metadata).
      workdir: the run directory.

    Returns:
      The preset plus one `--config.X=...` per field that differs from the preset (only the
      preset when configs/ is not next to the package).
    """
    preset = config.get("preset", "paper")
    cmd = [f"python train.py --config=configs/{stage}.py:{preset}"]
    base = _load_repo_config(stage, preset)
    if base is not None:
        want = _flat(json.loads(json.dumps(config)))
        have = _flat(json.loads(json.dumps(base.to_dict(), default=list)))
        for k in sorted(want):
            if k in ("preset", "stage") or want[k] == have.get(k, object()):
                continue
            cmd.append(f"--config.{k}={_format_override(want[k])}")
    cmd.append(f"--workdir={shlex.quote(workdir)}")
    return " ".join(cmd)


def machine_info() -> dict[str, Any]:
    """Describes this machine for the report.

    Returns:
      dict with 'cpu' (model name from /proc/cpuinfo), 'cpu_count', 'platform', 'backend',
      'devices' and 'versions' (python, jax, jaxlib, flax, optax, orbax, numpy).
    """
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = ckpt_lib.package_versions()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "versions": versions,
    }


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _check_ldm_workdir(workdir: str) -> None:
    """Cheap checks with messages phrased for evaluation (before loading any arrays)."""
    stage = ckpt_lib.read_run_meta(workdir).get("stage")
    if stage != "ldm":
        raise ValueError(
            f"--workdir={workdir} is a {stage!r} run, not a diffusion run; evaluate the workdir "
            "of `train.py --config=configs/ldm.py` (its VAE is found through it)."
        )
    if not os.path.exists(os.path.join(workdir, "split.json")):
        raise ValueError(f"{workdir}/split.json is missing; the run directory is incomplete.")


def _load_data(run: Any) -> tuple[data_lib.ImageSet, dict[str, np.ndarray]]:
    data_cfg = ml_collections.ConfigDict(run.meta["vae"]["data"])
    ds = data_lib.load_imageset(data_cfg)
    if ds.fingerprint != run.meta.get("dataset_fingerprint"):
        raise data_lib.DataError(
            f"the data of the run in {run.workdir} (config.data.path={data_cfg.path!r}) changed "
            "since training (dataset fingerprint differs); restore the data or retrain."
        )
    split = data_lib.load_split(os.path.join(run.workdir, "split.json"), ds)
    return ds, split


# --------------------------------------------------------------------------------------------
# Markdown helpers
# --------------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int | np.integer):
        return str(int(v))
    v = float(v)
    if v != 0 and (abs(v) < 10 ** (-digits) or abs(v) >= 1e5):
        return f"{v:.{digits}g}" if abs(v) >= 1e5 else f"{v:.2e}"
    return f"{v:.{digits}f}"


def _ci(summary: dict) -> str:
    if summary["mean"] is None:
        return "n/a"
    if summary["half_width"] is None:
        return f"{summary['mean']:.3f} (n={summary['n']})"
    return f"{summary['mean']:.3f} ± {summary['half_width']:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _nulls_note(
    nulls: _Nulls, prefixes: Sequence[str], hide: Sequence[str] = (".kid_std",)
) -> list[str]:
    """'Not computed' bullets for the section's null paths, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for p, r in nulls.reasons.items():
        if any(p.startswith(x) for x in prefixes) and not any(h in p for h in hide):
            by_reason.setdefault(r, []).append(p)
    if not by_reason:
        return []
    out = ["Not computed (`n/a`):", ""]
    for r, paths in by_reason.items():
        out.append(f"- {r}: " + ", ".join(f"`{p}`" for p in paths))
    return out + [""]


def _img(rel: str, alt: str) -> str:
    return f"![{alt}]({rel})"


# --------------------------------------------------------------------------------------------
# Downstream interpretation
# --------------------------------------------------------------------------------------------


def _explain_downstream_nulls(nulls: _Nulls, ds: dict, test_counts: dict[str, int]) -> None:
    def ci_reason(summ: dict) -> str:
        if summ.get("mean") is None:
            return (
                "no finite per-seed value: the metric is undefined on this test split "
                f"(test counts {test_counts}) for every seed"
            )
        return f"a 95 % CI needs >= 2 finite per-seed values; got n={summ.get('n')}"

    for arm, a in ds["arms"].items():
        for i, r in enumerate(a["per_seed"]):
            for m in study.METRIC_NAMES:
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


def _describe_diff(summ: dict, what: str) -> str:
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
            _describe_diff(
                comps["real+syn - real"]["accuracy"],
                "Adding synthetic images to all real images: accuracy",
            )
            + "; "
            + _describe_diff(comps["real+syn - real"]["auc"], "AUC")
            + "."
        )
    if "half+syn - half" in comps:
        parts.append(
            _describe_diff(
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
    if not helped:
        parts.append(
            "Synthetic data did not measurably help here. Likely limits: " + "; ".join(limits) + "."
        )
    else:
        parts.append("Caveats: " + "; ".join(limits) + ".")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def default_out_dir(ldm_workdir: str) -> str:
    """Where the report goes when no --out is given.

    Args:
      ldm_workdir: the diffusion run directory.

    Returns:
      `<parent of the LDM workdir>/report` (runs/ldm -> runs/report).
    """
    return os.path.join(os.path.dirname(os.path.abspath(ldm_workdir)), "report")


def evaluate_command(ldm_workdir: str, out_dir: str, preset: str, overrides: dict) -> str:
    """The `python evaluate.py ...` command equivalent to a write_report call.

    Args:
      ldm_workdir: the diffusion run directory.
      out_dir: the output directory.
      preset: the report preset.
      overrides: the non-None ReportSettings overrides (fields without a flag are listed as a
        trailing comment).

    Returns:
      The command line.
    """
    cmd = ["python evaluate.py", f"--workdir={shlex.quote(ldm_workdir)}"]
    cmd += [f"--out={shlex.quote(out_dir)}", f"--preset={preset}"]
    flag_names = {
        "num_synthetic_per_class": "num_synthetic_per_class",
        "study_seeds": "seeds",
        "guidance_scale": "guidance_scale",
        "guidance_scales": "guidance_scales",
        "sweep_per_class": "sweep_per_class",
        "sampler_per_class": "sampler_per_class",
        "ddpm_per_class": "ddpm_per_class",
        "classifier_steps": "classifier_steps",
        "study_steps": "study_steps",
        "batch_size": "batch_size",
        "seed": "seed",
    }
    for k, v in overrides.items():
        if v is None:
            continue
        if k in flag_names:
            val = ",".join(f"{x:g}" for x in v) if isinstance(v, list | tuple) else v
            cmd.append(f"--{flag_names[k]}={val}")
        else:
            cmd.append(f"# (library override {k}={v!r})")
    return " ".join(cmd)


def write_report(
    ldm_workdir: str,
    out_dir: str | None = None,
    preset: str = "paper",
    *,
    command: str | None = None,
    verbose: bool = True,
    **overrides: Any,
) -> dict:
    """Evaluates a finished LDM run and writes report.md, report.json and figures/ to out_dir.

    Args:
      ldm_workdir: the diffusion run directory (`train.py --config=configs/ldm.py`).
      out_dir: output directory; None = `default_out_dir(ldm_workdir)`. Files the report owns
        (report.md, report.json, figures/) are overwritten; nothing else is touched.
      preset: 'paper' | 'demo' | 'tiny' (see `PRESETS`).
      command: the command line that produced this call, shown in the report (default: the
        equivalent `python evaluate.py ...`).
      verbose: print progress lines.
      **overrides: `ReportSettings` fields (None = preset value).

    Returns:
      The report.json content (dict) plus 'out_dir', 'report_md' and 'report_json' paths.

    Raises:
      ValueError / DataError: not an LDM run, missing split or data, bad option.
    """
    t_start = time.perf_counter()
    s = resolve_settings(preset, **overrides)
    out_dir = os.path.abspath(out_dir or default_out_dir(ldm_workdir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out={out_dir} exists and is not a directory; choose another --out.")
    _check_ldm_workdir(ldm_workdir)
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    log = print if verbose else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = now - clock[0]
        clock[0] = now
        log(f"[report] {name}: {timings[name]:.1f} s", flush=True)

    from jax_mri_ldm import train_ldm, train_vae  # heavy: after the cheap checks

    run = train_ldm.LoadedLDM(ldm_workdir)
    class_names = tuple(run.class_names)
    if tuple(class_names) != tuple(study.CLASS_NAMES):
        raise ValueError(
            f"the report needs the two classes {study.CLASS_NAMES}; this run has {class_names}."
        )
    K = len(class_names)
    ds, split = _load_data(run)
    tr, va, te = (ds.subset(split[k]) for k in ("train", "val", "test"))
    for name, part in (("train", tr), ("test", te)):
        if len(part) == 0:
            raise ValueError(f"the {name} split of {ldm_workdir}/split.json is empty.")
    T = run.schedule.num_timesteps
    nulls = _Nulls()
    figures: dict[str, str] = {}
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731
    vae_src = run.meta["vae"].get("source_workdir", "")
    lap("load run and data")

    # ---- 2. VAE on the test split (+ Fig. 3) -----------------------------------------------------
    reconstruct = train_vae.make_reconstruct_fn(run.vae)
    (recon,) = train_vae.batched_apply(
        lambda x: reconstruct(run.vae_params, x), te.images, s.batch_size
    )
    vae_psnr = np.asarray(metrics.psnr(te.images, recon))
    vae_ssim = np.asarray(metrics.ssim(te.images, recon))
    vae_msssim = np.asarray(metrics.ms_ssim(te.images, recon))
    vae_section: dict[str, Any] = {"num_images": len(te)}
    for key, vals in (("psnr", vae_psnr), ("ssim", vae_ssim), ("ms_ssim", vae_msssim)):
        finite = vals[np.isfinite(vals)]
        vae_section[key] = {
            "mean": nulls.finite(
                f"vae.{key}.mean",
                finite.mean() if finite.size else None,
                "every test image is reconstructed exactly (PSNR = inf)",
            ),
            "std": nulls.finite(
                f"vae.{key}.std",
                finite.std() if finite.size else None,
                "every test image is reconstructed exactly (PSNR = inf)",
            ),
        }
    vae_section["ms_ssim_scales"] = metrics.ms_ssim_num_scales(*te.images.shape[1:3])
    vae_run_test = log_lib.read_metrics(vae_src, "test") if os.path.isdir(vae_src) else []
    vae_section["vae_run_reported_test"] = (
        {k: vae_run_test[-1].get(k) for k in ("psnr", "ssim")} if vae_run_test else None
    )
    if not vae_run_test:
        nulls.null("vae.vae_run_reported_test", f"VAE run not found at {vae_src!r} (moved?)")
    n_fig = min(s.figure_images, len(te))
    figures["vae_reconstructions"] = plots.save_reconstruction_figure(
        te.images[:n_fig],
        recon[:n_fig],
        os.path.join(fig_dir, "vae_reconstructions.png"),
        title=f"test split: PSNR {vae_psnr.mean():.2f} dB, SSIM {vae_ssim.mean():.3f}",
    )
    shrink_png(figures["vae_reconstructions"])
    lap("VAE reconstruction")

    # ---- 1b. loss curves (Fig. 4) ----------------------------------------------------------------
    vae_records = log_lib.read_metrics(vae_src, "train") if os.path.isdir(vae_src) else []
    ldm_records = log_lib.read_metrics(ldm_workdir, "train")
    figures["loss_curves"] = save_loss_curves_figure(
        vae_records,
        ldm_records,
        os.path.join(fig_dir, "loss_curves.png"),
        train_vae.PAPER_VAE_LOSS,
        train_ldm.PAPER_LDM_LOSS,
        vae_note="" if vae_records else f"VAE run not found:\n{vae_src}",
    )
    loss_section = {
        "vae_final_loss": vae_records[-1]["loss"] if vae_records else None,
        "ldm_final_loss": ldm_records[-1]["loss"] if ldm_records else None,
        "vae_epochs": vae_records[-1]["epoch"] if vae_records else None,
        "ldm_epochs": ldm_records[-1]["epoch"] if ldm_records else None,
        "paper_vae_final_loss": train_vae.PAPER_VAE_LOSS[-1][1],
        "paper_ldm_final_loss": train_ldm.PAPER_LDM_LOSS[-1][1],
    }
    for k in ("vae_final_loss", "vae_epochs"):
        if loss_section[k] is None:
            nulls.null(f"losses.{k}", f"no training records in the VAE run {vae_src!r}")
    for k in ("ldm_final_loss", "ldm_epochs"):
        if loss_section[k] is None:
            nulls.null(f"losses.{k}", f"no training records in {ldm_workdir}/metrics.jsonl")
    lap("loss curves")

    # ---- 3. domain classifier --------------------------------------------------------------------
    clf_kw = dict(
        batch_size=s.classifier_batch_size,
        lr=s.classifier_lr,
        input_size=s.classifier_input_size,
        widths=tuple(s.classifier_widths),
    )
    clf, clf_hist = study.train_classifier(
        tr.images, tr.labels, seed=0, steps=s.classifier_steps, **clf_kw
    )
    clf_test = study.evaluate_classifier(clf, te.images, te.labels)
    test_probs, test_feats = classify(clf, te.images)
    feats = {
        "train": classify(clf, tr.images)[1],
        "test": test_feats,
        "val": classify(clf, va.images)[1] if len(va) else None,
    }
    real_fid = _fidelity(nulls, "classifier.test_recall", test_probs, te.labels, class_names)
    real_fidelity = real_fid["overall"]
    clf_section = {
        "trained_on": f"real train split ({len(tr)} images)",
        "steps": s.classifier_steps,
        **clf_kw,
        "feature_dim": int(feats["test"].shape[1]),
        "final_train_loss": clf_hist["loss"][-1],
        "test": {
            m: nulls.finite(
                f"classifier.test.{m}",
                clf_test[m],
                f"undefined on a test split with counts {te.counts()}",
            )
            for m in study.METRIC_NAMES
        },
        "test_recall": real_fid,
    }
    lap("domain classifier")

    # ---- 9. guidance sweep -----------------------------------------------------------------------
    params = run.ema_params if s.use_ema else run.params
    gen = SyntheticImages(
        run,
        params,
        s.batch_size,
        s.seed,
        progress=log if verbose else None,
        compile_options=dict(s.compile_options),
    )
    main_steps = s.steps if s.sampler != "ddpm" else None

    def spec_for(w: float, sampler: str = s.sampler, steps=main_steps, spacing=s.spacing):
        return SamplerSpec(sampler, steps, spacing, float(w), float(s.eta))

    def ref_fid_same_n(n_per_class: Sequence[int]) -> float | None:
        idx = _per_class_subset(tr.labels, n_per_class, seed=1)
        try:
            return float(metrics.fid(feats["train"][idx], feats["test"]))
        except ValueError:
            return None

    test_div = _diversity(
        nulls, "diversity.real_test", te.images, te.labels, class_names, s.diversity_max_pairs
    )
    sweep_rows = []
    for w in s.guidance_scales:
        x, y = gen.generate(spec_for(w), s.sweep_per_class)
        row = _set_metrics(
            nulls,
            f"guidance_sweep.rows.{len(sweep_rows)}",
            x,
            y,
            clf,
            feats["test"],
            te.labels,
            class_names,
            s,
        )
        sweep_rows.append({"guidance": float(w), **row})
    sweep_n = [s.sweep_per_class] * K
    sweep: dict[str, Any] = {
        "sampler": spec_for(0).name(T),
        "spacing": s.spacing,
        "images_per_class": s.sweep_per_class,
        "rows": sweep_rows,
        "real_fidelity": real_fidelity,
        "real_fid": ref_fid_same_n(sweep_n) if sweep_rows else None,
        "real_diversity": test_div["mean"],
    }
    if sweep_rows and sweep["real_fid"] is None:
        nulls.null("guidance_sweep.real_fid", "too few real images for FID at this n")
    if s.guidance_scale is not None:
        main_w = float(s.guidance_scale)
        sweep.update(chosen=main_w, rule="set by --guidance_scale", decided_by="user")
    elif sweep_rows:
        sweep.update(choose_guidance(sweep_rows, real_fidelity, s.fidelity_tolerance))
        main_w = sweep["chosen"]
    else:
        from jax_mri_ldm.generate import DEFAULT_GUIDANCE

        main_w = float(DEFAULT_GUIDANCE)
        sweep.update(chosen=main_w, rule="no sweep: sample.py's default w", decided_by="default")
    if sweep["real_diversity"] is None:
        nulls.null("guidance_sweep.real_diversity", nulls.reasons["diversity.real_test.mean"])
    if sweep_rows:
        figures["guidance_sweep"] = save_guidance_figure(
            sweep, os.path.join(fig_dir, "guidance_sweep.png")
        )
        n_show = min(4, s.sweep_per_class)
        rows_fig = []
        for w in s.guidance_scales:
            x, y = gen.generate(spec_for(w), s.sweep_per_class)
            rows_fig.append((f"w={w:g}", np.concatenate([x[y == c][:n_show] for c in range(K)])))
        figures["guidance_samples"] = save_rows_figure(
            rows_fig,
            os.path.join(fig_dir, "guidance_samples.png"),
            title=f"same noise, growing w: {n_show} {class_names[0]} then {n_show} "
            f"{class_names[1]} per row",
        )
    lap("guidance sweep")

    # ---- main synthetic set ----------------------------------------------------------------------
    main_spec = spec_for(main_w)
    syn_x, syn_y = gen.generate(main_spec, s.num_synthetic_per_class)
    main_timing = gen.timing(main_spec, s.num_synthetic_per_class)
    lap("main synthetic set")

    # ---- 1c. samples per class (Figs. 5-8) -------------------------------------------------------
    figures["samples_per_class"] = plots.save_labelled_grid(
        syn_x,
        syn_y,
        class_names,
        os.path.join(fig_dir, "samples_per_class.png"),
        per_class=s.figure_images,
    )
    shrink_png(figures["samples_per_class"])
    training_grids = (
        sorted(
            f
            for f in os.listdir(os.path.join(ldm_workdir, "figures"))
            if f.startswith("ldm_samples_epoch") and f.endswith(".png")
        )
        if os.path.isdir(os.path.join(ldm_workdir, "figures"))
        else []
    )
    if len(training_grids) >= 2:
        mid = training_grids[(len(training_grids) - 1) // 2]
        dst = os.path.join(fig_dir, f"training_{mid}")
        shutil.copyfile(os.path.join(ldm_workdir, "figures", mid), dst)
        shrink_png(dst)
        figures["training_samples_mid"] = dst

    # ---- 4. class fidelity -----------------------------------------------------------------------
    syn_probs, syn_feats = classify(clf, syn_x)
    fidelity = _fidelity(nulls, "fidelity.synthetic", syn_probs, syn_y, class_names)
    fidelity_section = {
        "synthetic": fidelity,
        "real_test": real_fid,
        "mean_p_label_synthetic": {
            name: float(np.mean(syn_probs[syn_y == c, c])) for c, name in enumerate(class_names)
        },
    }

    # ---- 5. FID / KID ----------------------------------------------------------------------------
    per_class_n = [
        min(int(np.sum(syn_y == c)), int(np.sum(tr.labels == c))) for c in range(K)
    ]  # same n per class on both sides of the two comparisons
    syn_idx = _per_class_subset(syn_y, per_class_n, seed=2)
    tr_idx = _per_class_subset(tr.labels, per_class_n, seed=1)
    fid_section: dict[str, Any] = {
        "features": f"domain classifier penultimate layer ({feats['test'].shape[1]}-d)",
        "n_per_class": dict(zip(class_names, per_class_n, strict=True)),
        "synthetic_vs_test": _fid_kid(
            nulls,
            "fid_kid.synthetic_vs_test",
            syn_feats[syn_idx],
            syn_y[syn_idx],
            feats["test"],
            te.labels,
            class_names,
            s,
        ),
        "real_train_vs_test": _fid_kid(
            nulls,
            "fid_kid.real_train_vs_test",
            feats["train"][tr_idx],
            tr.labels[tr_idx],
            feats["test"],
            te.labels,
            class_names,
            s,
        ),
    }
    if feats["val"] is not None:
        fid_section["real_val_vs_test"] = _fid_kid(
            nulls,
            "fid_kid.real_val_vs_test",
            feats["val"],
            va.labels,
            feats["test"],
            te.labels,
            class_names,
            s,
        )
    else:
        fid_section["real_val_vs_test"] = None
        nulls.null("fid_kid.real_val_vs_test", "the run's split has no validation images")
    f_syn = fid_section["synthetic_vs_test"]["overall"]["fid"]
    f_ref = fid_section["real_train_vs_test"]["overall"]["fid"]
    fid_ratio = f_syn / f_ref if f_syn is not None and f_ref else None
    fid_section["ratio_synthetic_to_real_train"] = fid_ratio
    if fid_ratio is None:
        nulls.null("fid_kid.ratio_synthetic_to_real_train", "one of the two FIDs is n/a or 0")

    # ---- 6. diversity ----------------------------------------------------------------------------
    div_section = {
        "synthetic": _diversity(
            nulls, "diversity.synthetic", syn_x, syn_y, class_names, s.diversity_max_pairs
        ),
        "real_test": test_div,
        "real_train": _diversity(
            nulls, "diversity.real_train", tr.images, tr.labels, class_names, s.diversity_max_pairs
        ),
        "max_pairs_per_class": s.diversity_max_pairs,
        "ms_ssim_scales": metrics.ms_ssim_num_scales(*syn_x.shape[1:3]),
    }
    lap("fidelity, FID/KID, diversity")

    # ---- 7. memorisation + 1d. difference maps ---------------------------------------------------
    search = min(int(s.memorisation_search_size), int(syn_x.shape[1]))
    mem = metrics.memorisation_report(
        syn_x, tr.images, te.images, metric="ssim", search_size=search, top_k=5
    )
    figures["memorisation_hist"] = save_memorisation_histogram(
        mem, os.path.join(fig_dir, "memorisation_hist.png")
    )
    pairs = mem["nearest_pairs"]
    figures["memorisation_pairs"] = save_pairs_figure(
        syn_x[[p["synthetic"] for p in pairs]],
        tr.images[[p["train"] for p in pairs]],
        os.path.join(fig_dir, "memorisation_pairs.png"),
        ("synthetic", "nearest train"),
        titles=[f"SSIM {p['score']:.3f}" for p in pairs],
        suptitle="the five synthetic images closest to a training image",
    )
    per_cls = max(1, s.difference_pairs // K)
    diff_idx = np.concatenate([np.flatnonzero(syn_y == c)[:per_cls] for c in range(K)])
    nn_idx = np.asarray(mem["synthetic_to_train"]["index"])[diff_idx]
    diff_maps = np.abs(syn_x[diff_idx] - tr.images[nn_idx])
    diff_section = {
        "synthetic_index": diff_idx.tolist(),
        "nearest_train_index": nn_idx.tolist(),
        "nearest_ssim": [mem["synthetic_to_train"]["score"][i] for i in diff_idx],
        "mean_abs_difference": diff_maps.reshape(len(diff_idx), -1).mean(axis=1).tolist(),
        "mean_abs_difference_all_synthetic": float(
            np.mean(np.abs(syn_x - tr.images[np.asarray(mem["synthetic_to_train"]["index"])]))
        ),
    }
    figures["difference_maps"] = save_pairs_figure(
        syn_x[diff_idx],
        tr.images[nn_idx],
        os.path.join(fig_dir, "difference_maps.png"),
        ("synthetic", "most similar real"),
        titles=[
            f"{class_names[syn_y[i]]}, mean |d| {d:.3f}"
            for i, d in zip(diff_idx, diff_section["mean_abs_difference"], strict=True)
        ],
        suptitle="D = |x - x_hat|: synthetic vs its most similar training image (SSIM search)",
    )
    lap("memorisation and difference maps")

    # ---- 8. downstream study ---------------------------------------------------------------------
    downstream = study.downstream_study(
        (tr.images, tr.labels),
        (te.images, te.labels),
        (syn_x, syn_y),
        n_per_class=s.num_synthetic_per_class,
        seeds=tuple(range(s.study_seeds)),
        steps=s.study_steps,
        progress=(lambda line: log(f"  {line}")) if verbose else None,
        **clf_kw,
    )
    _explain_downstream_nulls(nulls, downstream, te.counts())
    interpretation = interpret_downstream(downstream, fidelity["overall"], real_fidelity, fid_ratio)
    figures["downstream"] = save_downstream_figure(
        downstream, os.path.join(fig_dir, "downstream.png")
    )
    lap("downstream study")

    # ---- 10. sampler table -----------------------------------------------------------------------
    sampler_rows = []
    sampler_fig_rows = []
    for sampler_name, steps, spacing, *rest in s.samplers:
        eta = float(rest[0]) if rest else 0.0
        spec = SamplerSpec(
            sampler_name, None if sampler_name == "ddpm" else steps, spacing, main_w, eta
        )
        n = s.ddpm_per_class if sampler_name == "ddpm" else s.sampler_per_class
        x, y = gen.generate(spec, n)
        i = len(sampler_rows)
        row = _set_metrics(
            nulls, f"samplers.rows.{i}", x, y, clf, feats["test"], te.labels, class_names, s
        )
        timing = gen.timing(spec, n)
        for k in ("compile_seconds", "seconds_per_image"):
            if timing[k] is None:
                nulls.null(
                    f"samplers.rows.{i}.{k}",
                    "all batches came from the cache of another section (not timed here)",
                )
        sampler_rows.append(
            {
                "name": spec.name(T),
                "sampler": sampler_name,
                "steps": spec.steps or T,
                "spacing": spacing,
                "eta": spec.eta,
                "guidance": main_w,
                "images_per_class": n,
                "real_fid_same_n": ref_fid_same_n([n] * K),
                **timing,
                **row,
            }
        )
        if sampler_rows[-1]["real_fid_same_n"] is None:
            nulls.null(f"samplers.rows.{i}.real_fid_same_n", "too few real images at this n")
        n_show = min(4, n)
        sampler_fig_rows.append(
            (spec.name(T), np.concatenate([x[y == c][:n_show] for c in range(K)]))
        )
    figures["sampler_samples"] = save_rows_figure(
        sampler_fig_rows,
        os.path.join(fig_dir, "sampler_samples.png"),
        title=f"w={main_w:g}, same starting noise per column where batch sizes match",
    )
    lap("sampler comparison")

    # ---- assemble --------------------------------------------------------------------------------
    total_s = time.perf_counter() - t_start
    timings["total"] = total_s
    ldm_cfg = run.config.to_dict()
    vae_cfg_path = os.path.join(vae_src, "config.json")
    vae_cfg = None
    if os.path.exists(vae_cfg_path):
        with open(vae_cfg_path) as f:
            vae_cfg = json.load(f)
    overrides_used = {k: v for k, v in overrides.items() if v is not None}
    eval_cmd = evaluate_command(ldm_workdir, out_dir, preset, overrides_used)
    commands = {
        "evaluate": command or eval_cmd,
        "evaluate_equivalent": eval_cmd,
        "train_vae": train_command("vae", vae_cfg, vae_src) if vae_cfg else None,
        "train_ldm": train_command("ldm", ldm_cfg, ldm_workdir),
    }
    if commands["train_vae"] is None:
        nulls.null("commands.train_vae", f"{vae_cfg_path} not found")
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(run.ema_params)))
    spe = int(run.meta.get("steps_per_epoch", 0)) or None
    summary = {
        "ldm_workdir": os.path.abspath(ldm_workdir),
        "vae_workdir": vae_src,
        "checkpoint_step": run.step,
        "epochs_trained": run.step / spe if spe else None,
        "final": run.final,
        "params": "EMA" if s.use_ema else "raw",
        "unet_parameters": n_params,
        "ldm_config": {
            "preset": ldm_cfg.get("preset"),
            "model": ldm_cfg["model"],
            "diffusion": ldm_cfg["diffusion"],
            "optim": {k: ldm_cfg["optim"][k] for k in ("learning_rate", "ema_decay", "schedule")},
            "train": {k: ldm_cfg["train"][k] for k in ("batch_size", "num_epochs", "num_steps")},
        },
        "vae": {
            "model": run.meta["vae"]["model"],
            "latent_shape": list(run.latent_shape),
            "latent_scale_factor": run.latent_scale,
        },
        "data": {
            "source": run.meta["vae"]["data"].get("source"),
            "path": run.meta["vae"]["data"].get("path") or "(built-in phantom set)",
            "image_size": run.image_size,
            "fingerprint": ds.fingerprint,
            "counts": ds.counts(),
            "split": {"train": tr.counts(), "val": va.counts(), "test": te.counts()},
        },
    }
    if summary["epochs_trained"] is None:
        nulls.null("run.epochs_trained", "steps_per_epoch missing from the checkpoint metadata")

    report = {
        "format": 1,
        "preset": preset,
        "settings": dataclasses.asdict(s),
        "commands": commands,
        "run": summary,
        "machine": machine_info(),
        "figures": {k: rel(v) for k, v in figures.items()},
        "losses": loss_section,
        "vae": vae_section,
        "classifier": clf_section,
        "fidelity": fidelity_section,
        "fid_kid": fid_section,
        "diversity": div_section,
        "memorisation": {**mem, "flagged_count": len(mem["flagged"])},
        "difference_maps": diff_section,
        "downstream": {**downstream, "interpretation": interpretation},
        "guidance_sweep": sweep,
        "main_set": {
            "sampler": main_spec.name(T),
            "spacing": main_spec.spacing,
            "guidance": main_w,
            "images_per_class": s.num_synthetic_per_class,
            **main_timing,
        },
        "samplers": {"rows": sampler_rows},
        "timings_seconds": timings,
    }
    if s.guidance_scale is None:
        nulls.null("settings.guidance_scale", "not set: the guidance sweep chose w (main_set)")
    if s.steps is None:
        nulls.null("settings.steps", "None = all T steps of the schedule")
    for i, (_, steps, *_) in enumerate(s.samplers):
        if steps is None:
            nulls.null(f"settings.samplers.{i}.1", "None = all T steps of the schedule")
    report = _clean(report)
    for p in _walk_nulls(report):
        if p not in nulls.reasons:
            nulls.null(p, _FALLBACK_NULL_REASON)
    report["null_reasons"] = dict(sorted(nulls.reasons.items()))

    md = _markdown(report, s, class_names, nulls)
    json_path = os.path.join(out_dir, "report.json")
    md_path = os.path.join(out_dir, "report.md")
    for path, text in (
        (json_path, json.dumps(report, indent=1, allow_nan=False)),
        (md_path, md),
    ):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    log(f"[report] wrote {md_path} ({total_s:.1f} s)")
    return {**report, "out_dir": out_dir, "report_md": md_path, "report_json": json_path}


# --------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------


def _markdown(r: dict, s: ReportSettings, class_names: Sequence[str], nulls: _Nulls) -> str:
    run, fig = r["run"], r["figures"]
    T = run["ldm_config"]["diffusion"]["num_timesteps"]
    L: list[str] = [f"# Evaluation report: `{run['ldm_workdir']}`", ""]
    L += [
        "All metrics use the held-out **test** split unless a row says otherwise. Every number "
        "is in `report.json`; `n/a` entries list their reason below each section.",
        "",
    ]

    # Commands
    c = r["commands"]
    L += ["## Commands", "", "```bash"]
    if c.get("train_vae"):
        L.append(c["train_vae"])
    L += [c["train_ldm"], c["evaluate"], "```", ""]
    if c["evaluate"] != c["evaluate_equivalent"]:
        L += [f"Equivalent: `{c['evaluate_equivalent']}`", ""]

    # Run summary
    lc, m = run["ldm_config"], r["machine"]
    d = run["data"]
    split_rows = [
        [name, *(d["split"][name].get(cn, 0) for cn in class_names), sum(d["split"][name].values())]
        for name in ("train", "val", "test")
    ]
    L += ["## Run summary", ""]
    L += [
        f"- LDM run: `{run['ldm_workdir']}` (preset `{lc['preset']}`), checkpoint step "
        f"{run['checkpoint_step']} ({_f(run['epochs_trained'], 1)} epochs), "
        f"{'finished' if run['final'] else '**not finished**'}; sampling with the "
        f"{run['params']} weights; UNet {run['unet_parameters']:,} parameters, channels "
        f"{tuple(lc['model']['channels'])}, {lc['model']['num_res_blocks']} res blocks/level, "
        f"attention at {tuple(lc['model']['attn_resolutions']) or 'bottleneck only'}.",
        f"- Diffusion: {lc['diffusion']['schedule']} schedule, T={T}, "
        f"{lc['diffusion']['prediction']}-prediction, p_uncond={lc['diffusion']['p_uncond']}; "
        f"batch {lc['train']['batch_size']}, lr {lc['optim']['learning_rate']}, EMA "
        f"{lc['optim']['ema_decay']}.",
        f"- VAE: `{run['vae_workdir']}`, features {tuple(run['vae']['model']['features'])}, "
        f"latent {tuple(run['vae']['latent_shape'])}, scale factor "
        f"{run['vae']['latent_scale_factor']:.4f}.",
        f"- Data: {d['path']} (source `{d['source']}`), {d['image_size']} px, "
        f"{sum(d['counts'].values())} images {d['counts']}, fingerprint `{d['fingerprint'][:12]}`.",
        f"- Machine: {m['cpu']} ({m['cpu_count']} logical cores), backend {m['backend']}, "
        f"jax {m['versions'].get('jax')}, flax {m['versions'].get('flax')}, Python "
        f"{m['versions'].get('python')}.",
        f"- Report preset `{r['preset']}`; total time {r['timings_seconds']['total']:.0f} s "
        "(see Timings).",
        "",
    ]
    L += _table(["split", *class_names, "total"], split_rows)

    # 1. figures
    L += ["## 1. Figures from the paper", ""]
    L += [
        "### VAE originals vs reconstructions (paper Fig. 3, test split)",
        "",
        _img(fig["vae_reconstructions"], "VAE reconstructions"),
        "",
        "### Training loss of both stages (paper Fig. 4)",
        "",
        _img(fig["loss_curves"], "loss curves"),
        "",
        f"Final logged training loss: VAE {_f(r['losses']['vae_final_loss'], 4)} after "
        f"{_f(r['losses']['vae_epochs'], 1)} epochs (paper: "
        f"{r['losses']['paper_vae_final_loss']} after 50), LDM "
        f"{_f(r['losses']['ldm_final_loss'], 4)} after {_f(r['losses']['ldm_epochs'], 1)} epochs "
        f"(paper: {r['losses']['paper_ldm_final_loss']} after 100). The paper's values are read "
        "off its text and shown dashed.",
        "",
        "### Samples per class (paper Figs. 5-8)",
        "",
        f"Final {run['params']} weights, {r['main_set']['sampler']} "
        f"({r['main_set']['spacing']} spacing), w={r['main_set']['guidance']:g}:",
        "",
        _img(fig["samples_per_class"], "samples per class"),
        "",
    ]
    if "training_samples_mid" in fig:
        L += [
            "Mid-training grid written by the training run itself (its periodic evaluation "
            f"sampler, `{os.path.basename(fig['training_samples_mid'])}`), the counterpart of "
            "the paper's 50-epoch Figs. 5-6:",
            "",
            _img(fig["training_samples_mid"], "mid-training samples"),
            "",
        ]
    dm = r["difference_maps"]
    L += [
        "### Difference maps (paper Sec. V-E)",
        "",
        "D = |x - x̂| between synthetic images (the first of each class in the main set) and "
        f"their most similar training image (highest SSIM at {r['memorisation']['search_size']} "
        "px, difference at full resolution). Mean |D| of the pairs shown: "
        + ", ".join(_f(v) for v in dm["mean_abs_difference"])
        + f"; over all {len(r['memorisation']['synthetic_to_train']['score'])} synthetic images: "
        f"{_f(dm['mean_abs_difference_all_synthetic'])}.",
        "",
        _img(fig["difference_maps"], "difference maps"),
        "",
    ]

    # 2. VAE
    v = r["vae"]
    L += ["## 2. VAE reconstruction (test split)", ""]
    L += _table(
        ["metric", "mean", "std"],
        [
            ["PSNR (dB)", _f(v["psnr"]["mean"], 2), _f(v["psnr"]["std"], 2)],
            ["SSIM", _f(v["ssim"]["mean"]), _f(v["ssim"]["std"])],
            [
                f"MS-SSIM ({v['ms_ssim_scales']} scales)",
                _f(v["ms_ssim"]["mean"]),
                _f(v["ms_ssim"]["std"]),
            ],
        ],
    )
    line = f"{v['num_images']} test images, posterior-mean reconstructions of the frozen VAE."
    if v.get("vae_run_reported_test"):
        rt = v["vae_run_reported_test"]
        line += (
            f" The VAE run's own final test evaluation logged PSNR {_f(rt.get('psnr'), 2)} dB, "
            f"SSIM {_f(rt.get('ssim'))}."
        )
    L += [line, ""] + _nulls_note(nulls, ["vae."])

    # 3. classifier
    cl = r["classifier"]
    L += ["## 3. Domain classifier", ""]
    L += [
        f"A {len(cl['widths'])}-block CNN (widths {tuple(cl['widths'])}, input "
        f"{cl['input_size']} px) trained on the {cl['trained_on']} for {cl['steps']} steps "
        f"(batch {cl['batch_size']}, Adam {cl['lr']}; final training loss "
        f"{_f(cl['final_train_loss'])}). Its pooled penultimate features "
        f"({cl['feature_dim']}-d) stand in for Inception features in sections 5, 9 and 10, and "
        "its predictions define class fidelity.",
        "",
    ]
    L += _table(
        ["accuracy", "AUC", "sensitivity", "specificity"],
        [[_f(cl["test"][k]) for k in study.METRIC_NAMES]],
    )
    L += _nulls_note(nulls, ["classifier."])

    # 4. fidelity
    fi = r["fidelity"]
    L += ["## 4. Class fidelity", ""]
    L += [
        "Fraction of images the domain classifier assigns to their conditioning label "
        f"(main synthetic set, {s.num_synthetic_per_class} per class); for real test images "
        "the same number is the classifier's per-class recall, the level a perfect generator "
        "would reach.",
        "",
    ]
    L += _table(
        ["set", *class_names, "overall"],
        [
            [
                "synthetic",
                *(_f(fi["synthetic"]["per_class"][cn]) for cn in class_names),
                _f(fi["synthetic"]["overall"]),
            ],
            [
                "real test",
                *(_f(fi["real_test"]["per_class"][cn]) for cn in class_names),
                _f(fi["real_test"]["overall"]),
            ],
        ],
    )
    L += _nulls_note(nulls, ["fidelity."])

    # 5. FID / KID
    fk = r["fid_kid"]
    L += ["## 5. Domain FID and KID", ""]
    L += [
        f"Features: {fk['features']}. Synthetic and real-train sets use the same number of "
        f"images per class ({fk['n_per_class']}, random subsets) so both carry the same "
        "finite-sample bias; real train vs real test is the real-vs-real scale (the classifier "
        "was trained on those train images, which can shift their features and inflate this "
        "reference a little), real val vs real test (both unseen by every model, but fewer "
        "images) a second one. KID is the unbiased "
        "cubic-kernel MMD² (can be slightly negative).",
        "",
    ]
    rows = []
    for key, label in (
        ("synthetic_vs_test", "synthetic vs test"),
        ("real_train_vs_test", "real train vs test"),
        ("real_val_vs_test", "real val vs test"),
    ):
        b = fk.get(key)
        if b is None:
            rows.append([label] + ["n/a"] * (2 * len(class_names) + 2))
            continue
        rows.append(
            [
                f"{label} (n={b['overall']['n_a']} vs {b['overall']['n_b']})",
                _f(b["overall"]["fid"]),
                *(_f(b["per_class"][cn]["fid"]) for cn in class_names),
                _f(b["overall"]["kid"], 4),
                *(_f(b["per_class"][cn]["kid"], 4) for cn in class_names),
            ]
        )
    L += _table(
        [
            "comparison",
            "FID",
            *(f"FID {cn}" for cn in class_names),
            "KID",
            *(f"KID {cn}" for cn in class_names),
        ],
        rows,
    )
    if fk.get("ratio_synthetic_to_real_train") is not None:
        L += [
            f"Synthetic FID is {fk['ratio_synthetic_to_real_train']:.2f}x the real-train-vs-test "
            "FID at equal n.",
            "",
        ]
    L += _nulls_note(nulls, ["fid_kid."])

    # 6. diversity
    dv = r["diversity"]
    L += ["## 6. Diversity", ""]
    L += [
        f"Mean pairwise MS-SSIM within each class ({dv['ms_ssim_scales']} scales, up to "
        f"{dv['max_pairs_per_class']} random pairs per class); lower means more diverse. A "
        "generator that collapses onto a few modes scores above the real sets.",
        "",
    ]
    L += _table(
        ["set", *class_names, "mean"],
        [
            [name, *(_f(dv[key]["per_class"][cn]) for cn in class_names), _f(dv[key]["mean"])]
            for key, name in (
                ("synthetic", "synthetic"),
                ("real_test", "real test"),
                ("real_train", "real train (reference)"),
            )
        ],
    )
    L += _nulls_note(nulls, ["diversity."])

    # 7. memorisation
    me = r["memorisation"]
    st, rt = me["synthetic_to_train"]["summary"], me["test_to_train"]["summary"]
    L += ["## 7. Memorisation", ""]
    L += [
        f"For every synthetic image the most similar training image by SSIM (images resized to "
        f"{me['search_size']} px); real test images, never seen by the generator, give the "
        f"reference distribution. A synthetic image is flagged when it is closer to a training "
        f"image than every real test image is (SSIM > {me['threshold']:.4f}). "
        f"**{me['flagged_count']} of {len(me['synthetic_to_train']['score'])} synthetic images "
        f"flagged ({100 * me['fraction_flagged']:.1f} %).**",
        "",
    ]
    L += _table(
        ["nearest-train SSIM", "mean", "median", "p95", "max"],
        [
            ["synthetic -> train", *(_f(st[k]) for k in ("mean", "median", "p95", "max"))],
            ["real test -> train", *(_f(rt[k]) for k in ("mean", "median", "p95", "max"))],
        ],
    )
    L += [
        _img(fig["memorisation_hist"], "memorisation histogram"),
        "",
        _img(fig["memorisation_pairs"], "five nearest pairs"),
        "",
    ]

    # 8. downstream
    dsr = r["downstream"]
    cfg = dsr["config"]
    L += ["## 8. Downstream study", ""]
    L += [
        f"Normal-vs-tumour CNN (same architecture as section 3) trained per arm and seed for "
        f"{cfg['steps']} steps, scored on the real test split; {len(cfg['seeds'])} seeds "
        f"({cfg['seeds']}), mean ± 95 % Student-t CI over seeds. N = {cfg['n_per_class']} "
        "synthetic images per class from the main set (when N equals the main set size every "
        "seed uses all of it; seeds then vary the initialisation, the half split and the batch "
        "order).",
        "",
    ]
    arm_rows = []
    for arm, a in dsr["arms"].items():
        counts = a["train_counts"]
        n_real = sum(counts["real"].values())
        n_syn = sum(counts["synthetic"].values())
        arm_rows.append(
            [
                f"{arm}: {a['description']}",
                n_real,
                n_syn,
                *(_ci(a["summary"][mm]) for mm in study.METRIC_NAMES),
            ]
        )
    L += _table(["arm", "real", "synthetic", *study.METRIC_NAMES], arm_rows)
    comp_rows = [
        [name, *(_ci(comp[mm]) for mm in study.METRIC_NAMES)]
        for name, comp in dsr["comparisons"].items()
    ]
    L += ["Paired differences (same seed, same init, same half):", ""]
    L += _table(["difference", *study.METRIC_NAMES], comp_rows)
    L += [
        _img(fig["downstream"], "downstream study"),
        "",
        f"**Reading.** {dsr['interpretation']}",
        "",
    ]
    L += _nulls_note(nulls, ["downstream."])

    # 9. guidance sweep
    gs = r["guidance_sweep"]
    L += ["## 9. Guidance sweep", ""]
    if gs["rows"]:
        L += [
            f"{gs['sampler']} ({gs['spacing']} spacing), {gs['images_per_class']} images per "
            "class per w, the same starting noise for every w. FID is overall vs the test split "
            f"(real train vs test at the same n: {_f(gs['real_fid'])}); diversity is the mean "
            f"over classes (real test: {_f(gs['real_diversity'])}); real test fidelity "
            f"(classifier accuracy): {_f(gs['real_fidelity'])}.",
            "",
        ]
        L += _table(
            ["w", "fidelity", "FID", "KID", "diversity (MS-SSIM)"],
            [
                [
                    f"{row['guidance']:g}",
                    _f(row["fidelity"]),
                    _f(row["fid"]),
                    _f(row["kid"], 4),
                    _f(row["diversity"]),
                ]
                for row in gs["rows"]
            ],
        )
        L += [
            f"**Recommended default: w = {gs['chosen']:g}.** Rule: {gs['rule']}; decided by: "
            f"{gs['decided_by']}"
            + (f"; qualifying w: {gs['qualified']}" if "qualified" in gs else "")
            + ". The main synthetic set (sections 4-8) uses this w.",
            "",
            _img(fig["guidance_sweep"], "guidance sweep"),
            "",
            _img(fig["guidance_samples"], "samples per w"),
            "",
        ]
    else:
        L += [f"No sweep was run; w = {gs['chosen']:g} ({gs['rule']}).", ""]
    L += _nulls_note(nulls, ["guidance_sweep."], hide=_ROW_DETAIL)

    # 10. samplers
    L += ["## 10. Sampler comparison", ""]
    L += [
        f"All at w = {r['main_set']['guidance']:g}, EMA weights, the same seeds. Seconds per "
        "image = median wall time of one steady-state batch call (sampler + VAE decode, after "
        "ahead-of-time compilation) / batch size, on this machine; compile time is separate. "
        f"DDPM runs all T = {T} steps (about T network calls per image, twice that with "
        f"guidance), so it gets only {s.ddpm_per_class} images per class in this preset "
        f"(others {s.sampler_per_class}): its FID/diversity are noisier. Each FID has its "
        "real-train-vs-test reference at the same n. `batch` is the batch size the images were "
        "generated with (a row whose setting is the main set's reuses those images), and "
        "per-image time falls with batch size, so compare s / image at equal batch."
        + (
            f" **This preset compiles with {dict(s.compile_options)}: its seconds per image "
            "are not representative.**"
            if s.compile_options
            else ""
        ),
        "",
    ]
    L += _table(
        [
            "sampler",
            "spacing",
            "images",
            "fidelity",
            "FID",
            "real FID same n",
            "diversity",
            "s / image",
            "batch",
            "compile s",
        ],
        [
            [
                row["name"],
                row["spacing"],
                row["num_images"],
                _f(row["fidelity"]),
                _f(row["fid"]),
                _f(row["real_fid_same_n"]),
                _f(row["diversity"]),
                _f(row["seconds_per_image"], 4),
                row["batch_size"],
                _f(row["compile_seconds"], 1),
            ]
            for row in r["samplers"]["rows"]
        ],
    )
    L += [_img(fig["sampler_samples"], "samples per sampler"), ""]
    L += _nulls_note(nulls, ["samplers."], hide=_ROW_DETAIL)

    # Timings
    L += ["## Timings", ""]
    L += _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in r["timings_seconds"].items()])
    ms = r["main_set"]
    L += [
        f"Main set: {ms['sampler']} w={ms['guidance']:g}, "
        f"{_f(ms.get('seconds_per_image'), 4)} s per image (batch {ms.get('batch_size')}), "
        f"compile {_f(ms.get('compile_seconds'), 1)} s.",
        "",
    ]
    L += _nulls_note(nulls, ["run.", "commands.", "losses.", "main_set."])
    return "\n".join(L)
