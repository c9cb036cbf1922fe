"""Readers, preprocessing, cache and dispatch on small files created in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jax_mri_ldm.data import folders, nifti, preprocess, sources
from jax_mri_ldm.data.config import get_data_config
from jax_mri_ldm.data.sources import load_imageset, load_imageset_with_report, resolve_source
from jax_mri_ldm.data.types import DataError

SIZE = 32


def _pattern(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A non-constant float pattern in [0, 1] (gradient + noise), (h, w)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(0.6 * xx / w + 0.3 * yy / h + 0.1 * rng.random((h, w)), 0, 1)


def _write(path: Path, mode: str = "L", h: int = 40, w: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = (_pattern(h, w, seed) * 255).astype(np.uint8)
    if mode == "L":
        img = Image.fromarray(g)
    elif mode == "RGB":  # grayscale stored as RGB, like most of the Kaggle files
        img = Image.fromarray(np.stack([g, g, g], -1))
    elif mode == "RGBA":
        img = Image.fromarray(np.stack([g, g, g, np.full_like(g, 255)], -1))
    elif mode == "P":
        img = Image.fromarray(g).convert("P")
    elif mode == "I;16":
        img = Image.fromarray((1000 + _pattern(h, w, seed) * 59000).astype(np.uint16))
    else:
        raise ValueError(mode)
    img.save(path)
    return path


def _cfg(path: Path | str, tmp_path: Path, **kw):
    c = get_data_config()
    c.path = str(path)
    c.image_size = SIZE
    c.cache_dir = str(tmp_path / "cache")
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _tiny_tree(root: Path) -> Path:
    _write(root / "no" / "a.png", "L", seed=1)
    _write(root / "no" / "b c.JPG", "RGB", seed=2)  # space in name, upper-case extension
    _write(root / "no" / "d.png", "RGBA", seed=3)
    _write(root / "yes" / "p.png", "P", seed=4)
    _write(root / "yes" / "s16.png", "I;16", seed=5)
    _write(root / "yes" / "e.bmp", "L", seed=6)
    _write(root / "yes" / "f.tiff", "L", seed=7)
    (root / "yes" / "dup.bmp").write_bytes((root / "yes" / "e.bmp").read_bytes())
    (root / "yes" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("root files are ignored")
    return root


# ----------------------------------------------------------------------------- preprocessing


def test_pil_to_float_grayscale_rules():
    g = (_pattern() * 255).astype(np.uint8)
    gray_rgb = Image.fromarray(np.stack([g, g, g], -1))
    np.testing.assert_array_equal(preprocess.pil_to_float(gray_rgb), g.astype(np.float32))
    colour = Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8))
    np.testing.assert_allclose(
        preprocess.pil_to_float(colour), [[76.245, 149.685, 29.07]], rtol=1e-5
    )
    # RGBA composited on black: transparent pixels become 0 whatever colour they hide.
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (200, 200, 200, 255)
    rgba[0, 1] = (200, 200, 200, 0)
    np.testing.assert_allclose(preprocess.pil_to_float(Image.fromarray(rgba)), [[200.0, 0.0]])
    # Palette images go through the palette.
    pal = Image.fromarray(g).convert("P")
    np.testing.assert_allclose(preprocess.pil_to_float(pal), g, atol=1.0)


def test_16bit_is_not_clipped_to_8_bits():
    vals = np.array([[300, 40000], [1000, 60000]], np.uint16)
    out = preprocess.pil_to_float(Image.fromarray(vals))
    np.testing.assert_array_equal(out, vals.astype(np.float32))
    big = np.tile(np.array([[256, 512], [1024, 2048]], np.uint16), (10, 10))  # all > 255
    x = preprocess.preprocess_pil(Image.fromarray(big), SIZE)
    assert x.shape == (SIZE, SIZE, 1) and x.min() == 0.0 and x.max() == 1.0


def test_preprocess_output_range_and_resize():
    arr = np.zeros((64, 128), np.float32)
    arr[:, 64:] = 5.0  # left half 0, right half 5
    x = preprocess.preprocess_array(arr, SIZE)
    assert x.dtype == np.float32 and x.shape == (SIZE, SIZE, 1)
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x[:, :14, 0], 0.0, atol=1e-6)  # far from the edge: unchanged
    np.testing.assert_allclose(x[:, 18:, 0], 1.0, atol=1e-6)
    assert 0.0 < x[0, 15, 0] < 1.0 or 0.0 < x[0, 16, 0] < 1.0  # bilinear edge is blended


def test_preprocess_rejects_small_and_constant():
    with pytest.raises(preprocess.RejectedImage, match="too small"):
        preprocess.preprocess_array(np.random.default_rng(0).random((8, 40)), SIZE)
    with pytest.raises(preprocess.RejectedImage, match="constant image"):
        preprocess.preprocess_array(np.full((40, 40), 7.0), SIZE)


# ----------------------------------------------------------------------------- folders


def test_folder_reader_modes_duplicates_and_skips(tmp_path):
    root = _tiny_tree(tmp_path / "data")
    ds, report = load_imageset_with_report(_cfg(root, tmp_path))
    assert ds.images.shape == (8, SIZE, SIZE, 1) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert np.allclose(ds.images.reshape(8, -1).min(1), 0) and np.allclose(
        ds.images.reshape(8, -1).max(1), 1
    )
    assert ds.ids == [
        "no/a.png",
        "no/b c.JPG",
        "no/d.png",
        "yes/dup.bmp",
        "yes/e.bmp",
        "yes/f.tiff",
        "yes/p.png",
        "yes/s16.png",
    ]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert ds.counts() == {"normal": 3, "tumour": 5}
    assert ds.groups[3] == ds.groups[4] and len(np.unique(ds.groups)) == 7
    np.testing.assert_array_equal(ds.images[3], ds.images[4])
    assert ds.skipped == [("yes/notes.txt", "not an image file (extension '.txt')")]
    modes = {k: v["mode"] for k, v in report["files"].items()}
    assert modes["no/d.png"] == "RGBA" and modes["yes/p.png"] == "P"
    assert modes["yes/s16.png"].startswith("I")


def test_class_map_override_and_unmapped_directory(tmp_path):
    root = tmp_path / "data"
    _write(root / "neg" / "a.png", seed=1)
    _write(root / "POS" / "b.png", seed=2)
    with pytest.raises(DataError, match=r"'neg'.*--config\.data\.class_map"):
        load_imageset(_cfg(root, tmp_path))
    ds = load_imageset(_cfg(root, tmp_path, class_map="neg=0,pos=tumour"))
    assert ds.ids == ["POS/b.png", "neg/a.png"] and ds.labels.tolist() == [1, 0]


def test_parse_class_map():
    m = folders.parse_class_map("Scan=1, clean = normal")
    assert m["scan"] == 1 and m["clean"] == 0 and m["no"] == 0 and m["glioma"] == 1
    with pytest.raises(ValueError, match="config.data.class_map"):
        folders.parse_class_map("oops")
    with pytest.raises(ValueError, match="config.data.class_map"):
        folders.parse_class_map("x=7")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_imageset(_cfg(tmp_path / "nope", tmp_path, source="folder"))
    with pytest.raises(DataError, match="does not exist"):
        resolve_source(_cfg(tmp_path / "nope", tmp_path))


def test_no_class_subdirectories(tmp_path):
    root = tmp_path / "flat"
    _write(root / "a.png")
    with pytest.raises(DataError, match="no class sub-directories"):
        load_imageset(_cfg(root, tmp_path))


def test_empty_class_directory(tmp_path):
    root = tmp_path / "data"
    _write(root / "no" / "a.png")
    (root / "yes").mkdir()
    with pytest.raises(DataError, match=r"yes: class directory holds no image files"):
        load_imageset(_cfg(root, tmp_path))


def test_corrupt_truncated_small_constant_files_are_skipped(tmp_path):
    root = tmp_path / "data"
    _write(root / "no" / "good.png", seed=1)
    _write(root / "yes" / "good.jpg", "RGB", seed=2)
    (root / "no" / "garbage.png").write_bytes(b"\x89PNG not really a png")
    full = _write(tmp_path / "full.jpg", "L", h=64, w=64).read_bytes()
    (root / "yes" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    _write(root / "yes" / "tiny.png", h=8, w=8)
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(root / "yes" / "flat.png")
    (root / "yes" / "data.csv").write_text("a,b\n")
    ds = load_imageset(_cfg(root, tmp_path))
    assert ds.ids == ["no/good.png", "yes/good.jpg"]
    reasons = dict(ds.skipped)
    assert set(reasons) == {
        "no/garbage.png",
        "yes/truncated.jpg",
        "yes/tiny.png",
        "yes/flat.png",
        "yes/data.csv",
    }
    assert reasons["no/garbage.png"].startswith("corrupt or truncated image")
    assert reasons["yes/truncated.jpg"].startswith("corrupt or truncated image")
    assert reasons["yes/tiny.png"] == "too small (8x8 < 16x16)"
    assert reasons["yes/flat.png"] == "constant image (min = max)"
    assert reasons["yes/data.csv"].startswith("not an image file")


def test_class_directory_with_only_bad_files_is_an_error(tmp_path):
    root = tmp_path / "data"
    _write(root / "no" / "good.png")
    (root / "yes").mkdir()
    (root / "yes" / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"yes: no usable image.*bad\.jpg"):
        load_imageset(_cfg(root, tmp_path))


# ----------------------------------------------------------------------------- cache


def test_cache_hit_skips_decoding_and_invalidates_on_change(tmp_path, monkeypatch):
    root = _tiny_tree(tmp_path / "data")
    calls = []
    real_decode = folders.decode_image

    def counting(path):
        calls.append(path)
        return real_decode(path)

    monkeypatch.setattr(folders, "decode_image", counting)
    cfg = _cfg(root, tmp_path)
    ds1, r1 = load_imageset_with_report(cfg)
    assert len(calls) == 8 and not r1["cache_hit"]
    ds2, r2 = load_imageset_with_report(cfg)
    assert len(calls) == 8 and r2["cache_hit"] and r2["cache_path"] == r1["cache_path"]
    np.testing.assert_array_equal(ds1.images, ds2.images)
    assert ds1.ids == ds2.ids and ds1.skipped == ds2.skipped
    assert ds1.fingerprint == ds2.fingerprint
    assert r2["files"] == r1["files"]  # the doctor's mode/size report survives the cache
    # Only the final .npz is in the cache dir: no temp files.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(r1["cache_path"]).name]
    # Changing a file's content changes the fingerprint -> decoded again.
    _write(root / "no" / "a.png", "L", seed=99)
    ds3 = load_imageset(cfg)
    assert len(calls) == 16 and ds3.fingerprint != ds1.fingerprint
    # A different image size is a different cache entry.
    load_imageset(_cfg(root, tmp_path, image_size=16))
    assert len(calls) == 24


def test_cache_write_is_atomic_and_bad_cache_is_rebuilt(tmp_path, monkeypatch):
    root = _tiny_tree(tmp_path / "data")
    cfg = _cfg(root, tmp_path)

    def failing_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sources.np, "savez", failing_savez)
    ds, report = load_imageset_with_report(cfg)
    assert len(ds) == 8 and report["cache_path"] is None
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written left behind
    monkeypatch.undo()

    _, report = load_imageset_with_report(cfg)
    cache_file = Path(report["cache_path"])
    cache_file.write_bytes(b"garbage")
    ds2, report2 = load_imageset_with_report(cfg)
    assert not report2["cache_hit"] and len(ds2) == 8
    _, report3 = load_imageset_with_report(cfg)
    assert report3["cache_hit"]


def test_use_cache_false_writes_nothing(tmp_path):
    root = _tiny_tree(tmp_path / "data")
    load_imageset(_cfg(root, tmp_path), use_cache=False)
    assert not (tmp_path / "cache").exists()


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.default_cache_dir() == tmp_path / "xdg" / "jax_mri_ldm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert sources.default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "jax_mri_ldm"


# ----------------------------------------------------------------------------- builtin / dispatch


def test_builtin_source_uses_phantom_and_is_cached(tmp_path, monkeypatch):
    from jax_mri_ldm.data import phantom

    calls = []
    real = phantom.generate

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(phantom, "generate", counting)
    cfg = _cfg("", tmp_path)
    cfg.builtin.num_normal, cfg.builtin.num_tumour, cfg.builtin.seed = 2, 3, 5
    ds = load_imageset(cfg)
    assert calls == [dict(num_normal=2, num_tumour=3, size=SIZE, seed=5)]
    ref_images, ref_labels = real(num_normal=2, num_tumour=3, size=SIZE, seed=5)
    np.testing.assert_array_equal(ds.images, ref_images)
    np.testing.assert_array_equal(ds.labels, ref_labels)
    assert ds.ids[0] == "builtin/000000" and len(np.unique(ds.groups)) == 5
    ds2 = load_imageset(cfg)
    assert len(calls) == 1 and ds2.fingerprint == ds.fingerprint
    cfg.builtin.seed = 6
    assert load_imageset(cfg).fingerprint != ds.fingerprint and len(calls) == 2


def test_resolve_source(tmp_path):
    assert resolve_source(_cfg("", tmp_path)) == "builtin"
    root = _tiny_tree(tmp_path / "data")
    assert resolve_source(_cfg(root, tmp_path)) == "folder"
    csv_path = tmp_path / "vols.csv"
    csv_path.write_text("path,label\n")
    assert resolve_source(_cfg(csv_path, tmp_path)) == "nifti"
    (tmp_path / "tf" / "brain_mri" / "64px" / "1.0.0").mkdir(parents=True)
    (tmp_path / "tf" / "brain_mri" / "64px" / "1.0.0" / "dataset_info.json").write_text("{}")
    assert resolve_source(_cfg(tmp_path / "tf", tmp_path)) == "tfds"
    assert resolve_source(_cfg(root, tmp_path, source="nifti")) == "nifti"
    with pytest.raises(DataError, match="not a .csv"):
        resolve_source(_cfg(root / "README.md", tmp_path))


def test_unknown_source_names_option_and_valid_values(tmp_path):
    with pytest.raises(ValueError, match=r"config\.data\.source='hdf5'.*auto, builtin, folder"):
        load_imageset(_cfg("", tmp_path, source="hdf5"))


# ----------------------------------------------------------------------------- NIfTI


def _volume(shape=(24, 20, 12), seed=0) -> np.ndarray:
    """A head-like blob present in the central slices only (first/last 2 slices empty)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vol = ((x**2 + y**2) < 0.6).astype(np.float32) * (100 + 20 * x + 10 * y)
    vol[:, :, :2] = 0
    vol[:, :, -2:] = 0
    return (vol + rng.random(shape)).astype(np.float32)  # low background noise


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def test_nifti_reader_slices_labels_groups(tmp_path):
    _save_nifti(tmp_path / "vols" / "a.nii.gz", _volume(seed=0))
    _save_nifti(tmp_path / "vols" / "b b.nii", _volume(seed=1))
    csv_path = tmp_path / "vols.csv"
    csv_path.write_text("path,label,site\nvols/a.nii.gz,0,x\nvols/b b.nii,tumour,y\n")
    cfg = _cfg(csv_path, tmp_path)
    cfg.nifti.slice_fraction = 1.0
    ds = load_imageset(cfg)
    # 12 slices, the 2 empty ones at each end dropped -> slices 2..9 of each volume.
    assert len(ds) == 16 and ds.images.shape == (16, SIZE, SIZE, 1)
    assert ds.ids[0] == "vols/a.nii.gz#z=2" and ds.ids[-1] == "vols/b b.nii#z=9"
    assert ds.labels.tolist() == [0] * 8 + [1] * 8
    assert ds.groups.tolist() == [0] * 8 + [1] * 8  # slices of one volume stay together
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0

    cfg.nifti.slice_fraction = 0.5  # central 6 of 12 -> 3..8
    assert load_imageset(cfg).ids[:6] == [f"vols/a.nii.gz#z={z}" for z in range(3, 9)]
    cfg.nifti.slice_range = "0:4"  # 0 and 1 are empty
    assert load_imageset(cfg).ids[:2] == ["vols/a.nii.gz#z=2", "vols/a.nii.gz#z=3"]
    cfg.nifti.slice_range = "nonsense"
    with pytest.raises(ValueError, match="config.data.nifti.slice_range"):
        load_imageset(cfg)


