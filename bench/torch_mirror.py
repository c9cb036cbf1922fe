"""PyTorch (NCHW) mirrors of ``jax_mri_ldm.models.VAE`` and ``UNet``, for speed comparisons.

Same layers, same parameter counts, same function: ``load_flax_vae`` / ``load_flax_unet``
copy a flax parameter tree into a mirror so the two can be checked against each other
numerically (``bench/compare.py`` does so before timing). The mirrors use PyTorch's plain
layers (``ConvTranspose2d``, strided ``Conv2d``, ``Upsample`` + ``Conv2d``), i.e. what a
PyTorch user would write from the paper; the JAX side computes the same functions with the
faster exact formulations of ``jax_mri_ldm/models/layers.py``.

Requires ``torch`` (``pip install -r bench/requirements.txt``); the library never imports this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------


class TorchEncoder(nn.Module):
    """Mirror of ``models.vae.Encoder``: Conv2d(4, 2, 1) -> GroupNorm(1) -> LeakyReLU(0.2)."""

    def __init__(
        self,
        in_channels: int = 1,
        features: Sequence[int] = (32, 64, 128),
        latent_channels: int = 8,
        norm: bool = True,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for f in features:
            layers.append(nn.Conv2d(cin, f, 4, 2, 1))
            if norm:
                layers.append(nn.GroupNorm(1, f, eps=1e-5))
            layers.append(nn.LeakyReLU(negative_slope))
            cin = f
        self.conv = nn.Sequential(*layers)
        self.mean = nn.Conv2d(cin, latent_channels, 1)
        self.logvar = nn.Conv2d(cin, latent_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x (B, C, H, W). Returns: mean, logvar (B, Cz, H/8, W/8)."""
        h = self.conv(x)
        return self.mean(h), self.logvar(h)


