"""Control sets: real held-out images and known-bad copies of them, scored like samples.

A metric earns trust in a run only if it ranks the real held-out images best and every
corruption worse (`trust.check_controls`). The corruptions are chosen to fail in the ways a
generator fails: noise textures, over-smoothing, scrambled anatomy, a decoder grid at the latent
period, decodes of latents the VAE never saw, and copies of training images (memorisation).

Every corruption is a pure function of its input images and a seed, so the controls of a
report are reproducible; images stay in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.ndimage

from jax_mri_ldm.evaluation.spectrum import LATENT_PERIOD

NOISE_SIGMA = 0.1
"""Std of the additive Gaussian noise control (intensities in [0, 1])."""
BLUR_SIGMA = 2.0
"""Std in pixels of the Gaussian blur control."""
PATCH_SIZE = 32
"""Side of the shuffled patches (smaller images use a quarter of their side)."""
GRID_AMPLITUDE = 0.03
"""Intensity added on the period-8 grid lines."""

CORRUPTIONS: tuple[str, ...] = ("noise", "blur", "patch_shuffle", "grid", "vae_prior")
"""Controls derived from held-out images (or the VAE), all expected to score worse than real."""
MEMORISED = "mirrored_train"
"""The control that memorisation must flag: mirrored copies of training images."""
DECODED_TRAIN = "decoded_train"
"""Copies through the VAE: reconstructions of training images, what a generator that memorised
its training latents would decode (as smooth as a sample, so it tests a memorisation rule
where smoothness and copying differ)."""
COPIES: tuple[str, ...] = (MEMORISED, DECODED_TRAIN)
"""Every copy control (the memorisation rules must flag MEMORISED; `trust.RULES`)."""


def gaussian_noise(images: np.ndarray, sigma: float = NOISE_SIGMA, seed: int = 0) -> np.ndarray:
    """images + N(0, sigma^2), clipped to [0, 1]. (N, H, W, 1) -> same."""
    rng = np.random.default_rng(seed)
    x = np.asarray(images, np.float32)
    return np.clip(x + sigma * rng.standard_normal(x.shape).astype(np.float32), 0.0, 1.0)


def gaussian_blur(images: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of std `sigma` pixels over H and W (reflect borders)."""
    x = np.asarray(images, np.float32)
    return scipy.ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")


def patch_shuffle(images: np.ndarray, patch: int = PATCH_SIZE, seed: int = 0) -> np.ndarray:
    """Cuts every image into patch x patch tiles and permutes them (one permutation per image).

    Images smaller than 4 patches per side use patch = side // 4, so there is always something
    to shuffle; trailing rows/columns that do not fill a tile stay in place.
    """
    x = np.array(images, np.float32)
    n, h, w, c = x.shape
    p = min(patch, max(1, min(h, w) // 4))
    gh, gw = h // p, w // p
    rng = np.random.default_rng(seed)
    for i in range(n):
        tiles = x[i, : gh * p, : gw * p].reshape(gh, p, gw, p, c).transpose(0, 2, 1, 3, 4)
        tiles = tiles.reshape(gh * gw, p, p, c)[rng.permutation(gh * gw)]
        x[i, : gh * p, : gw * p] = (
            tiles.reshape(gh, gw, p, p, c).transpose(0, 2, 1, 3, 4).reshape(gh * p, gw * p, c)
        )
    return x


def add_grid(
    images: np.ndarray, period: int = LATENT_PERIOD, amplitude: float = GRID_AMPLITUDE
) -> np.ndarray:
    """Adds `amplitude` on every period-th row and column (a faint grid), clipped to [0, 1]."""
    x = np.asarray(images, np.float32)
    h, w = x.shape[1:3]
    lines = (np.arange(h) % period == 0)[:, None] | (np.arange(w) % period == 0)[None, :]
    return np.clip(x + amplitude * lines[None, :, :, None].astype(np.float32), 0.0, 1.0)


def mirrored(images: np.ndarray) -> np.ndarray:
    """Left-right mirror images of (N, H, W, 1) images."""
    return np.asarray(images, np.float32)[:, :, ::-1].copy()


def vae_prior_decodes(
    decode: Callable[[np.ndarray], np.ndarray],
    latent_shape: tuple[int, ...],
    n: int,
    seed: int = 0,
) -> np.ndarray:
    """Decodes of pure N(0, I) latents: what the decoder draws from latents it never saw.

    Args:
      decode: (n, *latent_shape) latents -> (n, H, W, 1) images in [0, 1].
      latent_shape: (h, w, c) of one latent.
      n: images to draw.
      seed: noise seed.

    Returns:
      (n, H, W, 1) float32 clipped to [0, 1].
    """
    z = np.random.default_rng(seed).standard_normal((n, *latent_shape)).astype(np.float32)
    return np.clip(np.asarray(decode(z), np.float32), 0.0, 1.0)


def make_controls(
    held_out: np.ndarray,
    held_out_labels: np.ndarray,
    train: np.ndarray,
    train_labels: np.ndarray,
    seed: int = 0,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
    latent_shape: tuple[int, ...] | None = None,
    reconstruct: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every control set as name -> (images (N, H, W, 1), labels (N,)).

    Args:
      held_out: real images never seen by any model (the run's validation split).
      held_out_labels: their labels.
      train: the generator's training images (only their mirrors are used).
      train_labels: their labels.
      seed: seed of the noise, the shuffles and the prior latents.
      decode: the VAE decoder on a batch of latents; None skips the 'vae_prior' control.
      latent_shape: one latent's (h, w, c); needed with `decode`.
      reconstruct: images -> VAE reconstructions; None skips the 'decoded_train' control.

    Returns:
      Ordered dict: 'real' (the held-out images themselves), the corruptions of them, then
      'vae_prior' (when decode is given, as many images and labels as held out) and
      'mirrored_train' (min(len(held_out), len(train)) random training images, mirrored),
      then 'decoded_train' (the same training images reconstructed, when reconstruct is given).
    """
    x = np.asarray(held_out, np.float32)
    y = np.asarray(held_out_labels, np.int32)
    out = {
        "real": (x, y),
        "noise": (gaussian_noise(x, seed=seed), y),
        "blur": (gaussian_blur(x), y),
        "patch_shuffle": (patch_shuffle(x, seed=seed), y),
        "grid": (add_grid(x), y),
    }
    if decode is not None:
        if latent_shape is None:
            raise ValueError("make_controls: pass latent_shape together with decode.")
        out["vae_prior"] = (vae_prior_decodes(decode, latent_shape, len(x), seed), y)
    pick = np.sort(np.random.default_rng(seed).permutation(len(train))[: min(len(x), len(train))])
    picked_labels = np.asarray(train_labels, np.int32)[pick]
    out[MEMORISED] = (mirrored(train[pick]), picked_labels)
    if reconstruct is not None:
        rec = np.clip(np.asarray(reconstruct(train[pick]), np.float32), 0.0, 1.0)
        out[DECODED_TRAIN] = (rec, picked_labels)
    return out
