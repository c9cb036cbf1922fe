"""Tests for the networks: exact fast layer formulations, VAE and UNet shapes, counts, dtypes."""

from __future__ import annotations

import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jax_mri_ldm.models import VAE, Decoder, Encoder, UNet, layers, timestep_embedding

RNG = np.random.default_rng(0)


def _randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _random_params(model: nn.Module, *args, seed: int = 0):
    """Random parameters with the model's tree structure, without compiling ``init``.

    Compiling ``init`` costs as much as compiling ``apply``; tests that only need *some*
    parameters draw them directly (norm scales near 1, everything else small).
    """
    shapes = jax.eval_shape(model.init, {"params": jax.random.PRNGKey(0)}, *args)
    rng = np.random.default_rng(seed)

    def fill(path, s):
        base = 1.0 if path[-1].key == "scale" else 0.0
        return jnp.asarray(base + 0.2 * rng.standard_normal(s.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _assert_close_rel(a, b, rms_tol: float = 0.02, max_tol: float = 0.1) -> None:
    """bf16 vs fp32: relative RMS error and relative max error (bf16 keeps 8 mantissa bits)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rms = np.sqrt(np.mean(a**2)) + 1e-6
    assert np.sqrt(np.mean((a - b) ** 2)) < rms_tol * rms
    assert np.max(np.abs(a - b)) < max_tol * np.max(np.abs(a))


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


# ------------------------------------------------------------------------------------------
# Direct (loop) references with PyTorch's definitions, independent of lax.
# ------------------------------------------------------------------------------------------


def _np_conv_transpose_k4s2p1(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """ConvTranspose2d(k=4, s=2, p=1): input pixel i adds x[i] K[a] to output 2i - 1 + a."""
    b, h, w, _ = x.shape
    out = np.zeros((b, 2 * h + 2, 2 * w + 2, k.shape[-1]), np.float64)  # 1 extra each side
    for i in range(h):
        for j in range(w):
            # out[2i - 1 + a, 2j - 1 + c] with a, c in 0..3, shifted by the extra border of 1.
            out[:, 2 * i : 2 * i + 4, 2 * j : 2 * j + 4] += np.einsum(
                "bc,klco->bklo", x[:, i, j].astype(np.float64), k
            )
    return out[:, 1:-1, 1:-1]


def _np_conv_k4s2p1(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Conv2d(k=4, s=2, p=1): out[m] = sum_a x[2m - 1 + a] K[a] (cross-correlation)."""
    b, h, w, _ = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((b, h // 2, w // 2, k.shape[-1]))
    for m in range(h // 2):
        for n in range(w // 2):
            out[:, m, n] = np.einsum(
                "bklc,klco->bo", xp[:, 2 * m : 2 * m + 4, 2 * n : 2 * n + 4], k
            )
    return out


# ------------------------------------------------------------------------------------------
# Layers.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["subpixel2", "subpixel3", "dilated"])
def test_conv_transpose_equals_pytorch_definition(impl):
    x, k = _randn(2, 3, 5, 3), _randn(4, 4, 3, 4)
    out = layers.conv_transpose4x4s2(jnp.asarray(x), jnp.asarray(k), impl)
    assert out.shape == (2, 6, 10, 4)
    np.testing.assert_allclose(out, _np_conv_transpose_k4s2p1(x, k), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["s2d", "strided"])
def test_strided_conv_equals_pytorch_definition(impl):
    x, k = _randn(2, 6, 8, 3), _randn(4, 4, 3, 5)
    out = layers.conv4x4s2(jnp.asarray(x), jnp.asarray(k), impl)
    assert out.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(out, _np_conv_k4s2p1(x, k), atol=1e-5, rtol=1e-5)


def _grads(fn, x, k, seed=1):
    # The same random cotangent for the fast and the reference form.
    shape = jax.eval_shape(fn, x, k).shape
    w = jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)
    return jax.jit(jax.grad(lambda x, k: jnp.sum(fn(x, k) * w), argnums=(0, 1)))(x, k)


@pytest.mark.parametrize("conv_impl", ["im2col", "xla"])
def test_fast_conv_transpose_gradients_match_reference(conv_impl):
    x, k = jnp.asarray(_randn(2, 4, 3, 6)), jnp.asarray(_randn(4, 4, 6, 5))
    fast = _grads(lambda x, k: layers.conv_transpose4x4s2(x, k, "subpixel2", conv_impl), x, k)
    ref = _grads(layers.reference_conv_transpose4x4s2, x, k)
    for a, b in zip(fast, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv_impl", ["im2col", "xla"])
def test_fast_strided_conv_gradients_match_reference(conv_impl):
    x, k = jnp.asarray(_randn(2, 6, 4, 3)), jnp.asarray(_randn(4, 4, 3, 5))
    fast = _grads(lambda x, k: layers.conv4x4s2(x, k, "s2d", conv_impl), x, k)
    ref = _grads(layers.reference_conv4x4s2, x, k)
    for a, b in zip(fast, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ksize,padding", [(1, 0), (2, 0), (2, 1), (3, 1), (5, 2)])
def test_conv2d_lowerings_agree_with_lax_conv(ksize, padding):
    # Every impl, including whichever "auto" picks for this kernel size, is the same function
    # with the same gradients.
    x, k = jnp.asarray(_randn(2, 5, 6, 3)), jnp.asarray(_randn(ksize, ksize, 3, 4))
    pad = ((padding, padding), (padding, padding))
    dn = ("NHWC", "HWIO", "NHWC")

    def ref_fn(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), pad, dimension_numbers=dn)

    ref, ref_grads = ref_fn(x, k), _grads(ref_fn, x, k)
    for impl in ("im2col", "xla", "auto"):
        out = layers.conv2d(x, k, padding, impl)
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
        grads = _grads(lambda x, k, impl=impl: layers.conv2d(x, k, padding, impl), x, k)
        for a, b in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown impl"):
        layers.conv2d(x, k, padding, "fft")


def test_upsample_conv_equals_nearest_resize_then_conv():
    x, k = jnp.asarray(_randn(2, 3, 4, 3)), jnp.asarray(_randn(3, 3, 3, 5))
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest x2, (2, 6, 8, 3)
    ref = layers.conv2d(up, k, 1, "xla")
    out = layers.upsample_nearest_conv3x3(x, k)
    assert out.shape == (2, 6, 8, 5)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample_conv_module_fused_equals_resize(mode):
    x = jnp.asarray(_randn(2, 3, 4, 3))
    fused = layers.UpsampleConv3x3(5, mode=mode)
    params = _random_params(fused, x)
    assert params["params"]["kernel"].shape == (3, 3, 3, 5)
    out = fused.apply(params, x)
    ref = layers.UpsampleConv3x3(5, mode=mode, impl="resize").apply(params, x)
    assert out.shape == (2, 6, 8, 5)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown mode"):
        layers.UpsampleConv3x3(5, mode="bicubic").apply(params, x)


def test_bilinear_reference_is_textbook_bilinear():
    """Interior of jax.image.resize's bilinear x2: 0.75 / 0.25 of the two nearest inputs."""
    x = jnp.asarray(_randn(1, 4, 5, 1))
    delta = jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0)  # identity conv: the upsampled image
    up = np.asarray(layers.reference_upsample_bilinear_conv3x3(x, delta))[0, ..., 0]
    xr = np.asarray(x)[0, :, :, 0]
    rows = 0.75 * xr[1:3] + 0.25 * xr[0:2]  # output rows 2, 4 (phase 0 of rows 1, 2)
    np.testing.assert_allclose(up[2:6:2, 4], 0.75 * rows[:, 2] + 0.25 * rows[:, 1], atol=1e-6)


def _phase_spread(y: jax.Array) -> float:
    """Max over channels of the spread between the four output phases' interior means."""
    inner = np.asarray(y[:, 2:-2, 2:-2], np.float64)  # away from the zero-padded border
    phases = [inner[:, a::2, b::2].mean(axis=(0, 1, 2)) for a in (0, 1) for b in (0, 1)]
    return float(np.max(np.ptp(np.stack(phases), axis=0)))


def test_icnr_init_starts_without_checkerboard():
    """On a constant input every output phase of an ICNR-initialised layer is equal; the
    default (independent taps per phase) layer draws a period-2 checkerboard."""
    x = jnp.ones((1, 8, 8, 16))
    key = jax.random.PRNGKey(0)
    icnr = layers.ConvTranspose4x4S2(8, icnr=True)
    plain = layers.ConvTranspose4x4S2(8)
    assert _phase_spread(icnr.apply(icnr.init(key, x), x)) < 1e-5
    assert _phase_spread(plain.apply(plain.init(key, x), x)) > 0.1
    k = icnr.init(key, x)["params"]["kernel"]
    three = jnp.asarray(_randn(3, 3, 16, 8))
    assert k.shape == (4, 4, 16, 8)
    np.testing.assert_allclose(  # the packing of a 3x3 kernel is linear and exact
        layers.upsample_conv3x3_kernel(2.0 * three), 2.0 * layers.upsample_conv3x3_kernel(three)
    )
    with pytest.raises(ValueError, match="4, 4"):
        layers.icnr_init()(key, (3, 3, 2, 2))


def test_conv3x3s2_equals_strided_conv():
    x, k = jnp.asarray(_randn(2, 6, 8, 3)), jnp.asarray(_randn(3, 3, 3, 5))
    ref = lax.conv_general_dilated(
        x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(layers.conv3x3s2(x, k), ref, atol=1e-5, rtol=1e-5)


def test_space_to_depth_roundtrip():
    x = jnp.asarray(_randn(2, 4, 6, 3))
    s = layers.space_to_depth(x)
    assert s.shape == (2, 2, 3, 12)
    np.testing.assert_array_equal(s[0, 1, 2, :3], x[0, 2, 4])  # top-left of block (1, 2)
    np.testing.assert_array_equal(layers.depth_to_space(s), x)


@pytest.mark.parametrize("groups", [1, 4])
def test_group_norm_matches_flax(groups):
    x = jnp.asarray(_randn(2, 4, 5, 8)) * 3 + 1
    scale, bias = jnp.asarray(_randn(8)), jnp.asarray(_randn(8))
    params = {"params": {"scale": scale, "bias": bias}}
    ours = layers.GroupNorm(groups).apply(params, x)
    ref = nn.GroupNorm(groups, epsilon=1e-5).apply(params, x)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not divisible"):
        layers.GroupNorm(3).init(jax.random.PRNGKey(0), x)


# ------------------------------------------------------------------------------------------
# VAE.
# ------------------------------------------------------------------------------------------

# Hand count for the paper's network: conv weights k*k*Cin*Cout + Cout biases.
_ENC_CONVS = (16 * 1 * 32 + 32) + (16 * 32 * 64 + 64) + (16 * 64 * 128 + 128) + 2 * (128 * 8 + 8)
_DEC_CONVS = (16 * 8 * 128 + 128) + (16 * 128 * 64 + 64) + (16 * 64 * 32 + 32) + (9 * 32 + 1)
_NORMS = 2 * (32 + 64 + 128)  # per half: scale + bias of GroupNorm(1) after each stage


def test_vae_param_counts_and_shapes_at_paper_size():
    x = jax.ShapeDtypeStruct((2, 256, 256, 1), jnp.float32)
    rngs = {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}
    params = jax.eval_shape(VAE().init, rngs, x)
    assert _ENC_CONVS == 166_640 and _DEC_CONVS == 180_737
    assert _count(params["params"]["encoder"]) == _ENC_CONVS + _NORMS
    assert _count(params["params"]["decoder"]) == _DEC_CONVS + _NORMS
    assert _count(params) == 348_273 == _ENC_CONVS + _DEC_CONVS + 2 * _NORMS
    # The listing's plain network (no norms) has PyTorch's exact count.
    plain = jax.eval_shape(VAE(norm=False, negative_slope=0.0).init, rngs, x)
    assert _count(plain) == 347_377 == _ENC_CONVS + _DEC_CONVS
    # Stored transposed-conv kernels are PyTorch's 4x4 ones, not the packed form.
    dec = params["params"]["decoder"]
    assert dec["ConvTranspose4x4S2_0"]["kernel"].shape == (4, 4, 8, 128)
    x_hat, mean, logvar = jax.eval_shape(lambda p, x: VAE().apply(p, x, rngs=rngs), params, x)
    assert x_hat.shape == (2, 256, 256, 1)
    assert mean.shape == logvar.shape == (2, 32, 32, 8)
    assert jax.eval_shape(Encoder().init, jax.random.PRNGKey(0), x)["params"]
    z = jax.ShapeDtypeStruct((2, 32, 32, 8), jnp.float32)
    assert jax.eval_shape(Decoder().init, jax.random.PRNGKey(0), z)["params"]


def test_vae_upsample_options():
    """'transpose' keeps the paper's parameter tree (old checkpoints load); 'nearest_conv'
    stores 3x3 kernels; 'transpose_icnr' only changes the initialisation."""
    z = jax.ShapeDtypeStruct((1, 4, 4, 8), jnp.float32)
    key = jax.random.PRNGKey(0)
    old = jax.eval_shape(Decoder().init, key, z)["params"]
    icnr = jax.eval_shape(Decoder(upsample="transpose_icnr").init, key, z)["params"]
    near = jax.eval_shape(Decoder(upsample="nearest_conv").init, key, z)["params"]
    assert jax.tree.structure(old) == jax.tree.structure(icnr)
    assert old["ConvTranspose4x4S2_0"]["kernel"].shape == (4, 4, 8, 128)
    assert near["UpsampleConv3x3_0"]["kernel"].shape == (3, 3, 8, 128)
    up_weights = 16 * (8 * 128 + 128 * 64 + 64 * 32)
    assert _count(old) - _count(near) == up_weights - up_weights * 9 // 16
    with pytest.raises(ValueError, match="model.upsample"):
        jax.eval_shape(Decoder(upsample="pixelshuffle").init, key, z)
    x = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
    vae = jax.eval_shape(VAE(upsample="nearest_conv").init, {"params": key, "latent": key}, x)
    assert "UpsampleConv3x3_2" in vae["params"]["decoder"]
    bil = jax.eval_shape(Decoder(upsample="bilinear_conv").init, key, z)["params"]
    assert jax.tree.structure(bil) == jax.tree.structure(near)


@pytest.fixture(scope="module")
def small_vae():
    x = jnp.asarray(RNG.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32))
    return x, _random_params(VAE(), x)


_vae_eval = jax.jit(lambda p, x: VAE().apply(p, x, sample_posterior=False))


def test_vae_apply_encode_decode_and_sampling(small_vae):
    x, params = small_vae
    model = VAE()

    @jax.jit
    def run(params, x, key):
        x_hat, mean, logvar = model.apply(params, x, rngs={"latent": key})
        x_mean, _, _ = model.apply(params, x, sample_posterior=False)
        enc = model.apply(params, x, method=VAE.encode)
        dec = model.apply(params, enc[0], method=VAE.decode)
        return x_hat, mean, logvar, x_mean, enc, dec

    x_hat, mean, logvar, x_mean, (m2, lv2), dec = run(params, x, jax.random.PRNGKey(2))
    x_hat_b = run(params, x, jax.random.PRNGKey(3))[0]
    assert x_hat.shape == x.shape and mean.shape == (2, 4, 4, 8)
    assert x_hat.dtype == mean.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(x_hat))) <= 1.0  # tanh range
    np.testing.assert_allclose(m2, mean, atol=1e-6)
    np.testing.assert_allclose(lv2, logvar, atol=1e-6)
    np.testing.assert_allclose(dec, x_mean, atol=1e-6)  # eval path decodes the mean
    assert float(jnp.max(jnp.abs(x_hat - x_hat_b))) > 1e-4  # 'latent' rng drives sampling
    assert float(jnp.max(jnp.abs(x_hat - x_mean))) > 1e-4


def test_vae_bfloat16_close_to_float32(small_vae):
    x, params = small_vae
    f32 = _vae_eval(params, x)
    bf16 = jax.jit(lambda p, x: VAE(dtype=jnp.bfloat16).apply(p, x, sample_posterior=False))(
        params, x
    )
    for a, b in zip(f32, bf16, strict=True):
        assert b.dtype == jnp.float32
        _assert_close_rel(a, b)


# ------------------------------------------------------------------------------------------
# UNet.
# ------------------------------------------------------------------------------------------

_TINY = dict(channels=(16, 32), num_res_blocks=1, norm_groups=8)


def test_unet_default_param_count():
    x = jax.ShapeDtypeStruct((2, 32, 32, 8), jnp.float32)
    t = jax.ShapeDtypeStruct((2,), jnp.int32)
    params = jax.eval_shape(UNet().init, jax.random.PRNGKey(0), x, t, t)
    assert _count(params) == 14_413_064
    # Null class row for classifier-free guidance.
    assert params["params"]["class_embed"]["embedding"].shape == (3, 256)
    # attn_resolutions adds attention blocks at the listed sizes (16x16: 2 down + 3 up).
    with_attn = jax.eval_shape(UNet(attn_resolutions=(16,)).init, jax.random.PRNGKey(0), x, t, t)
    assert sum(k.startswith("AttentionBlock") for k in with_attn["params"]) == 1 + 5


def test_unet_output_conv_is_zero_initialised():
    model = UNet(channels=(8,), num_res_blocks=1, norm_groups=4)
    x, t = jnp.ones((1, 4, 4, 2)), jnp.zeros((1,), jnp.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, t, t)
    assert not np.any(np.asarray(params["params"]["conv_out"]["kernel"]))
    assert np.any(np.asarray(params["params"]["conv_in"]["kernel"]))


@pytest.fixture(scope="module")
def tiny_unet():
    x = jnp.broadcast_to(jnp.asarray(_randn(1, 8, 8, 4)), (3, 8, 8, 4))  # identical rows
    t = jnp.array([10, 500, 10], jnp.int32)
    y = jnp.array([0, 0, 2], jnp.int32)  # rows 0/1 differ in t, rows 0/2 in y (2 = null)
    # Random (non-zero) output conv so the output can show its dependence on t and y.
    return x, t, y, _random_params(UNet(**_TINY), x, t, y)


_unet_apply = jax.jit(UNet(**_TINY).apply)


def test_unet_shape_and_conditioning(tiny_unet):
    x, t, y, params = tiny_unet
    out = _unet_apply(params, x, t, y)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-3  # t changes the output
    assert float(jnp.max(jnp.abs(out[0] - out[2]))) > 1e-3  # y changes the output


def test_unet_bfloat16_close_to_float32_and_dropout(tiny_unet):
    x, t, y, params = tiny_unet
    f32 = _unet_apply(params, x, t, y)
    bf16 = jax.jit(UNet(**_TINY, dtype=jnp.bfloat16).apply)(params, x, t, y)
    assert bf16.dtype == jnp.float32
    _assert_close_rel(f32, bf16)

    drop = UNet(**_TINY, dropout=0.5)
    run = jax.jit(lambda k: drop.apply(params, x, t, y, train=True, rngs={"dropout": k}))
    a, b = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(1))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4  # dropout active and keyed by 'dropout'


def test_timestep_embedding_values():
    emb = timestep_embedding(jnp.array([0, 3]), 8)
    assert emb.shape == (2, 8)
    np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(emb[1, 0], np.cos(3.0), atol=1e-6)  # f_0 = 1
    np.testing.assert_allclose(emb[1, 5], np.sin(3.0 * 10000 ** (-1 / 4)), atol=1e-6)


# ------------------------------------------------------------------------------------------
# Same function as the PyTorch mirror (skipped where torch is not installed).
# ------------------------------------------------------------------------------------------


def test_matches_torch_mirror(small_vae, tiny_unet):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import torch_mirror as tm

    x, params = small_vae
    tvae = tm.load_flax_vae(tm.TorchVAE(), params)
    assert tm.num_params(tvae) == _count(params)
    with torch.no_grad():
        ref = tvae(torch.tensor(np.asarray(x)).permute(0, 3, 1, 2), sample_posterior=False)
    ours = _vae_eval(params, x)
    np.testing.assert_allclose(ours[0], ref[0].permute(0, 2, 3, 1).numpy(), atol=1e-4)
    np.testing.assert_allclose(ours[1], ref[1].permute(0, 2, 3, 1).numpy(), atol=1e-4)

    z, t, y, uparams = tiny_unet
    tunet = tm.load_flax_unet(tm.TorchUNet(in_channels=4, resolution=8, **_TINY), uparams)
    assert tm.num_params(tunet) == _count(uparams)
    with torch.no_grad():
        tref = tunet(
            torch.tensor(np.asarray(z)).permute(0, 3, 1, 2),
            torch.tensor(np.asarray(t)),
            torch.tensor(np.asarray(y)).long(),
        )
    ours = _unet_apply(uparams, z, t, y)
    np.testing.assert_allclose(ours, tref.permute(0, 2, 3, 1).numpy(), atol=1e-4)
