"""The VAE losses: the spectral term's curve, its invariances and its place in vae_loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mri_ldm.evaluation.spectrum import radial_spectrum
from jax_mri_ldm.losses import radial_log_power, spectral_loss, vae_loss


def _images(seed: int = 0, n: int = 3, size: int = 32) -> np.ndarray:
    """(n, size, size, 1) smooth random images with some fine detail, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, size // 4, size // 4, 1))
    x = np.asarray(jax.image.resize(coarse, (n, size, size, 1), "bilinear"))
    x = x + 0.2 * rng.standard_normal(x.shape)
    return np.tanh(x).astype(np.float32)


def _blur(x: np.ndarray) -> np.ndarray:
    """3x3 box blur with circular padding."""
    return np.mean([np.roll(x, (dy, dx), (1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 0)


def test_radial_log_power_is_the_evaluation_curve():
    x = _images()
    np.testing.assert_allclose(radial_log_power(jnp.asarray(x)), radial_spectrum(x), atol=2e-3)


def test_spectral_loss_ignores_contrast_and_position_but_sees_blur_and_noise():
    x = jnp.asarray(_images())
    assert float(spectral_loss(x, x)) == 0.0
    assert float(spectral_loss(x, 0.5 * x + 0.1)) < 1e-4  # relative power: contrast-free
    shifted = jnp.roll(x, (5, 7), (1, 2))  # same power spectrum, different phase
    assert float(spectral_loss(x, shifted)) < 1e-4
    assert float(jnp.mean(jnp.abs(shifted - x))) > 0.1  # while L1 sees a different image
    noisy = x + 0.3 * jax.random.normal(jax.random.key(0), x.shape)
    assert float(spectral_loss(x, jnp.asarray(_blur(np.asarray(x))))) > 0.1
    assert float(spectral_loss(x, noisy)) > 0.1


def test_a_gradient_step_on_the_spectral_term_restores_high_frequencies():
    x = jnp.asarray(_images(1))
    blurred = jnp.asarray(_blur(np.asarray(x)))
    hi = lambda im: float(jnp.mean(radial_log_power(im)[:, 8:]))  # noqa: E731
    grad = jax.grad(lambda im: spectral_loss(x, im))(blurred)
    stepped = blurred - 5.0 * grad
    assert float(spectral_loss(x, stepped)) < float(spectral_loss(x, blurred))
    assert hi(blurred) + 0.5 < hi(stepped) < hi(x)  # part of the way back


@pytest.mark.parametrize("weight", [0.0, 0.1])
def test_vae_loss_adds_the_weighted_spectral_term(weight):
    x = jnp.asarray(_images(2))
    x_hat = jnp.asarray(_blur(np.asarray(x)))
    mean, logvar = jnp.full((3, 4, 4, 2), 0.5), jnp.full((3, 4, 4, 2), -1.0)
    loss, metrics = vae_loss(x, x_hat, mean, logvar, beta=1e-3, spectral_weight=weight)
    base = metrics["l1"] + 1e-3 * metrics["kl"]
    if weight == 0.0:
        assert "spectral" not in metrics
        np.testing.assert_allclose(loss, base, rtol=1e-6)
    else:
        np.testing.assert_allclose(metrics["spectral"], spectral_loss(x, x_hat), rtol=1e-6)
        np.testing.assert_allclose(loss, base + weight * metrics["spectral"], rtol=1e-6)


def test_spectral_loss_leaves_blank_targets_out():
    x = jnp.asarray(_images(3))
    x_hat = jnp.asarray(_blur(np.asarray(x)))
    blank = jnp.full_like(x[:1], -1.0)  # an empty slice in model space
    with_blank = spectral_loss(jnp.concatenate([x, blank]), jnp.concatenate([x_hat, x_hat[:1]]))
    np.testing.assert_allclose(with_blank, spectral_loss(x, x_hat), rtol=1e-6)
    assert float(spectral_loss(blank, x_hat[:1])) == 0.0
    assert np.isfinite(np.asarray(jax.grad(lambda a: spectral_loss(blank, a))(x_hat[:1]))).all()
