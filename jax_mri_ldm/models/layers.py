"""Building blocks shared by the VAE and the UNet, written for speed on XLA:CPU.

Layout is NHWC throughout. Parameters are float32; every module takes a compute ``dtype``
(float32 by default, bfloat16 as an option) and normalisation statistics are always taken in
float32.

Why the re-formulations below exist: XLA:CPU lowers a stride-2 transposed convolution (and the
input-gradient of a stride-2 convolution, which is the same operation) to a convolution over a
zero-dilated input. Three quarters of that input is zeros, and the CPU emitter does not skip
them, so a naive ``nn.ConvTranspose`` VAE trains many times slower than PyTorch on the same
CPU (docs/results.md has the timings).
Both the paper's 4x4 stride-2 layers can be rewritten *exactly* (same function, same parameter
tensor, same parameter count) as dense stride-1 convolutions on a re-arranged tensor:

* ``Conv4x4S2`` (PyTorch ``Conv2d(k=4, s=2, p=1)``): pad by 1, space-to-depth by 2, then a
  2x2 VALID convolution whose (2, 2, 4*Cin, Cout) kernel is a pure permutation of the stored
  (4, 4, Cin, Cout) kernel.
* ``ConvTranspose4x4S2`` (PyTorch ``ConvTranspose2d(k=4, s=2, p=1)``): pad by 1, a 2x2 VALID
  convolution to 4*Cout channels (one group per output phase; again a pure permutation of the
  stored 4x4 kernel), then interleave the four phases (a shifted depth-to-space).

Both keep the 4x4 kernel as *the* parameter so checkpoints, parameter counts and semantics
match PyTorch's layers one to one; the re-packing is a transpose that XLA folds into the
convolution. ``reference_*`` functions give the textbook formulation for the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jax_mri_ldm.models.kernels import (
    pack_conv4x4s2_kernel,
    pack_conv_transpose4x4s2_kernel,
    pack_conv_transpose4x4s2_kernel_3x3,
)

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

_DN = ("NHWC", "HWIO", "NHWC")


def space_to_depth(x: Array, block: int = 2) -> Array:
    """Moves ``block x block`` spatial patches into channels.

    Args:
      x: (B, H, W, C) with H and W divisible by ``block``.
      block: patch size.

    Returns:
      (B, H/block, W/block, block*block*C), channel index = (row_in_patch, col_in_patch, c).
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h // block, block, w // block, block, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H/b, W/b, b, b, C)
    return x.reshape(b, h // block, w // block, block * block * c)


def depth_to_space(x: Array, block: int = 2) -> Array:
    """Inverse of :func:`space_to_depth`.

    Args:
      x: (B, H, W, block*block*C), channel index = (row_in_patch, col_in_patch, c).
      block: patch size.

    Returns:
      (B, H*block, W*block, C).
    """
    b, h, w, c4 = x.shape
    c = c4 // (block * block)
    x = x.reshape(b, h, w, block, block, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, H, b, W, b, C)
    return x.reshape(b, h * block, w * block, c)


# ---------------------------------------------------------------------------------------------
# Functional forms.
# ---------------------------------------------------------------------------------------------


def _xla_conv(x: Array, kernel: Array, padding: Any, **kw: Any) -> Array:
    return lax.conv_general_dilated(
        x, kernel, window_strides=(1, 1), padding=padding, dimension_numbers=_DN, **kw
    )


def conv2d(x: Array, kernel: Array, padding: int = 0, impl: str = "auto") -> Array:
    """Stride-1 2-D cross-correlation (no bias) in NHWC with symmetric zero padding.

    Two lowerings compute the same function:

    * ``impl="xla"``: ``lax.conv_general_dilated``. In this jaxlib, XLA:CPU hands 3x3 SAME
      convolutions, their input gradients *and* their kernel gradients to YNNPACK, which runs
      them without materialising patches.
    * ``impl="im2col"``: gathers the kh*kw shifted views into channels and does one matmul.
      Every gradient is a matmul plus slicing, but the (B, H, W, kh*kw*Cin) patch tensor and
      its gradient are written and read several times per step (memory-bound on a CPU).

    ``impl="auto"`` picks per kernel shape, from a profile of the UNet train step on the
    dev CPU (numbers in ``docs/performance.md``): odd kernels of size >= 3 go to ``"xla"``
    (with im2col, patch concatenation and its gradient dominated the step); 1x1 and even
    kernels (the 2x2 convs inside the stride-2 formulations below) stay ``"im2col"``,
    because XLA:CPU does not give the kernel gradient of those to YNNPACK and runs it as a
    generic, much slower convolution.

    Args:
      x: (B, H, W, Cin).
      kernel: (kh, kw, Cin, Cout).
      padding: zeros added on every spatial side (``(k - 1) // 2`` gives SAME for odd k).
      impl: ``"auto"``, ``"im2col"`` or ``"xla"`` (see above).

    Returns:
      (B, H + 2*padding - kh + 1, W + 2*padding - kw + 1, Cout).
    """
    kh, kw, cin, cout = kernel.shape
    if impl == "auto":
        impl = "xla" if kh == kw and kh % 2 == 1 and kh >= 3 else "im2col"
    if impl == "xla":
        return _xla_conv(x, kernel, ((padding, padding), (padding, padding)))
    if impl != "im2col":
        raise ValueError(f"conv2d: unknown impl {impl!r}; use 'auto', 'im2col' or 'xla'.")
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    if kh == kw == 1:
        patches = x
    else:
        # (B, Ho, Wo, kh*kw*Cin), channel index = (i, j, c) to match kernel.reshape below.
        taps = [x[:, i : i + ho, j : j + wo] for i in range(kh) for j in range(kw)]
        patches = jnp.concatenate(taps, axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * cin, cout))


