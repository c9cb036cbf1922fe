"""Losses of the VAE stage (the diffusion loss lives in `diffusion.py`) and the paper's curves.

Averaging, stated once: the reconstruction term is the per-pixel mean absolute error in model
space [-1, 1] (mean over batch, height, width, channel — what PyTorch's `F.l1_loss` computes;
the paper's curve from 0.21 down to 0.027 is on this per-pixel scale). The KL term is the
closed-form KL(N(mu, sigma^2) || N(0, I)); with `kl_reduction="mean"` (default) it is averaged
over latent elements and batch, with `"sum"` summed over the 8x32x32 latent elements of an
example and averaged over the batch (the textbook ELBO scale, which with beta=1e-3 weighs the
prior about 8192 times more).

The optional spectral term (`spectral_weight` > 0) is the mean absolute difference between the
radially averaged log10 relative power spectra of each reconstruction and its target (the curve
`evaluation.spectrum.radial_spectrum` draws; its evaluation twin there is numpy). L1 and KL alone
give the MMSE-like decoder of a blurry image: fine texture inside the brain that the latent does
not pin down is averaged away, so reconstructions carry far less power at the highest spatial
frequencies than real slices. The spectral term only asks that the power per frequency band
match, not the phase, so the decoder may draw texture it cannot place exactly (after Durall et
al., CVPR 2020, who use a 1D spectrum loss against GAN up-convolution artefacts).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Element-wise KL(N(mean, exp(logvar)) || N(0, 1)).

    Args:
      mean: (B, h, w, c) posterior means.
      logvar: (B, h, w, c) posterior log-variances.

    Returns:
      (B, h, w, c) KL of each latent element, 0.5 * (mean^2 + var - 1 - logvar).
    """
    mean = mean.astype(jnp.float32)
    logvar = logvar.astype(jnp.float32)
    return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


@functools.lru_cache(maxsize=8)
def _radial_average_matrix(h: int, w: int) -> np.ndarray:
    """(H*W, R) matrix averaging FFT bins into integer radii 1..min(H, W) // 2 (DC dropped)."""
    fy = np.fft.fftfreq(h) * min(h, w)
    fx = np.fft.fftfreq(w) * min(h, w)
    r = np.rint(np.hypot(fy[:, None], fx[None, :])).astype(np.int64).ravel()
    rmax = min(h, w) // 2
    m = np.zeros((h * w, rmax), np.float32)
    keep = np.nonzero((r >= 1) & (r <= rmax))[0]
    m[keep, r[keep] - 1] = 1.0
    return m / m.sum(axis=0, keepdims=True)


def radial_log_power(x: jax.Array) -> jax.Array:
    """(B, H, W, 1) images -> (B, R) log10 relative power per integer radius 1..min(H, W)//2.

    Each image's mean is removed and its power divided by its total, so the curve describes how
    the image's variance is spread over spatial frequencies, not its contrast.
    """
    x = x[..., 0].astype(jnp.float32)
    x = x - jnp.mean(x, axis=(1, 2), keepdims=True)  # (B, H, W)
    p = jnp.square(jnp.abs(jnp.fft.fft2(x)))
    p = p / jnp.maximum(jnp.sum(p, axis=(1, 2), keepdims=True), 1e-12)
    m = jnp.asarray(_radial_average_matrix(x.shape[1], x.shape[2]))
    return jnp.log10(p.reshape(p.shape[0], -1) @ m + 1e-12)  # (B, R)


def spectral_loss(x: jax.Array, x_hat: jax.Array, min_var: float = 1e-6) -> jax.Array:
    """Mean |log10 radial power of x_hat - that of x| over radii and batch (x is the target).

    A blank target (pixel variance below `min_var`) has no spectrum to match: it is left out
    of the mean (0 when every target is blank), so an empty slice never asks for texture.
    """
    target = jax.lax.stop_gradient(radial_log_power(x))
    per_image = jnp.mean(jnp.abs(radial_log_power(x_hat) - target), axis=1)  # (B,)
    keep = (jnp.var(x.astype(jnp.float32), axis=(1, 2, 3)) > min_var).astype(jnp.float32)
    return jnp.sum(per_image * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def vae_loss(
    x: jax.Array,
    x_hat: jax.Array,
    mean: jax.Array,
    logvar: jax.Array,
    *,
    beta: float = 1e-3,
    kl_reduction: str = "mean",
    spectral_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L1 reconstruction + beta * KL (paper eq. 3-5) [+ spectral_weight * spectral term].

    Args:
      x: (B, H, W, 1) targets in model space [-1, 1].
      x_hat: (B, H, W, 1) reconstructions (tanh output).
      mean, logvar: (B, h, w, c) posterior parameters.
      beta: KL weight (paper: 1e-3).
      kl_reduction: "mean" (per latent element) or "sum" (per example); see module docstring.
      spectral_weight: weight of `spectral_loss` (0: the paper's loss, the term is not computed).

    Returns:
      (loss, {"l1": ..., "kl": ...} plus "spectral" when spectral_weight > 0).
    """
    l1 = jnp.mean(jnp.abs(x.astype(jnp.float32) - x_hat.astype(jnp.float32)))
    kl = gaussian_kl(mean, logvar)
    if kl_reduction == "mean":
        kl = jnp.mean(kl)
    elif kl_reduction == "sum":
        kl = jnp.mean(jnp.sum(kl, axis=tuple(range(1, kl.ndim))))
    else:
        raise ValueError(f"config.loss.kl_reduction={kl_reduction!r}; use 'mean' or 'sum'.")
    if spectral_weight <= 0:
        return l1 + beta * kl, {"l1": l1, "kl": kl}
    spec = spectral_loss(x, x_hat)
    return l1 + beta * kl + spectral_weight * spec, {"l1": l1, "kl": kl, "spectral": spec}


def to_model_space(images01: jax.Array) -> jax.Array:
    """[0, 1] pixel intensities -> [-1, 1] model space (the decoder ends in tanh)."""
    return images01 * 2.0 - 1.0


def from_model_space(x: jax.Array) -> jax.Array:
    """[-1, 1] model space -> [0, 1], clipped."""
    return jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)
