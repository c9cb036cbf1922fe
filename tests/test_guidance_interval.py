"""Guidance in a limited noise interval (sampling.py; Kynkäänniemi et al. 2024).

On the class-conditional Gaussian toy of tests/test_sampling.py (exact conditional and null
predictors): an interval holding every step is full guidance, one holding none is the plain
conditional model, and a partial one guides exactly the steps whose sigma_t lies in (lo, hi],
checked against a hand-written DDIM loop.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sampling import CLASS_MU, NULL, conditional_model

from conftest import REPO, env_for_subprocess
from jax_mri_ldm import diffusion as D
from jax_mri_ldm import sampling as S
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.evaluation.context import clean
from jax_mri_ldm.evaluation.runinfo import sample_command
from jax_mri_ldm.evaluation.sections.samplers import row_spec
from jax_mri_ldm.sampler_settings import SamplerSpec, spec_with

N = 64  # samples per class


@pytest.fixture(scope="module")
def sch() -> D.Schedule:
    return D.make_schedule("cosine", 1000)


def _draw(sch, sampler="ddim", steps=20, spacing="uniform", **kw) -> np.ndarray:
    labels = jnp.asarray([0] * N + [1] * N, jnp.int32)
    x = S.sample(
        conditional_model(sch),
        sch,
        shape=(2 * N, 2),
        labels=labels,
        rng=jax.random.key(3),
        sampler=sampler,
        steps=steps,
        spacing=spacing,
        null_label=NULL,
        **kw,
    )
    return np.asarray(x)


def _sigmas(sch, ts) -> np.ndarray:
    """sigma_t of each index as the sampler computes it (float32 s / a)."""
    ts = jnp.asarray(ts)
    return np.asarray(sch.sqrt_one_minus_alphas_cumprod[ts] / sch.sqrt_alphas_cumprod[ts])


@pytest.mark.parametrize(
    "sampler,steps,spacing", [("ddim", 20, "uniform"), ("dpmpp_2m", 10, "logSNR")]
)
def test_whole_range_is_full_guidance_and_empty_range_is_conditional(
    sch, sampler, steps, spacing
) -> None:
    kw = dict(sampler=sampler, steps=steps, spacing=spacing)
    full = _draw(sch, guidance_scale=3.0, **kw)
    every = _draw(sch, guidance_scale=3.0, guidance_interval=(0.0, math.inf), **kw)
    np.testing.assert_allclose(every, full, rtol=1e-5, atol=1e-5)
    plain = _draw(sch, guidance_scale=1.0, **kw)
    ts = S.timesteps_for(sampler, steps, 1000, spacing, schedule=sch)
    above_all = float(_sigmas(sch, ts).max()) * 2  # no step's sigma reaches it
    none = _draw(sch, guidance_scale=3.0, guidance_interval=(above_all, 2 * above_all), **kw)
    np.testing.assert_allclose(none, plain, rtol=1e-5, atol=1e-5)
    assert np.abs(full - plain).max() > 0.1  # guidance does move these samples


def _ddim_reference(sch, ts, w: float, guided: np.ndarray) -> np.ndarray:
    """DDIM eta = 0 by hand: guided eps at the steps where `guided`, conditional elsewhere."""
    model = conditional_model(sch)
    labels = jnp.asarray([0] * N + [1] * N, jnp.int32)
    null = jnp.full_like(labels, NULL)
    x = jax.random.normal(jax.random.split(jax.random.key(3))[0], (2 * N, 2))
    a_bar = np.asarray(sch.alphas_cumprod)
    for i, t in enumerate(ts):
        tv = jnp.full((2 * N,), t, jnp.int32)
        eps = model(x, tv, labels)
        if guided[i]:
            eps = model(x, tv, null) + w * (eps - model(x, tv, null))
        a, s = np.sqrt(a_bar[t]), np.sqrt(1 - a_bar[t])
        x0 = (x - s * eps) / a
        a_n = 1.0 if i == len(ts) - 1 else np.sqrt(a_bar[ts[i + 1]])
        s_n = 0.0 if i == len(ts) - 1 else np.sqrt(1 - a_bar[ts[i + 1]])
        x = a_n * x0 + s_n * eps
    return np.asarray(x)


def test_partial_range_guides_exactly_the_steps_inside(sch) -> None:
    ts = S.timesteps_for("ddim", 20, 1000, "uniform", schedule=sch)
    sig = _sigmas(sch, ts)  # decreasing
    # Bounds between steps (an exact tie depends on the last bit of a jitted division).
    lo, hi = float(np.sqrt(sig[12] * sig[13])), float(np.sqrt(sig[3] * sig[4]))
    guided = (sig > lo) & (sig <= hi)
    assert guided.tolist() == [i in range(4, 13) for i in range(20)]
    got = _draw(sch, guidance_scale=3.0, guidance_interval=(lo, hi))
    want = _ddim_reference(sch, ts, 3.0, guided)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    full = _draw(sch, guidance_scale=3.0)
    plain = _draw(sch, guidance_scale=1.0)
    # Partly guided: between the two along the class axis, equal to neither.
    u = (CLASS_MU[1] - CLASS_MU[0]) / np.linalg.norm(CLASS_MU[1] - CLASS_MU[0])
    proj = [float((x[N:] @ u).mean()) for x in (plain, got, full)]
    assert proj[0] < proj[1] < proj[2], proj


@pytest.mark.parametrize("bad", [(1.0, 0.5), (-1.0, 2.0), (1.0,), "x", (0.0, 0.0), 3.0])
def test_bad_intervals_are_refused(sch, bad) -> None:
    with pytest.raises(ValueError, match="guidance_interval"):
        _draw(sch, guidance_scale=3.0, guidance_interval=bad)
    with pytest.raises(UserError, match="--guidance_interval"):
        SamplerSpec(guidance_interval=bad)


def test_spec_keeps_the_interval_through_flags_json_and_commands() -> None:
    spec = SamplerSpec(guidance_interval=["0.5", "inf"])  # as sample.py's list flag gives it
    assert spec.guidance_interval == (0.5, math.inf)
    assert hash(spec) == hash(SamplerSpec(guidance_interval=(0.5, math.inf)))
    assert spec.name(1000).endswith("guided σ∈(0.5, inf]")
    # A report stores the spec through `clean` (inf -> null); `sample.py --report` reads it back.
    stored = json.loads(json.dumps(clean(spec.__dict__)))
    assert stored["guidance_interval"] == [0.5, None]
    assert SamplerSpec(**stored) == spec
    # An empty flag clears an interval; an unset one (None) keeps it.
    assert spec_with(spec, {"guidance_interval": []}).guidance_interval is None
    assert spec_with(spec, {"guidance_interval": None}).guidance_interval == (0.5, math.inf)
    cmd = sample_command("runs/ldm", spec, 1000, 16)
    assert "--guidance_interval=0.5,inf" in cmd
    assert "--guidance_interval" not in sample_command("runs/ldm", SamplerSpec(), 1000, 16)


def test_report_sampler_rows_take_the_main_interval() -> None:
    row = row_spec(("dpmpp_2m", 10, "logSNR", 0.0, 0.99), 2.0, True, (0.5, None))
    assert row.guidance_interval == (0.5, math.inf) and row.eps_scale == 0.99
    assert row_spec(("ddpm", None, "uniform"), 2.0, True, None).guidance_interval is None


def test_the_probe_runs_the_reports_sweep_per_interval(tiny_runs, tmp_path) -> None:
    """bench/ablations/guidance_interval.py: one report sweep per interval, every row with the
    headline's spectrum statistic, the interval recorded, the figure written."""
    out = tmp_path / "probe"
    cmd = [sys.executable, str(REPO / "bench" / "ablations" / "guidance_interval.py")]
    cmd += [f"--workdir={tiny_runs['ldm_dir']}", f"--out={out}", "--preset=tiny"]
    cmd += ["--per_class=2", "--guidance=1,2", "--intervals=none,0.5:inf"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_for_subprocess())
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "guidance_interval.json").read_text())
    assert [s["interval"] for s in res["sweeps"]] == [None, [0.5, None]]
    for s in res["sweeps"]:
        assert [r["guidance"] for r in s["rows"]] == [1.0, 2.0]
        for row in s["rows"]:
            assert row["num_images"] == 4 and row["spectrum"]["median"] > 0
            assert isinstance(row["spectrum"]["within_real_iqr"], bool)
    # w = 1 ignores the interval: same starting noise, same images, same scores.
    rows = [s["rows"][0] for s in res["sweeps"]]
    assert rows[0]["spectrum"]["median"] == rows[1]["spectrum"]["median"]
    assert (out / "guidance_interval_samples.png").stat().st_size > 0


def test_the_report_explains_an_interval_s_nulls() -> None:
    """report.json turns None and an unbounded hi into nulls; each gets its reason."""
    from types import SimpleNamespace

    from jax_mri_ldm.evaluation import report
    from jax_mri_ldm.evaluation.context import Nulls

    ctx = SimpleNamespace(nulls=Nulls())
    for path, interval in (("a", None), ("b", (0.5, None)), ("c", (0.5, math.inf)), ("d", (0, 1))):
        report._interval_nulls(ctx, path, interval)
    assert set(ctx.nulls.reasons) == {"a", "b.1", "c.1"}
