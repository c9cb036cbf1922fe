"""`load_imageset(config.data)`: pick the reader, preprocess, and cache the arrays on disk.

Sources (`config.data.source`):
- `builtin`: the procedural phantom set (`phantom.generate`), sizes from `config.data.builtin`;
  with `config.data.builtin.types=True` the four-class set of `phantom_types.generate`
  (normal, glioma, meningioma, pituitary).
- `folder`: `<path>/<class_dir>/<images>` (see `folders.py`).
- `nifti`: `path` is a CSV of NIfTI volumes and labels (see `nifti.py`).
- `tfds`: `path` is a TFDS data_dir holding a prepared `config.data.tfds_name` dataset
  (see `tfds_builder.py`), read through TFDS's array_record data source, without TensorFlow.
- `auto` (default): `builtin` when `path` is empty; `nifti` when `path` is a `.csv` file;
  `tfds` when `path` is a directory holding `<tfds_name>/.../dataset_info.json`; `folder`
  for any other directory.

Cache: `builtin`, `folder` and `nifti` results are stored as `.npz` in `config.data.cache_dir`
(default `$XDG_CACHE_HOME/jax_mri_ldm`, else `~/.cache/jax_mri_ldm`), named after a
fingerprint of the inputs: SHA-256 of every source file's bytes (hashing reads the files but
decodes none, so it costs little next to decoding) plus the reader/preprocessing versions and every
setting that changes the arrays. For `builtin` the fingerprint covers the generator's version
(its output is pinned by a test; see `_PHANTOM_V1_SHA256`), counts, seed and size. A cache
file is written to a temporary name in the same directory and renamed into place, so an
interrupted run never leaves a half-written file; an unreadable cache file is ignored and
rebuilt; an unwritable cache directory only costs the speed-up (warning). The TFDS source is
not cached again: it already is preprocessed arrays on disk.

Classes: `config.data.classes` ('binary' | 'folders', see `classes.py`) picks the labelling of
folder and NIfTI sources; the fingerprint covers it only when it is not 'binary', so runs and
caches made before the option existed keep their keys. Every loaded set must hold at least
two classes, each with at least one image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jax_mri_ldm import CLASS_NAMES, atomic
from jax_mri_ldm.data import classes as classes_lib
from jax_mri_ldm.data import preprocess
from jax_mri_ldm.data.folders import groups_from_keys
from jax_mri_ldm.data.types import DataError, ImageSet
from jax_mri_ldm.errors import UserError

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("auto", "builtin", "folder", "nifti", "tfds")
CACHE_FORMAT_VERSION = 1
# Decodes a cached source on a cache miss: () -> (ImageSet, report details).
BuildFn = Callable[[], tuple[ImageSet, dict]]


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/jax_mri_ldm`, or `~/.cache/jax_mri_ldm` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jax_mri_ldm"


def cache_dir_for(data_cfg: Any) -> Path:
    """The cache directory `config.data.cache_dir` names ('' -> `default_cache_dir()`)."""
    d = str(data_cfg.cache_dir or "").strip()
    return Path(d).expanduser() if d else default_cache_dir()


def _is_tfds_data_dir(path: Path, name: str) -> bool:
    ds_dir = path / name
    if not ds_dir.is_dir():
        return False
    return any(ds_dir.glob("*/*/dataset_info.json")) or any(ds_dir.glob("*/dataset_info.json"))


def resolve_source(data_cfg: Any) -> str:
    """Returns the concrete source for `config.data` ('auto' resolved; see module docstring).

    Args:
      data_cfg: the `config.data` ConfigDict.

    Returns:
      One of 'builtin', 'folder', 'nifti', 'tfds'.

    Raises:
      ValueError: unknown `config.data.source`.
      DataError: 'auto' with a path that does not exist or is an unsupported file.
    """
    source = str(data_cfg.source).strip().lower()
    if source not in SOURCES:
        raise UserError(
            f"config.data.source={data_cfg.source!r} is not a known source; valid values: "
            f"{', '.join(SOURCES)}"
        )
    if source != "auto":
        return source
    path_str = str(data_cfg.path or "").strip()
    if not path_str:
        return "builtin"
    path = Path(path_str).expanduser()
    if path.is_dir():
        return "tfds" if _is_tfds_data_dir(path, data_cfg.tfds_name) else "folder"
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "nifti"
        raise DataError(
            f"config.data.path={path_str!r} is a file but not a .csv: give an image-folder "
            f"root, a NIfTI CSV (path,label) or a TFDS data_dir (or set config.data.source)."
        )
    raise DataError(
        f"config.data.path={path_str!r}: directory does not exist. Point --config.data.path "
        f"at a folder laid out as <root>/<class>/<image files> (e.g. no/ and yes/), a NIfTI "
        f"CSV, or a TFDS data_dir; or leave it empty to use the built-in set."
    )


# ----------------------------------------------------------------------------- cache


def _cache_path(cache_dir: Path, source: str, size: int, fingerprint: str) -> Path:
    return cache_dir / f"{source}-{size}px-{fingerprint[:24]}.npz"


def _read_cache(path: Path, fingerprint: str) -> tuple[ImageSet, dict] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            meta = json.loads(str(z["meta"]))
            ds = ImageSet(
                images=z["images"],
                labels=z["labels"].astype(np.int32),
                class_names=tuple(str(c) for c in z["class_names"]),
                ids=[str(i) for i in z["ids"]],
                groups=z["groups"].astype(np.int64),
                fingerprint=fingerprint,
                skipped=[(str(a), str(b)) for a, b in json.loads(str(z["skipped"]))],
            )
    except Exception as e:  # any unreadable/partial/foreign file: rebuild
        log.warning("Ignoring unreadable cache file %s (%s); rebuilding it", path, e)
        return None
    n = len(ds.ids)
    if ds.images.shape[0] != n or ds.labels.shape != (n,) or ds.groups.shape != (n,):
        log.warning("Ignoring inconsistent cache file %s; rebuilding it", path)
        return None
    return ds, meta


def _write_cache(path: Path, ds: ImageSet, meta: dict) -> bool:
    """Atomically writes the npz; a failed write only logs (the cache is an optimisation)."""
    try:
        with atomic.atomic_path(str(path)) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                images=ds.images,
                labels=ds.labels,
                groups=ds.groups,
                ids=np.asarray(ds.ids, dtype=np.str_),
                class_names=np.asarray(ds.class_names, dtype=np.str_),
                fingerprint=np.asarray(ds.fingerprint),
                skipped=np.asarray(json.dumps(ds.skipped)),
                meta=np.asarray(json.dumps(meta)),
                cache_format=np.asarray(CACHE_FORMAT_VERSION),
            )
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError as e:
        log.warning("Not caching preprocessed arrays (write to %s failed: %s)", path, e)
        return False


# ----------------------------------------------------------------------------- readers


# SHA-256 of phantom.py's bytes as they were at GENERATOR_VERSION 1 (commit 44c9d53). Earlier
# fingerprints hashed the file itself, so every edit, even a pure refactor, changed the key of the
# built-in set and stopped runs on it from resuming. Now the generator's output is pinned by a test
# (tests/test_phantom.py) and any change to it must bump GENERATOR_VERSION; version 1 keeps this
# recorded hash so its existing keys stay valid, later versions are keyed by the version alone.
_PHANTOM_V1_SHA256 = "fa36bbff958a05dffe36df1f818dce2d3487d69b8d89284b5630756c3ac2fe21"
# The same for phantom_types.py (the four-class built-in set) at its GENERATOR_VERSION 1.
_PHANTOM_TYPES_V1_SHA256 = "20eb64a49e782556f69ca43ecfb947e57b7124b7687d7edc2aa6a3d5a05c4b48"


def _phantom_generator_sha256(version: int) -> str | None:
    """The `generator_sha256` fingerprint entry of phantom generator `version` (see above)."""
    return _PHANTOM_V1_SHA256 if version == 1 else None


def _types_generator_sha256(version: int) -> str | None:
    """The `types_sha256` fingerprint entry of phantom_types generator `version` (see above)."""
    return _PHANTOM_TYPES_V1_SHA256 if version == 1 else None


def _builtin_fingerprint(data_cfg: Any, size: int) -> str:
    from jax_mri_ldm.data import phantom  # lazy: only the built-in source needs it

    b = data_cfg.builtin
    version = phantom.GENERATOR_VERSION
    payload = {
        "reader": "builtin",
        "generator_version": version,
        "generator_sha256": _phantom_generator_sha256(version),
        "num_normal": int(b.num_normal),
        "num_tumour": int(b.num_tumour),
        "seed": int(b.seed),
        "image_size": int(size),
    }
    if _builtin_types(data_cfg):  # absent for the binary set: its key stays what it was
        from jax_mri_ldm.data import phantom_types

        payload["types"] = True
        payload["types_version"] = phantom_types.GENERATOR_VERSION
        payload["types_sha256"] = _types_generator_sha256(phantom_types.GENERATOR_VERSION)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _builtin_types(data_cfg: Any) -> bool:
    """`config.data.builtin.types` (False for configs written before the field existed)."""
    return bool(data_cfg.builtin.get("types", False))


def _load_builtin(data_cfg: Any, size: int, fingerprint: str) -> tuple[ImageSet, dict]:
    from jax_mri_ldm.data import phantom

    b = data_cfg.builtin
    kw = dict(num_normal=int(b.num_normal), num_tumour=int(b.num_tumour), size=size)
    if _builtin_types(data_cfg):
        from jax_mri_ldm.data import phantom_types

        images, labels = phantom_types.generate(**kw, seed=int(b.seed))
        class_names = phantom_types.CLASS_NAMES
    else:
        images, labels = phantom.generate(**kw, seed=int(b.seed))
        class_names = tuple(CLASS_NAMES)
    n = labels.shape[0]
    ds = ImageSet(
        images=np.asarray(images, np.float32),  # (N, S, S, 1), already min-max normalised
        labels=np.asarray(labels, np.int32),
        class_names=class_names,
        ids=[f"builtin/{i:06d}" for i in range(n)],
        groups=np.arange(n, dtype=np.int64),  # generated images are all distinct draws
        fingerprint=fingerprint,
    )
    return ds, {}


def _read_tfds(data_cfg: Any, size: int) -> tuple[ImageSet, dict]:
    import tensorflow_datasets as tfds  # lazy: heavy import

    root = Path(str(data_cfg.path)).expanduser()
    name = str(data_cfg.tfds_name)
    dirs = _tfds_version_dirs(root, name, size)
    candidates = []
    for d in dirs:
        b = tfds.builder_from_directory(str(d))
        shape = tuple(b.info.features["image"].shape)
        candidates.append((d, b, shape))
    d, builder, shape = _pick_tfds_config(candidates, name, size)
    info_hash = hashlib.sha256((d / "dataset_info.json").read_bytes())
    images, labels, ids, keys, skipped = _read_tfds_examples(builder, size)
    if not images:
        raise DataError(f"{d}: the TFDS dataset holds no usable examples")
    order = np.argsort(np.asarray(ids), kind="stable")  # TFDS stores examples hash-shuffled
    ids = [ids[i] for i in order]
    keys = [keys[i] for i in order]
    fp = hashlib.sha256()
    fp.update(info_hash.digest())
    fp.update(json.dumps([ids, keys, size, preprocess.PREPROCESS_VERSION]).encode())
    ds = ImageSet(
        images=np.stack(images)[order].astype(np.float32),
        labels=np.asarray(labels, np.int32)[order],
        class_names=_tfds_class_names(builder),
        ids=ids,
        groups=groups_from_keys(keys),
        fingerprint=fp.hexdigest(),
        skipped=skipped,
    )
    return ds, {"tfds_dir": str(d), "stored_shape": list(shape)}


def _tfds_version_dirs(root: Path, name: str, size: int) -> list[Path]:
    """Every `<root>/<name>/[<config>/]<version>` directory, or a DataError saying what to do."""
    ds_dir = root / name
    dirs = sorted({p.parent for p in ds_dir.glob("*/*/dataset_info.json")})
    dirs += sorted({p.parent for p in ds_dir.glob("*/dataset_info.json")})
    if not dirs:
        raise DataError(
            f"config.data.path={str(root)!r}: no prepared TFDS dataset {name!r} "
            f"(expected {ds_dir}/<config>/<version>/dataset_info.json). Build one with "
            f"`python -m jax_mri_ldm.data --path=IMAGE_FOLDER --build_tfds={root} "
            f"--image_size={size}`."
        )
    return dirs


def _pick_tfds_config(candidates: list[tuple[Path, Any, tuple]], name: str, size: int) -> tuple:
    """The (dir, builder, stored shape) to read: `size` px if built, else the largest."""
    exact = [c for c in candidates if c[2][:2] == (size, size)]
    if exact:
        # Prefer the default class map config ('<size>px'), then the newest version.
        exact.sort(key=lambda c: (c[0].parent.name == f"{size}px", c[0].name))
        return exact[-1]
    d, builder, shape = max(candidates, key=lambda c: (c[2][0], c[0].name))
    log.warning(
        "TFDS %s has no %dpx config (found %s); resizing %s to %dx%d. Build the exact size "
        "with --build_tfds --image_size=%d for the paper's preprocessing.",
        name,
        size,
        sorted({c[2] for c in candidates}),
        d,
        size,
        size,
        size,
    )
    return d, builder, shape


def _read_tfds_examples(builder: Any, size: int) -> tuple[list, list, list, list, list]:
    """(images, labels, ids, keys, skipped) of every split, in storage order, preprocessed."""
    images, labels, ids, keys = [], [], [], []
    skipped: list[tuple[str, str]] = []
    for split in sorted(builder.info.splits.keys()):
        source = builder.as_data_source(split=split)
        n = len(source)
        for start in range(0, n, 256):
            for j, ex in enumerate(source.__getitems__(list(range(start, min(n, start + 256))))):
                ex_id = ex.get("id", f"{split}/{start + j:06d}")
                ex_id = ex_id.decode() if isinstance(ex_id, bytes) else str(ex_id)
                try:
                    arr = preprocess.preprocess_array(_tfds_gray(ex["image"]), size)
                except preprocess.RejectedImage as err:
                    skipped.append((ex_id, str(err)))
                    continue
                images.append(arr)
                labels.append(int(ex["label"]))
                ids.append(ex_id)
                keys.append(_tfds_key(ex))
    return images, labels, ids, keys, skipped


def _tfds_gray(image: Any) -> np.ndarray:
    """A stored TFDS image as one float32 grey channel (RGB by luma, else the first channel)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 3:
        img = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif img.ndim == 3:
        img = img[..., 0]
    return img.astype(np.float32)


