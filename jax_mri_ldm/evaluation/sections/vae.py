"""Section 2: the frozen VAE on the test split (PSNR, SSIM, MS-SSIM, grid score; paper Fig. 3),
and the spectrum distance of its reconstructions, the reference for the samples' (they are
decoded by the same VAE; a sample set can land slightly below it, so it is not a strict bound)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from jax_mri_ldm import equaliser, plots
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.evaluation import metrics, spectrum
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, nulls_note, table
from jax_mri_ldm.evaluation.sections import common

HEADER = "## 2. VAE reconstruction (test split)"
EXACT = "every test image is reconstructed exactly (PSNR = inf)"


def _grid(ctx: Context, recon: np.ndarray) -> dict | None:
    period = ctx.shared.get("period")
    if period is None:
        ctx.nulls.null("vae.grid", "image size is not a multiple of the latent period")
        return None
    test_grid = spectrum.grid_score(ctx.test.images, period)
    return spectrum.summary_vs_real(spectrum.grid_score(recon, period), test_grid)


def _spectrum(ctx: Context) -> dict:
    """Per-image spectrum distance (to the test mean) of reconstructions of the real reference
    images against that of the images themselves: what decoding alone costs (section 12)."""
    real = common.spectrum_reference_set(ctx)
    recon = ctx.run.vae.reconstruct(real, batch_size=ctx.cfg.batch_size)
    te = ctx.test.images
    return spectrum.summary_vs_real(
        spectrum.spectrum_distance(recon, te), spectrum.spectrum_distance(real, te)
    )


def _decoder_check(ctx: Context) -> dict | None:
    """The diffusion run's verdict on its equaliser copy (decoder_check.py), or None."""
    try:
        with open(os.path.join(ctx.workdir, equaliser.CHOICE_FILE_NAME)) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        ctx.nulls.null("vae.decoder_check", "the run has no decoder check (no equaliser copy)")
        return None
    return {k: rec.get(k) for k in ("equalise", "mode", "as_trained", "equalised", "sampler")}


def _unequalised(ctx: Context) -> dict | None:
    """PSNR / SSIM / spectrum of the decoder as trained, when the run decodes through an
    equaliser (equaliser.py): what the equaliser trades for the spectrum."""
    vae = ctx.run.vae
    if vae.equaliser is None:
        ctx.nulls.null("vae.unequalised", "the run decodes without an equaliser")
        return None
    raw, te = vae.without_equaliser(), ctx.test.images
    recon = raw.reconstruct(te, batch_size=ctx.cfg.batch_size)
    real = common.spectrum_reference_set(ctx)
    spec = spectrum.spectrum_distance(raw.reconstruct(real, batch_size=ctx.cfg.batch_size), te)
    psnr = np.asarray(metrics.psnr(te, recon))
    psnr = psnr[np.isfinite(psnr)]
    return {
        "psnr": ctx.nulls.finite("vae.unequalised.psnr", psnr.mean() if psnr.size else None, EXACT),
        "ssim": float(np.mean(np.asarray(metrics.ssim(te, recon)))),
        "spectrum": spectrum.summary_vs_real(spec, spectrum.spectrum_distance(real, te)),
    }


def compute(ctx: Context) -> dict[str, Any]:
    te = ctx.test
    recon = ctx.run.vae.reconstruct(te.images, batch_size=ctx.cfg.batch_size)
    ctx.shared["vae_recon"] = recon
    values = {
        "psnr": np.asarray(metrics.psnr(te.images, recon)),
        "ssim": np.asarray(metrics.ssim(te.images, recon)),
        "ms_ssim": np.asarray(metrics.ms_ssim(te.images, recon)),
    }
    out: dict[str, Any] = {"num_images": len(te)}
    for key, vals in values.items():
        finite = vals[np.isfinite(vals)]
        out[key] = {
            stat: ctx.nulls.finite(
                f"vae.{key}.{stat}", getattr(finite, stat)() if finite.size else None, EXACT
            )
            for stat in ("mean", "std")
        }
    out["ms_ssim_scales"] = metrics.ms_ssim_num_scales(*te.images.shape[1:3])
    src = ctx.vae_workdir
    reported = log_lib.read_metrics(src, "test") if os.path.isdir(src) else []
    out["vae_run_reported_test"] = (
        {k: reported[-1].get(k) for k in ("psnr", "ssim")} if reported else None
    )
    if not reported:
        ctx.nulls.null("vae.vae_run_reported_test", f"VAE run not found at {src!r} (moved?)")
    out["grid"] = _grid(ctx, recon)
    out["spectrum"] = _spectrum(ctx)
    out["equaliser"] = ctx.run.vae.equaliser is not None
    out["unequalised"] = _unequalised(ctx)
    out["decoder_check"] = _decoder_check(ctx)
    n_fig = min(ctx.cfg.figure_images, len(te))
    path = plots.save_reconstruction_figure(
        te.images[:n_fig],
        recon[:n_fig],
        ctx.figure_path("vae_reconstructions"),
        title=f"test split: PSNR {values['psnr'].mean():.2f} dB, SSIM {values['ssim'].mean():.3f}",
    )
    plots.shrink_png(path)
    ctx.figures["vae_reconstructions"] = path
    return {"vae": out}


