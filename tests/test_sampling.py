"""Tests for jax_mri_ldm.sampling on analytic Gaussian toys (the exact denoiser is known).

Toy: data x0 ~ N(mu, s^2) per dimension. Then x_t ~ N(a mu, a^2 s^2 + sigma^2) with
a = sqrt(abar), sigma = sqrt(1 - abar), and the optimal predictors are closed form:
  eps*(x_t, t) = sigma (x_t - a mu) / (a^2 s^2 + sigma^2)
  x0*(x_t, t)  = mu + a s^2 (x_t - a mu) / (a^2 s^2 + sigma^2),   v* = a eps* - sigma x0*.
With the exact model the samplers should return N(mu, s^2) up to their discretisation bias.

Tolerances. With n samples, SE(mean) = s / sqrt(n) and SE(std) ~= s / sqrt(2 n). We allow 4 SE
(two-sided p ~ 6e-5 per check) plus, for the std, a per-sampler bias budget: the sampler's own
discretisation bias measured with 200k samples (cosine schedule, T = 1000; std/s - 1 for
s = 0.5 and 1.5) was DDPM-1000 -0.5%/-0.2%, DDIM-50 -3.3%/-2.8%, DPM++(2M)-25 logSNR
+2.0%/+2.0%, DPM++(2M)-10 logSNR -1.5%/+1.0%, DPM++(2M)-25 time-uniform +6.3%/-0.2%; each
budget is about 1.5x that. Means have no such bias (measured < 0.3% of s): the samplers are
affine maps that carry the mean exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mri_ldm import diffusion as D
from jax_mri_ldm import sampling as S

T = 1000
MU = np.array([1.0, -2.0], np.float32)
SD = np.array([0.5, 1.5], np.float32)


@pytest.fixture(scope="module")
def sch() -> D.Schedule:
    return D.make_schedule("cosine", T)


def _posterior(schedule, x, t, mu, sd):
    """(eps*, x0*, a, sigma) for Gaussian data N(mu, sd^2); x: (N, D), t: (N,)."""
    a = schedule.sqrt_alphas_cumprod[t][:, None]
    s = schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
    var = a**2 * sd**2 + s**2
    return s * (x - a * mu) / var, mu + a * sd**2 * (x - a * mu) / var, a, s


def gaussian_model(schedule, prediction="eps", mu=MU, sd=SD):
    """The exact model for N(mu, sd^2) data in the requested parameterisation."""

    def model_fn(x, t, y):
        eps, x0, a, s = _posterior(schedule, x, t, mu, sd)
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[prediction]

    return model_fn


def _x_init(rng, shape):
    """The starting noise, per the documented RNG contract."""
    return jax.random.normal(jax.random.split(rng)[0], shape)


def _check_moments(x, mu, sd, budget):
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    mean_err = np.abs(x.mean(0) - mu) / sd
    std_err = np.abs(x.std(0) / sd - 1)
    assert np.all(mean_err < 4 / np.sqrt(n)), (mean_err, x.mean(0))
    assert np.all(std_err < 4 / np.sqrt(2 * n) + budget), (std_err, x.std(0))


@pytest.mark.parametrize(
    "sampler,steps,spacing,budget",
    [
        ("ddpm", None, "uniform", 0.01),
        ("ddim", 50, "uniform", 0.05),
        ("dpmpp_2m", 25, "logSNR", 0.03),
        ("dpmpp_2m", 10, "logSNR", 0.03),
        ("dpmpp_2m", 25, "uniform", 0.10),
    ],
)
def test_gaussian_toy_recovers_mean_and_std(sch, sampler, steps, spacing, budget) -> None:
    x = S.sample(
        gaussian_model(sch),
        sch,
        shape=(4000, 2),
        labels=None,
        rng=jax.random.key(0),
        sampler=sampler,
        steps=steps,
        spacing=spacing,
    )
    assert x.shape == (4000, 2) and x.dtype == jnp.float32
    _check_moments(x, MU, SD, budget)


# (sampler, steps, spacing, eta, std bias budget) for the v-prediction tests below; the budgets
# are the eps ones above, the DDIM eta=1 one from its own measured bias (about -7 % at 50 steps),
# and DPM++-10 on the zero-terminal-SNR schedule (first step from lambda = -inf is first order).
V_SAMPLERS = [
    ("ddpm", None, "uniform", 0.0, 0.01),
    ("ddim", 50, "uniform", 0.0, 0.05),
    ("ddim", 50, "uniform", 1.0, 0.10),
    ("dpmpp_2m", 25, "logSNR", 0.0, 0.03),
    ("dpmpp_2m", 10, "logSNR", 0.0, 0.06),
]


def _v_sample(schedule, sampler, steps, spacing, eta, n=4000, rng=0):
    return np.asarray(
        S.sample(
            gaussian_model(schedule, "v"),
            schedule,
            shape=(n, 2),
            labels=None,
            rng=jax.random.key(rng),
            sampler=sampler,
            steps=steps,
            spacing=spacing,
            eta=eta,
            prediction="v",
            clip_x0=None,
        )
    )


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("sampler,steps,spacing,eta,budget", V_SAMPLERS)
def test_v_prediction_without_clipping_recovers_data(
    sampler, steps, spacing, eta, budget, zero_snr
) -> None:
    """Every sampler, v-prediction, no x0 clip, also at zero terminal SNR (abar[T-1] = 0)."""
    schedule = D.make_schedule("cosine", T, zero_terminal_snr=zero_snr)
    x = _v_sample(schedule, sampler, steps, spacing, eta)
    assert np.all(np.isfinite(x))
    _check_moments(x, MU, SD, budget)


def test_deterministic_samplers_match_ddpm_1000() -> None:
    """DDIM eta=0 (50 steps) and DPM-Solver++(2M) (10, 25 steps) vs DDPM-1000, v-prediction.

    Same n for both, so the moment differences have SE sqrt(2) times the one-sample SE.
    """
    schedule = D.make_schedule("cosine", T)
    n = 4000
    ref = _v_sample(schedule, "ddpm", None, "uniform", 0.0, n=n, rng=20)
    for steps, sampler, spacing, budget in (
        (50, "ddim", "uniform", 0.05),
        (25, "dpmpp_2m", "logSNR", 0.03),
        (10, "dpmpp_2m", "logSNR", 0.03),
    ):
        x = _v_sample(schedule, sampler, steps, spacing, 0.0, n=n, rng=21)
        mean_diff = np.abs(x.mean(0) - ref.mean(0)) / SD
        std_diff = np.abs(x.std(0) / ref.std(0) - 1)
        assert np.all(mean_diff < 4 * np.sqrt(2 / n)), (sampler, steps, mean_diff)
        assert np.all(std_diff < 4 * np.sqrt(1 / n) + budget), (sampler, steps, std_diff)


def _scaled(schedule, eps_scale, sampler="dpmpp_2m", steps=10, spacing="logSNR"):
    model = gaussian_model(schedule, "v")
    kw = dict(shape=(2000, 2), labels=None, rng=jax.random.key(3), prediction="v")
    return np.asarray(
        S.sample(model, schedule, sampler=sampler, steps=steps, spacing=spacing,
                 eps_scale=eps_scale, **kw)
    )  # fmt: skip


def test_eps_scale_one_is_off_and_the_split_stays_consistent(sch) -> None:
    """eps_scale = 1 gives the unscaled samples bit for bit; another value keeps
    x = a x0 + sigma eps at every step (x0 is re-derived from the scaled eps)."""
    model = gaussian_model(sch, "v")
    kw = dict(shape=(64, 2), labels=None, rng=jax.random.key(1), sampler="dpmpp_2m",
              steps=10, spacing="logSNR", prediction="v")  # fmt: skip
    off = np.asarray(S.sample(model, sch, **kw))
    np.testing.assert_array_equal(off, np.asarray(S.sample(model, sch, eps_scale=1.0, **kw)))
    assert not np.allclose(off, np.asarray(S.sample(model, sch, eps_scale=1.01, **kw)))
    x = jax.random.normal(jax.random.key(2), (8, 2)) * 3.0
    for t in (999, 500, 5):
        x0, eps = S._predict(x, jnp.int32(t), model_fn=model, schedule=sch, labels=None,
                             guidance_scale=1.0, null_label=None, prediction="v",
                             clip_x0=None, eps_scale=1.01)  # fmt: skip
        a, s = sch.sqrt_alphas_cumprod[t], sch.sqrt_one_minus_alphas_cumprod[t]
        np.testing.assert_allclose(a * x0 + s * eps, x, rtol=1e-4, atol=1e-4)
        ref_eps = _posterior(sch, x, jnp.full((8,), t), MU, SD)[0]
        np.testing.assert_allclose(eps, ref_eps / 1.01, rtol=1e-3, atol=1e-5)


def test_eps_scale_above_one_leaves_more_spread(sch) -> None:
    """Dividing eps by lam > 1 removes less noise each step, so the exact model's samples come
    out wider than N(mu, s^2); lam < 1 removes more and narrows them. Means move little."""
    base, wide, narrow = (_scaled(sch, lam).std(0) for lam in (1.0, 1.01, 0.99))
    assert np.all(wide > base * 1.005) and np.all(narrow < base / 1.005), (base, wide, narrow)
    with pytest.raises(ValueError, match="eps_scale"):
        _scaled(sch, 0.0)


def test_eps_scale_is_refused_where_the_steps_amplify_it(sch, monkeypatch) -> None:
    """The jump that `eps_scale_jump` predicts is what the exact model's samples show: DDIM-50's
    time-uniform first step (999 -> 979) moves them by several data sds, DPM-Solver++ 10's
    logSNR steps by little; the first is refused, with the step named."""
    uni = S.timesteps_for("ddim", 50, T, "uniform")
    log = S.timesteps_for("dpmpp_2m", 10, T, "logSNR", schedule=sch)
    jump, t, nxt = S.eps_scale_jump(sch, uni, 0.99)
    assert jump > 5 * S.MAX_EPS_SCALE_JUMP and (t, nxt) == (999, 979)
    assert S.eps_scale_jump(sch, log, 0.99)[0] < 0.5 * S.MAX_EPS_SCALE_JUMP
    assert S.eps_scale_jump(sch, uni, 1.0)[0] == 0.0
    with pytest.raises(ValueError, match=r"eps_scale=0.99 .* t=999 -> 979"):
        _scaled(sch, 0.99, "ddim", 50, "uniform")
    with pytest.raises(ValueError, match="eps_scale"):
        S.make_sample_fn(lambda p, x, t, y: x, sch, (2,), sampler="ddim", steps=50, eps_scale=0.99)
    # One step goes straight to clean data: x0 itself moves by (1/lam - 1) s / a there.
    jump, t, nxt = S.eps_scale_jump(sch, [T - 1], 0.99)
    a, s = float(sch.sqrt_alphas_cumprod[T - 1]), float(sch.sqrt_one_minus_alphas_cumprod[T - 1])
    assert (t, nxt) == (T - 1, -1) and jump == pytest.approx((1 / 0.99 - 1) * s / a, rel=1e-4)
    with pytest.raises(ValueError, match=f"t={T - 1} -> clean data"):
        S.check_eps_scale(sch, [T - 1], 0.99)
    zt = D.make_schedule("cosine", T, zero_terminal_snr=True)  # a[T-1] = 0: x0 undefined
    zt_steps = S.timesteps_for("ddim", 10, T, "logSNR", schedule=zt)
    assert not np.isfinite(S.eps_scale_jump(zt, zt_steps, 0.99)[0])
    with pytest.raises(ValueError, match="zero terminal SNR"):
        S.check_eps_scale(zt, zt_steps, 0.99)

    monkeypatch.setattr(S, "check_eps_scale", lambda *args: None)  # sample what was refused
    settings = {"uniform": ("ddim", 50, "uniform"), "logSNR": ("dpmpp_2m", 10, "logSNR")}
    moved = {
        spacing: np.abs(_scaled(sch, 0.99, *setting) - _scaled(sch, 1.0, *setting)).mean(0) / SD
        for spacing, setting in settings.items()
    }  # (D,) mean |change| per dimension, in data sds
    assert np.all(moved["uniform"] > 1.0) and np.all(moved["logSNR"] < 0.3), moved


def test_zero_terminal_snr_sampling_rules() -> None:
    """eps cannot be sampled at zero SNR; logSNR spacing still starts at pure noise."""
    zt = D.make_schedule("cosine", T, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        S.sample(gaussian_model(zt), zt, shape=(4, 2), labels=None, rng=jax.random.key(0))
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        S.make_sample_fn(lambda p, x, t, y: x, zt, (2,), sampler="ddim", steps=5)
    for steps in (2, 10, 25):
        ts = S.timesteps_for("dpmpp_2m", steps, T, "logSNR", schedule=zt)
        assert ts[0] == T - 1 and ts[-1] == 0 and np.all(np.diff(ts) < 0) and ts.size == steps


def _slope_error(schedule, sampler, steps, spacing):
    """|k/s - 1| where x_out = c + k x_init: deterministic samplers are affine maps of the
    starting noise, so std(out)/std(init) gives k without sampling noise."""
    rng = jax.random.key(1)
    x = S.sample(
        gaussian_model(schedule),
        schedule,
        shape=(1000, 2),
        labels=None,
        rng=rng,
        sampler=sampler,
        steps=steps,
        spacing=spacing,
    )
    k = np.asarray(x.std(0) / _x_init(rng, (1000, 2)).std(0), np.float64)
    return np.max(np.abs(k / SD - 1))


def test_convergence_orders(sch) -> None:
    """DDIM is first order (halving h ~halves the error), DPM-Solver++(2M) second order."""
    ddim25, ddim50 = (_slope_error(sch, "ddim", n, "uniform") for n in (25, 50))
    dpm25, dpm50 = (_slope_error(sch, "dpmpp_2m", n, "logSNR") for n in (25, 50))
    # Measured: DDIM 6.2% -> 3.1%; DPM++ 2.1% -> 0.57%.
    assert 1.6 < ddim25 / ddim50 < 2.5
    assert dpm50 < dpm25 / 3.0
    assert dpm25 < ddim50


def test_dpmpp_2m_matches_reference_algorithm(sch) -> None:
    """Our scan equals a literal float64 transcription of Lu et al. (2022), Algorithm 2,
    followed by the final denoise-to-x0 at the last timestep."""
    ab = np.cumprod(1 - D.cosine_betas(T))  # float64
    mu, sd = MU.astype(np.float64), SD.astype(np.float64)

    def alpha(t):
        return np.sqrt(ab[t])

    def sigma(t):
        return np.sqrt(1 - ab[t])

    def lam(t):
        return np.log(alpha(t) / sigma(t))

    def x0_pred(x, t):
        return mu + alpha(t) * sd**2 * (x - alpha(t) * mu) / (ab[t] * sd**2 + 1 - ab[t])

    rng = jax.random.key(2)
    # Tolerances are float32 rounding: with a float64 schedule under jax_enable_x64 the scan
    # matches this reference to 3e-12. Time-uniform spacing ends with a long step extrapolated
    # with weight 1/(2r) ~ 3, which amplifies the rounding (measured 8e-4 vs 9e-6 for logSNR).
    for steps, spacing, atol in ((10, "logSNR", 5e-5), (8, "uniform", 2e-3)):
        ts = S.timesteps_for("dpmpp_2m", steps, T, spacing, schedule=sch)
        x = np.asarray(_x_init(rng, (500, 2)), np.float64)
        q = [x0_pred(x, ts[0])]
        for i in range(1, len(ts)):
            h = lam(ts[i]) - lam(ts[i - 1])
            if i == 1:
                d = q[-1]
            else:
                r = (lam(ts[i - 1]) - lam(ts[i - 2])) / h
                d = (1 + 1 / (2 * r)) * q[-1] - 1 / (2 * r) * q[-2]
            x = sigma(ts[i]) / sigma(ts[i - 1]) * x - alpha(ts[i]) * np.expm1(-h) * d
            q.append(x0_pred(x, ts[i]))
        out = S.sample(
            gaussian_model(sch),
            sch,
            shape=(500, 2),
            labels=None,
            rng=rng,
            sampler="dpmpp_2m",
            steps=steps,
            spacing=spacing,
        )
        np.testing.assert_allclose(np.asarray(out), q[-1], atol=atol)


def test_ddim_eta1_all_steps_equals_ddpm(sch) -> None:
    """Same rng => same noise sequence; DDIM(eta=1, all T steps) is algebraically the DDPM
    ancestral step with the beta_tilde variance, so the samples agree to float32 rounding
    (measured max |diff| 1.2e-4 over 1000 steps)."""
    common = dict(shape=(1000, 2), labels=None, rng=jax.random.key(3))
    model = gaussian_model(sch)
    ddpm = S.sample(model, sch, sampler="ddpm", **common)
    ddim = S.sample(model, sch, sampler="ddim", steps=T, eta=1.0, **common)
    np.testing.assert_allclose(np.asarray(ddim), np.asarray(ddpm), atol=1e-3)
    # Not a trivial match: the deterministic DDIM and the fixed-large DDPM differ.
    ddim0 = S.sample(model, sch, sampler="ddim", steps=T, eta=0.0, **common)
    large = S.sample(model, sch, sampler="ddpm", variance="fixed_large", **common)
    assert np.abs(np.asarray(ddim0 - ddpm)).max() > 0.1
    assert np.abs(np.asarray(large - ddpm)).max() > 1e-3


@pytest.mark.parametrize("sampler,steps", [("ddim", 50), ("dpmpp_2m", 20)])
def test_eps_v_x0_predictions_agree(sch, sampler, steps) -> None:
    out = {
        p: np.asarray(
            S.sample(
                gaussian_model(sch, p),
                sch,
                shape=(500, 2),
                labels=None,
                rng=jax.random.key(4),
                sampler=sampler,
                steps=steps,
                prediction=p,
            )
        )
        for p in ("eps", "v", "x0")
    }
    np.testing.assert_allclose(out["v"], out["eps"], atol=1e-3)
    np.testing.assert_allclose(out["x0"], out["eps"], atol=1e-3)


# --- class-conditional toy -------------------------------------------------------------------

CLASS_MU = np.array([[-2.0, 1.0], [2.0, -1.0]], np.float32)  # (K, D)
CLASS_SD = 0.5
NULL = 2


def conditional_model(schedule, calls=None):
    """Exact eps for class y (Gaussian) and for the null class (the equal-weight mixture:
    eps = sum_k p(k | x_t) eps_k). Records traced input shapes into `calls`."""
    mu = jnp.asarray(CLASS_MU)

    def model_fn(x, t, y):
        if calls is not None:
            calls.append((x.shape, t.shape, y.shape))
        a = schedule.sqrt_alphas_cumprod[t][:, None]  # (N, 1)
        s = schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
        var = a**2 * CLASS_SD**2 + s**2  # (N, 1)
        diff = x[None] - a[None] * mu[:, None, :]  # (K, N, D)
        eps_k = s[None] * diff / var[None]
        post = jax.nn.softmax(-jnp.sum(diff**2, -1) / (2 * var[None, :, 0]), axis=0)  # (K, N)
        eps_null = jnp.sum(post[..., None] * eps_k, axis=0)
        eps_y = jnp.where((y == 1)[:, None], eps_k[1], eps_k[0])
        return jnp.where((y == NULL)[:, None], eps_null, eps_y)

    return model_fn


def test_guidance_conditional_unconditional_and_amplified(sch) -> None:
    n = 2000
    labels = jnp.asarray([0] * n + [1] * n, jnp.int32)
    calls = []
    common = dict(
        shape=(2 * n, 2), rng=jax.random.key(5), sampler="ddim", steps=50, null_label=NULL
    )
    model = conditional_model(sch, calls)

    # w = 1: plain conditional model, one half-size call per step.
    x1 = np.asarray(S.sample(model, sch, labels=labels, guidance_scale=1.0, **common))
    assert calls == [((2 * n, 2), (2 * n,), (2 * n,))]
    _check_moments(x1[:n], CLASS_MU[0], CLASS_SD, 0.05)
    _check_moments(x1[n:], CLASS_MU[1], CLASS_SD, 0.05)

    # w = 0: the null class only; the labels do not matter at all.
    x0a = np.asarray(S.sample(model, sch, labels=labels, guidance_scale=0.0, **common))
    x0b = np.asarray(S.sample(model, sch, labels=1 - labels, guidance_scale=0.0, **common))
    np.testing.assert_array_equal(x0a, x0b)
    # The mixture: mean (mu0 + mu1)/2 = 0, std sqrt(s^2 + 2^2 or 1^2), half on each side.
    mix_sd = np.sqrt(CLASS_SD**2 + CLASS_MU[1] ** 2)
    _check_moments(x0a, np.zeros(2), mix_sd, 0.05)
    side = x0a @ (CLASS_MU[1] - CLASS_MU[0]) > 0
    assert abs(side.mean() - 0.5) < 4 * np.sqrt(0.25 / (2 * n))

    # w = 3: ONE batched call of 2B rows per step; pushes each class away from the other.
    calls.clear()
    x3 = np.asarray(S.sample(model, sch, labels=labels, guidance_scale=3.0, **common))
    assert calls == [((4 * n, 2), (4 * n,), (4 * n,))]
    u = (CLASS_MU[1] - CLASS_MU[0]) / np.linalg.norm(CLASS_MU[1] - CLASS_MU[0])
    # Measured projections of the class-1 mean on u: 2.24 at w=1, 2.78 at w=3.
    assert (x3[n:] @ u).mean() > (x1[n:] @ u).mean() + 0.3
    assert (x3[:n] @ u).mean() < (x1[:n] @ u).mean() - 0.3


def test_guidance_with_dpmpp_and_ddpm(sch) -> None:
    n = 1000
    labels = jnp.asarray([0] * n + [1] * n, jnp.int32)
    model = conditional_model(sch)
    configs = (("dpmpp_2m", 25, "logSNR", 0.05), ("ddpm", None, "uniform", 0.02))
    for sampler, steps, spacing, budget in configs:
        x = np.asarray(
            S.sample(
                model,
                sch,
                shape=(2 * n, 2),
                labels=labels,
                rng=jax.random.key(6),
                sampler=sampler,
                steps=steps,
                spacing=spacing,
                guidance_scale=1.0,
                null_label=NULL,
            )
        )
        _check_moments(x[:n], CLASS_MU[0], CLASS_SD, budget)
        _check_moments(x[n:], CLASS_MU[1], CLASS_SD, budget)


# --- compilation, determinism, configuration ---------------------------------------------------


def test_make_sample_fn_compiles_once_per_shape(sch) -> None:
    traces = []

    def apply_fn(params, x, t, y):
        traces.append(x.shape)  # runs only while tracing
        eps, _, _, _ = _posterior(sch, x, t, params["mu"], params["sd"])
        return eps

    fn = S.make_sample_fn(apply_fn, sch, (2,), sampler="dpmpp_2m", steps=10, spacing="logSNR")
    labels = jnp.zeros((1000,), jnp.int32)
    p1 = {"mu": jnp.asarray(MU), "sd": jnp.asarray(SD)}
    p2 = {"mu": jnp.asarray(MU) + 5.0, "sd": jnp.asarray(SD)}
    a = fn(p1, labels, jax.random.key(7))
    b = fn(p2, labels, jax.random.key(8))
    assert len(traces) == 1 and fn._cache_size() == 1
    # New parameter values are used, not baked in: the means follow params["mu"].
    np.testing.assert_allclose(np.asarray(a.mean(0)), MU, atol=0.2)
    np.testing.assert_allclose(np.asarray(b.mean(0)), MU + 5.0, atol=0.2)
    fn(p1, labels[:10], jax.random.key(7))  # another batch size compiles once more
    assert len(traces) == 2 and fn._cache_size() == 2


def test_sample_reuses_compile_for_same_model_fn(sch) -> None:
    traces = []
    base = gaussian_model(sch)

    def model_fn(x, t, y):
        traces.append(1)
        return base(x, t, y)

    kw = dict(shape=(64, 2), labels=None, sampler="ddim", steps=7)
    S.sample(model_fn, sch, rng=jax.random.key(0), **kw)
    S.sample(model_fn, sch, rng=jax.random.key(1), **kw)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "sampler,kw",
    [("ddpm", {}), ("ddim", {"steps": 20, "eta": 0.5}), ("dpmpp_2m", {"steps": 10})],
)
def test_same_rng_same_samples(sch, sampler, kw) -> None:
    labels = jnp.asarray([0, 1] * 16, jnp.int32)
    common = dict(
        shape=(32, 2), labels=labels, sampler=sampler, guidance_scale=2.0, null_label=NULL, **kw
    )
    model = conditional_model(sch)
    a = S.sample(model, sch, rng=jax.random.key(9), **common)
    b = S.sample(model, sch, rng=jax.random.key(9), **common)
    c = S.sample(model, sch, rng=jax.random.key(10), **common)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a - c)).min() > 0


def test_stochastic_ddim_depends_on_step_noise(sch) -> None:
    """eta > 0 injects per-step noise: same start, different output than eta = 0."""
    common = dict(shape=(256, 2), labels=None, rng=jax.random.key(11), sampler="ddim", steps=20)
    a = S.sample(gaussian_model(sch), sch, eta=0.0, **common)
    b = S.sample(gaussian_model(sch), sch, eta=1.0, **common)
    assert np.abs(np.asarray(a - b)).mean() > 0.05


def test_clip_x0(sch) -> None:
    model = gaussian_model(sch, mu=np.array([3.0, -3.0], np.float32))
    for sampler, steps in (("ddpm", None), ("ddim", 20), ("dpmpp_2m", 10)):
        x = S.sample(
            model,
            sch,
            shape=(256, 2),
            labels=None,
            rng=jax.random.key(12),
            sampler=sampler,
            steps=steps,
            clip_x0=1.0,
        )
        assert np.all(np.abs(np.asarray(x)) <= 1.0 + 1e-6)


def test_per_channel_clip_x0(sch) -> None:
    # Channel 0 lives near +3, channel 1 near -3: per-channel bounds keep each in its own range.
    model = gaussian_model(sch, mu=np.array([3.0, -3.0], np.float32))
    lo, hi = (2.5, -3.2), (3.2, -2.8)
    for sampler, steps in (("ddpm", None), ("ddim", 20), ("dpmpp_2m", 10)):
        x = np.asarray(
            S.sample(
                model,
                sch,
                shape=(256, 2),
                labels=None,
                rng=jax.random.key(13),
                sampler=sampler,
                steps=steps,
                clip_x0=(lo, hi),
            )
        )
        assert np.all(x >= np.array(lo) - 1e-5) and np.all(x <= np.array(hi) + 1e-5)
        assert abs(x[:, 0].mean() - 3.0) < 0.15 and abs(x[:, 1].mean() + 3.0) < 0.15


@pytest.mark.parametrize("bad", [0.0, -1.0, ((1.0,), (0.5,)), ((0.0, 1.0), (1.0,)), "x"])
def test_bad_clip_x0_is_rejected(bad) -> None:
    with pytest.raises(ValueError, match="clip_x0"):
        S.normalize_clip(bad)


def test_timesteps_for(sch) -> None:
    for spacing in S.SPACINGS:
        for steps in (1, 2, 10, 50, 999, 1000):
            ts = S.timesteps_for("ddim", steps, T, spacing, schedule=sch)
            assert ts.shape == (steps,) and ts.dtype == np.int32
            assert np.all(np.diff(ts) < 0) and ts.min() >= 0 and ts.max() <= T - 1
    uni = S.timesteps_for("ddim", 10, T, "uniform")
    assert uni[0] == T - 1 and uni[-1] == 0
    np.testing.assert_array_equal(
        S.timesteps_for("ddim", 50, T, "leading"), np.arange(0, T, 20)[::-1]
    )
    trail = S.timesteps_for("ddim", 10, T, "trailing")
    np.testing.assert_array_equal(trail, np.arange(999, 0, -100))
    quad = S.timesteps_for("ddim", 10, T, "quadratic")
    assert quad[0] == T - 1 and quad[-1] == 0 and np.all(np.diff(np.diff(quad[::-1])) > 0)
    # logSNR: for steps well inside the range, lambda gaps are near-uniform away from the
    # clipped last cosine step.
    lsnr = S.timesteps_for("dpmpp_2m", 10, T, "logSNR", schedule=sch)
    assert lsnr[0] == T - 1 and lsnr[-1] == 0
    np.testing.assert_array_equal(S.timesteps_for("ddpm", None, T), np.arange(T)[::-1])
    with pytest.raises(ValueError, match="ddim"):
        S.timesteps_for("ddpm", 50, T)
    with pytest.raises(ValueError, match="schedule"):
        S.timesteps_for("dpmpp_2m", 10, T, "logSNR")
    with pytest.raises(ValueError, match="steps"):
        S.timesteps_for("ddim", 0, T)
    with pytest.raises(ValueError, match="spacing"):
        S.timesteps_for("ddim", 10, T, "karras")


def test_bad_configuration_raises(sch) -> None:
    model = gaussian_model(sch)
    labels = jnp.zeros((4,), jnp.int32)
    kw = dict(shape=(4, 2), rng=jax.random.key(0))
    with pytest.raises(ValueError, match="sampler"):
        S.sample(model, sch, labels=None, sampler="euler", **kw)
    with pytest.raises(ValueError, match="null_label"):
        S.sample(model, sch, labels=labels, guidance_scale=2.0, **kw)
    with pytest.raises(ValueError, match="labels shape"):
        S.sample(model, sch, labels=labels[:3], **kw)
    with pytest.raises(ValueError, match="prediction"):
        S.sample(model, sch, labels=None, prediction="score", **kw)
    with pytest.raises(ValueError, match="variance"):
        S.make_sample_fn(lambda p, x, t, y: x, sch, (2,), variance="learned")
    assert S.SAMPLERS == ("ddpm", "ddim", "dpmpp_2m")