def conv4x4s2(x: Array, kernel: Array, impl: str = "s2d", conv_impl: str = "auto") -> Array:
    """PyTorch ``Conv2d(k=4, s=2, p=1)`` (no bias) in NHWC.

    Args:
      x: (B, H, W, Cin), H and W even.
      kernel: (4, 4, Cin, Cout) cross-correlation kernel.
      impl: ``"s2d"`` (space-to-depth + 2x2 stride-1 conv) or ``"strided"`` (XLA strided
        conv; its input gradient is a dilated conv, slow on XLA:CPU).
      conv_impl: lowering of the inner stride-1 conv for ``"s2d"`` (see :func:`conv2d`).

    Returns:
      (B, H/2, W/2, Cout).
    """
    if impl == "strided":
        return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)
    if impl != "s2d":
        raise ValueError(f"conv4x4s2: unknown impl {impl!r}; use 's2d' or 'strided'.")
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (B, H+2, W+2, Cin)
    return conv2d(space_to_depth(xp), pack_conv4x4s2_kernel(kernel), 0, conv_impl)


def conv_transpose4x4s2(
    x: Array, kernel: Array, impl: str = "subpixel2", conv_impl: str = "auto"
) -> Array:
    """PyTorch ``ConvTranspose2d(k=4, s=2, p=1)`` (no bias) in NHWC.

    Args:
      x: (B, H, W, Cin).
      kernel: (4, 4, Cin, Cout) transposed-conv kernel (PyTorch ``w.permute(2, 3, 0, 1)``).
      impl: ``"subpixel2"`` (2x2 conv to 4*Cout + shifted interleave; fastest),
        ``"subpixel3"`` (zero-padded 3x3 conv + depth-to-space) or ``"dilated"`` (the
        reference lhs-dilated convolution, very slow on XLA:CPU).
      conv_impl: lowering of the inner stride-1 conv for the sub-pixel forms.

    Returns:
      (B, 2H, 2W, Cout).
    """
    if impl == "dilated":
        return reference_conv_transpose4x4s2(x, kernel)
    b, h, w, _ = x.shape
    cout = kernel.shape[-1]
    if impl == "subpixel3":
        y = conv2d(x, pack_conv_transpose4x4s2_kernel_3x3(kernel), 1, conv_impl)
        return depth_to_space(y)  # (B, 2H, 2W, Cout)
    if impl != "subpixel2":
        raise ValueError(
            f"conv_transpose4x4s2: unknown impl {impl!r}; use 'subpixel2', 'subpixel3' or "
            "'dilated'."
        )
    y = conv2d(x, pack_conv_transpose4x4s2_kernel(kernel), 1, conv_impl)  # (B, H+1, W+1, 4C)
    y = y.reshape(b, h + 1, w + 1, 2, 2, cout)
    # Phase (a, b) lives at offset (a, b) of the (H+1, W+1) grid.
    rows = []
    for a in range(2):
        cols = [y[:, a : a + h, bb : bb + w, a, bb, :] for bb in range(2)]
        rows.append(jnp.stack(cols, axis=3))  # (B, H, W, 2, Cout)
    z = jnp.stack(rows, axis=2)  # (B, H, 2, W, 2, Cout)
    return z.reshape(b, 2 * h, 2 * w, cout)


