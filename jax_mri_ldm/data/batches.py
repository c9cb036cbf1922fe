"""Class-balanced training batches (a pure function of seed and step) and padded eval batches.

`BalancedSampler` draws every class equally often, as the paper does to counter the
170 normal / 230 tumour skew, for any number of classes K. Each class has its own endless
stream of indices: the stream is cut into "class-epochs", and class-epoch `k` of class `c` is
the permutation `np.random.default_rng([seed, c, k]).permutation(n_c)` of that class's
examples. Global batch `step` takes the next m = batch_size // K positions of every class's
stream, so the minority class is simply cycled through faster. When K does not divide the
batch size, the r = batch_size % K remaining slots go to classes (step * r + j) % K,
j < r: every K steps each class gets exactly r extra examples, so the shares are equal over
any K consecutive steps. Nothing depends on earlier calls: a run resumed at step s sees
exactly the batches an uninterrupted run sees.

Within a batch the classes are interleaved (c0, c1, ..., c0, c1, ...), the extra slots last.
With several hosts, each process takes its contiguous slice of the global batch
(`process_index`), so every host's slice is itself balanced whenever the local batch size is
a multiple of the class count.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from jax_mri_ldm.errors import UserError


class BalancedSampler:
    """Equal counts per class in every batch; `indices(step)` is a pure function of (seed, step).

    Attributes:
      num_classes: number of classes (labels are 0..num_classes-1).
      batch_size: global batch size.
      per_class: examples of each class per batch (batch_size // num_classes).
      extra: batch_size % num_classes slots per batch that rotate over the classes.
      steps_per_epoch: ceil(N / batch_size), N = number of labels.
    """

    def __init__(
        self, labels: np.ndarray, batch_size: int, seed: int, num_classes: int | None = None
    ) -> None:
        """Initialises the sampler.

        Args:
          labels: (N,) integer labels.
          batch_size: global batch size (> 0); a multiple of num_classes gives every class
            the same count in every batch, any other size equal counts over num_classes steps.
          seed: sampling seed.
          num_classes: defaults to max(label) + 1 (pass len(class_names)); every class needs
            at least one example.

        Raises:
          ValueError: empty labels, a class without examples, or a batch size below 1.
        """
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(
                f"BalancedSampler needs a non-empty 1D label array, got {labels.shape}"
            )
        self.num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
        if batch_size <= 0:
            raise UserError(f"batch_size={batch_size} must be positive")
        self.class_indices = [np.flatnonzero(labels == c) for c in range(self.num_classes)]
        empty = [c for c, idx in enumerate(self.class_indices) if idx.size == 0]
        if empty:
            raise UserError(
                f"BalancedSampler: class id(s) {empty} of {self.num_classes} have no training "
                f"examples; cannot balance batches (the data doctor, python -m jax_mri_ldm.data, "
                f"shows the images per class and split)"
            )
        self.labels = labels
        self.batch_size = int(batch_size)
        self.per_class = self.batch_size // self.num_classes
        self.extra = self.batch_size % self.num_classes
        self.seed = int(seed)
        self.steps_per_epoch = math.ceil(labels.size / self.batch_size)
        self._perms: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def _perm(self, c: int, cycle: int) -> np.ndarray:
        key = (c, cycle)
        perm = self._perms.get(key)
        if perm is None:
            n = self.class_indices[c].size
            perm = np.random.default_rng([self.seed, c, cycle]).permutation(n)
            self._perms[key] = perm
            if len(self._perms) > 8 * self.num_classes:  # small LRU: steps move forward
                self._perms.popitem(last=False)
        else:
            self._perms.move_to_end(key)
        return perm

    def _extras_before(self, c: int, step: int) -> int:
        """Extra slots class c received in steps [0, step): rotating slots < step * extra."""
        return max(0, -(-(step * self.extra - c) // self.num_classes))

    def _count(self, c: int, step: int) -> int:
        """Examples of class c in batch `step`."""
        return self.per_class + self._extras_before(c, step + 1) - self._extras_before(c, step)

    def _class_positions(self, c: int, step: int) -> np.ndarray:
        n = self.class_indices[c].size
        start = step * self.per_class + self._extras_before(c, step)
        count = self._count(c, step)
        pos = np.arange(start, start + count, dtype=np.int64)
        cycles, offsets = np.divmod(pos, n)
        out = np.empty(count, np.int64)
        for cyc in np.unique(cycles):  # a batch spans at most a few class-epochs
            sel = cycles == cyc
            out[sel] = self.class_indices[c][self._perm(c, int(cyc))[offsets[sel]]]
        return out

    def indices(self, step: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """Example indices of batch `step` (this process's slice of it).

        Args:
          step: global step, >= 0.
          process_index: this host's index (jax.process_index()).
          process_count: number of hosts (jax.process_count()); must divide batch_size.

        Returns:
          (batch_size // process_count,) int64 indices into the label array.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if process_count <= 0 or self.batch_size % process_count:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by process_count={process_count}"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        per = [self._class_positions(c, step) for c in range(self.num_classes)]
        m = self.per_class
        batch = np.stack([p[:m] for p in per], axis=1).reshape(-1)  # (K * m,) c0, c1, ...
        batch = np.concatenate([batch, *(p[m:] for p in per)])  # + extras: (batch_size,)
        local = self.batch_size // process_count
        return batch[process_index * local : (process_index + 1) * local]

    def batch(
        self,
        step: int,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        process_index: int = 0,
        process_count: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gathers batch `step` from the arrays.

        Args:
          step: global step.
          images: (N, H, W, C) array aligned with the sampler's labels.
          labels: (N,) labels; defaults to the ones the sampler was built with.
          process_index: this host's index.
          process_count: number of hosts.

        Returns:
          images (B, H, W, C) and labels (B,) int32 for this process.
        """
        idx = self.indices(step, process_index, process_count)
        labels = self.labels if labels is None else labels
        return images[idx], np.asarray(labels)[idx].astype(np.int32)


def eval_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Ordered, non-augmented batches covering every example exactly once.

    The last batch is padded with zeros (label 0) to the full batch size, so a jitted eval
    step compiles once; `mask` marks the real examples. Weighted means use the mask.

    Args:
      images: (N, H, W, C) array.
      labels: (N,) labels.
      batch_size: batch size (> 0).

    Yields:
      images (B, H, W, C), labels (B,) int32, mask (B,) bool.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = int(labels.shape[0])
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        x = images[start:stop]
        y = np.asarray(labels[start:stop], np.int32)
        mask = np.ones(stop - start, bool)
        pad = batch_size - (stop - start)
        if pad:
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros(pad, np.int32)])
            mask = np.concatenate([mask, np.zeros(pad, bool)])
        yield x, y, mask
