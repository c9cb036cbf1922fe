"""Online augmentation on device: flip, small rotation, contrast jitter (pure JAX, jitted).

Per sample, with its own key from `jax.random.split(rng, B)` (split again into flip /
rotation / contrast keys, always all three, so e.g. the flip drawn for a key does not depend on
whether rotation is on):

1. Horizontal flip with probability 0.5.
2. Rotation by an angle uniform in [-max_degrees, max_degrees] about the image centre
   ((H-1)/2, (W-1)/2), bilinear (`jax.scipy.ndimage.map_coordinates`, order=1), pixels
   coming from outside the image filled with 0 (the MRI background). Bilinear weights are a
   convex combination, so [0, 1] inputs stay in [0, 1].
3. Contrast jitter: x' = mean + (x - mean) * f, f ~ U[1 - contrast, 1 + contrast], mean over
   the sample, then clipped to [0, 1].

The options are static (Python numbers): a step turned off (flip=False, max_degrees=0,
contrast=0) is left out of the compiled graph, so with only flipping on the output is an exact
mirror of the input.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jax_mri_ldm.errors import UserError


def _rotate(img: jax.Array, theta: jax.Array) -> jax.Array:
    """Bilinear rotation of one (H, W, C) image by `theta` radians about its centre."""
    h, w, c = img.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )  # (H, W)
    dy, dx = yy - cy, xx - cx
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # Inverse map: output pixel -> source coordinate.
    src_y = cy + cos * dy + sin * dx
    src_x = cx - sin * dy + cos * dx
    chans = [
        jax.scipy.ndimage.map_coordinates(
            img[..., k], [src_y, src_x], order=1, mode="constant", cval=0.0
        )
        for k in range(c)
    ]
    return jnp.stack(chans, axis=-1)  # (H, W, C)


def _augment_one(
    key: jax.Array, img: jax.Array, flip: bool, max_degrees: float, contrast: float
) -> jax.Array:
    k_flip, k_rot, k_con = jax.random.split(key, 3)
    x = img  # (H, W, C)
    if flip:
        x = jnp.where(jax.random.bernoulli(k_flip, 0.5), x[:, ::-1, :], x)
    if max_degrees > 0:
        deg = jax.random.uniform(k_rot, (), minval=-max_degrees, maxval=max_degrees)
        x = _rotate(x, deg * (math.pi / 180.0)).astype(img.dtype)
    if contrast > 0:
        f = jax.random.uniform(k_con, (), minval=1.0 - contrast, maxval=1.0 + contrast)
        m = jnp.mean(x)
        x = jnp.clip(m + (x - m) * f, 0.0, 1.0).astype(img.dtype)
    return x


@functools.partial(jax.jit, static_argnames=("flip", "max_degrees", "contrast"))
def augment(
    rng: jax.Array,
    images: jax.Array,
    *,
    flip: bool = True,
    max_degrees: float = 10.0,
    contrast: float = 0.1,
) -> jax.Array:
    """Randomly flips, rotates and contrast-jitters a batch, each sample with its own key.

    Args:
      rng: PRNG key for the whole batch.
      images: (B, H, W, C) in [0, 1].
      flip: random horizontal flip with p = 0.5.
      max_degrees: rotation angle drawn uniformly in [-max_degrees, max_degrees]; 0 = off.
      contrast: contrast factor drawn uniformly in [1 - contrast, 1 + contrast]; 0 = off.

    Returns:
      (B, H, W, C) augmented images in [0, 1], same dtype.
    """
    if max_degrees < 0:
        raise UserError(f"config.data.augment.max_degrees={max_degrees} must be >= 0")
    if not 0 <= contrast < 1:
        raise UserError(f"config.data.augment.contrast={contrast} must be in [0, 1)")
    keys = jax.random.split(rng, images.shape[0])  # (B,) per-sample keys
    fn = functools.partial(
        _augment_one, flip=bool(flip), max_degrees=float(max_degrees), contrast=float(contrast)
    )
    return jax.vmap(fn)(keys, images)


def augment_from_config(rng: jax.Array, images: jax.Array, aug_cfg: Any) -> jax.Array:
    """`augment` with the settings of `config.data.augment`; identity when not enabled.

    Args:
      rng: PRNG key.
      images: (B, H, W, C) in [0, 1].
      aug_cfg: config.data.augment (enabled, flip, max_degrees, contrast).

    Returns:
      (B, H, W, C) images.
    """
    if not aug_cfg.enabled:
        return images
    return augment(
        rng,
        images,
        flip=bool(aug_cfg.flip),
        max_degrees=float(aug_cfg.max_degrees),
        contrast=float(aug_cfg.contrast),
    )
