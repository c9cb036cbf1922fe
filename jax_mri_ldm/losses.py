"""Losses of the VAE stage (the diffusion loss lives in `diffusion.py`) and the paper's curves.

Averaging, stated once: the reconstruction term is the per-pixel mean absolute error in model
space [-1, 1] (mean over batch, height, width, channel — what PyTorch's `F.l1_loss` computes;
the paper's curve from 0.21 down to 0.027 is on this per-pixel scale). The KL term is the
closed-form KL(N(mu, sigma^2) || N(0, I)); with `kl_reduction="mean"` (default) it is averaged
over latent elements and batch, with `"sum"` summed over the 8x32x32 latent elements of an
example and averaged over the batch (the textbook ELBO scale, which with beta=1e-3 weighs the
prior about 8192 times more).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


def vae_loss(
    x: jax.Array,
    x_hat: jax.Array,
    mean: jax.Array,
    logvar: jax.Array,
    *,
    beta: float = 1e-3,
    kl_reduction: str = "mean",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L1 reconstruction + beta * KL (paper eq. 3-5).

    Args:
      x: (B, H, W, 1) targets in model space [-1, 1].
      x_hat: (B, H, W, 1) reconstructions (tanh output).
      mean, logvar: (B, h, w, c) posterior parameters.
      beta: KL weight (paper: 1e-3).
      kl_reduction: "mean" (per latent element) or "sum" (per example); see module docstring.

    Returns:
      (loss, {"l1": ..., "kl": ...}).
    """
    l1 = jnp.mean(jnp.abs(x.astype(jnp.float32) - x_hat.astype(jnp.float32)))
    kl = gaussian_kl(mean, logvar)
    if kl_reduction == "mean":
        kl = jnp.mean(kl)
    elif kl_reduction == "sum":
        kl = jnp.mean(jnp.sum(kl, axis=tuple(range(1, kl.ndim))))
    else:
        raise ValueError(f"config.loss.kl_reduction={kl_reduction!r}; use 'mean' or 'sum'.")
    return l1 + beta * kl, {"l1": l1, "kl": kl}


def to_model_space(images01: jax.Array) -> jax.Array:
    """[0, 1] pixel intensities -> [-1, 1] model space (the decoder ends in tanh)."""
    return images01 * 2.0 - 1.0


def from_model_space(x: jax.Array) -> jax.Array:
    """[-1, 1] model space -> [0, 1], clipped."""
    return jnp.clip((x + 1.0) * 0.5, 0.0, 1.0)
