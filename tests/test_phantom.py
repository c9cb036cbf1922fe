"""Tests for the built-in procedural brain-MRI phantom (jax_mri_ldm.data.phantom)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import OPTIMISED
from jax_mri_ldm.data import phantom, phantom_types, sources
from jax_mri_ldm.data.config import get_data_config


def _best_threshold_accuracy(feature: np.ndarray, labels: np.ndarray) -> float:
    """Best accuracy of `label = feature > t` (or `<`) over all thresholds t."""
    order = np.argsort(feature, kind="stable")
    fs, ys = feature[order], labels[order]
    n = ys.shape[0]
    # Cut after k sorted items, predicting 1 above the cut: correct = zeros below + ones above.
    zeros_below = np.concatenate([[0], np.cumsum(1 - ys)])  # (n + 1,)
    ones_above = ys.sum() - np.concatenate([[0], np.cumsum(ys)])  # (n + 1,)
    acc = (zeros_below + ones_above) / n
    # A threshold cannot split equal feature values: keep cuts at the ends or between distinct.
    valid = np.concatenate([[True], fs[1:] > fs[:-1], [True]])
    acc = acc[valid]
    return float(np.max(np.maximum(acc, 1.0 - acc)))


def test_best_threshold_helper():
    labels = np.array([0, 0, 1, 1, 1])
    assert _best_threshold_accuracy(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), labels) == 1.0
    assert _best_threshold_accuracy(np.array([4.0, 3.0, 2.0, 1.0, 0.0]), labels) == 1.0
    assert _best_threshold_accuracy(np.zeros(5), labels) == pytest.approx(0.6)


def test_shapes_dtypes_counts_and_range():
    images, labels = phantom.generate(num_normal=5, num_tumour=7, size=48, seed=3)
    assert images.shape == (12, 48, 48, 1)
    assert images.dtype == np.float32
    assert labels.shape == (12,)
    assert labels.dtype == np.int32
    assert int((labels == 0).sum()) == 5
    assert int((labels == 1).sum()) == 7
    # Min-max normalised per image: exactly 0 and exactly 1.
    np.testing.assert_array_equal(images.min(axis=(1, 2, 3)), np.zeros(12, np.float32))
    np.testing.assert_array_equal(images.max(axis=(1, 2, 3)), np.ones(12, np.float32))
    assert np.all(np.isfinite(images))


def test_classes_are_interleaved():
    _, labels = phantom.generate(num_normal=20, num_tumour=20, size=32, seed=0)
    # A sorted or alternating order would have 1 or 39 class changes; a shuffle has many, not all.
    changes = int(np.sum(labels[1:] != labels[:-1]))
    assert 5 < changes < 39


def test_same_seed_same_bytes_different_seed_differs():
    a_img, a_lab = phantom.generate(num_normal=3, num_tumour=3, size=48, seed=7)
    b_img, b_lab = phantom.generate(num_normal=3, num_tumour=3, size=48, seed=7)
    assert a_img.tobytes() == b_img.tobytes()
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = phantom.generate(num_normal=3, num_tumour=3, size=48, seed=8)
    assert a_img.tobytes() != c_img.tobytes()


def test_kth_image_of_a_class_does_not_depend_on_counts():
    small_img, small_lab = phantom.generate(num_normal=2, num_tumour=3, size=40, seed=1)
    big_img, big_lab = phantom.generate(num_normal=6, num_tumour=4, size=40, seed=1)
    for label, n in ((0, 2), (1, 3)):
        np.testing.assert_array_equal(small_img[small_lab == label], big_img[big_lab == label][:n])
    # And generate() is exactly generate_slice() with the documented per-image generator.
    first_tumour = big_img[big_lab == 1][0, :, :, 0]
    direct = phantom.generate_slice(np.random.default_rng([1, 1, 0]), 1, size=40)
    np.testing.assert_array_equal(first_tumour, direct)


@pytest.mark.parametrize("size", [32, 77, 128])
def test_generate_slice_sizes(size):
    for label in (0, 1):
        img = phantom.generate_slice(np.random.default_rng([0, label, 5]), label, size=size)
        assert img.shape == (size, size)
        assert img.dtype == np.float32
        assert img.min() == 0.0 and img.max() == 1.0
        # A head in the middle, dark background in the corners.
        c = size // 2
        mid = img[c - size // 8 : c + size // 8, c - size // 8 : c + size // 8].mean()
        corners = np.mean([img[:3, :3].mean(), img[-3:, -3:].mean()])
        assert mid > corners + 0.1


def test_bad_arguments_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="label"):
        phantom.generate_slice(rng, 2)
    with pytest.raises(ValueError, match="size"):
        phantom.generate_slice(rng, 0, size=16)
    with pytest.raises(ValueError, match="num_normal"):
        phantom.generate(num_normal=-1, num_tumour=3)
    with pytest.raises(ValueError, match="seed"):
        phantom.generate(num_normal=1, num_tumour=1, seed=-1)


# ----------------------------------------------------------------------------- pinned output

# Reference output of phantom GENERATOR_VERSION 1 (and of phantom_types, which reuses its
# helpers), as text (block means, not images); rewrite it only together with a version bump:
# `python tests/test_phantom.py`.
_REFERENCE = Path(__file__).parent / "data" / "phantom_v1_reference.json"
_BUMP = (
    "the phantom generator's output changed: if that is intended, bump GENERATOR_VERSION in "
    "jax_mri_ldm/data/phantom.py (or phantom_types.py) and rewrite {} with "
    "`python tests/test_phantom.py`; if not (a refactor), keep every rng draw and float op "
    "in its original order"
)


def _block_means(images: np.ndarray, block: int) -> np.ndarray:
    """(N, H, W, 1) -> (N, H / block, W / block) float64 means of block x block pixels."""
    n, h, w, _ = images.shape
    tiles = images[..., 0].astype(np.float64).reshape(n, h // block, block, w // block, block)
    return tiles.mean(axis=(2, 4))


def _reference_arrays() -> dict[str, np.ndarray]:
    """What the reference pins: 4x4-block means of 32x32 slices, 8x8 of 64x64 ones, labels."""
    bin32, bin32_lab = phantom.generate(num_normal=2, num_tumour=2, size=32, seed=0)
    bin64, bin64_lab = phantom.generate(num_normal=2, num_tumour=2, size=64, seed=1)
    typ32, typ32_lab = phantom_types.generate(num_normal=1, num_tumour=3, size=32, seed=0)
    return {
        "binary_32": _block_means(bin32, 4),  # (4, 8, 8)
        "binary_32_labels": bin32_lab,
        "binary_64": _block_means(bin64, 8),  # (4, 8, 8)
        "binary_64_labels": bin64_lab,
        "types_32": _block_means(typ32, 4),  # (4, 8, 8)
        "types_32_labels": typ32_lab,
    }


def test_generator_output_is_pinned():
    assert phantom.GENERATOR_VERSION == 1 and phantom_types.GENERATOR_VERSION == 1, (
        "a generator version was bumped: rewrite the reference with `python tests/test_phantom.py`"
        " and update this test and sources._PHANTOM_V1_SHA256's rule"
    )
    expected = {k: np.asarray(v) for k, v in json.loads(_REFERENCE.read_text()).items()}
    actual = _reference_arrays()
    assert sorted(actual) == sorted(expected)
    for key, want in expected.items():
        # atol: float32 cos may differ in the last bit between CPUs; a changed draw moves
        # the block means by far more.
        assert actual[key].shape == want.shape, f"{key}: " + _BUMP.format(_REFERENCE)
        assert np.allclose(actual[key], want, rtol=0.0, atol=1e-5), (
            f"{key}: max |diff| {np.max(np.abs(actual[key] - want)):.3g}; "
            + _BUMP.format(_REFERENCE)
        )


# Keys recorded when the fingerprints still hashed the generators' source bytes (phantom.py at
# commit 44c9d53, phantom_types.py at c423f41): existing runs and caches must stay valid.
_RECORDED_V1_KEYS = {
    False: {  # binary built-in set (phantom.py)
        32: "f23c31559cb2243c30c5c54df1b155102c5a199e48d987544d03fc9b90fc0174",
        64: "1a9323ed7730804879e0a69f9077d3b49c85c7ab0e4028f5a4a0bdca14dad717",
        128: "3d1e19454bb5e74462a9cf8c74d736d6928feeb2b2259334c9dbef14ad1ee653",
        256: "6827e8751bb909e34660fdd2b7e2877b73bf65a0a41ea01705f5cd4e162902ef",
    },
    True: {  # four-class built-in set (phantom_types.py)
        32: "8aac447e23905aca2472c8870b554c721f7f240c936660c75c00f40ec645ffae",
        64: "e7bdac54d51cb25a467b4a01c32f03c432eb4154475d5ae84d0434cad62b8e83",
        128: "64220ef6a4db831bed240705fd23b3fdb7767bc8e11aa5f5f284c500c34c24c7",
        256: "4fa608b98e0fc0d31e54b9d8997d1a000af1143ecf2d234349257d0c462de86b",
    },
}


@pytest.mark.parametrize("types", [False, True])
def test_builtin_fingerprint_of_generator_v1_is_unchanged(types):
    cfg = get_data_config()
    cfg.builtin.types = types
    for size, want in _RECORDED_V1_KEYS[types].items():
        assert sources._builtin_fingerprint(cfg, size) == want, size
    assert sources._types_generator_sha256(2) is None


def test_builtin_fingerprint_follows_the_generator_version(monkeypatch):
    cfg = get_data_config()
    v1 = sources._builtin_fingerprint(cfg, 32)
    monkeypatch.setattr(phantom, "GENERATOR_VERSION", 2)
    v2 = sources._builtin_fingerprint(cfg, 32)
    assert v2 != v1
    assert sources._phantom_generator_sha256(2) is None


def test_not_separable_by_global_intensity_statistics():
    # The paper's class ratio (85/115 -> majority baseline 0.575) at a reduced size; geometry
    # scales with size, so the intensity statistics match the 256x256 set.
    images, labels = phantom.generate(num_normal=85, num_tumour=115, size=64, seed=11)
    flat = images.reshape(images.shape[0], -1)
    for name, feature in (("mean", flat.mean(1)), ("std", flat.std(1))):
        acc = _best_threshold_accuracy(feature, labels)
        assert acc < 0.8, f"a threshold on the per-image {name} separates the classes: {acc}"


class _TinyCNN(nn.Module):
    """Four strided convolutions, GroupNorm, global max + mean pooling, one logit per output."""

    outputs: int = 1  # 1: binary (one logit, (B,)); K > 1: K-way logits (B, K)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # (B, 64, 64, 1) -> (B,) or (B, K)
        x = nn.relu(nn.GroupNorm(num_groups=4)(nn.Conv(16, (2, 2), 2, padding="VALID")(x)))
        x = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(32, (3, 3), 2)(x)))  # (B, 16, 16, 32)
        x = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(64, (3, 3), 2)(x)))  # (B, 8, 8, 64)
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = jnp.concatenate([x.max(axis=(1, 2)), x.mean(axis=(1, 2))], axis=-1)  # (B, 128)
        logits = nn.Dense(self.outputs)(x)
        return logits[:, 0] if self.outputs == 1 else logits


def _train_and_evaluate(
    images: np.ndarray,
    labels: np.ndarray,
    n_train: int,
    steps: int = 1000,
    batch: int = 32,
    num_classes: int = 2,
    lr: float = 3e-3,
) -> float:
    """Trains _TinyCNN on the first n_train images; returns accuracy on the rest."""
    binary = num_classes == 2
    x_tr, y_tr = images[:n_train], labels[:n_train].astype(np.float32 if binary else np.int32)
    x_te, y_te = images[n_train:], labels[n_train:]
    model = _TinyCNN(outputs=1 if binary else num_classes)
    params = model.init(jax.random.key(0), x_tr[:1])
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt_state = tx.init(params)

    @functools.partial(jax.jit, compiler_options=OPTIMISED)  # 1,000+ steps: run time counts
    def train_step(params, opt_state, xb, yb):
        def loss_fn(p):
            if binary:
                return optax.sigmoid_binary_cross_entropy(model.apply(p, xb), yb).mean()
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, n_train, batch)
        xb = x_tr[idx]  # (B, H, W, 1)
        # Augment (flip, small shift, gamma) so a tiny net generalises from few images.
        flip = rng.random(batch) < 0.5
        xb = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
        shift = tuple(rng.integers(-4, 5, size=2).tolist())
        xb = np.roll(xb, shift, axis=(1, 2))
        xb = xb ** rng.uniform(0.7, 1.4, size=(batch, 1, 1, 1)).astype(np.float32)
        params, opt_state, _ = train_step(params, opt_state, xb, y_tr[idx])

    logits = np.asarray(jax.jit(model.apply)(params, x_te))  # (N - n_train,) or (.., K)
    if binary:
        return float(np.mean((logits > 0) == (y_te == 1)))
    return float(np.mean(logits.argmax(-1) == y_te))


@pytest.mark.slow
def test_small_cnn_learns_the_classes():
    # 64x64 keeps this fast on CPU; the smallest lesions still span a few pixels. A few hundred
    # images are not enough for a net this small trained for seconds, so it gets 900.
    images, labels = phantom.generate(num_normal=600, num_tumour=600, size=64, seed=21)
    accuracy = _train_and_evaluate(images, labels, n_train=900)
    assert accuracy > 0.9, f"held-out accuracy {accuracy:.3f}"


# ----------------------------------------------------------------------------- tumour types


def test_types_shapes_counts_determinism():
    images, labels = phantom_types.generate(num_normal=3, num_tumour=7, size=40, seed=2)
    assert images.shape == (10, 40, 40, 1) and images.dtype == np.float32
    assert np.bincount(labels, minlength=4).tolist() == [3, 3, 2, 2]
    assert phantom_types.class_counts(170, 230) == [170, 77, 77, 76]
    np.testing.assert_array_equal(images.min(axis=(1, 2, 3)), np.zeros(10, np.float32))
    np.testing.assert_array_equal(images.max(axis=(1, 2, 3)), np.ones(10, np.float32))
    again, again_labels = phantom_types.generate(num_normal=3, num_tumour=7, size=40, seed=2)
    assert images.tobytes() == again.tobytes()
    np.testing.assert_array_equal(labels, again_labels)
    # The k-th image of a class does not depend on the counts.
    more, more_labels = phantom_types.generate(num_normal=5, num_tumour=12, size=40, seed=2)
    for c in range(4):
        n = int(np.sum(labels == c))
        np.testing.assert_array_equal(images[labels == c], more[more_labels == c][:n])
    with pytest.raises(ValueError, match="label"):
        phantom_types.generate_slice(np.random.default_rng(0), 4)


@pytest.mark.parametrize("label", [1, 2, 3])
def test_types_lesion_location_follows_the_type(label, monkeypatch):
    # Record each drawn lesion with the depth of its centre below the scalp surface.
    centres = []
    real_draw = phantom_types._draw_lesion

    def spy(rng, lab, depth, inner):
        out = real_draw(rng, lab, depth, inner)
        x, y = (np.float32(v) for v in out[0]["c"])
        centres.append((out[0], float(depth(x, y)), inner))
        return out

    monkeypatch.setattr(phantom_types, "_draw_lesion", spy)
    for k in range(40):
        phantom_types.generate_slice(np.random.default_rng([1, 10 + label, k]), label, 32)
    for les, depth_c, inner in centres:
        x, y = les["c"]
        if label == 1:  # glioma: intra-axial, off the midline, below the brain surface
            assert abs(x) >= 0.12 and depth_c - inner > les["r"]
        elif label == 2:  # meningioma: on the dura (convexity) or against the falx
            if les["falx"]:
                assert abs(abs(x) - 0.75 * les["r"]) < 1e-6 and abs(y) >= 0.35
            else:
                assert abs(depth_c - inner - 0.6 * les["r"]) < 0.06
        else:  # pituitary: midline, in front of the third ventricle
            assert abs(x) < 0.06 and -0.2 <= y <= -0.04


def test_types_not_separable_by_global_intensity_statistics():
    images, labels = phantom_types.generate(num_normal=90, num_tumour=270, size=64, seed=11)
    flat = images.reshape(images.shape[0], -1)
    features = {
        "mean": flat.mean(1),
        "std": flat.std(1),
        "median": np.median(flat, 1),
        "p99": np.percentile(flat, 99, 1),
    }
    for name, feature in features.items():
        for a in range(4):
            for b in range(a + 1, 4):
                m = (labels == a) | (labels == b)
                acc = _best_threshold_accuracy(feature[m], (labels[m] == b).astype(np.int64))
                assert acc < 0.75, f"per-image {name} separates classes {a} and {b}: {acc}"


@pytest.mark.slow
def test_small_cnn_learns_the_tumour_types():
    images, labels = phantom_types.generate(num_normal=300, num_tumour=900, size=64, seed=21)
    # 3e-3 (the binary test's rate) can collapse the 4-way net to one class; 1e-3 does not.
    accuracy = _train_and_evaluate(images, labels, n_train=900, steps=1500, num_classes=4, lr=1e-3)
    assert accuracy > 0.6, f"held-out 4-way accuracy {accuracy:.3f} (chance 0.25)"


if __name__ == "__main__":
    # Rewrites the pinned reference: only after bumping a generator version (see _BUMP).
    _REFERENCE.parent.mkdir(exist_ok=True)
    arrays = {k: v.tolist() for k, v in _reference_arrays().items()}
    _REFERENCE.write_text(json.dumps(arrays, indent=1) + "\n")
    print(f"wrote {_REFERENCE} ({_REFERENCE.stat().st_size} bytes)")