class TorchDecoder(nn.Module):
    """Mirror of ``models.vae.Decoder``: ConvTranspose2d(4, 2, 1) -> GroupNorm(1) -> ReLU."""

    def __init__(
        self,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128),
        latent_channels: int = 8,
        norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = latent_channels
        for f in reversed(features):
            layers.append(nn.ConvTranspose2d(cin, f, 4, 2, 1))
            if norm:
                layers.append(nn.GroupNorm(1, f, eps=1e-5))
            layers.append(nn.ReLU())
            cin = f
        layers += [nn.Conv2d(cin, out_channels, 3, 1, 1), nn.Tanh()]
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Args: z (B, Cz, h, w). Returns: (B, C, 8h, 8w) in (-1, 1)."""
        return self.deconv(z)


class TorchVAE(nn.Module):
    """Mirror of ``models.vae.VAE``."""

    def __init__(self, in_channels: int = 1, features: Sequence[int] = (32, 64, 128),
                 latent_channels: int = 8, norm: bool = True,
                 negative_slope: float = 0.2) -> None:  # fmt: skip
        super().__init__()
        self.encoder = TorchEncoder(in_channels, features, latent_channels, norm, negative_slope)
        self.decoder = TorchDecoder(in_channels, features, latent_channels, norm)

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: x (B, C, H, W). Returns: x_hat, mean, logvar."""
        mean, logvar = self.encoder(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample_posterior else mean
        return self.decoder(z), mean, logvar


# ---------------------------------------------------------------------------------------------
# UNet
# ---------------------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Same as ``models.unet.timestep_embedding``: ``[cos, sin]``, (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TorchResBlock(nn.Module):
    """Mirror of ``models.unet.ResBlock``."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm0 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv0 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.dense = nn.Linear(emb_dim, cout)
        self.norm1 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        h = h + self.dense(F.silu(emb))[:, :, None, None]
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        return (x if self.skip is None else self.skip(x)) + h


class TorchAttention(nn.Module):
    """Mirror of ``models.unet.AttentionBlock`` (scaled_dot_product_attention)."""

    def __init__(self, c: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, c, eps=1e-5)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, T, C)
        qkv = self.qkv(y).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, N, T, D) each
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(o).transpose(1, 2).reshape(b, c, h, w)


class TorchUNet(nn.Module):
    """Mirror of ``models.unet.UNet`` (modules are created in the flax call order)."""

    def __init__(self, in_channels: int = 8, channels: Sequence[int] = (64, 128, 256),
                 num_res_blocks: int = 2, attn_resolutions: Sequence[int] = (),
                 num_heads: int = 4, num_classes: int = 2, dropout: float = 0.0,
                 norm_groups: int = 32, resolution: int = 32) -> None:  # fmt: skip
        super().__init__()
        self.channels, self.num_res_blocks = tuple(channels), num_res_blocks
        self.attn_resolutions = tuple(attn_resolutions)
        ch0 = channels[0]
        emb = 4 * ch0
        self.ch0 = ch0
        self.time_dense0 = nn.Linear(ch0, emb)
        self.time_dense1 = nn.Linear(emb, emb)
        self.class_embed = nn.Embedding(num_classes + 1, emb)
        self.conv_in = nn.Conv2d(in_channels, ch0, 3, 1, 1)
        res, attn, down, up = [], [], [], []
        skip_ch = [ch0]
        cur, size = ch0, resolution
        for level, ch in enumerate(channels):
            for _ in range(num_res_blocks):
                res.append(TorchResBlock(cur, ch, emb, dropout, norm_groups))
                cur = ch
                if size in self.attn_resolutions:
                    attn.append(TorchAttention(ch, num_heads, norm_groups))
                skip_ch.append(ch)
            if level != len(channels) - 1:
                down.append(nn.Conv2d(ch, ch, 3, 2, 1))
                size //= 2
                skip_ch.append(ch)
        res.append(TorchResBlock(cur, cur, emb, dropout, norm_groups))
        attn.append(TorchAttention(cur, num_heads, norm_groups))
        res.append(TorchResBlock(cur, cur, emb, dropout, norm_groups))
        for level, ch in reversed(list(enumerate(channels))):
            for _ in range(num_res_blocks + 1):
                res.append(TorchResBlock(cur + skip_ch.pop(), ch, emb, dropout, norm_groups))
                cur = ch
                if size in self.attn_resolutions:
                    attn.append(TorchAttention(ch, num_heads, norm_groups))
            if level != 0:
                up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                        nn.Conv2d(ch, ch, 3, 1, 1)))  # fmt: skip
                size *= 2
        self.res, self.attn = nn.ModuleList(res), nn.ModuleList(attn)
        self.down, self.up = nn.ModuleList(down), nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(norm_groups, cur, eps=1e-5)
        self.conv_out = nn.Conv2d(cur, in_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W), t (B,), y (B,) int64. Returns: (B, C, H, W)."""
        emb = self.time_dense1(F.silu(self.time_dense0(timestep_embedding(t, self.ch0))))
        emb = emb + self.class_embed(y)
        res, attn, down, up = (iter(m) for m in (self.res, self.attn, self.down, self.up))
        h = self.conv_in(x)
        skips = [h]
        size = x.shape[-1]
        for level in range(len(self.channels)):
            for _ in range(self.num_res_blocks):
                h = next(res)(h, emb)
                if size in self.attn_resolutions:
                    h = next(attn)(h)
                skips.append(h)
            if level != len(self.channels) - 1:
                h = next(down)(h)
                size //= 2
                skips.append(h)
        h = next(res)(h, emb)
        h = next(attn)(h)
        h = next(res)(h, emb)
        for level in reversed(range(len(self.channels))):
            for _ in range(self.num_res_blocks + 1):
                h = next(res)(torch.cat([h, skips.pop()], dim=1), emb)
                if size in self.attn_resolutions:
                    h = next(attn)(h)
            if level != 0:
                h = next(up)(h)
                size *= 2
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------
# Weight copy flax -> torch.
# ---------------------------------------------------------------------------------------------


def _t(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _set(mod: nn.Module, **tensors: torch.Tensor) -> None:
    for name, value in tensors.items():
        param = getattr(mod, name)
        if tuple(param.shape) != tuple(value.shape):
            raise ValueError(f"{mod}: {name} shape {tuple(param.shape)} != {tuple(value.shape)}")
        with torch.no_grad():
            param.copy_(value)


def _conv(mod: nn.Conv2d, p: Mapping[str, Any]) -> None:
    _set(mod, weight=_t(p["kernel"]).permute(3, 2, 0, 1), bias=_t(p["bias"]))


def _conv_t(mod: nn.ConvTranspose2d, p: Mapping[str, Any]) -> None:
    # Our transposed-conv kernel is (4, 4, Cin, Cout) in scatter form = torch w.permute(2,3,0,1).
    _set(mod, weight=_t(p["kernel"]).permute(2, 3, 0, 1), bias=_t(p["bias"]))


def _norm(mod: nn.GroupNorm, p: Mapping[str, Any]) -> None:
    _set(mod, weight=_t(p["scale"]), bias=_t(p["bias"]))


def _dense(mod: nn.Linear, p: Mapping[str, Any]) -> None:
    _set(mod, weight=_t(p["kernel"]).T, bias=_t(p["bias"]))


def _sorted(p: Mapping[str, Any], prefix: str) -> list[Any]:
    keys = [k for k in p if k.startswith(prefix + "_")]
    return [p[k] for k in sorted(keys, key=lambda k: int(k.rsplit("_", 1)[1]))]


def load_flax_vae(model: TorchVAE, params: Mapping[str, Any]) -> TorchVAE:
    """Copies ``VAE`` params (``{'params': ...}`` or the inner dict) into ``model``.

    Args:
      model: a ``TorchVAE`` built with the same settings.
      params: flax parameters of ``models.vae.VAE``.

    Returns:
      ``model`` (modified in place).
    """
    p = params.get("params", params)
    enc, dec = p["encoder"], p["decoder"]
    convs = [m for m in model.encoder.conv if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.encoder.conv if isinstance(m, nn.GroupNorm)]
    for m, q in zip(convs, _sorted(enc, "Conv4x4S2"), strict=True):
        _conv(m, q)
    for m, q in zip(norms, _sorted(enc, "GroupNorm"), strict=True):
        _norm(m, q)
    _conv(model.encoder.mean, enc["mean"])
    _conv(model.encoder.logvar, enc["logvar"])
    convs_t = [m for m in model.decoder.deconv if isinstance(m, nn.ConvTranspose2d)]
    norms = [m for m in model.decoder.deconv if isinstance(m, nn.GroupNorm)]
    for m, q in zip(convs_t, _sorted(dec, "ConvTranspose4x4S2"), strict=True):
        _conv_t(m, q)
    for m, q in zip(norms, _sorted(dec, "GroupNorm"), strict=True):
        _norm(m, q)
    _conv(model.decoder.deconv[-2], dec["out"])
    return model


def load_flax_unet(model: TorchUNet, params: Mapping[str, Any]) -> TorchUNet:
    """Copies ``UNet`` params (``{'params': ...}`` or the inner dict) into ``model``.

    Args:
      model: a ``TorchUNet`` built with the same settings.
      params: flax parameters of ``models.unet.UNet``.

    Returns:
      ``model`` (modified in place).
    """
    p = params.get("params", params)
    _dense(model.time_dense0, p["time_dense0"])
    _dense(model.time_dense1, p["time_dense1"])
    _set(model.class_embed, weight=_t(p["class_embed"]["embedding"]))
    _conv(model.conv_in, p["conv_in"])
    for m, q in zip(model.res, _sorted(p, "ResBlock"), strict=True):
        _norm(m.norm0, q["GroupNorm_0"])
        _conv(m.conv0, q["Conv_0"])
        _dense(m.dense, q["Dense_0"])
        _norm(m.norm1, q["GroupNorm_1"])
        _conv(m.conv1, q["Conv_1"])
        if m.skip is not None:
            _conv(m.skip, q["skip"])
    for m, q in zip(model.attn, _sorted(p, "AttentionBlock"), strict=True):
        _norm(m.norm, q["GroupNorm_0"])
        _dense(m.qkv, q["qkv"])
        _dense(m.proj, q["proj"])
    for m, q in zip(model.down, _sorted(p, "Downsample"), strict=True):
        _conv(m, q)
    for m, q in zip(model.up, _sorted(p, "Upsample"), strict=True):
        _conv(m[1], q)
    _norm(model.norm_out, p["norm_out"])
    _conv(model.conv_out, p["conv_out"])
    return model


def num_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
