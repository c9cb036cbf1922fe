"""Guidance in a limited noise interval: does it keep class fidelity and fix the samples' spectrum?

Why: on the real yes/no set the report's guidance sweep chooses w = 2 for the batch-8 VAE run,
where the samples' per-image radial spectrum leaves the real images' interquartile range
(docs/results.md, "Guidance sweep at the main set's size"); at w = 1 it stays inside but class
fidelity is short. Kynkäänniemi et al. (2024) guide only in a middle range of noise levels. This
probe builds the report's context once (VAE check, domain classifier, feature space and its
controls: `evaluation/report.py`'s first four steps), then runs the report's own guidance sweep
(`sections/guidance.compute`, its rows and its choice of w) once per interval, and adds to each
row the headline's spectrum statistic: the median per-image spectrum distance to the real test
split's mean curve, against the validation split's interquartile range (`sections/spectrum`).
It writes one JSON and one figure (4 samples per class per interval at `--figure_w`, real test
slices on top) and nothing into the run. Every interval shares the report's starting noise.

Run from the repository root::

  python bench/ablations/guidance_interval.py --workdir=runs/ldm --out=runs/exp/gi \\
      --intervals=none,0:30,0.5:inf,0.5:30 --guidance=1,2,3
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT]

from jax_mri_ldm import atomic  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Finished diffusion run.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder (JSON, figure).", required=True)
_INTERVALS = flags.DEFINE_list(
    "intervals", ["none", "0:30", "0.5:inf", "0.5:30"], "lo:hi noise intervals; none = every step."
)
_GUIDANCE = flags.DEFINE_list("guidance", ["1", "2", "3"], "Guidance w values of each sweep.")
_PER_CLASS = flags.DEFINE_integer("per_class", 200, "Images per class per w (the main set's).")
_FIGURE_W = flags.DEFINE_float("figure_w", 2.0, "w of the figure's samples.")
_PRESET = flags.DEFINE_string("preset", "paper", "Report preset (configs/report.py).")
_SEED = flags.DEFINE_integer("seed", 0, "The report's base seed of the synthetic images.")


def parse_interval(text: str) -> tuple[float, float] | None:
    """'none' -> None; 'lo:hi' -> (lo, hi) (hi may be 'inf')."""
    if text.strip().lower() == "none":
        return None
    lo, hi = text.split(":")
    return float(lo), float(hi)


def context(workdir: str, out: str):
    """The report's context after its VAE, classifier and feature-space steps."""
    from jax_mri_ldm.evaluation import report

    overrides = dict(
        sweep_per_class=0,
        num_synthetic_per_class=_PER_CLASS.value,
        guidance_scales=tuple(float(w) for w in _GUIDANCE.value),
        resume=False,
        seed=_SEED.value,
    )
    cfg = report.resolve_settings(_PRESET.value, None, **overrides)
    ctx = report._context(workdir, out, cfg, print)
    for label, step in report.COMPUTE_ORDER[:4]:
        t0 = time.perf_counter()
        ctx.results.update(step(ctx))
        print(f"[probe] {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    return ctx


def spectrum_row(ctx, spec, n: int) -> dict:
    """The headline's per-image spectrum and grid statistics of a setting's images."""
    from jax_mri_ldm.evaluation import spectrum as spec_lib
    from jax_mri_ldm.evaluation.sections import common

    x, _ = ctx.shared["gen"].generate(spec, n)
    te, real = ctx.test.images, common.spectrum_reference_set(ctx)
    out = {
        "spectrum": spec_lib.summary_vs_real(
            spec_lib.spectrum_distance(x, te), spec_lib.spectrum_distance(real, te)
        )
    }
    if ctx.shared.get("period"):
        p = ctx.shared["period"]
        out["grid"] = spec_lib.summary_vs_real(
            spec_lib.grid_score(x, p), spec_lib.grid_score(te, p)
        )
    return out


def sweep(ctx, interval) -> dict:
    """The report's guidance sweep with every sampler guided in `interval`."""
    from jax_mri_ldm.evaluation.context import clean
    from jax_mri_ldm.evaluation.sections import common, guidance

    ctx.cfg.guidance_interval = interval
    t0 = time.perf_counter()
    res = guidance.compute(ctx)["guidance_sweep"]
    for row in res["rows"]:
        row.update(spectrum_row(ctx, common.main_spec(ctx, row["guidance"]), _PER_CLASS.value))
    res["seconds"] = time.perf_counter() - t0
    res["interval"] = interval
    return clean(res)


def figure(ctx, intervals, path: str) -> None:
    """Real test slices, then 4 samples per class at `--figure_w` for each interval."""
    from jax_mri_ldm import plots
    from jax_mri_ldm.evaluation.sections import common

    k, n = ctx.num_classes, 4
    rows = [("real test", common.first_per_class(ctx.test.images, ctx.test.labels, k, n))]
    for interval in intervals:
        ctx.cfg.guidance_interval = interval
        x, y = ctx.shared["gen"].generate(common.main_spec(ctx, _FIGURE_W.value), _PER_CLASS.value)
        name = "every step" if interval is None else "σ∈({:g}, {:g}]".format(*interval)
        rows.append((name, common.first_per_class(x, y, k, n)))
    title = f"w={_FIGURE_W.value:g}: {n} per class ({', '.join(ctx.class_names)}) per row"
    plots.save_rows_figure(rows, path, title=title)


def brief(res: dict) -> None:
    """One line per w: fidelity per class, FID, spectrum median (real IQR), grid."""
    for row in res["rows"]:
        per = row["fidelity_detail"]["per_class"]
        s = row["spectrum"]
        print(
            f"  interval {res['interval']} w={row['guidance']:g}: fidelity {per} fid "
            f"{row['fid']:.4f} spectrum {s['median']:.3f} (IQR {s['real_q25']:.3f}-"
            f"{s['real_q75']:.3f}) grid {row['grid']['median']:.3f}",
            flush=True,
        )
    print(f"  chosen w {res['chosen']} ({res['rule']})", flush=True)


def main(argv) -> None:
    del argv
    os.makedirs(_OUT.value, exist_ok=True)
    intervals = [parse_interval(t) for t in _INTERVALS.value]
    ctx = context(_WORKDIR.value, _OUT.value)
    out = {
        "workdir": os.path.abspath(_WORKDIR.value),
        "real_recall": ctx.shared.get("real_recall"),
        "trust": ctx.shared.get("trust", {}).get("metrics"),
        "sweeps": [],
    }
    for interval in intervals:
        res = sweep(ctx, interval)
        brief(res)
        out["sweeps"].append(res)
        atomic.write_text(os.path.join(_OUT.value, "guidance_interval.json"), json.dumps(out))
    figure(ctx, intervals, os.path.join(_OUT.value, "guidance_interval_samples.png"))
    print(json.dumps({"out": _OUT.value, "sweeps": len(out["sweeps"])}))


if __name__ == "__main__":
    app.run(main)
