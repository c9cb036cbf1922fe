"""Stratified, duplicate-aware splits (exact and near-duplicates) and their JSON round trip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jax_mri_ldm.data import near_duplicates
from jax_mri_ldm.data.config import get_data_config
from jax_mri_ldm.data.splits import (
    load_split,
    save_split,
    saved_or_new_split,
    spanning_groups,
    split_groups,
    split_indices,
)
from jax_mri_ldm.data.types import DataError, ImageSet

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain_tumor_yes_no"


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


# ----------------------------------------------------------------------------- near-duplicates


def _smooth_pictures(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """(n, size, size, 1) distinct smooth random pictures in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = []
    for coarse in rng.normal(size=(n, 6, 6)).astype(np.float32):
        img = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.BICUBIC))
        out.append((img - img.min()) / (img.max() - img.min()))
    return np.stack(out)[..., None]


def _rescaled(img: np.ndarray, via: int) -> np.ndarray:
    """`img` (S, S, 1) resized to via x via and back, as a re-saved copy at another size."""
    s = img.shape[0]
    big = Image.fromarray(img[..., 0], "F").resize((via, via), Image.BILINEAR)
    return np.asarray(big.resize((s, s), Image.BILINEAR))[..., None]


def _near_dup_ds(n: int = 40, seed: int = 0) -> tuple[ImageSet, list[tuple[int, int]]]:
    """n distinct pictures (half per class) plus three copies with other bytes (other groups):
    a noisy copy, a rescaled copy and a mirrored copy. Returns the set and (original, copy)."""
    pics = _smooth_pictures(n, seed)
    rng = np.random.default_rng(seed + 1)
    copies = [
        (3, pics[3] + rng.normal(0, 0.005, pics[3].shape).astype(np.float32)),
        (n // 2 + 5, _rescaled(pics[n // 2 + 5], 48)),
        (8, pics[8][:, ::-1]),
    ]
    images = np.concatenate([pics, np.stack([c for _, c in copies])]).astype(np.float32)
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2) + [int(o >= n // 2) for o, _ in copies])
    ds = ImageSet(
        images=images,
        labels=labels.astype(np.int32),
        class_names=("normal", "tumour"),
        ids=[f"img{i:03d}" for i in range(len(labels))],
        groups=np.arange(len(labels), dtype=np.int64),  # all bytes differ
        fingerprint="fp",
    )
    return ds, [(o, n + k) for k, (o, _) in enumerate(copies)]


def _split_of(split: dict[str, np.ndarray], i: int) -> str:
    return next(k for k, v in split.items() if i in v)


def test_near_duplicates_share_a_split_for_every_seed():
    ds, pairs = _near_dup_ds()
    for seed in range(12):
        split = split_indices(ds, 0.6, 0.2, seed=seed)
        for a, b in pairs:
            assert _split_of(split, a) == _split_of(split, b), (seed, a, b)
    merged = split_groups(ds)
    assert len(np.unique(merged)) == len(ds) - len(pairs)
    for a, b in pairs:  # the merged group keeps the smaller (original's) id
        assert merged[a] == merged[b] == ds.groups[a]


def test_given_groups_give_the_split_computed_ones_do():
    ds, pairs = _near_dup_ds()
    groups = split_groups(ds)
    for seed in range(3):
        a = split_indices(ds, 0.6, 0.2, seed=seed)
        b = split_indices(ds, 0.6, 0.2, seed=seed, groups=groups)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    c = split_indices(ds, 0.6, 0.2, seed=0, groups=np.arange(len(ds)))  # groups are used
    assert len(pairs) and any(_split_of(c, i) != _split_of(c, j) for i, j in pairs)


def test_distinct_pictures_are_not_merged():
    ds, _ = _near_dup_ds()
    distinct = ds.subset(np.arange(40))
    np.testing.assert_array_equal(split_groups(distinct), distinct.groups)
    fps = near_duplicates.fingerprints(distinct.images)
    best, _ = near_duplicates.best_matches(fps, fps, exclude_self=True)
    assert best.max() < get_data_config().split.near_duplicate_threshold
    # A constant image has an all-zero fingerprint and matches nothing, not even itself.
    flat = near_duplicates.fingerprints(np.full((2, 16, 16, 1), 0.5, np.float32))
    assert not flat.any() and near_duplicates.near_pairs(flat, 0.5).shape == (0, 2)


def test_threshold_option_disables_near_duplicate_grouping():
    ds, pairs = _near_dup_ds()
    np.testing.assert_array_equal(split_groups(ds, near_duplicate_threshold=0.0), ds.groups)
    np.testing.assert_array_equal(split_groups(ds, near_duplicate_threshold=-1.0), ds.groups)
    separated = 0
    for seed in range(12):
        split = split_indices(ds, 0.6, 0.2, seed=seed, near_duplicate_threshold=0.0)
        separated += sum(_split_of(split, a) != _split_of(split, b) for a, b in pairs)
    assert separated > 0  # without the merge, copies do land in different splits


@pytest.mark.parametrize(
    "seed, val, test",
    [(0, [2, 12, 14], [9, 17, 22]), (1, [11, 18, 22], [8, 25, 29]), (2, [0, 15, 24], [2, 19, 27])],
)
def test_single_image_groups_split_as_before_near_duplicate_grouping(seed, val, test):
    """Pinned to the splits of the code before near-duplicate grouping (commit 70fb6e0): data
    without duplicates (the built-in sets) keeps its old split for every seed."""
    split = split_indices(_ds([0] * 12 + [1] * 18), seed=seed)
    assert split["val"].tolist() == val and split["test"].tolist() == test


def test_split_unchanged_without_near_duplicates_and_balanced_with_a_cluster():
    ds = _dup_ds()  # constant images: no near-duplicates, so the threshold changes nothing
    for seed in range(3):
        old = split_indices(ds, seed=seed, near_duplicate_threshold=0.0)
        new = split_indices(ds, seed=seed)
        for k in old:
            np.testing.assert_array_equal(old[k], new[k])
    # 20 normal files of which 5 are copies of one picture: dealt first, the cluster goes to
    # train, and the single pictures fill every split to its target exactly.
    pics = _smooth_pictures(36, seed=7)
    normal = np.concatenate(
        [np.repeat(pics[:1], 5, 0) + 1e-3 * np.arange(5)[:, None, None, None], pics[1:16]]
    )
    images = np.concatenate([normal, pics[16:]]).astype(np.float32)
    ds = ImageSet(
        images=images,
        labels=np.array([0] * 20 + [1] * 20, np.int32),
        class_names=("normal", "tumour"),
        ids=[f"img{i:02d}" for i in range(40)],
        groups=np.arange(40, dtype=np.int64),
        fingerprint="fp",
    )
    for seed in range(10):
        split = split_indices(ds, 0.6, 0.2, seed=seed)
        assert np.isin(np.arange(5), split["train"]).all(), seed
        for c in (0, 1):
            got = [int(np.sum(ds.labels[split[k]] == c)) for k in ("train", "val", "test")]
            assert got == [12, 4, 4], (seed, c, got)


def test_near_duplicates_count_once_for_the_class_per_split_guarantee():
    pics = _smooth_pictures(3, seed=4)
    images = np.concatenate([pics, pics[:1] + 0.001, _smooth_pictures(6, seed=5)])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], np.int32)  # class 0: 3 pictures, 4 files
    ds = ImageSet(
        images=images.astype(np.float32),
        labels=labels,
        class_names=("normal", "tumour"),
        ids=[f"img{i}" for i in range(10)],
        groups=np.arange(10, dtype=np.int64),
        fingerprint="fp",
    )
    for seed in range(12):  # 3 distinct normal pictures still fill train, val and test
        split = split_indices(ds, 0.6, 0.2, seed=seed)
        assert _split_of(split, 0) == _split_of(split, 3)
        for name, idx in split.items():
            assert 0 in ds.labels[idx], (seed, name)