def _tfds_key(ex: dict[str, Any]) -> str:
    """The example's duplicate-grouping key: its stored source SHA-256, else its pixels'."""
    key = ex.get("sha256")
    key = key.decode() if isinstance(key, bytes) else key
    return key or hashlib.sha256(np.asarray(ex["image"]).tobytes()).hexdigest()


def _tfds_class_names(builder: Any) -> tuple[str, ...]:
    """The label feature's names when it has more than the binary set's, else CLASS_NAMES."""
    class_names = tuple(CLASS_NAMES)
    feat = builder.info.features["label"]
    if hasattr(feat, "names") and len(feat.names) > len(CLASS_NAMES):
        class_names = tuple(feat.names)
    return class_names


# ----------------------------------------------------------------------------- entry points


def load_imageset_with_report(data_cfg: Any, *, use_cache: bool = True) -> tuple[ImageSet, dict]:
    """Like `load_imageset`, also returning a report for the data doctor.

    Args:
      data_cfg: the `config.data` ConfigDict.
      use_cache: read/write the on-disk cache (False: always decode, write nothing).

    Returns:
      (ImageSet, report). The report holds 'source', 'cache_path' (or None), 'cache_hit',
      'seconds', and for folders 'files': id -> {'mode', 'size': [w, h]} of each decoded file.

    Raises:
      ValueError: bad config values (named).
      DataError: bad input files (named, with what to do).
    """
    t0 = time.perf_counter()
    source = resolve_source(data_cfg)
    size = int(data_cfg.image_size)
    if size < preprocess.MIN_SIDE:
        raise UserError(
            f"config.data.image_size={size} is too small (minimum {preprocess.MIN_SIDE})"
        )
    mode = classes_lib.mode_of(data_cfg)
    report: dict[str, Any] = {"source": source, "cache_path": None, "cache_hit": False}
    if source == "tfds":
        ds = _load_tfds_source(data_cfg, size, mode, report)
    else:
        fingerprint, build = _cached_source_reader(data_cfg, source, size, mode)
        path = str(data_cfg.path or "").strip()
        cpath = (
            _cache_path(cache_dir_for(data_cfg), source, size, fingerprint) if use_cache else None
        )
        ds = _load_through_cache(cpath, fingerprint, build, path or "the built-in set", report)
    report["seconds"] = time.perf_counter() - t0
    return ds, report