def test_nifti_orientation_is_canonical(tmp_path):
    vol = _volume(seed=3)
    _save_nifti(tmp_path / "ras.nii", vol)
    flip_x = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip_x[0, 3] = vol.shape[0] - 1
    _save_nifti(tmp_path / "las.nii", vol[::-1], flip_x)  # same anatomy, x stored reversed
    a = nifti.load_volume(tmp_path / "ras.nii")
    b = nifti.load_volume(tmp_path / "las.nii")
    np.testing.assert_allclose(a, b)
    sl = nifti.axial_slice(a, 5)
    assert sl.shape == (vol.shape[1], vol.shape[0])
    np.testing.assert_array_equal(sl, vol[::-1, ::-1, 5].T)


def test_nifti_4d_volume_is_an_error(tmp_path):
    _save_nifti(
        tmp_path / "fmri.nii.gz", np.random.default_rng(0).random((8, 8, 6, 3), dtype=np.float32)
    )
    csv_path = tmp_path / "v.csv"
    csv_path.write_text("path,label\nfmri.nii.gz,1\n")
    with pytest.raises(DataError, match=r"fmri\.nii\.gz: expected a 3D volume.*4D"):
        load_imageset(_cfg(csv_path, tmp_path))


def test_nifti_csv_naming_missing_files(tmp_path):
    _save_nifti(tmp_path / "a.nii", _volume())
    csv_path = tmp_path / "v.csv"
    csv_path.write_text("path,label\na.nii,0\nmissing1.nii.gz,1\nsub/missing2.nii,0\n")
    with pytest.raises(DataError, match=r"2 listed file.*'missing1\.nii\.gz', 'sub/missing2"):
        load_imageset(_cfg(csv_path, tmp_path))


def test_nifti_csv_bad_header_and_label(tmp_path):
    _save_nifti(tmp_path / "a.nii", _volume())
    csv_path = tmp_path / "v.csv"
    csv_path.write_text("file,class\na.nii,0\n")
    with pytest.raises(DataError, match="'path' and 'label'"):
        load_imageset(_cfg(csv_path, tmp_path))
    csv_path.write_text("path,label\na.nii,5\n")
    with pytest.raises(DataError, match=r"v\.csv:2: label '5'"):
        load_imageset(_cfg(csv_path, tmp_path))
