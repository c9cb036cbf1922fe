"""Tests for jax_mri_ldm.diffusion against closed forms and large-sample statistics."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mri_ldm import diffusion as D

T = 1000


@pytest.fixture(scope="module")
def cosine() -> D.Schedule:
    return D.make_schedule("cosine", T)


def _f(t: np.ndarray) -> np.ndarray:
    """Nichol & Dhariwal's f(t), written out independently of the module."""
    return np.cos((np.asarray(t, np.float64) / T + 0.008) / 1.008 * np.pi / 2) ** 2


def test_cosine_schedule_matches_formula(cosine: D.Schedule) -> None:
    abar = np.asarray(cosine.alphas_cumprod, np.float64)
    betas = np.asarray(cosine.betas, np.float64)
    assert abar.shape == betas.shape == (T,)
    assert cosine.num_timesteps == T and cosine.kind == "cosine"
    assert np.all(np.diff(abar) < 0), "alpha_bar must be strictly decreasing"
    assert np.all(betas <= 0.999 + 1e-7) and np.all(betas > 0)
    # Index t is the paper's step t+1: abar[t] = f(t+1)/f(0) wherever beta was not clipped.
    expected = _f(np.arange(1, T + 1)) / _f(0)
    np.testing.assert_allclose(abar[:-1], expected[:-1], rtol=2e-6)
    # Only the last beta is clipped (its raw value is 1 since f(T) = 0), so the last
    # alpha_bar is the previous one times (1 - 0.999).
    assert np.sum(betas > 0.99) == 1 and betas[-1] == pytest.approx(0.999, abs=1e-6)
    assert abar[-1] == pytest.approx(expected[-2] * 1e-3, rel=1e-4)
    assert abar[-1] == pytest.approx(2.4288e-9, rel=1e-3)
    assert abar[0] == pytest.approx(0.99995872, abs=1e-7)
    assert abar[0] > 0.999
    # The clean end: no posterior noise at t=0 and the posterior mean there is x0.
    assert float(cosine.posterior_variance[0]) == 0.0
    assert float(cosine.posterior_mean_coef1[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(cosine.posterior_mean_coef2[0]) == pytest.approx(0.0, abs=1e-6)


def test_linear_schedule() -> None:
    sch = D.make_schedule("linear", T)
    betas = np.asarray(sch.betas, np.float64)
    assert betas[0] == pytest.approx(1e-4, rel=1e-6) and betas[-1] == pytest.approx(0.02, rel=1e-6)
    expected_last = np.exp(np.sum(np.log1p(-np.linspace(1e-4, 0.02, T))))
    assert float(sch.alphas_cumprod[-1]) == pytest.approx(expected_last, rel=1e-4)
    assert float(sch.alphas_cumprod[-1]) == pytest.approx(4.036e-5, rel=1e-3)
    # Fewer steps keep the endpoint comparable (betas scaled by 1000 / T).
    short = D.make_schedule("linear", 100)
    assert float(short.alphas_cumprod[-1]) < 1e-3


def test_derived_arrays_match_gaussian_conditioning(cosine: D.Schedule) -> None:
    """Posterior q(x_{t-1} | x_t, x_0) re-derived by Gaussian regression, not the DDPM formula."""
    # Exact float64 quantities from the formula (the betas' own float64 definition).
    betas64 = D.cosine_betas(T)
    ab = np.cumprod(1 - betas64)
    sqrt_ab = np.asarray(cosine.sqrt_alphas_cumprod, np.float64)
    np.testing.assert_allclose(sqrt_ab**2, ab, rtol=1e-6)
    # Computed in float64 before the cast: accurate to float32 rounding even where 1 - abar is
    # ~4e-5 (1 - float32(abar) would be off by ~5e-4 relative there).
    np.testing.assert_allclose(
        np.asarray(cosine.sqrt_one_minus_alphas_cumprod, np.float64) ** 2, 1 - ab, rtol=1e-6
    )
    t = np.array([1, 5, 200, 700, 998])
    ab_prev, ab_t, alpha_t = ab[t - 1], ab[t], 1 - betas64[t]
    x0, xt = 0.7, -1.3
    # x_{t-1} = sqrt(ab_prev) x0 + sqrt(1-ab_prev) e1, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta) e2.
    cov = np.sqrt(alpha_t) * (1 - ab_prev)
    mean_ref = np.sqrt(ab_prev) * x0 + cov / (1 - ab_t) * (xt - np.sqrt(ab_t) * x0)
    var_ref = (1 - ab_prev) - cov**2 / (1 - ab_t)
    c1, c2 = (
        np.asarray(a, np.float64)[t]
        for a in (cosine.posterior_mean_coef1, cosine.posterior_mean_coef2)
    )
    np.testing.assert_allclose(c1 * x0 + c2 * xt, mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cosine.posterior_variance)[t], var_ref, rtol=1e-4)
    logvar = np.asarray(cosine.posterior_log_variance_clipped)[t]
    np.testing.assert_allclose(logvar, np.log(var_ref), atol=1e-4)


def test_schedule_dict_round_trip(cosine: D.Schedule) -> None:
    d = json.loads(json.dumps(D.schedule_to_dict(cosine)))
    back = D.schedule_from_dict(d)
    assert back.kind == "cosine" and back.num_timesteps == T
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_mean_coef2"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), getattr(cosine, name))
    custom = D.schedule_from_betas(np.linspace(0.01, 0.2, 20))
    back = D.schedule_from_dict(json.loads(json.dumps(D.schedule_to_dict(custom))))
    assert back.kind == "custom" and back.num_timesteps == 20
    np.testing.assert_array_equal(np.asarray(back.alphas_cumprod), custom.alphas_cumprod)
    d["betas"][3] *= 2.0  # a checkpoint whose stored betas disagree with its named kind
    with pytest.raises(ValueError, match="differ"):
        D.schedule_from_dict(d)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        D.make_schedule("sigmoid", T)
    with pytest.raises(ValueError, match="betas"):
        D.schedule_from_dict({"kind": "custom"})


def test_schedule_is_a_pytree(cosine: D.Schedule) -> None:
    leaves = jax.tree_util.tree_leaves(cosine)
    assert len(leaves) == 10 and all(leaf.dtype == jnp.float32 for leaf in leaves)
    # Static fields survive a jit boundary.
    n = jax.jit(lambda s: s.alphas_cumprod[s.num_timesteps - 1])(cosine)
    assert float(n) == pytest.approx(float(cosine.alphas_cumprod[-1]))


def test_q_sample_statistics(cosine: D.Schedule) -> None:
    n_per_t, ts = 50_000, np.array([0, 100, 500, 950])
    t = jnp.asarray(np.repeat(ts, n_per_t))  # (200000,)
    x0 = jnp.full((t.shape[0], 1), 1.5)
    noise = jax.random.normal(jax.random.key(0), x0.shape)
    xt = np.asarray(D.q_sample(cosine, x0, t, noise)).reshape(len(ts), n_per_t)
    abar = np.asarray(cosine.alphas_cumprod, np.float64)[ts]
    sd = np.sqrt(1 - abar)
    # 5 standard errors: SE(mean) = sd/sqrt(n), SE(var) ~= var*sqrt(2/n) for a Gaussian.
    np.testing.assert_array_less(
        np.abs(xt.mean(1) - np.sqrt(abar) * 1.5), 5 * sd / np.sqrt(n_per_t)
    )
    np.testing.assert_array_less(np.abs(xt.var(1) / sd**2 - 1), 5 * np.sqrt(2 / n_per_t))


def test_x0_eps_and_v_round_trips(cosine: D.Schedule) -> None:
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    t = jax.random.randint(k1, (4096,), 0, T)
    x0 = jax.random.normal(k2, (4096, 3))
    eps = jax.random.normal(k3, (4096, 3))
    xt = D.q_sample(cosine, x0, t, eps)
    a = np.asarray(cosine.sqrt_alphas_cumprod)[np.asarray(t)][:, None]
    s = np.asarray(cosine.sqrt_one_minus_alphas_cumprod)[np.asarray(t)][:, None]
    # Exact up to float32 rounding of x_t (~1e-7 * |x_t|), amplified by 1/alpha (or 1/sigma).
    x0_hat = D.predict_x0_from_eps(cosine, xt, t, eps)
    assert np.all(np.abs(np.asarray(x0_hat - x0)) <= 1e-6 * (1 + np.abs(np.asarray(xt))) / a)
    eps_hat = D.predict_eps_from_x0(cosine, xt, t, x0)
    assert np.all(np.abs(np.asarray(eps_hat - eps)) <= 1e-6 * (1 + np.abs(np.asarray(xt))) / s)
    # v needs no division, so the round trip is uniformly tight.
    v = D.get_v(cosine, x0, t, eps)
    x0_v, eps_v = D.x0_eps_from_v(cosine, xt, t, v)
    np.testing.assert_allclose(np.asarray(x0_v), np.asarray(x0), atol=2e-6)
    np.testing.assert_allclose(np.asarray(eps_v), np.asarray(eps), atol=2e-6)
    # The generic converter agrees for each parameterisation.
    for pred, out in (("eps", eps), ("v", v), ("x0", x0)):
        x0_o, eps_o = D.x0_eps_from_output(cosine, xt, t, out, pred)
        keep = np.asarray(t) < 900  # away from the 1/alpha blow-up
        np.testing.assert_allclose(np.asarray(x0_o)[keep], np.asarray(x0)[keep], atol=1e-4)
        keep = np.asarray(t) > 10  # away from the 1/sigma blow-up
        np.testing.assert_allclose(np.asarray(eps_o)[keep], np.asarray(eps)[keep], atol=1e-4)
    with pytest.raises(ValueError, match="prediction"):
        D.x0_eps_from_output(cosine, xt, t, eps, "score")


def _oracle(schedule: D.Schedule, x0: jax.Array, prediction: str):
    """A model that knows x0, hence (from x_t) the exact noise and every target."""

    def model_fn(xt, t, y):
        eps = D.predict_eps_from_x0(schedule, xt, t, x0)
        if prediction == "eps":
            return eps
        if prediction == "v":
            return D.get_v(schedule, x0, t, eps)
        return x0

    return model_fn


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_loss_of_oracle_is_zero(cosine: D.Schedule, prediction: str, weighting: str) -> None:
    x0 = jax.random.normal(jax.random.key(4), (64, 4, 4, 2))
    labels = jnp.zeros((64,), jnp.int32)
    loss, aux = D.diffusion_loss(
        _oracle(cosine, x0, prediction),
        cosine,
        x0,
        labels,
        jax.random.key(5),
        prediction=prediction,
        null_label=2,
        loss_weighting=weighting,
    )
    assert aux["loss_per_example"].shape == (64,) and aux["t"].shape == (64,)
    assert float(loss) < 1e-8


def test_loss_draws_and_reduction(cosine: D.Schedule) -> None:
    """Zero model: eps-loss = mean(noise^2) ~ 1; labels dropped at 10%, independent of t."""
    n = 20_000
    seen = {}

    def zero_model(xt, t, y):
        seen["y"] = y
        return jnp.zeros_like(xt)

    x0 = jnp.ones((n, 2, 2, 1))
    labels = jnp.asarray(np.arange(n) % 2, jnp.int32)
    loss, aux = D.diffusion_loss(
        zero_model, cosine, x0, labels, jax.random.key(6), p_uncond=0.1, null_label=2
    )
    per_ex, t = np.asarray(aux["loss_per_example"]), np.asarray(aux["t"])
    # Per-element mean (like F.mse_loss): equal to the mean of per-example means here.
    assert float(loss) == pytest.approx(per_ex.mean(), rel=1e-5)
    # E[eps^2] = 1; SE of the mean of 4n chi2(1)/1 values is sqrt(2 / 4n) = 0.005.
    assert abs(float(loss) - 1.0) < 0.025
    assert t.min() >= 0 and t.max() <= T - 1 and abs(t.mean() - (T - 1) / 2) < 5 * 289 / n**0.5
    y = np.asarray(seen["y"])
    dropped = y == 2
    assert float(aux["drop_frac"]) == pytest.approx(dropped.mean())
    assert abs(dropped.mean() - 0.1) < 5 * np.sqrt(0.09 / n)
    np.testing.assert_array_equal(y[~dropped], np.asarray(labels)[~dropped])
    # Independent of the t draw: mean t of dropped vs kept agree within 5 SE.
    se = 289 * np.sqrt(1 / dropped.sum() + 1 / (~dropped).sum())
    assert abs(t[dropped].mean() - t[~dropped].mean()) < 5 * se

    # Min-SNR weighting = per-example weight min(SNR, 5)/SNR (eps target) times the MSE.
    loss_w, aux_w = D.diffusion_loss(
        zero_model, cosine, x0, labels, jax.random.key(6), null_label=2, loss_weighting="min_snr"
    )
    np.testing.assert_array_equal(np.asarray(aux_w["t"]), t)  # same rng -> same draws
    abar = np.asarray(cosine.alphas_cumprod, np.float64)[t]
    snr = abar / (1 - abar)
    expected = np.mean(np.minimum(snr, 5.0) / snr * per_ex)
    assert float(loss_w) == pytest.approx(expected, rel=1e-4)
    assert float(loss_w) < float(loss)  # the weights are <= 1


def test_loss_rng_and_errors(cosine: D.Schedule) -> None:
    x0 = jnp.ones((8, 3))
    labels = jnp.zeros((8,), jnp.int32)
    model = lambda xt, t, y: 0.5 * xt

    def run(key):
        return D.diffusion_loss(model, cosine, x0, labels, key, null_label=2)[0]

    assert float(run(jax.random.key(0))) == float(run(jax.random.key(0)))
    assert float(run(jax.random.key(0))) != float(run(jax.random.key(1)))
    # Unconditional use: labels None passes y=None and drops nothing.
    loss, aux = D.diffusion_loss(model, cosine, x0, None, jax.random.key(0))
    assert np.isfinite(float(loss)) and float(aux["drop_frac"]) == 0.0
    with pytest.raises(ValueError, match="null_label"):
        D.diffusion_loss(model, cosine, x0, labels, jax.random.key(0))
    with pytest.raises(ValueError, match="prediction"):
        D.diffusion_loss(
            model, cosine, x0, labels, jax.random.key(0), prediction="score", null_label=2
        )
    with pytest.raises(ValueError, match="loss_weighting"):
        D.diffusion_loss(
            model, cosine, x0, labels, jax.random.key(0), null_label=2, loss_weighting="p2"
        )


def test_loss_jits_and_differentiates(cosine: D.Schedule) -> None:
    x0 = jax.random.normal(jax.random.key(7), (16, 3))
    labels = jnp.zeros((16,), jnp.int32)

    def loss_of(w, key):
        model = lambda xt, t, y: w * xt
        return D.diffusion_loss(model, cosine, x0, labels, key, null_label=2)[0]

    g = jax.jit(jax.grad(loss_of))(jnp.float32(0.3), jax.random.key(8))
    assert np.isfinite(float(g)) and float(g) != 0.0


def test_min_snr_weights_at_known_snrs() -> None:
    """Hang et al.: x0 weight min(SNR, g); eps min(SNR, g)/SNR; v min(SNR, g)/(SNR + 1)."""
    snr = jnp.asarray([0.0, 1.0, 5.0, 25.0])
    np.testing.assert_allclose(D.min_snr_weight(snr, "x0"), [0.0, 1.0, 5.0, 5.0])
    np.testing.assert_allclose(D.min_snr_weight(snr, "eps"), [1.0, 1.0, 1.0, 0.2])
    np.testing.assert_allclose(D.min_snr_weight(snr, "v"), [0.0, 0.5, 5 / 6, 5 / 26], rtol=1e-6)
    np.testing.assert_allclose(D.min_snr_weight(snr, "v", gamma=1.0), [0, 0.5, 1 / 6, 1 / 26])
    # All three weightings give the same loss on the same x0 error (they differ only in target).
    ratio = D.min_snr_weight(snr[1:], "v") * (snr[1:] + 1) / D.min_snr_weight(snr[1:], "x0")
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-6)


