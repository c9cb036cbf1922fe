"""The paper's convolutional VAE (section IV): 256x256x1 slices <-> an 8x32x32 latent.

Architecture (NHWC), exactly the paper's listing plus the normalisation and activations its
text describes:

* Encoder: three ``Conv2d(k=4, s=2, p=1)`` stages, 1 -> 32 -> 64 -> 128 channels,
  256 -> 128 -> 64 -> 32 pixels, each followed by layer normalisation and LeakyReLU with
  negative slope 0.2; then two 1x1 convs give the posterior mean and log-variance,
  (B, 32, 32, 8) each.
* Decoder (mirror): three ``ConvTranspose2d(k=4, s=2, p=1)`` stages, 8 -> 128 -> 64 -> 32
  channels, 32 -> 64 -> 128 -> 256 pixels, each followed by layer normalisation and ReLU; then
  a 3x3 conv to one channel and ``tanh``.

Layer normalisation: the text says "layer normalisation is applied at intermediate stages"
while the listing has none. We normalise after *every* hidden stage (all three in each
half), over the whole (H, W, C) feature map of each sample, with a per-channel scale and bias:
Ba et al.'s layer norm applied to a conv layer, i.e. PyTorch ``GroupNorm(1, C)`` (which the
torch mirror uses). A per-element affine (``nn.LayerNorm([C, H, W])``) would add ~1.2 M
parameters to a 0.35 M-parameter model, and normalising each pixel's channel vector alone
would discard the relative intensity between pixels that an intensity image needs.
``norm=False, negative_slope=0.0`` gives the listing's plain-ReLU network exactly.

Value range: the model works in [-1, 1]. The data pipeline yields [0, 1]; trainers feed
``x * 2 - 1`` and map ``(x_hat + 1) / 2`` back. The decoder ends in ``tanh``, whose range is
(-1, 1); training a tanh output against [0, 1] targets would waste half its range and push
pre-activations to -inf for every black background pixel, so the data must be in tanh's range.

Speed: the stride-2 layers use the exact re-formulations of ``layers.py`` (space-to-depth for
the convs, a 2x2 sub-pixel conv for the transposed convs, both lowered to matmuls), keeping
PyTorch's 4x4 kernels as the stored parameters, so parameter counts equal PyTorch's.

Parameter count (defaults): encoder convs 544 + 32,832 + 131,200 + 2 * 1,032 = 166,640,
decoder 16,512 + 131,136 + 32,800 + 289 = 180,737, norms 2 * 2 * (32 + 64 + 128) = 896;
total 348,273 (347,377 without the norms, as in the paper's listing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax_mri_ldm.models.layers import (
    Conv,
    Conv4x4S2,
    ConvTranspose4x4S2,
    GroupNorm,
    UpsampleConv3x3,
)

Array = jax.Array
Dtype = Any

# Decoder upsampling layers: the paper's transposed conv ("transpose"), the same layer with an
# ICNR initialisation ("transpose_icnr"), or an x2 resize + 3x3 conv ("nearest_conv",
# "bilinear_conv"; 9/16 of the transposed conv's parameters, run through exact fused forms).
UPSAMPLERS: tuple[str, ...] = ("transpose", "transpose_icnr", "nearest_conv", "bilinear_conv")


class Encoder(nn.Module):
    """Image -> posterior mean and log-variance.

    Attributes:
      features: channels of the stride-2 stages (each halves H and W).
      latent_channels: latent channels.
      norm: layer-normalise after each stage.
      negative_slope: LeakyReLU slope (0.0 gives ReLU).
      down_impl: ``Conv4x4S2.impl`` (``"s2d"`` fast, ``"strided"`` reference).
      conv_impl: lowering of stride-1 convs (``"auto"``, ``"im2col"`` or ``"xla"``).
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: Sequence[int] = (32, 64, 128)
    latent_channels: int = 8
    norm: bool = True
    negative_slope: float = 0.2
    down_impl: str = "s2d"
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        """Encodes images.

        Args:
          x: (B, H, W, C) images in [-1, 1]; H and W divisible by 2**len(features).

        Returns:
          ``(mean, logvar)``, each (B, H/8, W/8, latent_channels) float32 for the defaults.
        """
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x.astype(self.dtype)  # (B, H, W, C)
        for f in self.features:
            h = Conv4x4S2(f, impl=self.down_impl, conv_impl=self.conv_impl, **kw)(h)
            if self.norm:
                h = GroupNorm(num_groups=1, **kw)(h)
            h = nn.leaky_relu(h, self.negative_slope)
        # (B, H/8, W/8, latent_channels) each; float32 so the KL term is computed in float32.
        mean = Conv(self.latent_channels, 1, impl=self.conv_impl, name="mean", **kw)(h)
        logvar = Conv(self.latent_channels, 1, impl=self.conv_impl, name="logvar", **kw)(h)
        return mean.astype(jnp.float32), logvar.astype(jnp.float32)


