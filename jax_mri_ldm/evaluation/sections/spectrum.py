"""Section 12: power spectrum and latent-grid score of the main set against real images."""

from __future__ import annotations

from typing import Any

from jax_mri_ldm import plots
from jax_mri_ldm.evaluation import spectrum as spec_lib
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, img, nulls_note, table
from jax_mri_ldm.evaluation.sections import common
from jax_mri_ldm.evaluation.sections.controls import untrusted_note

HEADER = "## 12. Spectrum and grid"


def compute(ctx: Context) -> dict[str, Any]:
    x, _ = ctx.shared["syn"]
    te, real = ctx.test.images, common.spectrum_reference_set(ctx)
    period = ctx.shared.get("period")
    out: dict[str, Any] = {"period": period, "reference": "real test split (mean spectrum)"}
    out["real_set"] = "validation split" if len(ctx.val) >= 2 else "training split"
    syn_d, real_d = spec_lib.set_spectrum_distance(x, te), spec_lib.set_spectrum_distance(real, te)
    out["set_distance"] = {"synthetic": syn_d, "real": real_d, "ratio": syn_d / max(real_d, 1e-12)}
    out["spectrum"] = spec_lib.summary_vs_real(
        spec_lib.spectrum_distance(x, te), spec_lib.spectrum_distance(real, te)
    )
    if period is None:
        out["grid"] = None
        ctx.nulls.null("spectrum.grid", "image size is not a multiple of the latent period")
    else:
        out["grid"] = spec_lib.summary_vs_real(
            spec_lib.grid_score(x, period), spec_lib.grid_score(te, period)
        )
    curves = [("real test", spec_lib.radial_spectrum(te).mean(0))]
    curves.append(("synthetic (main set)", spec_lib.radial_spectrum(x).mean(0)))
    if "vae_recon" in ctx.shared:
        curves.append(
            ("VAE reconstructions", spec_lib.radial_spectrum(ctx.shared["vae_recon"]).mean(0))
        )
    for name in ("noise", "blur", "grid"):
        if name in ctx.shared.get("control_sets", {}):
            imgs = ctx.shared["control_sets"][name][0]
            curves.append((f"control: {name}", spec_lib.radial_spectrum(imgs).mean(0)))
    ctx.figures["spectrum"] = plots.save_spectrum_figure(
        curves, ctx.figure_path("spectrum"), period
    )
    return {"spectrum": out}


def _row(name: str, s: dict | None) -> list[str]:
    if s is None:
        return [name] + ["n/a"] * 5
    inside = "yes" if s["within_real_iqr"] else "**no**"
    iqr = f"{f(s['real_q25'])}-{f(s['real_q75'])}"
    return [name, f(s["median"]), f(s["real_median"]), iqr, f(s["ratio"], 2), inside]


def render(r: dict) -> str:
    sp = r["spectrum"]
    L = [HEADER, ""]
    L += [
        "Spectrum distance: RMS over spatial frequencies of an image's log10 radially averaged "
        "relative power minus the real test images' mean curve. Grid score: power at the "
        f"harmonics of the latent period ({sp['period']} px) relative to neighbouring "
        "frequencies (about 1 without a grid). Both per image; the table gives the main "
        "set's median next to the "
        f"real images' ({sp['real_set']} for the distance, test split for the grid) median and "
        "interquartile range" + untrusted_note(r, ["spectrum", "grid"]) + ".",
        "",
    ]
    L += table(
        ["score", "synthetic median", "real median", "real IQR", "ratio", "inside real IQR"],
        [_row("spectrum distance", sp["spectrum"]), _row("grid score", sp["grid"])],
    )
    sd = sp["set_distance"]
    L += [
        f"Distance between mean spectra (the controls' spectrum metric): synthetic "
        f"{f(sd['synthetic'])} vs real {f(sd['real'])} ({f(sd['ratio'], 2)}x).",
        "",
    ]
    L += [img(r["figures"]["spectrum"], "radial power spectra"), ""]
    return "\n".join(L + nulls_note(r["null_reasons"], ["spectrum."]))