def test_chunked_correlations_equal_unchunked():
    ds, _ = _near_dup_ds()
    fps = near_duplicates.fingerprints(ds.images)
    full = near_duplicates.near_pairs(fps, 0.3, chunk_rows=len(fps))
    assert len(full) > 10  # many pairs, not only the three copies
    for rows in (1, 7, 16):
        np.testing.assert_array_equal(near_duplicates.near_pairs(fps, 0.3, chunk_rows=rows), full)
        b, _ = near_duplicates.best_matches(fps, fps, exclude_self=True, chunk_rows=rows)
        b0, _ = near_duplicates.best_matches(fps, fps, exclude_self=True)
        np.testing.assert_allclose(b, b0, rtol=0, atol=1e-6)  # (indices may differ on ties)
    groups = ds.groups
    np.testing.assert_array_equal(
        near_duplicates.merge_groups(ds.images, groups, 0.99, chunk_rows=3),
        near_duplicates.merge_groups(ds.images, groups, 0.99),
    )


def test_fingerprint_area_average_and_mirror():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    small = (
        near_duplicates._area_matrix(4, 2) @ x[0, :, :, 0] @ near_duplicates._area_matrix(4, 2).T
    )
    np.testing.assert_allclose(small, [[2.5, 4.5], [10.5, 12.5]])  # 2x2 box means
    np.testing.assert_allclose(near_duplicates._area_matrix(5, 3).sum(1), 1.0, rtol=1e-6)
    fps = near_duplicates.fingerprints(np.concatenate([x, x[:, :, ::-1]]), size=4)
    np.testing.assert_allclose(np.linalg.norm(fps.reshape(2, -1), axis=1), 1.0, rtol=1e-6)
    assert near_duplicates.near_pairs(fps, 0.999).tolist() == [[0, 1]]  # mirrored = same