# Nearest-neighbour x2 upsampling followed by a 3x3 SAME conv equals a 4x4 stride-2 transposed
# conv whose taps are sums of the 3x3 taps (per axis: K4 = _UP_MIX @ K3, rows are K4 taps
# 0..3). Running it as one saves 9/4 of the FLOPs and never builds the 4x larger tensor.
_UP_MIX = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv3x3_kernel(kernel3: Array) -> Array:
    """Maps a 3x3 conv kernel to the transposed-conv kernel of "nearest x2 then conv".

    Args:
      kernel3: (3, 3, Cin, Cout) kernel of the conv applied after nearest upsampling.

    Returns:
      (4, 4, Cin, Cout) kernel for :func:`conv_transpose4x4s2` computing the same function.
    """
    mix = jnp.asarray(_UP_MIX, kernel3.dtype)
    return jnp.einsum("ai,bj,ijco->abco", mix, mix, kernel3)


def upsample_nearest_conv3x3(x: Array, kernel3: Array, conv_impl: str = "auto") -> Array:
    """Nearest-neighbour x2 upsampling followed by a 3x3 SAME conv (no bias), fused.

    Args:
      x: (B, H, W, Cin).
      kernel3: (3, 3, Cin, Cout).
      conv_impl: lowering of the inner stride-1 conv (see :func:`conv2d`).

    Returns:
      (B, 2H, 2W, Cout).
    """
    return conv_transpose4x4s2(x, upsample_conv3x3_kernel(kernel3), "subpixel2", conv_impl)


# Bilinear x2 upsampling (half-pixel centres, edge-clamped) followed by a 3x3 conv reads input
# rows m-1..m+1 for both output phases a of row 2m + a: per axis, phase a's 3x3 kernel on the
# input is _BILINEAR_MIX[a] @ K3 (rows: input taps m-1, m, m+1; columns: the 3x3 conv's taps).
_BILINEAR_MIX = (
    ((0.75, 0.25, 0.0), (0.25, 0.75, 0.75), (0.0, 0.0, 0.25)),
    ((0.25, 0.0, 0.0), (0.75, 0.75, 0.25), (0.0, 0.25, 0.75)),
)


def upsample_bilinear_conv3x3_kernel(kernel3: Array) -> Array:
    """Maps a 3x3 conv kernel to the 3x3 sub-pixel kernel of "bilinear x2 then conv".

    Args:
      kernel3: (3, 3, Cin, Cout) kernel of the conv applied after bilinear upsampling.

    Returns:
      (3, 3, Cin, 4*Cout) kernel; output channel index = (a, b, o) for output phase (a, b).
    """
    _, _, cin, cout = kernel3.shape
    mix = jnp.asarray(_BILINEAR_MIX, kernel3.dtype)  # (2, 3, 3): phase, input tap, conv tap
    k = jnp.einsum("aji,bkl,ilco->jkcabo", mix, mix, kernel3)  # (3, 3, Cin, 2, 2, Cout)
    return k.reshape(3, 3, cin, 4 * cout)


