"""Kernel re-packing for the fast stride-2 layers: pure permutations of the stored 4x4 kernel.

`models/layers.py` keeps the (4, 4, Cin, Cout) kernel as the parameter (PyTorch layout, same
checkpoints and parameter counts) and calls these to get the dense stride-1 kernels its
space-to-depth / sub-pixel formulations convolve with; XLA folds the transposes into the conv.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def pack_conv4x4s2_kernel(kernel: Array) -> Array:
    """Re-packs a stride-2 4x4 conv kernel for the space-to-depth formulation.

    Output row ``m`` of ``Conv2d(k=4, s=2, p=1)`` reads padded rows ``2m .. 2m+3``, i.e. the
    space-to-depth blocks ``m`` and ``m+1``; tap ``k = 2t + r`` sits in block offset ``t`` at
    in-block row ``r``.

    Args:
      kernel: (4, 4, Cin, Cout) cross-correlation kernel (PyTorch ``w.permute(2, 3, 1, 0)``).

    Returns:
      (2, 2, 4*Cin, Cout) kernel for a 2x2 VALID conv over ``space_to_depth(pad(x, 1))``.
    """
    _, _, cin, cout = kernel.shape
    k = kernel.reshape(2, 2, 2, 2, cin, cout)  # (t, r, u, s, c, o)
    k = k.transpose(0, 2, 1, 3, 4, 5)  # (t, u, r, s, c, o)
    return k.reshape(2, 2, 4 * cin, cout)


def pack_conv_transpose4x4s2_kernel(kernel: Array) -> Array:
    """Re-packs a stride-2 4x4 transposed-conv kernel into a 2x2 sub-pixel conv kernel.

    With PyTorch's padding 1, output row ``2m + a`` receives input rows ``m - 1 + a`` and
    ``m + a`` through taps ``3 - a`` and ``1 - a``. A 2x2 VALID conv over the input padded by
    one computes, at position ``j``, ``x[j-1] W[0] + x[j] W[1]``; so phase ``a`` is that conv
    at ``j = m + a`` with ``W[t] = K[3 - a - 2t]``.

    Args:
      kernel: (4, 4, Cin, Cout) transposed-conv ("scatter") kernel: input pixel ``i`` adds
        ``x[i] * K[k]`` to output pixel ``2i - 1 + k`` (PyTorch ``w.permute(2, 3, 0, 1)``).

    Returns:
      (2, 2, Cin, 4*Cout) kernel; output channel index = (a, b, o) for output phase (a, b).
    """
    _, _, cin, cout = kernel.shape
    # Flip both spatial axes, then split each into (t, a): flipped index 2t + a = 3 - (..).
    k = kernel[::-1, ::-1].reshape(2, 2, 2, 2, cin, cout)  # (t, a, u, b, c, o)
    k = k.transpose(0, 2, 4, 1, 3, 5)  # (t, u, c, a, b, o)
    return k.reshape(2, 2, cin, 4 * cout)


def pack_conv_transpose4x4s2_kernel_3x3(kernel: Array) -> Array:
    """Re-packs the 4x4 transposed-conv kernel into a zero-padded 3x3 sub-pixel kernel.

    Alternative to :func:`pack_conv_transpose4x4s2_kernel` (kept for benchmarks): a SAME 3x3
    conv to 4*Cout channels followed by a plain depth-to-space. It does 9/4 the FLOPs of the
    2x2 form because 5 of every 9 taps are zeros.

    Args:
      kernel: (4, 4, Cin, Cout) transposed-conv kernel (see above).

    Returns:
      (3, 3, Cin, 4*Cout) kernel; output channel index = (a, b, o).
    """
    _, _, cin, cout = kernel.shape
    k2 = pack_conv_transpose4x4s2_kernel(kernel).reshape(2, 2, cin, 2, 2, cout)
    k3 = jnp.zeros((3, 3, cin, 2, 2, cout), kernel.dtype)
    for a in range(2):
        for b in range(2):
            # Phase (a, b) of the 2x2 form reads padded offsets (a, b) .. (a+1, b+1).
            k3 = k3.at[a : a + 2, b : b + 2, :, a, b, :].set(k2[:, :, :, a, b, :])
    return k3.reshape(3, 3, cin, 4 * cout)
