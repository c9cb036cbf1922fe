"""Default `config.data` block shared by every stage's config file (configs/*.py)."""

from __future__ import annotations

import ml_collections


def get_data_config() -> ml_collections.ConfigDict:
    """Returns the data settings; every field can be overridden with --config.data.X=...

    Returns:
      A ConfigDict; see the comment on each field.
    """
    c = ml_collections.ConfigDict()
    c.source = "auto"  # auto | builtin | folder | nifti | tfds ('auto': builtin if path is empty)
    c.path = ""  # image folder root, NIfTI CSV (path,label), or TFDS data_dir; '' = built-in set
    c.image_size = 256  # side of the square slices after bilinear resize (paper: 256)
    c.classes = "binary"  # binary: normal vs tumour (paper) | folders: one class per folder
    c.class_map = ""  # folder name -> label overrides, e.g. "neg=0,pos=1" ('' = defaults)
    c.cache_dir = ""  # preprocessed-array cache; '' = $XDG_CACHE_HOME/jax_mri_ldm or ~/.cache/...

    c.builtin = ml_collections.ConfigDict()
    c.builtin.num_normal = 170  # normal (label 0) slices of the built-in phantom set (paper: 170)
    c.builtin.num_tumour = 230  # tumour (label 1) slices of the built-in phantom set (paper: 230)
    c.builtin.seed = 0  # generator seed: same seed -> same bytes
    c.builtin.types = False  # True: num_tumour split into glioma/meningioma/pituitary (4 classes)

    c.nifti = ml_collections.ConfigDict()
    c.nifti.slice_range = ""  # axial slice indices "a:b" ('' = use slice_fraction)
    c.nifti.slice_fraction = 0.5  # central fraction of axial slices kept when no range is given
    c.nifti.min_foreground = 0.05  # skip slices whose non-background fraction is below this

    c.tfds_name = "brain_mri"  # TFDS builder name when source = tfds

    c.split = ml_collections.ConfigDict()
    c.split.train = 0.8  # stratified train fraction
    c.split.val = 0.1  # stratified validation fraction (test gets the rest)
    c.split.seed = 0  # split seed; duplicate groups always share a split
    # Correlation of 32x32 thumbnails (as is or mirrored) at which two files are one slice and
    # share a split like identical files do (docs/data.md has the calibration); <= 0: off.
    c.split.near_duplicate_threshold = 0.99

    c.augment = ml_collections.ConfigDict()
    c.augment.enabled = True  # online augmentation for training batches (off for evaluation)
    c.augment.flip = True  # random horizontal flip, p = 0.5
    c.augment.max_degrees = 10.0  # rotation drawn uniformly in [-max, max] degrees, bilinear
    c.augment.contrast = 0.1  # contrast jitter: intensities scaled about the mean by 1 +- this
    return c
