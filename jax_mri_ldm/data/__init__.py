"""Data: readers (built-in phantom, image folders, NIfTI, TFDS), preprocessing, cache,
splits, balanced batches and on-device augmentation. Knows nothing of models.

Typical use by a training stage:

    ds = data.load_imageset(config.data)                      # ImageSet, cached on disk
    split = data.split_indices(ds, **config.data.split)      # stratified, duplicate-aware
    data.save_split(workdir / "split.json", ds, split)
    train = ds.subset(split["train"])
    sampler = data.BalancedSampler(train.labels, batch_size, seed)
    x, y = sampler.batch(step, train.images)                  # host arrays
    x = augment_from_config(rng, x, config.data.augment)      # jitted, on device

Classes: `config.data.classes` is 'binary' (normal vs tumour, the paper) or 'folders' (one
class per folder, `normal` first); `ds.class_names` is the truth for K everywhere downstream.
`canonical_class_name` / `SYNONYMS` resolve user-typed names (`no`, `notumor`, `healthy` ->
`normal`) and `check_class_name` admits only names that are safe as a directory name.

Augmentation lives in `jax_mri_ldm.data.augment` (`from jax_mri_ldm.data.augment import
augment, augment_from_config`); it is not re-exported here so that importing the readers and
running the data doctor does not import JAX (and the function does not shadow its module).
"""

from __future__ import annotations

from jax_mri_ldm.data.batches import BalancedSampler, eval_batches
from jax_mri_ldm.data.classes import (
    CLASS_MODES,
    SYNONYMS,
    canonical_class_name,
    check_class_name,
    class_order,
)
from jax_mri_ldm.data.config import get_data_config
from jax_mri_ldm.data.extra import generator_train_set, load_extra_train
from jax_mri_ldm.data.extra import join as join_extra
from jax_mri_ldm.data.heldout import calibration_slices
from jax_mri_ldm.data.sources import (
    check_classes,
    load_imageset,
    load_imageset_with_report,
    resolve_source,
)
from jax_mri_ldm.data.splits import (
    load_split,
    save_split,
    saved_or_new_split,
    split_indices,
    split_problems,
)
from jax_mri_ldm.data.types import DataError, ImageSet

__all__ = [
    "CLASS_MODES",
    "SYNONYMS",
    "BalancedSampler",
    "DataError",
    "ImageSet",
    "calibration_slices",
    "canonical_class_name",
    "check_class_name",
    "check_classes",
    "class_order",
    "eval_batches",
    "generator_train_set",
    "get_data_config",
    "join_extra",
    "load_extra_train",
    "load_imageset",
    "load_imageset_with_report",
    "load_split",
    "resolve_source",
    "save_split",
    "saved_or_new_split",
    "split_indices",
    "split_problems",
]
