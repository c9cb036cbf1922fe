"""On-device augmentation: ranges, flip exactness, rotation fill, contrast, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mri_ldm.data.augment import augment, augment_from_config
from jax_mri_ldm.data.config import get_data_config


def _images(b=8, s=32, seed=0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).random((b, s, s, 1), dtype=np.float32))


def test_output_range_shape_dtype():
    x = _images()
    y = augment(jax.random.PRNGKey(0), x, max_degrees=30.0, contrast=0.5)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not np.allclose(np.asarray(y), np.asarray(x))


def test_flip_only_is_exact_mirror_or_identity():
    x = _images(b=32)
    y = np.asarray(augment(jax.random.PRNGKey(1), x, flip=True, max_degrees=0.0, contrast=0.0))
    xn = np.asarray(x)
    same = [np.array_equal(y[i], xn[i]) for i in range(32)]
    mirrored = [np.array_equal(y[i], xn[i, :, ::-1]) for i in range(32)]
    assert all(a or b for a, b in zip(same, mirrored, strict=True))
    assert 4 <= sum(mirrored) <= 28  # p = 0.5 over 32 samples


def test_all_off_is_identity():
    x = _images()
    y = augment(jax.random.PRNGKey(2), x, flip=False, max_degrees=0.0, contrast=0.0)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_rotation_is_about_the_centre_and_fills_zero():
    x = jnp.ones((4, 33, 33, 1), jnp.float32)
    y = np.asarray(augment(jax.random.PRNGKey(3), x, flip=False, max_degrees=10.0, contrast=0))
    np.testing.assert_allclose(y[:, 16, 16, 0], 1.0, atol=1e-6)  # the centre stays put
    assert np.all(y[:, 12:21, 12:21] > 0.999)  # the middle stays inside the image
    assert np.all(y.min(axis=(1, 2, 3)) < 0.5)  # a rotated corner pulls in background (0)


def test_contrast_scales_about_the_mean():
    x = 0.25 + 0.5 * _images()  # in [0.25, 0.75]: no clipping at c = 0.2
    y = np.asarray(augment(jax.random.PRNGKey(4), x, flip=False, max_degrees=0.0, contrast=0.2))
    xn = np.asarray(x)
    for i in range(xn.shape[0]):
        m = xn[i].mean()
        f = (y[i] - m) / (xn[i] - m)
        f = f[np.abs(xn[i] - m) > 0.05]
        assert np.ptp(f) < 1e-3  # one factor per sample
        assert 0.8 - 1e-4 <= f.mean() <= 1.2 + 1e-4


def test_determinism_and_per_sample_keys():
    x = jnp.repeat(_images(b=1), 6, axis=0)  # six copies of one image
    k = jax.random.PRNGKey(5)
    a = np.asarray(augment(k, x))
    np.testing.assert_array_equal(a, np.asarray(augment(k, x)))
    b = np.asarray(augment(jax.random.PRNGKey(6), x))
    assert not np.allclose(a, b)
    # Per-sample keys: identical inputs get different augmentations within one batch.
    assert not np.allclose(a[0], a[1])


def test_augment_from_config():
    cfg = get_data_config().augment
    x = _images()
    cfg.enabled = False
    assert augment_from_config(jax.random.PRNGKey(0), x, cfg) is x
    cfg.enabled = True
    y = augment_from_config(jax.random.PRNGKey(0), x, cfg)
    ref = augment(jax.random.PRNGKey(0), x, flip=True, max_degrees=10.0, contrast=0.1)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(ref))
    cfg.contrast = 1.5
    with pytest.raises(ValueError, match="config.data.augment.contrast"):
        augment_from_config(jax.random.PRNGKey(0), x, cfg)
