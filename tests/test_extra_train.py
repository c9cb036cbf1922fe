"""config.extra_train: another folder's slices join the diffusion stage's training set only."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jax_mri_ldm import data as data_lib
from jax_mri_ldm.data import extra as extra_lib
from jax_mri_ldm.errors import UserError
from tests.conftest import tiny_ldm_config


def _blob(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A smooth random uint8 image (distinct fingerprints for distinct seeds)."""
    small = rng.random((6, 6))
    img = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), 2))
    return img


def _write(root: Path, folders: dict[str, list[np.ndarray]]) -> Path:
    for name, images in folders.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            Image.fromarray(im).save(root / name / f"{name}_{i:02d}.png")
    return root


def _data_cfg(path: Path, tmp: Path) -> ml_collections.ConfigDict:
    c = data_lib.get_data_config()
    c.path, c.image_size, c.cache_dir = str(path), 32, str(tmp / "cache")
    return c


def _extra_cfg(
    path: Path | str, folders: str = "", quantile: float = 0.0, per_folder: str = ""
) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "path": str(path),
            "folders": folders,
            "class_map": "",
            "domain_quantile": quantile,
            "folder_quantiles": per_folder,
        }
    )


@pytest.fixture()
def sets(tmp_path):
    rng = np.random.default_rng(0)
    main = [_blob(rng) for _ in range(12)]
    main_dir = _write(tmp_path / "main", {"no": main[:6], "yes": main[6:]})
    # notumor: 4 new slices + a re-saved, resized copy of a main slice (must be dropped)
    copy = np.asarray(Image.fromarray(main[2]).resize((64, 64), 2))
    new = [_blob(rng) for _ in range(6)]
    extra_dir = _write(tmp_path / "extra", {"notumor": [*new[:4], copy], "glioma": new[4:]})
    ds = data_lib.load_imageset(_data_cfg(main_dir, tmp_path))
    return ds, main_dir, extra_dir, tmp_path


def test_extra_images_are_filtered_relabelled_and_copies_dropped(sets) -> None:
    ds, main_dir, extra_dir, tmp = sets
    extra, summary = data_lib.load_extra_train(
        _extra_cfg(extra_dir, "notumor"), _data_cfg(main_dir, tmp), ds, ds
    )
    assert len(extra) == 4 and summary["counts"] == {"normal": 4, "tumour": 0}
    assert np.all(extra.labels == ds.class_names.index("normal"))
    assert extra.class_names == ds.class_names
    assert all(i.startswith(extra_lib.ID_PREFIX + "notumor/") for i in extra.ids)
    [drop] = summary["dropped_near_copies"]
    assert drop["id"] == "notumor/notumor_04.png" and drop["matches"] == "no/no_02.png"
    assert not set(extra.groups.tolist()) & set(ds.groups.tolist())
    joined = data_lib.join_extra(ds, extra)
    assert len(joined) == len(ds) + 4 and joined.ids[: len(ds)] == ds.ids
    np.testing.assert_array_equal(joined.images[len(ds) :], extra.images)


def test_all_folders_map_through_the_binary_table(sets) -> None:
    ds, main_dir, extra_dir, tmp = sets
    extra, summary = data_lib.load_extra_train(
        _extra_cfg(extra_dir), _data_cfg(main_dir, tmp), ds, ds
    )
    assert summary["counts"] == {"normal": 4, "tumour": 2}  # glioma -> tumour


