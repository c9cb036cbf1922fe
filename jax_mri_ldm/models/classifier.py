"""Small CNN that tells normal from tumour slices; its pooled features give the "domain FID".

The network first resizes its input to ``input_size`` x ``input_size`` (bilinear, antialiased,
via jax.image.resize) so that 256 px slices train quickly on a CPU: at 64 px a forward pass is
16x cheaper than at 256 px, and a normal/tumour decision survives the downsampling far better
than the fine texture a generator is judged on. Pass ``input_size=None`` to use images as given.
Callers that evaluate many times can resize once up front; inputs already at ``input_size`` skip
the resize.

Layout: a 3x3 stem, then one block per entry of ``widths`` (3x3 stride-2 conv, 3x3 conv, each
followed by GroupNorm and ReLU), global average pooling to (B, widths[-1]) "features", optional
dropout, and a dense layer to ``num_classes`` logits. GroupNorm instead of BatchNorm keeps the
model free of mutable batch statistics, so train and eval behave the same and a single
``params`` tree is all there is to save.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class ClassifierCNN(nn.Module):
    """Normal-vs-tumour CNN on (B, H, W, 1) images in [0, 1].

    Attributes:
      num_classes: number of output logits.
      widths: channels of each downsampling block (the last one is the feature dimension).
      input_size: side length the input is resized to; None = no resize.
      num_groups: GroupNorm groups (reduced to gcd(num_groups, channels) where needed).
      dropout_rate: dropout on the pooled features when train=True (needs a 'dropout' rng).
    """

    num_classes: int = 2
    widths: tuple[int, ...] = (16, 32, 64, 128)
    input_size: int | None = 64
    num_groups: int = 8
    dropout_rate: float = 0.0

    def _conv_norm_act(self, h: jnp.ndarray, width: int, stride: int) -> jnp.ndarray:
        h = nn.Conv(width, (3, 3), strides=(stride, stride), padding="SAME")(h)
        h = nn.GroupNorm(num_groups=math.gcd(self.num_groups, width))(h)
        return nn.relu(h)

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = False, return_features: bool = False
    ) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
        """Classifies a batch.

        Args:
          x: (B, H, W, C) images in [0, 1].
          train: enables dropout (when dropout_rate > 0).
          return_features: also return the pooled penultimate features.

        Returns:
          logits (B, num_classes), or (logits, features (B, widths[-1])) if return_features.
        """
        if x.ndim != 4:
            raise ValueError(f"ClassifierCNN expects (B, H, W, C) input; got shape {x.shape}.")
        b, h, w, c = x.shape
        s = self.input_size
        if s is not None and (h, w) != (s, s):
            x = jax.image.resize(x, (b, s, s, c), "linear", antialias=True)  # (B, s, s, C)
        h = 2.0 * x - 1.0  # centre [0, 1] intensities
        h = self._conv_norm_act(h, self.widths[0], 1)
        for width in self.widths:
            h = self._conv_norm_act(h, width, 2)  # halves H and W
            h = self._conv_norm_act(h, width, 1)
        feats = jnp.mean(h, axis=(1, 2))  # (B, D)
        z = nn.Dropout(self.dropout_rate, deterministic=not train)(feats)
        logits = nn.Dense(self.num_classes)(z)  # (B, num_classes)
        if return_features:
            return logits, feats
        return logits
