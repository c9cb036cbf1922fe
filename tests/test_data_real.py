"""The real Kaggle yes/no set in ../shared/data (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jax_mri_ldm.data.config import get_data_config
from jax_mri_ldm.data.sources import load_imageset_with_report
from jax_mri_ldm.data.splits import split_indices

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain_tumor_yes_no"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not present")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    cfg = get_data_config()
    cfg.path = str(REAL)
    cfg.image_size = 32
    cfg.cache_dir = str(tmp_path_factory.mktemp("cache"))
    return load_imageset_with_report(cfg)


def test_counts_range_and_modes(real):
    ds, report = real
    # All 253 files decode and none is tiny or constant, so nothing is skipped.
    assert len(ds) == 253 and ds.skipped == []
    assert ds.counts() == {"normal": 98, "tumour": 155}
    assert ds.images.shape == (253, 32, 32, 1) and ds.images.dtype == np.float32
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0
    per_image = ds.images.reshape(253, -1)
    np.testing.assert_allclose(per_image.min(1), 0.0)
    np.testing.assert_allclose(per_image.max(1), 1.0)
    assert "no/1 no.jpeg" in ds.ids and "yes/Y156.JPG" in ds.ids  # spaces, upper-case ext
    modes = [v["mode"] for v in report["files"].values()]
    assert {m: modes.count(m) for m in set(modes)} == {"L": 30, "RGB": 217, "RGBA": 5, "P": 1}


def test_duplicate_groups(real):
    ds, _ = real
    _, sizes = np.unique(ds.groups, return_counts=True)
    assert len(sizes) == 228  # 253 files - 25 redundant copies
    assert int(np.sum(sizes > 1)) == 22 and sorted(sizes[sizes > 1])[-2:] == [3, 4]
    g = dict(zip(ds.ids, ds.groups.tolist(), strict=True))
    assert g["no/1 no.jpeg"] == g["no/no 94.jpg"]
    assert g["yes/Y30.jpg"] == g["yes/Y38.jpg"] == g["yes/Y54.jpg"] == g["yes/Y70.jpg"]
    assert g["no/1 no.jpeg"] != g["no/49 no.jpg"]  # near-duplicate only: different bytes


def test_split_without_leakage(real):
    ds, _ = real
    split = split_indices(ds, 0.8, 0.1, seed=0)
    groups = {k: set(ds.groups[v].tolist()) for k, v in split.items()}
    ids = {k: {ds.ids[i] for i in v} for k, v in split.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not groups[a] & groups[b] and not ids[a] & ids[b]
    assert sum(len(v) for v in split.values()) == 253
    for c, n_c in ((0, 98), (1, 155)):
        got = [int(np.sum(ds.labels[split[k]] == c)) for k in ("train", "val", "test")]
        assert abs(got[0] - 0.8 * n_c) <= 2 and abs(got[1] - 0.1 * n_c) <= 2, got