def _head(rng: np.random.Generator, size: int = 48, wide: bool = True) -> np.ndarray:
    """An ellipse 'head' with random inner blobs; wide=False: a thin off-centre bar instead."""
    yy, xx = np.mgrid[:size, :size] / size
    if wide:
        shape = ((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.36) ** 2 < 1
    else:
        shape = (np.abs(xx - 0.15) < 0.06) & (np.abs(yy - 0.5) < 0.45)
    return (shape * (120 + 0.5 * _blob(rng, size))).astype(np.uint8)


def test_the_domain_filter_leaves_out_slices_unlike_the_training_split(tmp_path) -> None:
    rng = np.random.default_rng(1)
    main_dir = _write(
        tmp_path / "main",
        {"no": [_head(rng) for _ in range(8)], "yes": [_head(rng) for _ in range(8)]},
    )
    heads = [_head(rng) for _ in range(3)]
    bars = [_head(rng, wide=False) for _ in range(2)]
    extra_dir = _write(tmp_path / "extra", {"no": heads + bars})
    cfg = _data_cfg(main_dir, tmp_path)
    ds = data_lib.load_imageset(cfg)
    floor = extra_lib.domain_floor(ds, 0.1, 0.99)
    assert 0.5 < floor < 0.99  # heads correlate with each other, short of copies
    kept, summary = data_lib.load_extra_train(_extra_cfg(extra_dir, quantile=0.1), cfg, ds, ds)
    assert kept.ids == [f"{extra_lib.ID_PREFIX}no/no_{i:02d}.png" for i in range(3)]
    assert [d["id"] for d in summary["left_out_unlike_training"]] == [
        "no/no_03.png",
        "no/no_04.png",
    ]
    assert summary["domain_floor"] == pytest.approx(floor)
    everything, summary = data_lib.load_extra_train(_extra_cfg(extra_dir), cfg, ds, ds)
    assert len(everything) == 5 and summary["domain_floor"] is None
    bars_dir = _write(tmp_path / "bars", {"no": bars})
    with pytest.raises(data_lib.DataError, match=r"domain_quantile=1: floor 0\.\d{3}\)"):
        data_lib.load_extra_train(_extra_cfg(bars_dir, quantile=1.0), cfg, ds, ds)
    per_folder = r"domain_quantile=0, folder_quantiles='no=1': floor off; no 0\.\d{3}\)"
    with pytest.raises(data_lib.DataError, match=per_folder):
        data_lib.load_extra_train(_extra_cfg(bars_dir, per_folder="no=1"), cfg, ds, ds)


def test_folder_quantiles_set_each_folders_domain_floor(tmp_path) -> None:
    rng = np.random.default_rng(1)
    main_dir = _write(
        tmp_path / "main",
        {"no": [_head(rng) for _ in range(8)], "yes": [_head(rng) for _ in range(8)]},
    )
    heads = [_head(rng) for _ in range(3)]  # as in the test above: the heads pass 0.1, bars not
    bars = [_head(rng, wide=False) for _ in range(2)]
    extra_dir = _write(tmp_path / "extra", {"no": [*heads, bars[0]], "yes": [*heads, bars[1]]})
    cfg = _data_cfg(main_dir, tmp_path)
    ds = data_lib.load_imageset(cfg)
    floor = extra_lib.domain_floor(ds, 0.1, 0.99)
    # the default (0) keeps every 'no' slice; 'yes' gets its own 0.1 floor: its bar goes
    kept, summary = data_lib.load_extra_train(
        _extra_cfg(extra_dir, per_folder="yes=0.1"), cfg, ds, ds
    )
    assert [d["id"] for d in summary["left_out_unlike_training"]] == ["yes/yes_03.png"]
    assert kept.counts() == {"normal": 4, "tumour": 3}
    assert summary["domain_floor"] is None
    assert summary["folder_floors"] == {"yes": pytest.approx(floor)}
    # and the other way round: a folder's 0 overrides the default's 0.1
    kept, summary = data_lib.load_extra_train(
        _extra_cfg(extra_dir, quantile=0.1, per_folder=" yes = 0 "), cfg, ds, ds
    )
    assert [d["id"] for d in summary["left_out_unlike_training"]] == ["no/no_03.png"]
    assert summary["folder_floors"] == {"yes": None}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("notumor=abc", r"folder_quantiles has 'notumor=abc'; expected 'folder=q'"),
        ("notumor=1.5", r"folder_quantiles has 'notumor=1.5'"),
        ("=0.3", r"folder_quantiles has '=0.3'"),
        ("glioma=0.3,glioma=0.5", r"has 'glioma=0.5'; expected 'folder=q' items, each folder once"),
        ("gliomas=0.3", r"folder_quantiles names 'gliomas', not a folder read \(glioma, notumor\)"),
    ],
)
def test_bad_folder_quantiles_name_the_option(sets, spec, message) -> None:
    ds, main_dir, extra_dir, tmp = sets
    cfg = _extra_cfg(extra_dir, per_folder=spec)
    with pytest.raises(data_lib.DataError, match=message):
        data_lib.load_extra_train(cfg, _data_cfg(main_dir, tmp), ds, ds)


def test_a_folder_of_near_copies_may_still_be_named(tmp_path) -> None:
    rng = np.random.default_rng(2)
    main = [_blob(rng) for _ in range(8)]
    main_dir = _write(tmp_path / "main", {"no": main[:4], "yes": main[4:]})
    extra_dir = _write(tmp_path / "extra", {"notumor": [_blob(rng)], "glioma": [main[5]]})
    cfg = _data_cfg(main_dir, tmp_path)
    ds = data_lib.load_imageset(cfg)
    extra = _extra_cfg(extra_dir, per_folder="glioma=0.3")  # its only file copies a main slice
    extra.class_map = "glioma=1"
    kept, summary = data_lib.load_extra_train(extra, cfg, ds, ds)
    assert kept.counts() == {"normal": 1, "tumour": 0}
    assert [d["id"] for d in summary["dropped_near_copies"]] == ["glioma/glioma_00.png"]


