"""Figures shared by training and the report (matplotlib, Agg backend, small PNGs).

The report's figures are re-encoded to stay under `MAX_PNG_BYTES` so a report can be committed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jax_mri_ldm import atomic  # noqa: E402

MAX_PNG_BYTES = 300_000
"""Report figures larger than this are re-encoded (palette, then downscaled)."""

PAPER_VAE_LOSS = ((1, 0.21), (10, 0.05), (25, 0.03), (50, 0.027))
"""The paper's VAE training loss, (epoch, loss) read off its Fig. 4 (left)."""
PAPER_LDM_LOSS = ((1, 1.0), (7, 0.6), (20, 0.5), (60, 0.46), (100, 0.46))
"""The paper's diffusion training loss, (epoch, loss) read off its Fig. 4 (right)."""


def _atomic_savefig(fig, path: str, dpi: int = 100) -> None:
    try:
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


def image_grid(images: np.ndarray, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """Tiles (N, H, W[, 1]) images in [0, 1] into one (rows*H, cols*W) array with padding."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    n, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_grid_png(images: np.ndarray, path: str, ncols: int = 8) -> str:
    """Writes an 8-bit grayscale grid PNG of (N, H, W[, 1]) images in [0, 1]; returns path."""
    grid = np.clip(image_grid(images, ncols) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(grid, mode="L").save(tmp)
    return path


def save_labelled_grid(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str,
    per_class: int = 8,
) -> str:
    """One row per class with up to `per_class` images each, class names as row titles."""
    rows = []
    for i, _ in enumerate(class_names):
        sel = np.asarray(images)[np.asarray(labels) == i][:per_class]
        rows.append(sel)
    ncols = max(1, max(len(r) for r in rows))
    fig, axes = plt.subplots(
        len(class_names), ncols, figsize=(1.6 * ncols, 1.7 * len(class_names)), squeeze=False
    )
    for r, (name, sel) in enumerate(zip(class_names, rows, strict=True)):
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(sel):
                ax.imshow(np.squeeze(sel[c]), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(f"{name}", loc="left", fontsize=9)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    return path


def save_reconstruction_figure(
    originals: np.ndarray, reconstructions: np.ndarray, path: str, title: str = ""
) -> str:
    """Rows: originals | reconstructions | |difference| with a colour bar (paper Fig. 3)."""
    originals = np.squeeze(np.asarray(originals, np.float32), -1)
    recons = np.squeeze(np.asarray(reconstructions, np.float32), -1)
    diff = np.abs(originals - recons)
    n = originals.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.7 * n + 0.6, 5.4), squeeze=False)
    vmax = max(float(diff.max()), 1e-3)
    im = None
    for i in range(n):
        for r, (arr, cmap, vmax_r) in enumerate(
            [(originals, "gray", 1.0), (recons, "gray", 1.0), (diff, "magma", vmax)]
        ):
            ax = axes[r, i]
            h = ax.imshow(arr[i], cmap=cmap, vmin=0, vmax=vmax_r)
            if r == 2:
                im = h
            ax.set_xticks([])
            ax.set_yticks([])
    for r, name in enumerate(["original", "reconstruction", "|difference|"]):
        axes[r, 0].set_ylabel(name, fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=list(axes[2]), fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    _atomic_savefig(fig, path)
    return path


def save_loss_curve(
    steps: Sequence[float],
    losses: Sequence[float],
    path: str,
    *,
    xlabel: str = "epoch",
    title: str = "",
    reference: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    extra: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    logy: bool = False,
) -> str:
    """Training loss over time; `reference` curves (e.g. the paper's) are drawn dashed."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(steps, losses, label="train loss", lw=1.2)
    for name, (xs, ys) in (extra or {}).items():
        ax.plot(xs, ys, label=name, lw=1.0)
    for name, (xs, ys) in (reference or {}).items():
        ax.plot(xs, ys, "--o", label=name, lw=1.0, ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    _atomic_savefig(fig, path)
    return path


# ----------------------------------------------------------------------------- report figures


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
        with atomic.atomic_path(path) as tmp:
            cur.quantize(colors=256).save(tmp, optimize=True)
        size = os.path.getsize(path)
        if size <= max_bytes or scale < 0.3:
            return size
        scale *= 0.8


def _save(fig, path: str, dpi: int = 90) -> str:
    _atomic_savefig(fig, path, dpi)
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
    """Histogram of nearest-train SSIM for synthetic, real test and any calibration images,
    the threshold (the closest held-out image) marked.

    Args:
      mem: `neighbours.memorisation_report` output.
      path: output PNG.

    Returns:
      path.
    """
    syn = np.asarray(mem["synthetic_to_train"]["score"])
    ref = np.asarray(mem["test_to_train"]["score"])
    cal = mem.get("calibration_to_train")
    cal = np.asarray(cal["score"]) if cal else np.zeros(0)
    fig, ax = plt.subplots(figsize=(5.5, 3.3))
    every = np.concatenate([syn, ref, cal])
    lo, hi = float(every.min()), float(every.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 30)
    ax.hist(syn, bins=bins, alpha=0.6, density=True, label=f"synthetic -> train (n={syn.size})")
    ax.hist(ref, bins=bins, alpha=0.6, density=True, label=f"real test -> train (n={ref.size})")
    if cal.size:
        ax.hist(cal, bins=bins, alpha=0.4, density=True, label=f"fresh slices (n={cal.size})")
    who = "held-out" if cal.size else "real test"
    ax.axvline(mem["threshold"], color="k", ls="--", lw=1, label=f"closest {who} (threshold)")
    ax.set_xlabel(f"{mem['metric'].upper()} to the nearest training image (higher = closer)")
    ax.set_ylabel("density")
    ax.set_title(f"memorisation: {100 * mem['fraction_flagged']:.1f}% flagged", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def save_guidance_figure(sweep: dict, path: str) -> str:
    """Fidelity (overall and per class, with each class's bar), FID and diversity against w.

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
    _per_class_fidelity(axes[0], sweep, ws)
    fig.tight_layout()
    return _save(fig, path)


def _per_class_fidelity(ax: plt.Axes, sweep: dict, ws: list[float]) -> None:
    """Each class's fidelity against w and its bar (real recall - tolerance), the sweep's rule."""
    bars = sweep.get("threshold_per_class") or {}
    for i, (name, bar) in enumerate(bars.items()):
        per = [
            ((r.get("fidelity_detail") or {}).get("per_class") or {}).get(name)
            for r in sweep["rows"]
        ]
        color = f"C{i + 1}"
        ys = [np.nan if v is None else v for v in per]
        ax.plot(ws, ys, "-", marker=".", ms=3, lw=0.8, color=color, label=name)
        ax.axhline(bar, color=color, ls=":", lw=0.8, label=f"{name} bar")
    if bars:
        ax.legend(fontsize=6)


def save_downstream_figure(
    result: dict, path: str, metric_names: Sequence[str], scored_on: str = "real test split"
) -> str:
    """Bar chart: per arm mean +- 95 % CI of each metric (accuracy, AUC, ...).

    Args:
      result: `study.downstream_study` output.
      path: output PNG.
      metric_names: the metrics to show, in order.
      scored_on: the real images the classifiers were scored on (the y-axis label).

    Returns:
      path.
    """
    arms = list(result["arms"])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(metric_names))
    for i, arm in enumerate(arms):
        summ = result["arms"][arm]["summary"]
        means = [np.nan if summ[m]["mean"] is None else summ[m]["mean"] for m in metric_names]
        errs = [summ[m]["half_width"] or 0.0 for m in metric_names]
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=arm)
    ax.set_xticks(x, metric_names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(scored_on)
    ax.legend(fontsize=7, ncol=len(arms))
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def save_spectrum_figure(
    curves: Sequence[tuple[str, np.ndarray]], path: str, period: int | None = None
) -> str:
    """Mean radially averaged log10 power spectra, one line per set (the first is real).

    Args:
      curves: (label, (R,) mean log10 power per radius 1..R) pairs.
      path: output PNG.
      period: latent period in pixels; its harmonics are marked when given.

    Returns:
      path.
    """
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for i, (label, curve) in enumerate(curves):
        r = np.arange(1, len(curve) + 1)
        ax.plot(r, curve, lw=2.0 if i == 0 else 1.0, label=label, color="k" if i == 0 else None)
    if period and curves:
        n = 2 * len(curves[0][1])
        for k in range(1, period // 2 + 1):
            ax.axvline(k * n / period, color="gray", ls=":", lw=0.8)
    ax.set_xlabel("spatial frequency (cycles per image)")
    ax.set_ylabel("log10 power")
    ax.set_title("radially averaged power spectrum (dotted: latent-grid harmonics)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