def upsample_bilinear_conv3x3(x: Array, kernel3: Array, conv_impl: str = "auto") -> Array:
    """Bilinear x2 upsampling then a 3x3 conv with edge padding (no bias), fused.

    Equals :func:`reference_upsample_bilinear_conv3x3` exactly: edge-pad the input by one,
    one 3x3 VALID conv to 4*Cout channels, depth-to-space. Never builds the upsampled tensor.

    Args:
      x: (B, H, W, Cin).
      kernel3: (3, 3, Cin, Cout).
      conv_impl: lowering of the inner stride-1 conv (see :func:`conv2d`).

    Returns:
      (B, 2H, 2W, Cout).
    """
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")  # (B, H+2, W+2, Cin)
    y = conv2d(xp, upsample_bilinear_conv3x3_kernel(kernel3), 0, conv_impl)  # (B, H, W, 4C)
    return depth_to_space(y)


def reference_upsample_bilinear_conv3x3(x: Array, kernel3: Array) -> Array:
    """Textbook bilinear x2 resize, edge padding by one, 3x3 VALID conv (test reference)."""
    b, h, w, c = x.shape
    up = jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")  # (B, 2H, 2W, Cin)
    up = jnp.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return _xla_conv(up, kernel3, "VALID")


def reference_upsample_nearest_conv3x3(x: Array, kernel3: Array) -> Array:
    """Textbook nearest x2 upsampling then a 3x3 SAME conv (test reference)."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # (B, 2H, 2W, Cin)
    return _xla_conv(up, kernel3, ((1, 1), (1, 1)))


def icnr_init(base_init: Initializer | None = None) -> Initializer:
    """ICNR initialiser for a (4, 4, Cin, Cout) stride-2 transposed-conv kernel.

    Aitken et al. (2017): a sub-pixel (or transposed) conv initialised with independent random
    taps per output phase starts out drawing a period-2 checkerboard that training must undo;
    initialising it to "nearest x2 upsampling then a conv" gives all four phases the same
    response, so it starts checkerboard-free. Here that is `upsample_conv3x3_kernel` of a
    3x3 kernel drawn by ``base_init`` (whose fan-in, 9 * Cin, is the layer's true one).

    Args:
      base_init: initialiser of the underlying 3x3 kernel (None: ``lecun_normal``).

    Returns:
      An initialiser ``init(key, (4, 4, Cin, Cout), dtype)``.
    """
    base_init = base_init or nn.initializers.lecun_normal()

    def init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
        if tuple(shape[:2]) != (4, 4):
            raise ValueError(f"icnr_init expects a (4, 4, Cin, Cout) kernel, got {shape}")
        kernel3 = base_init(key, (3, 3) + tuple(shape[2:]), dtype)
        return upsample_conv3x3_kernel(kernel3).astype(dtype)

    return init


def conv3x3s2(x: Array, kernel3: Array, conv_impl: str = "auto") -> Array:
    """PyTorch ``Conv2d(k=3, s=2, p=1)`` (no bias), via the 4x4 space-to-depth path.

    Output row ``m`` reads input rows ``2m-1 .. 2m+1``, exactly a 4x4 stride-2 padding-1
    conv whose fourth tap row and column are zero.

    Args:
      x: (B, H, W, Cin), H and W even.
      kernel3: (3, 3, Cin, Cout).
      conv_impl: lowering of the inner stride-1 conv (see :func:`conv2d`).

    Returns:
      (B, H/2, W/2, Cout).
    """
    kernel4 = jnp.pad(kernel3, ((0, 1), (0, 1), (0, 0), (0, 0)))
    return conv4x4s2(x, kernel4, "s2d", conv_impl)


def reference_conv4x4s2(x: Array, kernel: Array) -> Array:
    """Textbook ``Conv2d(k=4, s=2, p=1)``: a strided cross-correlation (test reference)."""
    return conv4x4s2(x, kernel, impl="strided")


def reference_conv_transpose4x4s2(x: Array, kernel: Array) -> Array:
    """Textbook ``ConvTranspose2d(k=4, s=2, p=1)`` (test reference).

    A transposed conv with stride s, kernel k and padding p is a stride-1 correlation over the
    input dilated by s (``lhs_dilation``), padded by ``k - 1 - p = 2`` on each side, with the
    spatially flipped kernel. Output size ``(H - 1) * 2 - 2 + 4 = 2H``.
    """
    return _xla_conv(x, kernel[::-1, ::-1], ((2, 2), (2, 2)), lhs_dilation=(2, 2))


# ---------------------------------------------------------------------------------------------
# Modules.
# ---------------------------------------------------------------------------------------------


class Conv(nn.Module):
    """Stride-1 conv with symmetric zero padding (SAME for odd kernels), HWIO kernel.

    Same parameters as ``nn.Conv(features, (k, k), padding="SAME")`` (``kernel`` of shape
    (k, k, Cin, Cout) and ``bias``), lowered through :func:`conv2d` for speed on XLA:CPU.

    Attributes:
      features: output channels.
      kernel_size: square kernel size (odd).
      use_bias: add a bias.
      impl: ``"auto"`` (default), ``"im2col"`` or ``"xla"`` (see :func:`conv2d`).
      kernel_init: kernel initialiser.
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: int
    kernel_size: int = 3
    use_bias: bool = True
    impl: str = "auto"
    kernel_init: Initializer = nn.initializers.lecun_normal()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, Cin). Returns: (B, H, W, features)."""
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv2d(x, kernel, (k - 1) // 2, self.impl)
        return y if bias is None else y + bias


class Conv4x4S2(nn.Module):
    """``Conv2d(k=4, s=2, p=1)`` with PyTorch semantics, halving H and W.

    Attributes:
      features: output channels.
      impl: ``"s2d"`` (default, fast) or ``"strided"``; both compute the same function.
      conv_impl: lowering of the inner stride-1 conv (``"auto"``, ``"im2col"`` or ``"xla"``).
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: int
    impl: str = "s2d"
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, Cin). Returns: (B, H/2, W/2, features)."""
        cin = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (4, 4, cin, self.features),
            self.param_dtype,
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv4x4s2(x, kernel, self.impl, self.conv_impl) + bias


class ConvTranspose4x4S2(nn.Module):
    """``ConvTranspose2d(k=4, s=2, p=1)`` with PyTorch semantics, doubling H and W.

    The stored ``kernel`` is the (4, 4, Cin, Cout) transposed-conv kernel (16*Cin*Cout
    weights + Cout biases, exactly PyTorch's count); it is re-packed at call time.

    Attributes:
      features: output channels.
      impl: ``"subpixel2"`` (default, fast), ``"subpixel3"`` or ``"dilated"``.
      conv_impl: lowering of the inner stride-1 conv (``"auto"``, ``"im2col"`` or ``"xla"``).
      icnr: initialise with `icnr_init` (nearest-upsample + conv) instead of independent taps.
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: int
    impl: str = "subpixel2"
    conv_impl: str = "auto"
    icnr: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, Cin). Returns: (B, 2H, 2W, features)."""
        cin = x.shape[-1]
        # Each output pixel sees 2x2 input taps, so the effective fan-in is 4*Cin, not the
        # 16*Cin that lecun_normal would infer from the 4x4 shape: scale the variance by 4.
        init = nn.initializers.variance_scaling(4.0, "fan_in", "truncated_normal")
        if self.icnr:
            init = icnr_init()
        kernel = self.param("kernel", init, (4, 4, cin, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv_transpose4x4s2(x, kernel, self.impl, self.conv_impl) + bias


class UpsampleConv3x3(nn.Module):
    """x2 resize then a 3x3 conv ("resize-convolution", Odena et al. 2016).

    All four output phases share one 3x3 kernel, so the layer cannot draw a period-2
    checkerboard, at any point of training. Stored parameters are the 3x3 ``kernel`` and
    ``bias``. ``mode="nearest"`` pads the conv with zeros and runs fused as the equivalent
    4x4 stride-2 transposed conv (`upsample_nearest_conv3x3`); ``mode="bilinear"`` pads it by
    edge replication and runs fused as a 3x3 sub-pixel conv (`upsample_bilinear_conv3x3`).
    Both fused forms are exact and never build the upsampled tensor; ``impl="resize"`` runs
    the textbook resize-then-conv.

    Attributes:
      features: output channels.
      mode: ``"nearest"`` or ``"bilinear"``.
      impl: ``"fused"`` (default, fast) or ``"resize"`` (reference).
      conv_impl: lowering of the inner stride-1 conv (``"auto"``, ``"im2col"`` or ``"xla"``).
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: int
    mode: str = "nearest"
    impl: str = "fused"
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, Cin). Returns: (B, 2H, 2W, features)."""
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return self._upsample_conv(x, kernel) + bias

    def _upsample_conv(self, x: Array, kernel: Array) -> Array:
        fns = {
            ("nearest", "fused"): lambda: upsample_nearest_conv3x3(x, kernel, self.conv_impl),
            ("nearest", "resize"): lambda: reference_upsample_nearest_conv3x3(x, kernel),
            ("bilinear", "fused"): lambda: upsample_bilinear_conv3x3(x, kernel, self.conv_impl),
            ("bilinear", "resize"): lambda: reference_upsample_bilinear_conv3x3(x, kernel),
        }
        if (self.mode, self.impl) not in fns:
            raise ValueError(
                f"UpsampleConv3x3: unknown mode {self.mode!r} or impl {self.impl!r}; use mode "
                "'nearest' or 'bilinear' and impl 'fused' or 'resize'."
            )
        return fns[(self.mode, self.impl)]()


class GroupNorm(nn.Module):
    """Group normalisation over (H, W, C/G) per sample, with per-channel scale and bias.

    ``num_groups=1`` is layer normalisation over the whole (H, W, C) feature map (Ba et al.'s
    layer norm for a conv layer, PyTorch ``GroupNorm(1, C)``). Statistics are float32 and
    come from one fused pass (mean and mean of squares); the normalisation is then one
    multiply-add per element that XLA fuses with the following activation. This layout
    (reduce over the (B, H, W, G, C/G) view, broadcast (B, 1, 1, C) factors) was faster
    fwd+bwd on XLA:CPU than folding everything into per-(B, G) affine factors first.

    Attributes:
      num_groups: number of channel groups (must divide C).
      epsilon: added to the variance.
      dtype: output dtype.
      param_dtype: parameter dtype.
    """

    num_groups: int = 32
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, C). Returns: (B, H, W, C) in ``dtype``."""
        b, h, w, c = x.shape
        g = self.num_groups
        if c % g:
            raise ValueError(f"GroupNorm: {c} channels are not divisible by {g} groups.")
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        xf = x.astype(jnp.float32)
        xg = xf.reshape(b, h, w, g, c // g)
        mean = jnp.mean(xg, axis=(1, 2, 4))  # (B, G)
        mean_sq = jnp.mean(jnp.square(xg), axis=(1, 2, 4))  # (B, G)
        # E[x^2] - E[x]^2 can dip below zero by rounding; clamp before rsqrt.
        inv = lax.rsqrt(jnp.maximum(mean_sq - jnp.square(mean), 0.0) + self.epsilon)
        mean = jnp.repeat(mean, c // g, axis=-1)[:, None, None]  # (B, 1, 1, C)
        inv = jnp.repeat(inv, c // g, axis=-1)[:, None, None]  # (B, 1, 1, C)
        y = (xf - mean) * (inv * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
        return y.astype(self.dtype)