def test_no_path_means_no_extra_images(sets) -> None:
    ds, main_dir, _, tmp = sets
    assert data_lib.load_extra_train(_extra_cfg(""), _data_cfg(main_dir, tmp), ds, ds)[0] is None
    assert data_lib.load_extra_train(None, _data_cfg(main_dir, tmp), ds, ds) == (None, {})
    assert data_lib.join_extra(ds, None) is ds


def test_bad_extra_settings_name_the_option(sets) -> None:
    ds, main_dir, extra_dir, tmp = sets
    named = r"no class folder 'pituitary'.*extra_train.folders"
    with pytest.raises(data_lib.DataError, match=named):
        data_lib.load_extra_train(
            _extra_cfg(extra_dir, "pituitary"), _data_cfg(main_dir, tmp), ds, ds
        )
    with pytest.raises(data_lib.DataError, match="config.extra_train.path: .*missing"):
        data_lib.load_extra_train(_extra_cfg(tmp / "missing"), _data_cfg(main_dir, tmp), ds, ds)
    folders_cfg = _data_cfg(main_dir, tmp)
    folders_cfg.classes = "folders"  # extra classes normal + glioma; the main set has no glioma
    main_folders = data_lib.load_imageset(folders_cfg)
    with pytest.raises(data_lib.DataError, match="glioma are not classes"):
        data_lib.load_extra_train(_extra_cfg(extra_dir), folders_cfg, main_folders, main_folders)
    firsts = {d: [np.asarray(Image.open(main_dir / d / f"{d}_00.png"))] for d in ("no", "yes")}
    only_copy = _write(tmp / "copies", firsts)
    with pytest.raises(data_lib.DataError, match="every image copies"):
        data_lib.load_extra_train(_extra_cfg(only_copy), _data_cfg(main_dir, tmp), ds, ds)


def test_ldm_trains_on_them_and_the_report_searches_them(tiny_runs, tmp_path) -> None:
    from jax_mri_ldm import pipeline, train_ldm
    from jax_mri_ldm.evaluation import report

    rng = np.random.default_rng(5)
    extra_dir = _write(
        tmp_path / "extra",
        {"no": [_blob(rng) for _ in range(3)], "yes": [_blob(rng) for _ in range(2)]},
    )
    cfg = tiny_ldm_config(tiny_runs["vae_dir"])
    cfg.extra_train.path = str(extra_dir)
    cfg.extra_train.folders = "no"
    cfg.extra_train.domain_quantile = 0.0  # random blobs are unlike the phantoms (filter: above)
    workdir = tmp_path / "ldm"
    train_ldm.train_and_evaluate(cfg, str(workdir))
    run = pipeline.load_ldm(str(workdir))
    base = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    assert run.meta["extra_train"]["counts"] == {"normal": 3, "tumour": 0}
    assert run.meta["num_train"] == base.meta["num_train"] + 3
    ds, split = report._load_data(run)
    seen = data_lib.generator_train_set(run.meta, ds, ds.subset(split["train"]), "w")
    assert len(seen) == len(split["train"]) + 3 and seen.ids[-1].startswith(extra_lib.ID_PREFIX)
    assert len(data_lib.generator_train_set(base.meta, ds, ds.subset(split["train"]), "w")) == len(
        split["train"]
    )
    Image.fromarray(_blob(rng)).save(extra_dir / "no" / "added.png")  # the folder changed
    with pytest.raises(data_lib.DataError, match="extra training images .* changed"):
        data_lib.generator_train_set(run.meta, ds, ds.subset(split["train"]), "w")


def test_the_report_summary_names_the_extra_images() -> None:
    from jax_mri_ldm.evaluation.sections import summary

    assert summary._extra_line(None) == []
    rec = {
        "path": "/data/4class",
        "folders": ["notumor"],
        "counts": {"normal": 95, "tumour": 0},
        "dropped_near_copies": 2,
        "left_out_unlike_training": 53,
        "domain_floor": 0.644,
    }
    [line] = summary._extra_line(rec)
    for part in ("'normal': 95", "/data/4class", "folders notumor", "2 dropped", "53 left out"):
        assert part in line
    assert "(floor 0.644)" in line
    [line] = summary._extra_line({**rec, "folder_floors": {"glioma": 0.7123, "pituitary": None}})
    assert "(floor 0.644; glioma 0.712; pituitary off)" in line


def _builtin_cfg(tmp: Path, types: bool = False) -> ml_collections.ConfigDict:
    c = data_lib.get_data_config()
    c.image_size, c.cache_dir, c.builtin.types = 32, str(tmp / "cache"), types
    c.builtin.num_normal, c.builtin.num_tumour = 6, 8
    return c