def test_saved_split_predating_near_duplicates_is_used_as_saved_with_a_warning(tmp_path, caplog):
    ds, pairs = _near_dup_ds()
    seed = next(
        s
        for s in range(50)
        if spanning_groups(
            ds, split_indices(ds, 0.6, 0.2, seed=s, near_duplicate_threshold=0), split_groups(ds)
        )
    )
    old = split_indices(ds, 0.6, 0.2, seed=seed, near_duplicate_threshold=0)
    path = tmp_path / "run" / "split.json"
    save_split(path, ds, old)
    with caplog.at_level(logging.WARNING):
        back = load_split(path, ds)
    for k in old:
        np.testing.assert_array_equal(back[k], old[k])  # used as saved
    assert str(path) in caplog.text and "predates near-duplicate grouping" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_split(path, ds, near_duplicate_threshold=0)
        save_split(path, ds, split_indices(ds, 0.6, 0.2, seed=seed))
        load_split(path, ds)
    assert "predates" not in caplog.text


def test_saved_or_new_split_keeps_a_run_on_its_saved_split(tmp_path):
    ds, _ = _near_dup_ds()
    cfg = get_data_config().split
    cfg.train, cfg.val, cfg.seed = 0.6, 0.2, 3
    new = saved_or_new_split(ds, cfg, tmp_path / "absent.json")
    expected = split_indices(ds, 0.6, 0.2, seed=3)
    for k in expected:
        np.testing.assert_array_equal(new[k], expected[k])
    old = split_indices(ds, 0.6, 0.2, seed=5, near_duplicate_threshold=0)
    save_split(tmp_path / "split.json", ds, old)
    back = saved_or_new_split(ds, cfg, tmp_path / "split.json")
    for k in old:
        np.testing.assert_array_equal(back[k], old[k])
    legacy = get_data_config().split
    del legacy["near_duplicate_threshold"]  # a config saved before the field existed
    legacy.train, legacy.val, legacy.seed = 0.6, 0.2, 3
    for k, v in saved_or_new_split(ds, legacy, None).items():
        np.testing.assert_array_equal(v, expected[k])


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not present")
def test_real_yes_no_test_split_has_no_near_duplicate_in_train(tmp_path):
    from jax_mri_ldm.data.sources import load_imageset

    cfg = get_data_config()
    cfg.path, cfg.image_size, cfg.cache_dir = str(REAL), 128, str(tmp_path)
    ds = load_imageset(cfg)
    threshold = cfg.split.near_duplicate_threshold
    fps = near_duplicates.fingerprints(ds.images)
    groups, index = split_groups(ds), {i: n for n, i in enumerate(ds.ids)}
    # Two re-saved slices that the exact-duplicate split of seed 0 put in test and train.
    for a, b in (("yes/Y92.png", "yes/Y20.jpg"), ("no/no 90.jpg", "no/12 no.jpg")):
        assert ds.groups[index[a]] != ds.groups[index[b]]
        assert groups[index[a]] == groups[index[b]]
    split = split_indices(ds, **cfg.split)
    best, _ = near_duplicates.best_matches(fps[split["test"]], fps[split["train"]])
    assert best.max() < threshold
    assert not spanning_groups(ds, split, groups)


def test_fingerprints_are_float64_and_blocked_over_images(monkeypatch):
    ds, _ = _near_dup_ds()
    whole = near_duplicates.fingerprints(ds.images)
    assert whole.dtype == np.float64  # threshold decisions must not hinge on float32 rounding
    side = ds.images.shape[1] * ds.images.shape[2]
    monkeypatch.setattr(near_duplicates, "_CHUNK_ELEMENTS", 3 * side)  # 3 images per block
    np.testing.assert_allclose(near_duplicates.fingerprints(ds.images), whole, rtol=0, atol=1e-12)
    assert near_duplicates.fingerprints(ds.images[:0]).shape == (0, 32, 32)


def test_best_other_group_skips_own_copies_and_ignores_chunking():
    ds, pairs = _near_dup_ds()
    fps = near_duplicates.fingerprints(ds.images)
    groups = split_groups(ds)  # copies share a group
    best = near_duplicates.best_other_group(fps, groups)
    full = near_duplicates.correlations(fps, fps.reshape(len(fps), -1))
    full[groups[:, None] == groups[None, :]] = -np.inf
    np.testing.assert_allclose(best, full.max(axis=1), rtol=0, atol=1e-12)
    i, j = pairs[0]
    assert best[i] < near_duplicates.correlations(fps[i : i + 1], fps[j].reshape(1, -1))[0, 0]
    for rows in (1, 5):
        np.testing.assert_allclose(
            near_duplicates.best_other_group(fps, groups, chunk_rows=rows), best, atol=1e-12
        )
