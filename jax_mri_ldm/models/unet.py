"""Class-conditional denoising UNet for the latent diffusion stage (paper section V).

Works on VAE latents, (B, 32, 32, 8) by default, and returns a tensor of the same shape: the
predicted noise, v or x0, whichever the trainer's ``diffusion.prediction`` asks for (the
network does not know which). DDPM-style (Ho et al. 2020) architecture:

* Timestep ``t`` -> sinusoidal embedding (``channels[0]`` wide) -> Dense -> SiLU -> Dense,
  ``4 * channels[0]`` wide; a learned class embedding with ``num_classes + 1`` rows is added
  to it. Row ``num_classes`` is the *null* class for classifier-free guidance: the trainer
  replaces labels by ``num_classes`` with probability 0.1 (the paper's rate) and the sampler
  mixes the predictions for ``y`` and for the null class. The model itself never drops labels.
* Residual blocks: GroupNorm -> SiLU -> 3x3 conv, then the embedding is projected and added
  (after the first conv, as in DDPM), GroupNorm -> SiLU -> dropout -> 3x3 conv, plus a 1x1
  conv skip when the width changes.
* ``num_res_blocks`` blocks per level; between levels a 3x3 stride-2 conv halves the size on
  the way down and nearest x2 upsampling + 3x3 conv doubles it on the way up (no transposed
  convs); skip connections concatenate every down-path activation into the up path.
* Multi-head self-attention (``jax.nn.dot_product_attention``) in the bottleneck
  (ResBlock -> Attention -> ResBlock), and after the res blocks of any level whose spatial size
  is listed in ``attn_resolutions``.
* GroupNorm -> SiLU -> 3x3 conv out, zero-initialised so the untrained model predicts 0.

The stride-2 conv and the upsample+conv run through the exact, faster formulations in
``layers.py`` (same parameters as PyTorch's ``Conv2d(3, s=2, p=1)`` and ``Upsample`` +
``Conv2d(3, p=1)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_mri_ldm.models.layers import Conv, GroupNorm, conv3x3s2, upsample_nearest_conv3x3

Array = jax.Array
Dtype = Any


def timestep_embedding(t: Array, dim: int, max_period: float = 10000.0) -> Array:
    """Sinusoidal timestep embedding (Transformer / DDPM style).

    Args:
      t: (B,) int or float timesteps.
      dim: embedding width (even).
      max_period: longest wavelength.

    Returns:
      (B, dim) float32: ``[cos(t * f_0..f_{d/2-1}), sin(t * f_0..f_{d/2-1})]`` with
      ``f_i = max_period ** (-i / (dim / 2))``.
    """
    if dim % 2:
        raise ValueError(f"timestep_embedding: dim must be even, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]  # (B, half)
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ResBlock(nn.Module):
    """DDPM residual block with an additive (time + class) embedding.

    Attributes:
      features: output channels.
      dropout: dropout rate before the second conv.
      norm_groups: GroupNorm groups.
      conv_impl: lowering of the convs (``"auto"``, ``"im2col"`` or ``"xla"``).
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: int
    dropout: float = 0.0
    norm_groups: int = 32
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, emb: Array, train: bool = False) -> Array:
        """Args: x (B, H, W, Cin), emb (B, E), train. Returns: (B, H, W, features)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(GroupNorm(self.norm_groups, **kw)(x))
        h = Conv(self.features, 3, impl=self.conv_impl, **kw)(h)  # (B, H, W, F)
        e = nn.Dense(self.features, **kw)(nn.silu(emb))  # (B, F)
        h = h + e[:, None, None, :]
        h = nn.silu(GroupNorm(self.norm_groups, **kw)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = Conv(self.features, 3, impl=self.conv_impl, **kw)(h)
        if x.shape[-1] != self.features:
            x = Conv(self.features, 1, impl=self.conv_impl, name="skip", **kw)(x)
        return x + h


class AttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention over the H*W positions, residual.

    Attributes:
      num_heads: attention heads (must divide C).
      norm_groups: GroupNorm groups.
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    num_heads: int = 4
    norm_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, C). Returns: (B, H, W, C)."""
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"AttentionBlock: {c} channels not divisible by {self.num_heads}.")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = GroupNorm(self.norm_groups, **kw)(x).reshape(b, h * w, c)  # (B, T, C)
        qkv = nn.Dense(3 * c, name="qkv", **kw)(y)  # (B, T, 3C)
        q, k, v = jnp.split(qkv.reshape(b, h * w, 3, self.num_heads, c // self.num_heads), 3, 2)
        # (B, T, N, D) each; softmax(q k^T / sqrt(D)) v.
        o = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
        o = nn.Dense(c, name="proj", **kw)(o.reshape(b, h * w, c))  # (B, T, C)
        return x + o.reshape(b, h, w, c)


class Downsample(nn.Module):
    """3x3 stride-2 conv (PyTorch ``Conv2d(C, C, 3, 2, 1)``), halving H and W.

    Attributes:
      features: output channels.
      conv_impl: lowering of the inner conv.
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: int
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, C), H and W even. Returns: (B, H/2, W/2, features)."""
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (3, 3, x.shape[-1], self.features),
            self.param_dtype,
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv3x3s2(x, kernel, self.conv_impl) + bias


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling then a 3x3 conv, run as one sub-pixel conv.

    Attributes:
      features: output channels.
      conv_impl: lowering of the inner conv.
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: int
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, C). Returns: (B, 2H, 2W, features)."""
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (3, 3, x.shape[-1], self.features),
            self.param_dtype,
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return upsample_nearest_conv3x3(x, kernel, self.conv_impl) + bias


class UNet(nn.Module):
    """Class-conditional denoising UNet (predicts eps, v or x0: the loss decides).

    Attributes:
      channels: width of each level; level i runs at 1/2**i of the input size.
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attn_resolutions: spatial sizes (e.g. ``(16,)``) whose levels get self-attention after
        every res block; the bottleneck always has one attention block.
      num_heads: attention heads.
      num_classes: real classes; embedding row ``num_classes`` is the null class.
      dropout: dropout rate in the res blocks (rng stream ``'dropout'`` when ``train``).
      norm_groups: GroupNorm groups (must divide every width).
      zero_init_out: zero-initialise the output conv (DDPM practice; tests turn it off).
      conv_impl: lowering of the 3x3 convs (``"auto"``, ``"im2col"`` or ``"xla"``).
      dtype: compute dtype (float32 or bfloat16); the output is float32.
      param_dtype: parameter dtype.
    """

    channels: Sequence[int] = (64, 128, 256)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = ()
    num_heads: int = 4
    num_classes: int = 2
    dropout: float = 0.0
    norm_groups: int = 32
    zero_init_out: bool = True
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, t: Array, y: Array, train: bool = False) -> Array:
        """Predicts the noise in ``x``.

        Args:
          x: (B, H, W, C) noisy latents; H and W divisible by 2**(len(channels) - 1).
          t: (B,) int32 or float timesteps.
          y: (B,) int32 labels in [0, num_classes]; ``num_classes`` means unconditional.
          train: enables dropout.

        Returns:
          (B, H, W, C) float32.
        """
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        blk = dict(norm_groups=self.norm_groups, **kw)
        res_kw = dict(dropout=self.dropout, conv_impl=self.conv_impl, **blk)
        ch0 = self.channels[0]
        emb_dim = 4 * ch0

        emb = timestep_embedding(t, ch0)  # (B, ch0)
        emb = nn.Dense(emb_dim, name="time_dense0", **kw)(emb)
        emb = nn.Dense(emb_dim, name="time_dense1", **kw)(nn.silu(emb))  # (B, E)
        class_emb = nn.Embed(
            self.num_classes + 1, emb_dim, param_dtype=self.param_dtype, name="class_embed"
        )(jnp.asarray(y, jnp.int32))
        emb = emb + class_emb.astype(emb.dtype)  # (B, E)

        h = Conv(ch0, 3, impl=self.conv_impl, name="conv_in", **kw)(x.astype(self.dtype))
        skips = [h]
        size = x.shape[1]
        for level, ch in enumerate(self.channels):
            for _ in range(self.num_res_blocks):
                h = ResBlock(ch, **res_kw)(h, emb, train)
                if size in self.attn_resolutions:
                    h = AttentionBlock(self.num_heads, **blk)(h)
                skips.append(h)
            if level != len(self.channels) - 1:
                h = Downsample(ch, conv_impl=self.conv_impl, **kw)(h)  # (B, H/2, W/2, ch)
                size //= 2
                skips.append(h)

        h = ResBlock(self.channels[-1], **res_kw)(h, emb, train)
        h = AttentionBlock(self.num_heads, **blk)(h)
        h = ResBlock(self.channels[-1], **res_kw)(h, emb, train)

        for level, ch in reversed(list(enumerate(self.channels))):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)  # (B, H, W, C + C_skip)
                h = ResBlock(ch, **res_kw)(h, emb, train)
                if size in self.attn_resolutions:
                    h = AttentionBlock(self.num_heads, **blk)(h)
            if level != 0:
                h = Upsample(ch, conv_impl=self.conv_impl, **kw)(h)  # (B, 2H, 2W, ch)
                size *= 2

        h = nn.silu(GroupNorm(self.norm_groups, name="norm_out", **kw)(h))
        out_init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
        h = Conv(x.shape[-1], 3, impl=self.conv_impl, kernel_init=out_init, name="conv_out", **kw)(
            h
        )
        return h.astype(jnp.float32)
