"""The report's "fast sampler matches DDPM" rule and the intervals it judges with."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy import stats

from jax_mri_ldm.evaluation import scoring
from jax_mri_ldm.evaluation.sections import samplers


def _wilson_reference(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval written out from its textbook form."""
    p = k / n
    a = p + z * z / (2 * n)
    b = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (a - b) / (1 + z * z / n), (a + b) / (1 + z * z / n)


@pytest.mark.parametrize(("k", "n"), [(0, 8), (8, 8), (5, 8), (31, 64), (60, 64)])
def test_proportion_interval_is_the_wilson_interval(k, n):
    lo, hi = scoring.proportion_interval(np.r_[np.ones(k), np.zeros(n - k)])
    ref = _wilson_reference(k, n)
    assert lo == pytest.approx(max(ref[0], 0.0), abs=1e-12)
    assert hi == pytest.approx(min(ref[1], 1.0), abs=1e-12)
    assert lo <= k / n <= hi


def test_proportion_interval_covers_the_true_rate_about_95_percent():
    rng = np.random.default_rng(0)
    hits = [
        lo <= 0.9 <= hi
        for lo, hi in (scoring.proportion_interval(rng.random(20) < 0.9) for _ in range(2000))
    ]
    assert 0.92 <= np.mean(hits) <= 0.99  # Wilson is near nominal; a point interval is ~0.12


def test_all_correct_keeps_a_small_sample_uncertain():
    """The bootstrap of 8/8 correct collapses to [1, 1]; Wilson keeps the width of n = 8."""
    v = np.ones(8)
    assert scoring.bootstrap_interval(v, np.mean) == (1.0, 1.0)
    lo, hi = scoring.proportion_interval(v)
    assert hi == 1.0 and lo == pytest.approx(0.676, abs=0.001)
    exact_lo = stats.beta.ppf(0.025, 8, 1)  # Clopper-Pearson lower bound, more conservative
    assert exact_lo < lo < 0.75


