"""bench/quality_curve.py: training minutes from metrics.jsonl, step selection, and the curve
of a tiny two-checkpoint LDM run (one row per kept step, files written)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO, env_for_subprocess, load_script

SCRIPT = REPO / "bench" / "quality_curve.py"


def _load():
    return load_script(SCRIPT, "bench_quality_curve")


def test_training_minutes_sums_windows_and_cuts_the_last_pro_rata():
    qc = _load()
    rows = [
        {"step": 10, "images_per_sec": 10.0},
        {"step": 20, "images_per_sec": 5.0},
        {"step": 25, "images_per_sec": 10.0},
    ]
    windows = qc.window_seconds(rows, batch_size=4)  # 40 images / 10 per s = 4 s, then 8 s, 2 s
    assert windows == [(0, 10, 4.0), (10, 20, 8.0), (20, 25, 2.0)]
    assert qc.training_minutes(windows, 10) * 60 == pytest.approx(4.0)
    assert qc.training_minutes(windows, 15) * 60 == pytest.approx(8.0)  # half of the 8 s window
    assert qc.training_minutes(windows, 25) * 60 == pytest.approx(14.0)
    assert qc.training_minutes(windows, 26) is None  # the log does not reach it
    assert qc.training_minutes([], 5) is None


def test_steps_must_be_kept_and_numbers():
    qc = _load()
    assert qc.select_steps([4, 2, 6], None) == [2, 4, 6]
    assert qc.select_steps([2, 4, 6], [6, 2, 6]) == [2, 6]
    with pytest.raises(qc.UserError, match="keep_checkpoints"):
        qc.select_steps([2, 4], [3])
    assert qc.parse_steps(["1508", "3016"]) == [1508, 3016]
    assert qc.parse_steps(None) is None
    with pytest.raises(qc.UserError, match="--steps"):
        qc.parse_steps(["12", "x"])


def test_curve_samples_with_the_configs_main_sampler():
    """Unset report sampler fields keep the run's default (its w too); set ones override it."""
    import types

    from jax_mri_ldm.evaluation import report
    from jax_mri_ldm.sampler_settings import SamplerSpec

    qc = _load()
    run = types.SimpleNamespace(default_spec=lambda: SamplerSpec(guidance_scale=2.0))
    cfg = report.resolve_settings("tiny")
    assert qc.curve_spec(run, cfg) == SamplerSpec(guidance_scale=2.0, use_ema=bool(cfg.use_ema))
    cfg = report.resolve_settings(
        "tiny", sampler="dpmpp_2m", steps=10, eps_scale=0.99, guidance_scale=3.0
    )
    spec = qc.curve_spec(run, cfg).resolved(1000)
    assert (spec.sampler, spec.steps, spec.spacing, spec.eta) == ("dpmpp_2m", 10, "logSNR", 0.0)
    assert (spec.eps_scale, spec.guidance_scale) == (0.99, 3.0)


def test_fidelity_intervals_are_per_class_wilson_intervals():
    import numpy as np

    from jax_mri_ldm.evaluation import scoring

    qc = _load()
    labels = np.array([0] * 64 + [1] * 64)
    correct = np.r_[np.ones(52), np.zeros(12), np.ones(64)]  # normal 52/64, tumour 64/64
    ci = qc.fidelity_intervals({"correct": correct}, labels, ("normal", "tumour"))
    assert ci["normal"] == list(scoring.proportion_interval(correct[:64]))
    lo, hi = ci["normal"]
    assert lo < 52 / 64 < hi and 0.12 < hi - lo < 0.22  # 64 images: about +-0.09
    assert ci["tumour"][1] == 1.0 and ci["tumour"][0] < 0.95  # 64 of 64 is not certainty
    assert qc.fidelity_intervals({}, labels, ("normal", "tumour")) is None  # no classifier
    assert qc._with_interval(0.8125, [0.7, 0.9]) == "0.81 [0.70, 0.90]"
    assert qc._with_interval(None, None) == qc.f(None, 2)


@pytest.mark.slow
def test_curve_of_a_tiny_run(tiny_runs, tmp_path):
    from jax_mri_ldm.evaluation import report

    qc = _load()
    ldm_dir = str(tiny_runs["ldm_dir"])
    kept = qc.kept_steps(ldm_dir)
    assert len(kept) >= 2, "the tiny LDM preset should keep two checkpoints"
    cfg = report.resolve_settings("tiny", classifier_steps=5)
    out = tmp_path / "curve"
    curve = qc.run_curve(ldm_dir, str(out), cfg, per_class=3, log=lambda *a, **k: None)

    rows = curve["rows"]
    steps = [r["step"] for r in rows]
    assert steps == kept and steps == sorted(steps)
    minutes = [r["cpu_minutes"] for r in rows]
    assert all(m is not None and m > 0 for m in minutes)
    assert all(b >= a for a, b in zip(minutes, minutes[1:], strict=False))
    assert rows[-1]["percent_of_run"] == pytest.approx(100.0) and rows[-1]["final"]
    names = list(curve["real_recall"])
    for r in rows:
        assert r["fid_ratio"] is not None and math.isfinite(r["fid_ratio"]) and r["fid_ratio"] > 0
        assert sorted(r["fidelity"]) == sorted(names)
        for n in names:  # the Wilson interval of 3 images brackets the fidelity, and is wide
            lo, hi = r["fidelity_interval"][n]
            assert 0 <= lo <= r["fidelity"][n] <= hi <= 1 and hi - lo > 0.3
        assert r["nn_ssim_ratio"] is not None and r["nn_ssim_ratio"] > 0
        assert (out / f"grid_step{r['step']}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    on_disk = json.loads((out / "curve.json").read_text())
    assert [r["step"] for r in on_disk["rows"]] == steps
    md = (out / "curve.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in md if line.startswith("| ")][1:] == [
        str(s) for s in steps
    ]


@pytest.mark.slow
def test_cli_refuses_a_missing_workdir_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), f"--workdir={tmp_path / 'nope'}", "--quiet"],
        cwd=REPO,
        env=env_for_subprocess(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: --workdir=") and "Traceback" not in proc.stderr
