"""Stratified, duplicate-aware splits and their JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jax_mri_ldm.data.splits import load_split, save_split, split_indices
from jax_mri_ldm.data.types import DataError, ImageSet


def _ds(labels, groups=None) -> ImageSet:
    labels = np.asarray(labels, np.int32)
    n = labels.size
    groups = np.arange(n) if groups is None else np.asarray(groups)
    return ImageSet(
        images=np.zeros((n, 2, 2, 1), np.float32),
        labels=labels,
        class_names=("normal", "tumour"),
        ids=[f"img{i:03d}" for i in range(n)],
        groups=groups.astype(np.int64),
        fingerprint="fp",
    )


def _dup_ds(seed=0) -> ImageSet:
    """170 normal / 230 tumour with some duplicate clusters of size 2-4."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 170 + [1] * 230)
    groups = np.arange(400)
    for start in range(0, 400, 37):  # glue a few runs of same-class images together
        k = int(rng.integers(2, 5))
        if labels[start] == labels[min(start + k - 1, 399)]:
            groups[start : start + k] = groups[start]
    return _ds(labels, groups)


def test_partition_no_leakage_and_stratified():
    ds = _dup_ds()
    split = split_indices(ds, train=0.8, val=0.1, seed=0)
    all_idx = np.concatenate([split["train"], split["val"], split["test"]])
    np.testing.assert_array_equal(np.sort(all_idx), np.arange(len(ds)))  # a partition
    group_sets = {k: set(ds.groups[v].tolist()) for k, v in split.items()}
    assert not group_sets["train"] & group_sets["val"]
    assert not group_sets["train"] & group_sets["test"]
    assert not group_sets["val"] & group_sets["test"]
    for c, n_c in ((0, 170), (1, 230)):
        for name, frac in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            got = int(np.sum(ds.labels[split[name]] == c))
            assert abs(got - frac * n_c) <= 3, (name, c, got)


def test_deterministic_in_seed():
    ds = _dup_ds()
    a = split_indices(ds, seed=3)
    b = split_indices(ds, seed=3)
    c = split_indices(ds, seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_every_split_gets_each_class_when_possible():
    ds = _ds([0, 0, 0, 1, 1, 1, 1])
    for seed in range(5):
        split = split_indices(ds, 0.8, 0.1, seed=seed)
        for name, idx in split.items():
            assert set(ds.labels[idx].tolist()) == {0, 1}, (seed, name)


def test_duplicate_group_stays_together_even_when_large():
    labels = [0] * 10 + [1] * 10
    groups = [0] * 5 + list(range(1, 6)) + list(range(6, 16))  # one 5-image normal cluster
    ds = _ds(labels, groups)
    split = split_indices(ds, 0.6, 0.2, seed=1)
    holders = [k for k, v in split.items() if np.any(np.isin(v, np.arange(5)))]
    assert len(holders) == 1
    assert np.isin(np.arange(5), split[holders[0]]).all()


def test_bad_fractions_name_the_option():
    ds = _ds([0, 1] * 5)
    with pytest.raises(ValueError, match="config.data.split.train"):
        split_indices(ds, train=0.0)
    with pytest.raises(ValueError, match="exceeds 1"):
        split_indices(ds, train=0.8, val=0.3)


def test_no_val_fraction_gives_empty_val():
    ds = _ds([0, 1] * 10)
    split = split_indices(ds, train=0.8, val=0.0)
    assert split["val"].size == 0 and split["test"].size == 4


def test_save_load_round_trip(tmp_path):
    ds = _dup_ds()
    split = split_indices(ds, seed=0)
    path = tmp_path / "run" / "split.json"
    save_split(path, ds, split)
    payload = json.loads(path.read_text())
    assert payload["fingerprint"] == "fp" and payload["num_images"] == 400
    assert sum(payload["counts"]["train"].values()) == split["train"].size
    ids = load_split(path)
    assert ids["val"] == [ds.ids[i] for i in split["val"]]
    back = load_split(path, ds)
    for k in split:
        np.testing.assert_array_equal(back[k], split[k])
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp file left


def test_load_split_detects_changed_data(tmp_path):
    ds = _ds([0, 1] * 10)
    save_split(tmp_path / "s.json", ds, split_indices(ds))
    smaller = ds.subset(np.arange(10))
    with pytest.raises(DataError, match="not in the loaded dataset"):
        load_split(tmp_path / "s.json", smaller)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read split file"):
        load_split(tmp_path / "bad.json")