def _load_tfds_source(data_cfg: Any, size: int, mode: str, report: dict[str, Any]) -> ImageSet:
    """Reads the TFDS source (never cached again), adding its details to `report`."""
    if mode != "binary":
        raise UserError(
            "config.data.classes=folders is not supported for the TFDS source (its builder "
            "stores the binary labels); read the image folder itself (config.data.path="
            "<folder>) instead."
        )
    ds, extra = _read_tfds(data_cfg, size)
    check_classes(ds, str(data_cfg.path))
    report.update(extra)
    return ds


def _cached_source_reader(data_cfg: Any, source: str, size: int, mode: str) -> tuple[str, BuildFn]:
    """(fingerprint, build) of a cached source: the cache key, and how to decode on a miss."""
    path = str(data_cfg.path or "").strip()
    if source == "builtin":
        fingerprint = _builtin_fingerprint(data_cfg, size)
        return fingerprint, lambda: _load_builtin(data_cfg, size, fingerprint)
    if source == "folder":
        return _folder_reader(data_cfg, path, size, mode)
    if source == "nifti":
        return _nifti_reader(data_cfg, path, size, mode)
    raise AssertionError(source)  # pragma: no cover - resolve_source only returns the above


def _folder_reader(data_cfg: Any, path: str, size: int, mode: str) -> tuple[str, BuildFn]:
    """The image-folder source; its build also reports each decoded file's mode and size."""
    from jax_mri_ldm.data import folders

    scan = folders.scan_folder(path, str(data_cfg.class_map or ""), classes=mode)

    def build() -> tuple[ImageSet, dict]:
        files: dict[str, Any] = {}

        def on_file(entry, img):
            files[entry.id] = None if img is None else {"mode": img.mode, "size": list(img.size)}

        return folders.load_scan(scan, size, on_file=on_file), {"files": files}

    return scan.fingerprint(size), build