def _generated_cfg(per_class: int, path: str = "") -> ml_collections.ConfigDict:
    cfg = _extra_cfg(path)
    cfg.builtin_per_class = per_class
    return cfg


def test_generated_builtin_slices_are_new_slices_of_the_same_generator(tmp_path) -> None:
    cfg = _builtin_cfg(tmp_path)
    ds = data_lib.load_imageset(cfg)
    extra, summary = data_lib.load_extra_train(_generated_cfg(3), cfg, ds, ds)
    assert summary["counts"] == {"normal": 3, "tumour": 3} and summary["builtin_per_class"] == 3
    assert all(i.startswith(extra_lib.ID_PREFIX) for i in extra.ids)
    assert set(extra.groups.tolist()).isdisjoint(ds.groups.tolist())
    gap = np.abs(extra.images[:, None] - ds.images[None]).mean(axis=(2, 3, 4))  # (E, N)
    assert gap.min() > 0.01  # none repeats a main-set slice
    big_cfg = _builtin_cfg(tmp_path)
    big_cfg.builtin.num_normal, big_cfg.builtin.num_tumour = 9, 11
    big = data_lib.load_imageset(big_cfg)
    for c, n in enumerate((6, 8)):  # the larger set starts with the main set, class by class
        np.testing.assert_array_equal(big.images[big.labels == c][:n], ds.images[ds.labels == c])
        np.testing.assert_array_equal(
            big.images[big.labels == c][n:], extra.images[extra.labels == c]
        )


def test_generated_slices_are_moot_off_the_binary_builtin_set(sets, tmp_path) -> None:
    ds, main_dir, _, tmp = sets
    assert data_lib.load_extra_train(_generated_cfg(3), _data_cfg(main_dir, tmp), ds, ds) == (
        None,
        {},
    )
    types_cfg = _builtin_cfg(tmp_path, types=True)
    assert extra_lib.builtin_per_class(_generated_cfg(3), types_cfg) == 0
    assert extra_lib.builtin_per_class(_generated_cfg(3), _builtin_cfg(tmp_path)) == 3


def test_generated_slices_reject_a_folder_too_and_negative_counts(sets, tmp_path) -> None:
    _, _, extra_dir, _ = sets
    cfg = _builtin_cfg(tmp_path)
    ds = data_lib.load_imageset(cfg)
    with pytest.raises(data_lib.DataError, match="extra_train.path=.*builtin_per_class=3 both"):
        data_lib.load_extra_train(_generated_cfg(3, str(extra_dir)), cfg, ds, ds)
    with pytest.raises(UserError, match="builtin_per_class=-1 must be >= 0"):
        data_lib.load_extra_train(_generated_cfg(-1), cfg, ds, ds)


def test_a_run_with_generated_slices_reloads_them_for_the_report(tiny_runs) -> None:
    from jax_mri_ldm import pipeline
    from jax_mri_ldm.evaluation import report

    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    ds, split = report._load_data(run)
    train = ds.subset(split["train"])
    meta = {**run.meta, "config": {**run.meta["config"]}}
    meta["config"]["extra_train"] = {**meta["config"]["extra_train"], "builtin_per_class": 2}
    extra, meta["extra_train"] = data_lib.load_extra_train(
        ml_collections.ConfigDict(meta["config"]["extra_train"]),
        ml_collections.ConfigDict(meta["vae"]["data"]),
        ds,
        train,
    )
    seen = data_lib.generator_train_set(meta, ds, train, "w")
    assert len(seen) == len(train) + 4 and seen.ids[-1].startswith(extra_lib.ID_PREFIX)
    meta["extra_train"] = {**meta["extra_train"], "counts": {"normal": 1, "tumour": 2}}
    with pytest.raises(data_lib.DataError, match="extra training images .* changed"):
        data_lib.generator_train_set(meta, ds, train, "w")


def test_the_recommended_preset_generates_slices_and_the_summary_says_so() -> None:
    from configs import ldm
    from jax_mri_ldm.evaluation.sections import summary

    assert ldm.get_config("recommended").extra_train.builtin_per_class > 0
    assert ldm.get_config("paper").extra_train.builtin_per_class == 0
    rec = {
        "path": "the built-in generator (config.extra_train.builtin_per_class=600)",
        "folders": [],
        "counts": {"normal": 600, "tumour": 600},
        "dropped_near_copies": 0,
        "left_out_unlike_training": 0,
        "domain_floor": None,
        "builtin_per_class": 600,
    }
    [line] = summary._extra_line(rec)
    assert "built-in generator" in line and "folders" not in line
    [line] = summary._extra_line({**rec, "path": "/data/x", "builtin_per_class": 0})
    assert "(folders all)" in line  # a folder read whole
