"""Figures shared by training and the report (matplotlib, Agg backend, small PNGs)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def _atomic_savefig(fig, path: str, dpi: int = 100) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    Image.fromarray(grid, mode="L").save(tmp)
    os.replace(tmp, path)
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