def render(r: dict) -> str:
    v = r["vae"]
    rows = [
        ["PSNR (dB)", f(v["psnr"]["mean"], 2), f(v["psnr"]["std"], 2)],
        ["SSIM", f(v["ssim"]["mean"]), f(v["ssim"]["std"])],
        [
            f"MS-SSIM ({v['ms_ssim_scales']} scales)",
            f(v["ms_ssim"]["mean"]),
            f(v["ms_ssim"]["std"]),
        ],
    ]
    L = [HEADER, ""] + table(["metric", "mean", "std"], rows)
    line = f"{v['num_images']} test images, posterior-mean reconstructions of the frozen VAE."
    u = v.get("unequalised")
    if u:
        line += (
            " The run decodes through its decoder equaliser (a radial gain filter fitted on "
            "the training split, `equaliser.py`), so these scores and every sample are "
            f"equalised; the decoder as trained scores PSNR {f(u['psnr'], 2)} dB, SSIM "
            f"{f(u['ssim'])}, spectrum distance median {f(u['spectrum']['median'])}"
        )
    if v.get("vae_run_reported_test"):
        rt = v["vae_run_reported_test"]
        line += (
            f"{'; its' if u else ' The VAE'} run's own final test evaluation (without "
            f"equaliser) logged PSNR {f(rt.get('psnr'), 2)} dB, SSIM {f(rt.get('ssim'))}."
        )
    elif u:
        line += "."
    L += [line, ""] + _render_check(v.get("decoder_check"))
    g = v.get("grid")
    if g:
        L += [
            f"Grid score of the reconstructions (power at the latent-period harmonics relative "
            f"to neighbouring frequencies, median): {f(g['median'])}, {f(g['ratio'], 2)}x the "
            f"real test images' {f(g['real_median'])} (real interquartile range "
            f"{f(g['real_q25'])}-{f(g['real_q75'])}; "
            f"{'inside' if g['within_real_iqr'] else '**outside**'}).",
            "",
        ]
    sp = v.get("spectrum")
    if sp:
        L += [
            f"Spectrum distance of reconstructions of the real reference images (per image, to "
            f"the test split's mean spectrum; median): {f(sp['median'])} against the images' "
            f"own {f(sp['real_median'])} (interquartile range {f(sp['real_q25'])}-"
            f"{f(sp['real_q75'])}; {'inside' if sp['within_real_iqr'] else '**outside**'}). "
            "Samples are decoded by this VAE, so this is the reference for theirs (not a strict "
            "bound: a sample set can land a little below it).",
            "",
        ]
    return "\n".join(L + nulls_note(r["null_reasons"], ["vae."]))


def _render_check(c: dict | None) -> list[str]:
    """A paragraph on the decoder check's verdict (README, "Decoder check")."""
    if not c:
        return []
    verdict = "keeps" if c.get("equalise") else "leaves out"
    if c.get("mode") != "auto":
        return [f"The decoder equaliser is {c.get('mode')} by config (no decoder check).", ""]
    parts = []
    for arm in ("as_trained", "equalised"):
        a = c[arm]
        grid = f", grid {f(a['grid']['median'])}" if a.get("grid") else ""
        parts.append(
            f"{arm.replace('_', ' ')}: spectrum distance {f(a['spectrum']['median'])}{grid}, "
            f"deviation {f(a['deviation'], 2)}"
        )
    sp = c["as_trained"]["spectrum"]
    return [
        f'The diffusion run\'s decoder check (`decoder_choice.json`, README "Decoder check") '
        f"{verdict} the equaliser: on its own {c.get('sampler')} samples, against validation "
        f"slices (spectrum median {f(sp['real_median'])}, interquartile range "
        f"{f(sp['real_q25'])}-{f(sp['real_q75'])}), {'; '.join(parts)} (deviation: distance "
        "from the real medians in real interquartile ranges, summed).",
        "",
    ]
