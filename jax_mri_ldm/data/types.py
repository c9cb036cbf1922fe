"""Plain containers shared by the data sources, the pipeline and the training stages."""

from __future__ import annotations

import dataclasses

import numpy as np

from jax_mri_ldm.errors import UserError


class DataError(UserError):
    """Bad user input (missing directory, corrupt file, ...).

    The message names the file or option and says what to do; CLIs print it and exit 2
    (a `UserError`, so the entry points treat it like every other user error).
    """


@dataclasses.dataclass
class ImageSet:
    """A preprocessed, labelled set of 2D slices held in host memory.

    Attributes:
      images: (N, H, W, 1) float32 in [0, 1] (min-max per image).
      labels: (N,) int32 label ids into class_names (binary mode: 0 = normal, 1 = tumour).
      class_names: label id -> name; K = len(class_names) classes (see `classes.py`).
      ids: (N,) stable identifiers (relative file path, or "builtin/000123").
      groups: (N,) int64 duplicate-group ids: images with identical source bytes share one,
        so splits can keep exact duplicates together.
      fingerprint: hex digest of the source files and preprocessing settings.
      skipped: (path, reason) for every file that was found but not used.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ids: list[str]
    groups: np.ndarray
    fingerprint: str
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> ImageSet:
        """Returns the rows `indices` as a new ImageSet (same class names, fingerprint)."""
        indices = np.asarray(indices)
        return ImageSet(
            images=self.images[indices],
            labels=self.labels[indices],
            class_names=self.class_names,
            ids=[self.ids[i] for i in indices],
            groups=self.groups[indices],
            fingerprint=self.fingerprint,
            skipped=list(self.skipped),
        )

    def counts(self) -> dict[str, int]:
        """Class name -> number of images."""
        return {name: int(np.sum(self.labels == i)) for i, name in enumerate(self.class_names)}
