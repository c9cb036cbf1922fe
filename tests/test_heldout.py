"""Fresh held-out built-in slices and the memorisation thresholds they set."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
import pytest

from jax_mri_ldm import data as data_lib
from jax_mri_ldm.data import heldout
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.evaluation import neighbours, scoring


def _cfg(tmp: Path, types: bool = False) -> ml_collections.ConfigDict:
    c = data_lib.get_data_config()
    c.image_size, c.cache_dir, c.builtin.types = 32, str(tmp / "cache"), types
    c.builtin.num_normal, c.builtin.num_tumour = 6, 8
    return c


def _meta(cfg: ml_collections.ConfigDict, extra_per_class: int = 0) -> dict:
    extra = {"path": "", "folders": "", "class_map": "", "builtin_per_class": extra_per_class}
    return {"vae": {"data": cfg.to_dict()}, "config": {"extra_train": extra}}


def _gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a[:, None] - b[None]).mean(axis=(2, 3, 4))  # (A, B)


def test_fresh_slices_follow_the_main_set_and_the_extra_training_slices(tmp_path) -> None:
    cfg = _cfg(tmp_path)
    ds = data_lib.load_imageset(cfg)
    meta = _meta(cfg, extra_per_class=2)
    seen = data_lib.generator_train_set({**meta, "extra_train": _recorded(cfg, ds)}, ds, ds, "run")
    fresh = data_lib.calibration_slices(meta, ds, seen, 3)
    assert fresh.counts() == {"normal": 3, "tumour": 3}
    assert all(i.startswith(heldout.ID_PREFIX) for i in fresh.ids)
    assert _gap(fresh.images, seen.images).min() > 0.01  # neither main nor extra slices
    big_cfg = _cfg(tmp_path)
    big_cfg.builtin.num_normal, big_cfg.builtin.num_tumour = 6 + 5, 8 + 5
    big = data_lib.load_imageset(big_cfg)
    for c, n in enumerate((6, 8)):  # the generator's slices n+2 .. n+4 of each class
        np.testing.assert_array_equal(
            big.images[big.labels == c][n + 2 :], fresh.images[fresh.labels == c]
        )
    again = data_lib.calibration_slices(meta, ds, seen, 3)
    np.testing.assert_array_equal(again.images, fresh.images)


def _recorded(cfg: ml_collections.ConfigDict, ds) -> dict:
    extra = ml_collections.ConfigDict({"path": "", "builtin_per_class": 2})
    _, summary = data_lib.load_extra_train(extra, cfg, ds, ds)
    return summary


def test_no_fresh_slices_off_the_binary_builtin_set_or_for_zero(tmp_path) -> None:
    cfg = _cfg(tmp_path)
    ds = data_lib.load_imageset(cfg)
    assert data_lib.calibration_slices(_meta(cfg), ds, ds, 0) is None
    types = _cfg(tmp_path, types=True)
    assert data_lib.calibration_slices(_meta(types), ds, ds, 3) is None
    folder = _cfg(tmp_path)
    folder.path = str(tmp_path / "some_folder")
    (tmp_path / "some_folder").mkdir()
    assert data_lib.calibration_slices(_meta(folder), ds, ds, 3) is None
    with pytest.raises(UserError, match="memorisation_calibration_per_class=-1"):
        data_lib.calibration_slices(_meta(cfg), ds, ds, -1)


def _blobs(n: int, seed: int) -> np.ndarray:
    """(n, 16, 16, 1) smooth random images."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4, 4, 1)).repeat(4, axis=1).repeat(4, axis=2)
    return x.astype(np.float32)


def test_calibration_images_join_the_test_images_in_both_thresholds() -> None:
    train, test = _blobs(12, 0), _blobs(3, 1)
    noise = np.random.default_rng(4).normal(0, 1, train.shape[1:]).astype(np.float32)
    near = lambda k, s: np.clip(train[k : k + 1] + s * noise, 0, 1)  # noqa: E731
    cal = np.concatenate([_blobs(19, 2), near(5, 0.02)])  # one honest image close to train[5]
    # two copies, one image between the test split's closest and the calibration's, five new
    syn = np.concatenate([train[:2], near(7, 0.08), _blobs(5, 3)])
    refs, groups = scoring.with_mirrors(train)  # as the report searches
    kw = dict(search_size=16, block_size=8, train_groups=groups)
    alone = neighbours.memorisation_report(syn, refs, test, **kw)
    both = neighbours.memorisation_report(syn, refs, test, calibration=cal, **kw)
    cal_nn = np.asarray(both["calibration_to_train"]["score"])
    assert both["threshold_images"] == 23 and alone["threshold_images"] == 3
    assert alone["calibration_to_train"] is None
    assert both["threshold"] == pytest.approx(cal_nn.max()) and cal_nn.max() > alone["threshold"]
    assert both["test_to_train"] == alone["test_to_train"]  # realism keeps the test split
    # Three test images set a weak threshold: it flags image 2 (and may flag a new blob).
    assert {0, 1, 2} <= set(alone["flagged"]) and both["flagged"] == [0, 1]
    rel = both["relative"]["test"]["ratio"]
    own = neighbours.own_neighbour_scores(
        refs, groups, search_size=16, block_size=8, twin_ssim=0.99
    )
    want = neighbours.relative_distance(cal_nn, both["calibration_to_train"]["index"], own, True)
    np.testing.assert_allclose(rel[3:], want, rtol=1e-6)
    assert both["relative"]["threshold"] == pytest.approx(min(rel))
    assert {0, 1} <= set(both["relative"]["flagged"])
    again = neighbours.memorisation_report(
        syn, refs, test, calibration=cal, calibration_nn=neighbours.nearest_neighbours(
            cal, refs, search_size=16, block_size=8
        ), **kw,
    )  # fmt: skip
    assert again["threshold"] == both["threshold"] and again["flagged"] == both["flagged"]
    ref = scoring.build_reference(
        test, np.zeros(3, np.int32), train, ("a",), lambda x: x.reshape(len(x), -1), None,
        None, 16, kid_subsets=2, kid_subset_size=3, calibration_images=cal,
    )  # fmt: skip
    assert ref.threshold == pytest.approx(both["threshold"], abs=1e-6)
    assert ref.relative_threshold == pytest.approx(both["relative"]["threshold"], abs=1e-6)
    assert len(ref.test_nn) == 3 and len(ref.calibration_nn["score"]) == 20