def _nifti_reader(data_cfg: Any, path: str, size: int, mode: str) -> tuple[str, BuildFn]:
    """The NIfTI CSV source (`config.data.nifti` picks the slices)."""
    from jax_mri_ldm.data import nifti

    nscan = nifti.scan_csv(
        path,
        slice_range=str(data_cfg.nifti.slice_range or ""),
        slice_fraction=float(data_cfg.nifti.slice_fraction),
        min_foreground=float(data_cfg.nifti.min_foreground),
        class_map=str(data_cfg.class_map or ""),
        classes=mode,
    )
    return nscan.fingerprint(size), lambda: (nifti.load_scan(nscan, size), {})


def _load_through_cache(
    cpath: Path | None, fingerprint: str, build: BuildFn, where: str, report: dict[str, Any]
) -> ImageSet:
    """The cached set at `cpath` if valid, else `build()`, checked and cached; fills `report`."""
    cached = _read_cache(cpath, fingerprint) if cpath is not None else None
    if cached is not None:
        ds, meta = cached
        report.update(meta)
        report.update(cache_path=str(cpath), cache_hit=True)
        return ds
    ds, meta = build()
    report.update(meta)
    check_classes(ds, where)
    if cpath is not None and _write_cache(cpath, ds, meta):
        report["cache_path"] = str(cpath)
    return ds


