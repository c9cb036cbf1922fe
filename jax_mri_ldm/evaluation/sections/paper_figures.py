"""Section 1: the paper's figures (Fig. 3 VAE, Fig. 4 losses, Figs. 5-8 samples, differences)."""

from __future__ import annotations

import os
import shutil
from typing import Any

from jax_mri_ldm import plots
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, img

HEADER = "## 1. Figures from the paper"


def compute_losses(ctx: Context) -> dict[str, Any]:
    """Fig. 4: both stages' training loss next to the paper's points."""
    src = ctx.vae_workdir
    vae_records = log_lib.read_metrics(src, "train") if os.path.isdir(src) else []
    ldm_records = log_lib.read_metrics(ctx.workdir, "train")
    ctx.figures["loss_curves"] = plots.save_loss_curves_figure(
        vae_records,
        ldm_records,
        ctx.figure_path("loss_curves"),
        plots.PAPER_VAE_LOSS,
        plots.PAPER_LDM_LOSS,
        vae_note="" if vae_records else f"VAE run not found:\n{src}",
    )
    out = {
        "vae_final_loss": vae_records[-1]["loss"] if vae_records else None,
        "ldm_final_loss": ldm_records[-1]["loss"] if ldm_records else None,
        "vae_epochs": vae_records[-1]["epoch"] if vae_records else None,
        "ldm_epochs": ldm_records[-1]["epoch"] if ldm_records else None,
        "paper_vae_final_loss": plots.PAPER_VAE_LOSS[-1][1],
        "paper_ldm_final_loss": plots.PAPER_LDM_LOSS[-1][1],
    }
    for k in ("vae_final_loss", "vae_epochs"):
        if out[k] is None:
            ctx.nulls.null(f"losses.{k}", f"no training records in the VAE run {src!r}")
    for k in ("ldm_final_loss", "ldm_epochs"):
        if out[k] is None:
            ctx.nulls.null(f"losses.{k}", f"no training records in {ctx.workdir}/metrics.jsonl")
    return {"losses": out}


def compute_samples(ctx: Context) -> dict[str, Any]:
    """Figs. 5-8: the main set per class, and the run's own mid-training grid."""
    x, y = ctx.shared["syn"]
    path = plots.save_labelled_grid(
        x, y, ctx.class_names, ctx.figure_path("samples_per_class"), per_class=ctx.cfg.figure_images
    )
    plots.shrink_png(path)
    ctx.figures["samples_per_class"] = path
    fig_dir = os.path.join(ctx.workdir, "figures")
    grids = sorted(
        name
        for name in (os.listdir(fig_dir) if os.path.isdir(fig_dir) else [])
        if name.startswith("ldm_samples_epoch") and name.endswith(".png")
    )
    if len(grids) >= 2:
        mid = grids[(len(grids) - 1) // 2]
        dst = ctx.figure_path(f"training_{mid[:-4]}")
        shutil.copyfile(os.path.join(fig_dir, mid), dst)
        plots.shrink_png(dst)
        ctx.figures["training_samples_mid"] = dst
    return {}


def render(r: dict) -> str:
    run, fig, lo = r["run"], r["figures"], r["losses"]
    L = [HEADER, ""]
    L += [
        "### VAE originals vs reconstructions (paper Fig. 3, test split)",
        "",
        img(fig["vae_reconstructions"], "VAE reconstructions"),
        "",
        "### Training loss of both stages (paper Fig. 4)",
        "",
        img(fig["loss_curves"], "loss curves"),
        "",
        f"Final logged training loss: VAE {f(lo['vae_final_loss'], 4)} after "
        f"{f(lo['vae_epochs'], 1)} epochs (paper: {lo['paper_vae_final_loss']} after 50), LDM "
        f"{f(lo['ldm_final_loss'], 4)} after {f(lo['ldm_epochs'], 1)} epochs "
        f"(paper: {lo['paper_ldm_final_loss']} after 100). The paper's values are read "
        "off its text and shown dashed.",
        "",
        "### Samples per class (paper Figs. 5-8)",
        "",
        f"Final {run['params']} weights, {r['main_set']['sampler']} "
        f"({r['main_set']['spacing']} spacing), w={r['main_set']['guidance']:g}:",
        "",
        img(fig["samples_per_class"], "samples per class"),
        "",
    ]
    if "training_samples_mid" in fig:
        L += [
            "Mid-training grid written by the training run itself (its periodic evaluation "
            f"sampler, `{os.path.basename(fig['training_samples_mid'])}`), the counterpart of "
            "the paper's 50-epoch Figs. 5-6:",
            "",
            img(fig["training_samples_mid"], "mid-training samples"),
            "",
        ]
    dm, me = r["difference_maps"], r["memorisation"]
    L += [
        "### Difference maps (paper Sec. V-E)",
        "",
        "D = |x - x̂| between synthetic images (the first of each class in the main set) and "
        f"their most similar training image (highest SSIM at {me['search_size']} "
        "px, difference at full resolution). Mean |D| of the pairs shown: "
        + ", ".join(f(v) for v in dm["mean_abs_difference"])
        + f"; over all {len(me['synthetic_to_train']['score'])} synthetic images: "
        f"{f(dm['mean_abs_difference_all_synthetic'])}.",
        "",
        img(fig["difference_maps"], "difference maps"),
        "",
    ]
    return "\n".join(L)