def test_proportion_interval_refuses_non_binary_values():
    with pytest.raises(ValueError, match="0/1"):
        scoring.proportion_interval(np.array([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="0/1"):
        scoring.proportion_interval(np.array([]))


def _per(
    rng: np.random.Generator,
    n_wrong: int,
    n: int,
    centres: tuple[float, float, float],
    spread: float,
) -> dict[str, np.ndarray]:
    """Per-image metrics of n images: n_wrong misclassified, nn_ssim / spectrum / grid drawn
    around `centres` with a spread of `spread`."""
    nn_ssim, spectrum, grid = centres
    return {
        "correct": np.r_[np.ones(n - n_wrong), np.zeros(n_wrong)],
        "nn_ssim": nn_ssim + spread * rng.standard_normal(n),
        "spectrum": spectrum + spread * rng.random(n),
        "grid": grid + spread * rng.standard_normal(n),
    }


ALL = ("fidelity", "nn_ssim", "spectrum", "grid")


@pytest.mark.parametrize(
    ("seed", "ddpm", "other", "expected"),
    [
        # one miss in 64 against an all-correct DDPM (the old bootstrap rule failed this); the
        # other metrics are equal constants, so only fidelity is in question
        (1, (0, 16, (0.6, 0.4, 1.1), 0.0), (1, 64, (0.6, 0.4, 1.1), 0.0), (True,) * 4),
        # clearly worse on every metric
        (2, (0, 16, (0.6, 0.4, 1.1), 0.02), (32, 64, (0.3, 0.8, 1.6), 0.02), (False,) * 4),
        # fidelity and spectrum beyond on the better side pass; NN-SSIM and grid have no
        # better side without a real reference (0.9 is nearer copies, not better)
        (
            3,
            (4, 16, (0.6, 0.4, 1.1), 0.02),
            (0, 64, (0.9, 0.1, 0.6), 0.02),
            (True, False, True, False),
        ),
    ],
    ids=["one-miss-matches", "worse-fails", "better-side-passes-real-sided-needs-reference"],
)
def test_matches_rule(seed, ddpm, other, expected):
    rng = np.random.default_rng(seed)
    detail = samplers._matches(_per(rng, *ddpm), _per(rng, *other), list(samplers.PER_IMAGE))
    assert {m: c["passes"] for m, c in detail.items()} == dict(zip(ALL, expected, strict=True))


@pytest.mark.parametrize(
    ("value", "real", "passes"),
    [
        (0.60, 0.42, True),  # inside DDPM's interval
        (0.48, 0.42, True),  # beyond it, towards the real median
        (0.40, 0.42, True),  # just past the real median, still closer than the interval
        (0.20, 0.42, False),  # past the real median by more than the interval is from it
        (0.80, 0.42, False),  # beyond it, away from the real median
        (0.48, None, False),  # no real reference: only inside the interval passes
        (0.48, 0.60, False),  # real median inside the interval: only inside passes
    ],
)
def test_real_sided_metric_passes_only_towards_the_real_median(value, real, passes):
    rng = np.random.default_rng(0)
    ddpm = 0.6 + 0.02 * rng.standard_normal(16)  # interval about [0.59, 0.61]
    lo, hi = samplers.ddpm_interval("nn_ssim", ddpm)
    assert lo > 0.55 and hi < 0.65
    c = samplers.check_metric("nn_ssim", ddpm, np.full(9, value), real)
    assert c["passes"] is passes
    assert c["within"] is (lo <= value <= hi)
    assert c["value"] == pytest.approx(value) and c["ddpm_interval"] == [lo, hi]
    assert c["real"] == real


def test_only_real_sided_metrics_carry_a_real_target():
    # A missing target is not a value: no "real" key (which the report would list as n/a).
    rng = np.random.default_rng(1)
    ddpm, other = rng.random(16), rng.random(16)
    assert "real" not in samplers.check_metric("spectrum", ddpm, other, 0.3)
    assert "real" not in samplers.check_metric("fidelity", ddpm.round(), other.round(), None)
    assert samplers.check_metric("grid", ddpm, other, 1.1)["real"] == 1.1


def test_deterministic_samplers():
    rows = [("ddpm", 1.0), ("ddim", 0.0), ("ddim", 1.0), ("dpmpp_2m", 0.0)]
    got = [samplers.is_deterministic({"sampler": s, "eta": e}) for s, e in rows]
    assert got == [False, True, False, True]


def test_sampler_rows_the_schedule_cannot_scale_are_left_out_with_the_reason():
    """A zero-terminal-SNR run cannot use the eps/0.99 row (scaling undefined there): the
    table leaves it out and says why, instead of failing the report."""
    from types import SimpleNamespace

    from jax_mri_ldm.evaluation.context import Nulls
    from jax_mri_ldm.schedules import make_schedule

    entries = (("ddpm", None, "uniform", 0.0), ("dpmpp_2m", 10, "logSNR", 0.0, 0.99))
    for zero_snr, kept in ((False, 2), (True, 1)):
        ctx = SimpleNamespace(
            shared={"main_w": 3.0},
            cfg=SimpleNamespace(samplers=entries, use_ema=True, guidance_interval=None),
            run=SimpleNamespace(schedule=make_schedule("cosine", 100, zero_snr)),
            nulls=Nulls(),
        )
        assert samplers._usable(ctx) == list(entries[:kept])
        assert ("samplers.left_out" in ctx.nulls.reasons) == zero_snr
    assert "ε/0.99" in ctx.nulls.reasons["samplers.left_out"]


def test_fastest_ranks_by_steps_then_the_default_not_by_timing_noise():
    """Two 10-step rows differ in seconds per image by timing noise alone: the run's default
    wins among them whatever the timings say, and fewer steps beat a faster timing."""

    def row(name, steps, sec):
        return {"name": name, "steps": steps, "seconds_per_image": sec}

    rows = [row("DDPM", 1000, 6.0), row("DDIM 50", 50, 0.3), row("DPM 10", 10, 0.069),
            row("DPM 10 eps", 10, 0.072), row("DPM 25", 25, None)]  # fmt: skip
    names = {r["name"] for r in rows[1:]}
    assert samplers._fastest(rows, names, "DPM 10 eps")["name"] == "DPM 10 eps"
    assert samplers._fastest(rows, names, "DDIM 50")["name"] == "DPM 10"  # default not cheapest
    assert samplers._fastest(rows, names - {"DPM 10", "DPM 10 eps"}, None)["name"] == "DPM 25"
    assert samplers._fastest(rows, set(), "DPM 10") is None


def _paired_match():
    from conftest import REPO, load_script

    return load_script(REPO / "bench" / "ablations" / "paired_match.py", "paired_match")


def test_paired_difference_passes_equal_draws_and_flags_a_worse_one():
    pm = _paired_match()
    rng = np.random.default_rng(0)
    ddpm = 1.0 + 0.05 * rng.standard_normal(64)
    same = pm.paired_check("grid", ddpm.copy(), ddpm, real=1.0)
    assert same["d"] == 0.0 and same["not_worse"]
    assert same["interval"][0] <= 0.0 <= same["interval"][1]
    worse = pm.paired_check("grid", ddpm + 0.2, ddpm, real=1.0)  # farther from the real median
    assert worse["d"] > 0.1 and worse["interval"][0] > 0 and not worse["not_worse"]
    nearer = pm.paired_check("grid", 1.0 + 0.2 * (ddpm - 1.0), ddpm + 0.1, real=1.0)
    assert nearer["d"] < 0 and nearer["not_worse"]
    lower = pm.paired_check("spectrum", ddpm - 0.2, ddpm, real=None)  # lower distance: better
    assert lower["d"] == pytest.approx(-0.2) and lower["not_worse"]
    with pytest.raises(ValueError, match="real median"):
        pm.paired_check("nn_ssim", ddpm, ddpm, real=None)


def test_paired_match_reads_the_draws_of_a_sampler_match_folder(tmp_path):
    pm = _paired_match()
    rng = np.random.default_rng(1)
    arrays = {m: rng.random(8) for m in pm.METRICS}
    for stem in ("ddpm", "dpmpp_2m_10_logSNR_0__0.99"):
        np.savez(tmp_path / f"{stem}_s3_n4.npz", **arrays)
    np.savez(tmp_path / "ddim_50_uniform_1_s4_n4.npz", **arrays)  # no DDPM draw at seed 4
    real = {"nn_ssim": 0.5, "grid": 0.5, "spectrum": None}
    (tmp_path / "summary_paired.json").write_text(json.dumps({"real": real, "rows": []}))
    assert [p[:2] for p in pm.pairs(str(tmp_path))] == [("dpmpp_2m_10_logSNR_0__0.99", 3)]
    out = tmp_path / "paired.json"
    pm.main(argparse.Namespace(dir=str(tmp_path), out=str(out)))
    (row,) = json.loads(out.read_text())["rows"]
    assert all(c["d"] == 0.0 and c["not_worse"] for c in row["checks"].values())