def check_classes(ds: ImageSet, where: str) -> None:
    """Raises DataError unless `ds` holds at least two classes, each with an image.

    Training balances batches over the classes and conditions on them, so a class without
    images (or a single class) would fail only later, inside the sampler.
    """
    counts = ds.counts()
    empty = [name for name, n in counts.items() if n == 0]
    if len(counts) < 2 or empty:
        raise DataError(
            f"{where}: training needs at least two classes with images each; found "
            f"{counts or 'no classes'}"
            + (f" ({', '.join(empty)} empty)" if empty else "")
            + ". Add images of the missing class, or fix the labels (config.data.class_map, "
            "config.data.classes)."
        )


def load_imageset(data_cfg: Any, *, use_cache: bool = True) -> ImageSet:
    """Loads the dataset `config.data` describes, preprocessed, from cache when possible.

    Args:
      data_cfg: the `config.data` ConfigDict (`get_data_config()` fields).
      use_cache: read/write the on-disk cache.

    Returns:
      ImageSet: images (N, S, S, 1) float32 in [0, 1], labels (N,) int32, ids, duplicate
      groups, fingerprint and the skipped files with reasons.

    Raises:
      ValueError: unknown `config.data.source` or another bad setting (named).
      DataError: bad input files (named, with what to do).
    """
    return load_imageset_with_report(data_cfg, use_cache=use_cache)[0]
