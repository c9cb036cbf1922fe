"""K classes (2, 3, 4) through the data layer: readers, class order, split, batches, doctor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jax_mri_ldm.data import classes, folders, sources
from jax_mri_ldm.data.__main__ import main as doctor
from jax_mri_ldm.data.batches import BalancedSampler
from jax_mri_ldm.data.config import get_data_config
from jax_mri_ldm.data.splits import split_indices
from jax_mri_ldm.data.types import DataError
from jax_mri_ldm.errors import UserError

SIZE = 32
SHARED_4CLASS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain_tumor_4class"

# K -> class directories as a user would name them (synonyms and case included).
TREES = {
    2: ("No", "yes"),
    3: ("glioma", "healthy", "Meningioma"),
    4: ("glioma", "meningioma", "notumor", "pituitary"),
}
EXPECTED = {
    2: ("normal", "tumour"),
    3: ("normal", "glioma", "meningioma"),
    4: ("normal", "glioma", "meningioma", "pituitary"),
}


def _tree(root: Path, dirs: tuple[str, ...], n: int = 6) -> Path:
    """`n` distinct small grayscale PNGs per class directory."""
    rng = np.random.default_rng(len(dirs))
    for d in dirs:
        (root / d).mkdir(parents=True)
        for i in range(n):
            Image.fromarray((rng.random((20, 24)) * 255).astype(np.uint8)).save(
                root / d / f"{i}.png"
            )
    return root


def _cfg(root: Path, tmp_path: Path, mode: str = "folders"):
    c = get_data_config()
    c.path, c.image_size, c.classes = str(root), SIZE, mode
    c.cache_dir = str(tmp_path / "cache")
    return c


def test_canonical_names_and_order():
    for name in ("no", "No", "notumor", "no_tumor", "No Tumour", "healthy", "normal"):
        assert classes.canonical_class_name(name) == "normal", name
    for name in ("yes", "Tumor", "tumour"):
        assert classes.canonical_class_name(name) == "tumour", name
    assert classes.canonical_class_name("Glioma") == "glioma"
    assert classes.canonical_class_name("low grade") == "low_grade"
    assert classes.class_order(["pituitary", "normal", "glioma"]) == (
        "normal",
        "glioma",
        "pituitary",
    )
    assert classes.class_order(["b", "a"]) == ("a", "b")  # no normal class: sorted
    for bad in ("..", ".hidden", "a/b", "a\\b", "x\ny", "", "a..b"):
        with pytest.raises(UserError, match="plain class name"):
            classes.check_class_name(bad)
    with pytest.raises(UserError, match="config.data.classes='kinds'"):
        classes.check_mode("kinds")


@pytest.mark.parametrize("k", [2, 3, 4])
def test_folders_mode_reads_k_classes(tmp_path, k):
    root = _tree(tmp_path / "data", TREES[k])
    ds = sources.load_imageset(_cfg(root, tmp_path))
    assert ds.class_names == EXPECTED[k]
    assert ds.counts() == dict.fromkeys(EXPECTED[k], 6)
    for i, label in zip(ds.ids, ds.labels, strict=True):  # every folder is its own class
        assert ds.class_names[label] == classes.canonical_class_name(i.split("/")[0])
    again = sources.load_imageset(_cfg(root, tmp_path))  # from the cache: same classes
    assert again.class_names == ds.class_names and again.fingerprint == ds.fingerprint
    np.testing.assert_array_equal(again.labels, ds.labels)


def test_binary_mode_unchanged_and_distinct_from_folders(tmp_path):
    root = _tree(tmp_path / "data", TREES[4])
    binary = sources.load_imageset(_cfg(root, tmp_path, "binary"))
    assert binary.class_names == ("normal", "tumour")
    assert binary.counts() == {"normal": 6, "tumour": 18}
    scan = folders.scan_folder(root)  # the default is binary
    assert scan.class_dirs == {"glioma": 1, "meningioma": 1, "notumor": 0, "pituitary": 1}
    assert binary.fingerprint == scan.fingerprint(SIZE)
    four = sources.load_imageset(_cfg(root, tmp_path))
    assert four.fingerprint != binary.fingerprint  # separate cache entries, separate runs
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 2, cached


def test_config_without_classes_field_reads_as_binary(tmp_path):
    root = _tree(tmp_path / "data", TREES[2])
    c = _cfg(root, tmp_path, "binary")
    old = get_data_config()
    del old["classes"]  # a config.json written before the field existed
    old.path, old.image_size, old.cache_dir = c.path, c.image_size, c.cache_dir
    assert sources.load_imageset(old).fingerprint == sources.load_imageset(c).fingerprint


def test_folder_class_map_renames_and_merges(tmp_path):
    root = _tree(tmp_path / "data", ("astro", "glioma", "neg"))
    c = _cfg(root, tmp_path)
    c.class_map = "astro=glioma,neg=normal"
    ds = sources.load_imageset(c)
    assert ds.class_names == ("normal", "glioma") and ds.counts() == {"normal": 6, "glioma": 12}
    c.class_map = "astro=1"
    with pytest.raises(UserError, match="give names, not numbers"):
        sources.load_imageset(c)


def test_one_class_is_an_error_naming_the_folder(tmp_path):
    root = _tree(tmp_path / "data", ("yes",))
    with pytest.raises(DataError, match=r"only one class found \(yes/ -> tumour\)"):
        sources.load_imageset(_cfg(root, tmp_path, "binary"))
    root = _tree(tmp_path / "data2", ("glioma", "no"))
    c = _cfg(root, tmp_path)
    c.class_map = "no=glioma"  # merges everything into one class
    with pytest.raises(DataError, match="only one class found"):
        sources.load_imageset(c)


def test_looping_symlink_is_a_data_error(tmp_path):
    root = _tree(tmp_path / "data", TREES[2])
    loop = root / "yes" / "loop.png"
    os.symlink(loop.name, loop)  # points at itself
    with pytest.raises(DataError, match=r"loop\.png: cannot read this file"):
        sources.load_imageset(_cfg(root, tmp_path, "binary"))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_split_is_stratified_for_k_classes(k):
    from jax_mri_ldm.data.types import ImageSet

    rng = np.random.default_rng(k)
    labels = np.repeat(np.arange(k), rng.integers(10, 40, size=k)).astype(np.int32)
    n = labels.size
    ds = ImageSet(
        images=np.zeros((n, 2, 2, 1), np.float32),
        labels=labels,
        class_names=EXPECTED[k],
        ids=[f"i{j}" for j in range(n)],
        groups=np.arange(n, dtype=np.int64),
        fingerprint="fp",
    )
    split = split_indices(ds, 0.6, 0.2, seed=0)
    for c in range(k):
        n_c = int(np.sum(labels == c))
        for name, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            got = int(np.sum(labels[split[name]] == c))
            assert got >= 1 and abs(got - frac * n_c) <= 1.5, (c, name, got, n_c)


def test_split_error_says_how_many_images_are_needed(tmp_path):
    root = _tree(tmp_path / "data", TREES[3], n=6)
    (root / "glioma" / "0.png").unlink()
    for i in range(2, 6):
        (root / "glioma" / f"{i}.png").unlink()  # one glioma image left
    ds = sources.load_imageset(_cfg(root, tmp_path))
    with pytest.raises(DataError, match=r"class 'glioma' has 1 distinct.*at least 3 distinct"):
        split_indices(ds, 0.8, 0.1, seed=0)
    split = split_indices(ds, 0.8, 0.1, seed=0, require_all=False)
    assert sum(v.size for v in split.values()) == len(ds)


@pytest.mark.parametrize("k,batch", [(2, 4), (3, 16), (4, 8), (4, 6)])
def test_balanced_batches_equal_share_for_k_classes(k, batch):
    labels = np.repeat(np.arange(k), [3 + 5 * c for c in range(k)])  # skewed class sizes
    sampler = BalancedSampler(labels, batch, seed=1, num_classes=k)
    steps = 4 * k
    counts = np.zeros(k, np.int64)
    for step in range(steps):
        idx = sampler.indices(step)
        assert idx.shape == (batch,)
        per = np.bincount(labels[idx], minlength=k)
        assert per.max() - per.min() <= 1  # as equal as the batch size allows
        counts += per
    np.testing.assert_array_equal(counts, np.full(k, steps * batch // k))
    # Each class walks its own stream: over one class-epoch every example appears once.
    seen = np.concatenate([sampler._class_positions(0, s) for s in range(steps)])
    n0 = int(np.sum(labels == 0))
    for start in range(0, seen.size - n0 + 1, n0):
        assert sorted(seen[start : start + n0].tolist()) == list(range(n0))
    np.testing.assert_array_equal(sampler.indices(5), sampler.indices(5))  # pure in step


@pytest.mark.parametrize("k", [2, 3, 4])
def test_doctor_reports_k_classes(tmp_path, capsys, k):
    root = _tree(tmp_path / "data", TREES[k])
    args = [f"--path={root}", "--classes=folders", f"--image_size={SIZE}", "--no_cache"]
    assert doctor(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["class_names"] == list(EXPECTED[k]) and summary["num_classes"] == k
    assert summary["classes"] == dict.fromkeys(EXPECTED[k], 6)
    assert summary["warnings"] == []
    for name in ("train", "val", "test"):
        assert set(summary["split"][name]) == set(EXPECTED[k])
        assert min(summary["split"][name].values()) >= 1


def test_doctor_warns_and_fails_where_training_would(tmp_path, capsys):
    root = _tree(tmp_path / "data", ("no", "yes"), n=2)  # 2 normal images: no test image
    assert doctor([f"--path={root}", f"--image_size={SIZE}", "--no_cache"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert "WARNING: training would stop here" in out
    assert any("class 'normal' has 2 distinct" in w for w in summary["warnings"])

    one = _tree(tmp_path / "one", ("glioma",))
    assert doctor([f"--path={one}", "--classes=folders", "--no_cache"]) == 2
    assert "only one class found (glioma/ -> glioma)" in capsys.readouterr().err

    loop = root / "no" / "loop.png"
    os.symlink(loop.name, loop)
    assert doctor([f"--path={root}", "--no_cache"]) == 2
    err = capsys.readouterr().err
    assert "loop.png: cannot read this file" in err and "Traceback" not in err

    assert doctor(["--types", "--no_cache"]) == 2
    assert "add --builtin" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_4CLASS.is_dir(), reason="../shared/data/brain_tumor_4class absent")
def test_shared_4class_folder_has_four_classes(tmp_path, capsys):
    args = [f"--path={SHARED_4CLASS}", "--classes=folders", "--image_size=32", "--no_cache"]
    assert doctor(args) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert "framing may still give the class away" in out
    assert summary["class_names"] == ["normal", "glioma", "meningioma", "pituitary"]
    assert summary["classes"] == dict.fromkeys(summary["class_names"], 150)
    assert summary["warnings"] == []
    sizes = summary["size_per_class_dir"]  # the README's quirk: sizes differ by class
    assert sizes["glioma"]["most_common"] == "512x512" != sizes["notumor"]["most_common"]


def test_builtin_types_four_classes_and_binary_key_unchanged(tmp_path, capsys):
    args = ["--builtin", "--types", "--num_normal=3", "--num_tumour=9", "--image_size=32"]
    assert doctor([*args, f"--cache_dir={tmp_path}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["class_names"] == ["normal", "glioma", "meningioma", "pituitary"]
    assert summary["classes"] == dict.fromkeys(summary["class_names"], 3)
    assert summary["warnings"] == []

    c = get_data_config()
    old = get_data_config()
    del old.builtin["types"]  # a config written before the field existed
    binary = sources._builtin_fingerprint(c, 32)
    assert binary == sources._builtin_fingerprint(old, 32)
    c.builtin.types = True
    assert sources._builtin_fingerprint(c, 32) != binary


def test_nifti_folders_mode_three_named_classes(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i, name in enumerate(["Glioma", "healthy", "pituitary", "glioma"]):
        vol = rng.random((16, 16, 4)).astype(np.float32) + 1.0
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / f"v{i}.nii"))
        rows.append(f"v{i}.nii,{name}")
    csv_path = tmp_path / "v.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    c = _cfg(csv_path, tmp_path)
    c.nifti.slice_fraction = 1.0
    ds = sources.load_imageset(c)
    assert ds.class_names == ("normal", "glioma", "pituitary")
    assert ds.counts() == {"normal": 4, "glioma": 8, "pituitary": 4}
    binary = _cfg(csv_path, tmp_path, "binary")
    binary.nifti.slice_fraction = 1.0
    assert sources.load_imageset(binary).counts() == {"normal": 4, "tumour": 12}
    csv_path.write_text("path,label\nv0.nii,0\nv1.nii,2\n")
    with pytest.raises(DataError, match="numbers are refused"):
        sources.load_imageset(c)
