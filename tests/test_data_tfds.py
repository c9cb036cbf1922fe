"""TFDS builder `brain_mri`: build on a tiny folder, read back via tfds.data_source (no TF)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from jax_mri_ldm.data import tfds_builder  # noqa: E402  (registers 'brain_mri')
from jax_mri_ldm.data.config import get_data_config  # noqa: E402
from jax_mri_ldm.data.sources import load_imageset, load_imageset_with_report  # noqa: E402
from jax_mri_ldm.data.types import DataError  # noqa: E402


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in (("no", 3), ("yes", 4)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = (rng.random((40, 36, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"img {i}.png")
    (root / "yes" / "bad.jpg").write_bytes(b"not a jpeg")
    (root / "yes" / "copy.png").write_bytes((root / "yes" / "img 0.png").read_bytes())
    return root


def _cfg(path, tmp_path, size=32):
    c = get_data_config()
    c.path = str(path)
    c.image_size = size
    c.cache_dir = str(tmp_path / "cache")
    return c


def test_build_and_read_back_without_tensorflow(tmp_path):
    manual = _folder(tmp_path / "images")
    data_dir = tmp_path / "tfds"
    builder = tfds_builder.build(manual, data_dir, image_size=32)
    assert builder.info.splits["train"].num_examples == 8  # bad.jpg skipped
    assert (data_dir / "brain_mri" / "32px" / "1.0.0").is_dir()
    assert list((data_dir / "brain_mri" / "32px" / "1.0.0").glob("*.array_record-*"))

    src = tfds.data_source("brain_mri/32px", data_dir=str(data_dir), split="train")
    assert len(src) == 8
    ex = src[0]
    assert ex["image"].shape == (32, 32, 1) and ex["image"].dtype == np.uint8
    assert ex["image"].min() == 0 and ex["image"].max() == 255
    ids = sorted(src[i]["id"].decode() for i in range(len(src)))
    assert ids[0] == "no/img 0.png" and "yes/copy.png" in ids and "yes/bad.jpg" not in ids
    feats = src.dataset_info.features
    assert feats["label"].names == ["normal", "tumour"]
    assert "tensorflow" not in sys.modules

    # The training source reads the same data; it matches the folder reader up to uint8 rounding.
    ds_tfds, report = load_imageset_with_report(_cfg(data_dir, tmp_path))
    assert report["source"] == "tfds"
    ds_folder = load_imageset(_cfg(manual, tmp_path))
    assert ds_tfds.ids == ds_folder.ids
    np.testing.assert_array_equal(ds_tfds.labels, ds_folder.labels)
    np.testing.assert_array_equal(ds_tfds.groups, ds_folder.groups)  # sha256 feature kept
    assert np.abs(ds_tfds.images - ds_folder.images).max() <= 0.5 / 255 + 1e-6


def test_data_source_builds_with_manual_dir(tmp_path):
    manual = _folder(tmp_path / "images")
    src = tfds.data_source(
        "brain_mri/32px",
        data_dir=str(tmp_path / "tfds"),
        split="train",
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=str(manual))
        },
    )
    assert len(src) == 8
    assert src[3]["image"].shape == (32, 32, 1)


def test_custom_class_map_config_and_missing_size(tmp_path):
    root = tmp_path / "images"
    for cls in ("neg", "pos"):
        (root / cls).mkdir(parents=True)
        arr = (np.random.default_rng(1).random((20, 20)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / cls / "a.png")
    with pytest.raises(DataError, match="class_map"):
        tfds_builder.build(root, tmp_path / "tfds", image_size=16)
    b = tfds_builder.build(root, tmp_path / "tfds", image_size=16, class_map="neg=0,pos=1")
    assert b.builder_config.name.startswith("16px-")
    ds = load_imageset(_cfg(tmp_path / "tfds", tmp_path, size=16))
    assert ds.ids == ["neg/a.png", "pos/a.png"] and ds.labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="no prepared TFDS dataset"):
        c = _cfg(tmp_path / "tfds", tmp_path, size=16)
        c.source, c.tfds_name = "tfds", "other_name"
        load_imageset(c)
