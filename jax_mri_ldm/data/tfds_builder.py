"""TFDS dataset builder `brain_mri` over the image-folder layout, written without TensorFlow.

The builder reads `<manual_dir>/<class_dir>/<images>` with the folder reader (same class map,
same skip rules, same preprocessing as `folders.py`) and writes one `train` split of
`array_record` files. Features:

- `image`: `Tensor(shape=(S, S, 1), dtype=uint8)`, the preprocessed slice rounded to uint8.
- `label`: `ClassLabel(names=CLASS_NAMES)`.
- `id`: `Text`, "<class_dir>/<file name>".
- `sha256`: `Text`, the source file's content hash (keeps exact duplicates groupable).

Why these choices: with tensorflow-datasets 4.9.10 and no TensorFlow installed, building and
random access work for `Tensor`/`ClassLabel`/`Text` features in the `array_record` format
through `tfds.data_source`; `tfds.features.Image`, the `tfrecord` format and `as_dataset` all
import TensorFlow. The builder therefore defaults to `file_format='array_record'` (also when
`tfds.data_source` constructs it), so the TensorFlow-free path is the default path.

Configs: `256px` (default), `128px`, `64px`, `32px` (image side, default class map). Any other
size or a custom class map: `BrainMriConfig(name=..., image_size=..., class_map=...)`, or call
`build(...)`, which names the config `<size>px` or `<size>px-<hash of the class map>`.

Usage (importing this module registers the builder):

    import tensorflow_datasets as tfds
    from jax_mri_ldm.data import tfds_builder  # registers 'brain_mri'

    ds = tfds.data_source(
        "brain_mri/64px", data_dir="~/tfds", split="train",
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir="/data/brain_tumor")},
    )
    ex = ds[0]  # {'image': uint8 (64, 64, 1), 'label': int, 'id': bytes, 'sha256': bytes}

or `tfds_builder.build(manual_dir, data_dir, image_size=64)` then the same `tfds.data_source`
call (no manual_dir needed once prepared). Training reads it with `config.data.source=tfds`,
`config.data.path=<data_dir>` (see `sources.py`), picking the prepared config whose image
side equals `config.data.image_size`. The data doctor builds it with `--build_tfds=DATA_DIR`.

Files the folder reader would skip (corrupt, too small, constant, non-image) are left out of
the dataset with a logged warning; run the data doctor on the folder for the full list.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jax_mri_ldm import CLASS_NAMES
from jax_mri_ldm.data import folders, preprocess
from jax_mri_ldm.data.types import DataError

log = logging.getLogger(__name__)

DEFAULT_SIZES = (256, 128, 64, 32)


class BrainMriConfig(tfds.core.BuilderConfig):
    """Builder config: output image side and folder class map."""

    def __init__(self, *, image_size: int = 256, class_map: str = "", **kwargs: Any) -> None:
        """Initialises the config.

        Args:
          image_size: side of the stored square uint8 images.
          class_map: folder-name overrides, as config.data.class_map.
          **kwargs: name, version, description, ... for tfds.core.BuilderConfig.
        """
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.class_map = class_map


def config_name(image_size: int, class_map: str = "") -> str:
    """Config name used by `build`: '<size>px', plus '-<hash>' for a custom class map."""
    if not class_map.strip():
        return f"{int(image_size)}px"
    return f"{int(image_size)}px-{hashlib.sha256(class_map.encode()).hexdigest()[:8]}"


class BrainMri(tfds.core.GeneratorBasedBuilder):
    """Labelled 2D brain MRI slices from an image-folder tree given as `manual_dir`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass the image folder as manual_dir: <manual_dir>/<class_dir>/<image files>, class "
        "directories named no/normal/notumor/healthy (label 0) or yes/tumor/tumour/glioma/"
        "meningioma/pituitary (label 1), e.g. the Kaggle 'brain_tumor_yes_no' folder."
    )
    BUILDER_CONFIGS = [
        BrainMriConfig(name=config_name(s), image_size=s, description=f"{s}x{s} uint8 slices")
        for s in DEFAULT_SIZES
    ]
    DEFAULT_BUILDER_CONFIG_NAME = config_name(256)

    def __init__(self, *, file_format: str | None = None, **kwargs: Any) -> None:
        """Like GeneratorBasedBuilder, but defaults to array_record (the TF-free format)."""
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=(
                "2D brain MRI slices, grayscale, bilinear-resized and min-max normalised as "
                "in jax_mri_ldm.data.preprocess, stored as uint8."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(s, s, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                    "id": tfds.features.Text(),
                    "sha256": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        scan = folders.scan_folder(Path(dl_manager.manual_dir), self.builder_config.class_map)
        return {"train": self._generate_examples(scan)}

    def _generate_examples(self, scan: folders.FolderScan):  # type: ignore[override]
        for e in scan.entries:
            try:
                img = folders.decode_image(e.path)
                arr = preprocess.preprocess_pil(img, self.builder_config.image_size)
            except preprocess.RejectedImage as err:
                log.warning("brain_mri: skipping %s: %s", e.path, err)
                continue
            yield (
                e.id,
                {
                    "image": preprocess.to_uint8(arr),  # (S, S, 1) uint8
                    "label": e.label,
                    "id": e.id,
                    "sha256": e.sha256,
                },
            )


def build(
    manual_dir: str | Path, data_dir: str | Path, image_size: int = 256, class_map: str = ""
) -> BrainMri:
    """Builds (or reuses, when already prepared) `brain_mri` in array_record format.

    Args:
      manual_dir: image-folder root (<manual_dir>/<class_dir>/<images>).
      data_dir: TFDS data_dir to write into (<data_dir>/brain_mri/<config>/1.0.0/).
      image_size: image side of the stored slices.
      class_map: config.data.class_map overrides.

    Returns:
      The prepared builder; read it with `builder.as_data_source()` or `tfds.data_source`.

    Raises:
      DataError: the folder is unusable (same checks as the folder reader).
    """
    manual_dir = Path(manual_dir).expanduser()
    # Fail with the folder reader's clear messages before TFDS wraps them in its own.
    folders.scan_folder(manual_dir, class_map)
    name = config_name(image_size, class_map)
    known = {c.name for c in BrainMri.BUILDER_CONFIGS}
    config: str | BrainMriConfig = (
        name
        if name in known
        else BrainMriConfig(name=name, image_size=image_size, class_map=class_map)
    )
    builder = BrainMri(data_dir=str(Path(data_dir).expanduser()), config=config)
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        )
    except AssertionError as e:  # TFDS's manual_dir checks
        raise DataError(f"{manual_dir}: {e}") from e
    return builder