class Decoder(nn.Module):
    """Latent -> image in (-1, 1).

    Attributes:
      features: encoder channels; the decoder uses them in reverse order.
      out_channels: image channels.
      norm: layer-normalise after each stage.
      upsample: one of `UPSAMPLERS`.
      up_impl: ``ConvTranspose4x4S2.impl`` (``"subpixel2"`` fast, ``"dilated"`` reference).
      conv_impl: lowering of stride-1 convs (``"auto"``, ``"im2col"`` or ``"xla"``).
      dtype: compute dtype.
      param_dtype: parameter dtype.
    """

    features: Sequence[int] = (32, 64, 128)
    out_channels: int = 1
    norm: bool = True
    upsample: str = "transpose"
    up_impl: str = "subpixel2"
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: Array) -> Array:
        """Decodes latents.

        Args:
          z: (B, h, w, latent_channels).

        Returns:
          (B, h * 2**len(features), w * 2**len(features), out_channels) float32 in (-1, 1).
        """
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = z.astype(self.dtype)  # (B, h, w, Cz)
        for f in reversed(self.features):
            h = self._upsampler(f, kw)(h)  # (B, 2h, 2w, f)
            if self.norm:
                h = GroupNorm(num_groups=1, **kw)(h)
            h = nn.relu(h)
        h = Conv(self.out_channels, 3, impl=self.conv_impl, name="out", **kw)(h)
        return jnp.tanh(h.astype(jnp.float32))

    def _upsampler(self, features: int, kw: dict[str, Any]) -> nn.Module:
        """One x2 upsampling layer of kind ``self.upsample``."""
        if self.upsample in ("nearest_conv", "bilinear_conv"):
            mode = self.upsample.split("_")[0]
            return UpsampleConv3x3(features, mode=mode, conv_impl=self.conv_impl, **kw)
        if self.upsample not in UPSAMPLERS:
            raise ValueError(
                f"unknown VAE upsample {self.upsample!r} (config model.upsample); choose one "
                f"of {UPSAMPLERS}"
            )
        icnr = self.upsample == "transpose_icnr"
        return ConvTranspose4x4S2(
            features, impl=self.up_impl, conv_impl=self.conv_impl, icnr=icnr, **kw
        )


class VAE(nn.Module):
    """Encoder + reparameterised sampling + decoder.

    Use ``model.apply(params, x, method=VAE.encode)`` / ``method=VAE.decode`` for the halves.
    Sampling draws from the flax rng stream ``'latent'``.

    Attributes:
      features: encoder stage channels (decoder mirrors them).
      latent_channels: latent channels.
      in_channels: image channels.
      norm: layer normalisation after every hidden stage.
      negative_slope: encoder LeakyReLU slope.
      upsample: decoder upsampling layer, one of `UPSAMPLERS` (``"transpose"``: the paper's).
      down_impl: encoder stride-2 conv formulation.
      up_impl: decoder transposed-conv formulation.
      conv_impl: lowering of stride-1 convs.
      dtype: compute dtype (float32 or bfloat16); outputs are float32.
      param_dtype: parameter dtype.
    """

    features: Sequence[int] = (32, 64, 128)
    latent_channels: int = 8
    in_channels: int = 1
    norm: bool = True
    negative_slope: float = 0.2
    upsample: str = "transpose"
    down_impl: str = "s2d"
    up_impl: str = "subpixel2"
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        kw = dict(
            features=self.features,
            norm=self.norm,
            conv_impl=self.conv_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.encoder = Encoder(
            latent_channels=self.latent_channels,
            negative_slope=self.negative_slope,
            down_impl=self.down_impl,
            **kw,
        )
        self.decoder = Decoder(
            out_channels=self.in_channels, upsample=self.upsample, up_impl=self.up_impl, **kw
        )

    def encode(self, x: Array) -> tuple[Array, Array]:
        """Posterior parameters.

        Args:
          x: (B, H, W, in_channels) images in [-1, 1].

        Returns:
          ``(mean, logvar)``, each (B, H/8, W/8, latent_channels) float32.
        """
        return self.encoder(x)

    def decode(self, z: Array) -> Array:
        """Images from latents.

        Args:
          z: (B, h, w, latent_channels).

        Returns:
          (B, 8h, 8w, in_channels) float32 in (-1, 1).
        """
        return self.decoder(z)

    def __call__(self, x: Array, sample_posterior: bool = True) -> tuple[Array, Array, Array]:
        """Reconstructs ``x``.

        Args:
          x: (B, H, W, in_channels) images in [-1, 1].
          sample_posterior: decode ``z = mean + exp(logvar / 2) * eps`` (needs the ``'latent'``
            rng); False decodes the mean (evaluation).

        Returns:
          ``(x_hat, mean, logvar)``: (B, H, W, in_channels) and two (B, H/8, W/8, latent).
        """
        mean, logvar = self.encode(x)
        z = mean
        if sample_posterior:
            eps = jax.random.normal(self.make_rng("latent"), mean.shape, mean.dtype)
            z = mean + jnp.exp(0.5 * logvar) * eps  # (B, h, w, latent)
        return self.decode(z), mean, logvar