def test_v_loss_with_min_snr_and_gamma(cosine: D.Schedule) -> None:
    """Zero model, v target: per-example weight min(SNR, g)/(SNR + 1), g from the argument."""
    x0 = jnp.ones((4000, 2, 2, 1))
    kw = dict(prediction="v", loss_weighting="min_snr")
    zero = lambda xt, t, y: jnp.zeros_like(xt)
    for gamma in (5.0, 1.0):
        loss, aux = D.diffusion_loss(
            zero, cosine, x0, None, jax.random.key(2), min_snr_gamma=gamma, **kw
        )
        t, per_ex = np.asarray(aux["t"]), np.asarray(aux["loss_per_example"], np.float64)
        abar = np.asarray(cosine.alphas_cumprod, np.float64)[t]
        snr = abar / (1 - abar)
        expected = np.mean(np.minimum(snr, gamma) / (snr + 1) * per_ex)
        assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_zero_terminal_snr_schedule() -> None:
    plain = D.make_schedule("cosine", T)
    zt = D.make_schedule("cosine", T, zero_terminal_snr=True)
    abar, abar0 = np.asarray(zt.alphas_cumprod), np.asarray(plain.alphas_cumprod)
    assert zt.zero_terminal_snr and not plain.zero_terminal_snr
    assert abar[-1] == 0.0 and float(zt.sqrt_alphas_cumprod[-1]) == 0.0
    assert float(zt.betas[-1]) == 1.0 and float(zt.sqrt_one_minus_alphas_cumprod[-1]) == 1.0
    assert abar[0] == pytest.approx(abar0[0], rel=1e-6) and np.all(np.diff(abar) < 0)
    # sqrt(abar) is an affine map of the original one (Lin et al., Algorithm 1).
    r, r0 = np.sqrt(abar.astype(np.float64)), np.sqrt(abar0.astype(np.float64))
    slope = (r[0] - r[-1]) / (r0[0] - r0[-1])
    np.testing.assert_allclose(r, (r0 - r0[-1]) * slope, atol=2e-6)
    for name in ("betas", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2"):
        assert np.all(np.isfinite(np.asarray(getattr(zt, name)))), name
    back = D.schedule_from_dict(json.loads(json.dumps(D.schedule_to_dict(zt))))
    assert back.zero_terminal_snr and back.kind == "cosine"
    np.testing.assert_array_equal(np.asarray(back.betas), np.asarray(zt.betas))
    assert "zero_terminal_snr" not in D.schedule_to_dict(plain)  # old metadata unchanged
    cfg = {"schedule": "cosine", "num_timesteps": T}
    assert not D.schedule_from_config(cfg).zero_terminal_snr
    assert D.schedule_from_config({**cfg, "zero_terminal_snr": True}).zero_terminal_snr


def test_zero_terminal_snr_loss_needs_v() -> None:
    zt = D.make_schedule("cosine", 50, zero_terminal_snr=True)
    x0 = jax.random.normal(jax.random.key(1), (256, 3))
    model = lambda xt, t, y: 0.1 * xt
    with pytest.raises(ValueError, match="zero_terminal_snr"):
        D.diffusion_loss(model, zt, x0, None, jax.random.key(0), prediction="eps")
    for weighting in ("none", "min_snr"):
        loss, aux = D.diffusion_loss(
            model, zt, x0, None, jax.random.key(0), prediction="v", loss_weighting=weighting
        )
        assert np.isfinite(float(loss)) and np.any(np.asarray(aux["t"]) == 49)
    x0_hat, eps_hat = D.x0_eps_from_v(zt, x0, jnp.full((256,), 49), x0)
    np.testing.assert_array_equal(np.asarray(x0_hat), -np.asarray(x0))  # a = 0, s = 1
    np.testing.assert_array_equal(np.asarray(eps_hat), np.asarray(x0))


def test_loss_options_defaults_for_old_configs() -> None:
    old = {"prediction": "eps", "p_uncond": 0.1}
    assert D.loss_options(old) == {
        "prediction": "eps",
        "p_uncond": 0.1,
        "loss_weighting": "none",
        "min_snr_gamma": D.MIN_SNR_GAMMA,
    }
    new = {**old, "prediction": "v", "loss_weighting": "min_snr", "min_snr_gamma": 3.0}
    assert D.loss_options(new)["min_snr_gamma"] == 3.0


@pytest.mark.parametrize("preset", ["paper", "demo", "recommended", "tiny"])
def test_ldm_presets_are_well_formed(preset: str) -> None:
    """Every preset's diffusion section builds a schedule and passes the parameterisation check."""
    from configs import ldm

    cfg = ldm.get_config(preset).diffusion
    schedule = D.schedule_from_config(cfg)
    opts = D.loss_options(cfg)
    D.check_parameterisation(schedule, opts["prediction"], opts["loss_weighting"])
    if preset == "recommended":
        assert opts["prediction"] == "v" and opts["loss_weighting"] == "min_snr"
    if preset == "paper":
        assert opts["prediction"] == "eps" and opts["loss_weighting"] == "none"
