"""The report's verdict in numbers: `report.json['headline']`, read by scripts and CI.

Every field comes from a section's JSON; a field the run cannot provide is null and its reason
is listed under `null_reasons` (`headline.<field>`). `trusted` says, per metric, whether it
passed the controls (section 11); an untrusted number is reported but decides nothing.
"""

from __future__ import annotations

import os
from typing import Any

from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, table, verdict
from jax_mri_ldm.evaluation.sections.controls import is_trusted

HEADER = "## Headline"
# headline field -> the controls metric that vouches for it
TRUST_OF = {
    "fidelity": "fidelity",
    "fid_ratio": "fid",
    "precision": "precision",
    "recall": "recall",
    "nn_ssim_ratio": "nn_ssim",
    "grid_ratio": "grid",
    "spectrum_ratio": "spectrum",
    "memorised_frac": "memorised",
    "memorised_frac_relative": "memorised_relative",
}


def _get(r: dict, path: str) -> Any:
    cur: Any = r
    for part in path.split("."):
        if not isinstance(cur, dict) or cur.get(part) is None:
            return None
        cur = cur[part]
    return cur


def _interval(summary: dict | None) -> list[float] | None:
    if not summary or summary.get("mean") is None or summary.get("half_width") is None:
        return None
    m, h = summary["mean"], summary["half_width"]
    return [m, m - h, m + h]


def _minutes(workdir: str) -> float | None:
    recs = log_lib.read_metrics(workdir) if os.path.isdir(workdir) else []
    seconds = log_lib.training_seconds(recs)
    return None if seconds is None else seconds / 60


def pipeline_minutes(ctx: Context) -> float | None:
    """Wall minutes of the VAE and LDM runs, each summed over its sessions (a resumed run's
    gaps between stop and resume do not count; `engine.logging.training_seconds`)."""
    parts = [_minutes(ctx.vae_workdir), _minutes(ctx.workdir)]
    return None if None in parts else float(sum(parts))


def _values(ctx: Context, r: dict) -> dict[str, Any]:
    comp = (_get(r, "downstream.comparisons") or {}).get("half+syn - half", {})
    return {
        "fidelity": _get(r, "fidelity.synthetic.per_class"),
        "real_recall": _get(r, "classifier.test_recall.per_class"),
        "fid_ratio": _get(r, "fid_kid.ratio_synthetic_to_real_train"),
        "precision": _get(r, "prdc.synthetic.overall.precision"),
        "recall": _get(r, "prdc.synthetic.overall.recall"),
        # recall's own k and the set size it was measured at (both set by the controls)
        "recall_k": _get(r, "prdc_reference.recall_k"),
        "recall_n": _get(r, "prdc.synthetic.overall.n_fake_equal"),
        "nn_ssim_ratio": _get(r, "realism.ratio"),
        "grid_ratio": _get(r, "spectrum.grid.ratio"),
        "spectrum_ratio": _get(r, "spectrum.spectrum.ratio"),
        "spectrum_within_real_iqr": _get(r, "spectrum.spectrum.within_real_iqr"),
        "memorised_frac": _get(r, "memorisation.fraction_flagged"),
        "memorised_frac_relative": _get(r, "memorisation.relative.fraction_flagged"),
        # held-out images that set both memorisation thresholds: 1/(n+1) of honest new
        # images is the rules' chance flag rate
        "memorised_held_out_images": _get(r, "memorisation.threshold_images"),
        "fast_sampler": _get(r, "samplers.fast_sampler.name"),
        "fast_sampler_matches_ddpm": _get(r, "samplers.fast_sampler.matches_ddpm"),
        "fast_sampler_deterministic": _get(r, "samplers.fast_sampler.deterministic"),
        "downstream_half_gain_acc": _interval(comp.get("accuracy")),
        "downstream_half_gain_auc": _interval(comp.get("auc")),
        "pipeline_minutes": pipeline_minutes(ctx),
        "vae_psnr": _get(r, "vae.psnr.mean"),
        "vae_ssim": _get(r, "vae.ssim.mean"),
        "vae_grid_ratio": _get(r, "vae.grid.ratio"),
        "vae_spectrum_ratio": _get(r, "vae.spectrum.ratio"),
        "vae_equaliser": _get(r, "vae.equaliser"),
        # the decoder as trained, when the run decodes through an equaliser
        "vae_psnr_unequalised": _get(r, "vae.unequalised.psnr"),
        "vae_ssim_unequalised": _get(r, "vae.unequalised.ssim"),
    }


REASONS = {
    "downstream_half_gain_acc": "the study's half+syn - half interval needs >= 2 seeds",
    "downstream_half_gain_auc": "the study's half+syn - half AUC interval is undefined",
    "pipeline_minutes": "metrics.jsonl of the VAE or LDM run is missing or has no timed records "
    "(one without session stamps needs two)",
    "fast_sampler": "no DDPM row, or no sampler matched DDPM on the trusted per-image metrics "
    "(section 10)",
    "fast_sampler_deterministic": "no DDPM row, or no sampler matched DDPM (section 10)",
    "vae_psnr_unequalised": "the run decodes without an equaliser (vae_psnr is the decoder's own)",
    "vae_ssim_unequalised": "the run decodes without an equaliser (vae_ssim is the decoder's own)",
}


def compute(ctx: Context) -> dict[str, Any]:
    r = ctx.results
    values = _values(ctx, r)
    for k, v in values.items():
        if v is None:
            ctx.nulls.null(
                f"headline.{k}", REASONS.get(k, "not available in this run (see its section)")
            )
    trusted = {k: is_trusted(r, m) for k, m in TRUST_OF.items()}
    return {"headline": {**values, "trusted": trusted}}


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {f(x)}" for k, x in v.items())
    if isinstance(v, list):
        return f"{f(v[0])} [{f(v[1])}, {f(v[2])}]"
    if isinstance(v, str):
        return v
    if v is None or isinstance(v, bool):
        return verdict(v).replace("**", "")
    return f(v)


def render(r: dict) -> str:
    h = r["headline"]
    rows = [
        [k, _cell(v), verdict(h["trusted"].get(k)) if k in TRUST_OF else ""]
        for k, v in h.items()
        if k != "trusted"
    ]
    L = [HEADER, ""]
    L += [
        "The run's verdict in numbers (`report.json` → `headline`); intervals are [mean, lo, hi] "
        "over the study's seeds. *Trusted* = the metric ranked the controls correctly "
        "(section 11).",
        "",
    ]
    return "\n".join(L + table(["field", "value", "trusted"], rows))
