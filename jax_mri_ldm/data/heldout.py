"""Fresh held-out slices of the built-in generator: a better-powered memorisation threshold.

The memorisation rules flag a synthetic image that is closer to the training set than every
one of n held-out images. For an honest new image, drawn like the held-out ones, that happens
with probability 1/(n+1) (the n+1 images are exchangeable), so a threshold set by a test
split of tens of slices flags a few per cent of honest images by itself, above the <= 1 % a
user asks of a sample set: the rule cannot then tell a generator that copies from one that
draws new slices exactly as close as real ones. The binary built-in set can draw as many new
slices as asked (slice k of a class comes from its own seed), so the slices after the main
set's and after any generated extra training slices are new: never trained on by the VAE or
the diffusion model, never in a split. Near-copies of any main-set or generator-training
slice are dropped, as the split keeps near-duplicates out of the test split. A real data set
has no such source; its thresholds use the test split alone.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jax_mri_ldm.data import extra as extra_lib
from jax_mri_ldm.data.types import ImageSet
from jax_mri_ldm.errors import UserError

ID_PREFIX = "heldout:"  # marks the fresh slices' ids


def calibration_slices(
    meta: dict[str, Any], ds: ImageSet, seen: ImageSet, per_class: int
) -> ImageSet | None:
    """`per_class` fresh built-in slices per class, or None when the run's data cannot draw them.

    Args:
      meta: the diffusion run's metadata (`vae.data` and its `config.extra_train`).
      ds: the main data set (every split); seen: every image the generator trained on.
      per_class: slices per class to draw (0 = none).

    Returns:
      The fresh slices less near-copies of `ds` and `seen`, or None for per_class 0, a data
      path or the 4-class phantoms.
    """
    if per_class < 0:
        raise UserError(
            f"config.memorisation_calibration_per_class={per_class} must be >= 0 (0 = none)."
        )
    data_cfg = ml_collections.ConfigDict(meta["vae"]["data"])
    if per_class == 0 or not extra_lib.draws_new_slices(data_cfg):
        return None
    extra_cfg = ml_collections.ConfigDict(meta.get("config", {}).get("extra_train") or {})
    skip = extra_lib.builtin_per_class(extra_cfg, data_cfg)  # the extra training slices
    fresh = extra_lib.generated_slices(per_class, data_cfg, skip)
    known = extra_lib.join(ds, seen)  # main set then generator training images
    fresh, _ = extra_lib.drop_near_copies(fresh, known, extra_lib.near_copy_threshold(data_cfg))
    fresh.ids = [ID_PREFIX + i for i in fresh.ids]
    return fresh if len(fresh) else None
