"""NIfTI reader: 3D volumes listed in a CSV -> labelled axial slices.

`config.data.path` is a CSV with a header row holding at least the columns `path` and `label`
(extra columns are ignored). `path` is relative to the CSV's directory (absolute paths work
too) and names a `.nii` or `.nii.gz` file; `label` is an integer id or a class name
("normal"/"tumour", or any folder name from the class map, e.g. "yes").

Per volume:
- Reoriented to the closest canonical (RAS+) orientation, so the third axis is always
  inferior -> superior and `data[:, :, z]` is an axial slice whatever the scanner wrote.
- Each slice is shown in the radiological convention (anterior up, patient's right on the
  image's left), like the 2D scans of the Kaggle set.
- Slices kept: `config.data.nifti.slice_range` "a:b" (Python slice semantics on the axial
  index, negative indices allowed), else the central `slice_fraction` of the axial extent.
- Near-empty slices are dropped: a voxel is foreground when it lies above
  `BACKGROUND_LEVEL` of the volume's intensity range (min .. 99.5th percentile); a slice whose
  foreground fraction is below `min_foreground` is not used.
- Each kept slice goes through the same preprocessing as a 2D image (bilinear resize,
  min-max). ids are "<csv-relative path>#z=<index>".
- All slices of a volume share one `groups` id, so a split never puts slices of the same
  volume on both sides (the same holds for byte-identical volume files).

Errors (DataError, naming the file): unreadable CSV or missing columns, CSV rows naming files
that do not exist (all of them listed), a file that is not NIfTI, a volume that is not 3D
(4D time series must be split into 3D volumes first; trailing singleton axes are dropped).
A volume with no usable slice is skipped and reported.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from jax_mri_ldm import CLASS_NAMES
from jax_mri_ldm.data import classes as classes_lib
from jax_mri_ldm.data import preprocess
from jax_mri_ldm.data.folders import (
    file_sha256,
    groups_from_keys,
    parse_class_map,
    parse_folder_class_map,
)
from jax_mri_ldm.data.types import DataError, ImageSet
from jax_mri_ldm.errors import UserError

log = logging.getLogger(__name__)

NIFTI_READER_VERSION = 1
BACKGROUND_LEVEL = 0.05  # fraction of the volume's intensity range below which a voxel is air
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclasses.dataclass
class NiftiEntry:
    """One CSV row."""

    path: Path
    id: str  # the path as written in the CSV (POSIX separators)
    label: int
    sha256: str


@dataclasses.dataclass
class NiftiScan:
    """The parsed CSV plus the settings that select slices."""

    csv_path: Path
    entries: list[NiftiEntry]
    slice_range: str
    slice_fraction: float
    min_foreground: float
    class_names: tuple[str, ...] = CLASS_NAMES  # label id -> name
    mode: str = "binary"  # config.data.classes

    def fingerprint(self, size: int) -> str:
        """Hex digest of the volumes' contents and every setting that shapes the slices."""
        payload = {
            "reader": "nifti",
            "reader_version": NIFTI_READER_VERSION,
            "preprocess_version": preprocess.PREPROCESS_VERSION,
            "image_size": int(size),
            "slice_range": self.slice_range,
            "slice_fraction": float(self.slice_fraction),
            "min_foreground": float(self.min_foreground),
            "background_level": BACKGROUND_LEVEL,
            "files": [(e.id, e.label, e.sha256) for e in self.entries],
        }
        if self.mode != "binary":  # binary payload unchanged: existing runs keep their key
            payload.update(classes=self.mode, class_names=list(self.class_names))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _parse_label(value: str, mapping: dict[str, int], where: str) -> int:
    v = value.strip().lower()
    if v in CLASS_NAMES:
        return CLASS_NAMES.index(v)
    if v in mapping:
        return mapping[v]
    try:
        label = int(v)
    except ValueError:
        label = -1
    if not 0 <= label < len(CLASS_NAMES):
        raise DataError(
            f"{where}: label {value!r} is not a class id (0..{len(CLASS_NAMES) - 1}) or a "
            f"known name ({', '.join(CLASS_NAMES)}, or a --config.data.class_map name)"
        )
    return label


def _parse_label_name(value: str, mapping: dict[str, str], where: str) -> str:
    """`folders` mode: the class name a CSV label means (overrides, then synonyms)."""
    v = value.strip()
    if not v or v.lstrip("-").isdigit():
        raise DataError(
            f"{where}: label {value!r} must be a class name with config.data.classes=folders "
            f"(e.g. normal, glioma); class ids follow the class order, so numbers are refused."
        )
    name = mapping.get(v.lower(), classes_lib.canonical_class_name(v))
    try:
        return classes_lib.check_class_name(name, where)
    except ValueError as e:
        raise DataError(str(e)) from e


def scan_csv(
    csv_path: str | Path,
    *,
    slice_range: str = "",
    slice_fraction: float = 0.5,
    min_foreground: float = 0.05,
    class_map: str = "",
    classes: str = "binary",
) -> NiftiScan:
    """Reads and checks the CSV, hashing every listed volume (no decoding yet).

    Args:
      csv_path: config.data.path.
      slice_range: config.data.nifti.slice_range ("a:b" or "").
      slice_fraction: config.data.nifti.slice_fraction, in (0, 1].
      min_foreground: config.data.nifti.min_foreground, in [0, 1).
      class_map: config.data.class_map (lets the CSV use folder-style names like "yes").
      classes: config.data.classes: 'binary' (labels are ids or names of CLASS_NAMES) or
        'folders' (every distinct label name is a class, ordered as `classes.class_order`).

    Returns:
      A NiftiScan with one entry per row, in CSV order.

    Raises:
      DataError: missing/unreadable CSV, missing columns, files that do not exist or are not
        NIfTI, bad labels.
      ValueError: bad slice settings (named by their config option).
    """
    csv_path = Path(csv_path).expanduser()
    _check_settings(csv_path, slice_range, slice_fraction, min_foreground)
    mode = classes_lib.check_mode(classes)
    mapping = parse_class_map(class_map) if mode == "binary" else parse_folder_class_map(class_map)
    rows = _read_csv_rows(csv_path)
    entries, names = _csv_entries(csv_path, rows, mode, mapping)
    class_names = tuple(CLASS_NAMES)
    if mode == "folders":
        class_names = classes_lib.class_order(names)
        for e, name in zip(entries, names, strict=True):
            e.label = class_names.index(name)
    return NiftiScan(
        csv_path=csv_path,
        entries=entries,
        slice_range=slice_range,
        slice_fraction=float(slice_fraction),
        min_foreground=float(min_foreground),
        class_names=class_names,
        mode=mode,
    )


def _check_settings(
    csv_path: Path, slice_range: str, slice_fraction: float, min_foreground: float
) -> None:
    """Refuses bad slice settings (named by their option) and a CSV that does not exist."""
    _parse_slice_range(slice_range, 10)  # validates the syntax early
    if not 0.0 < slice_fraction <= 1.0:
        raise UserError(f"config.data.nifti.slice_fraction={slice_fraction} must be in (0, 1]")
    if not 0.0 <= min_foreground < 1.0:
        raise UserError(f"config.data.nifti.min_foreground={min_foreground} must be in [0, 1)")
    if not csv_path.is_file():
        raise DataError(
            f"config.data.path={str(csv_path)!r}: CSV file does not exist. The NIfTI reader "
            f"needs a CSV with columns path,label (paths relative to the CSV's directory)."
        )


def _read_csv_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The CSV's rows as dicts, once it is known to have rows and 'path', 'label' columns."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: cannot read CSV ({e})") from e
    if not rows:
        raise DataError(f"{csv_path}: CSV has no rows; expected a header 'path,label' and rows")
    if "path" not in fields or "label" not in fields:
        raise DataError(
            f"{csv_path}: CSV header must name the columns 'path' and 'label' "
            f"(found {', '.join(fields)})"
        )
    return rows


def _csv_entries(
    csv_path: Path, rows: list[dict[str, Any]], mode: str, mapping: dict[str, Any]
) -> tuple[list[NiftiEntry], list[str]]:
    """One hashed entry per row, and (mode 'folders') each entry's label name.

    In mode 'binary' the entries carry their labels; in mode 'folders' they carry -1 until the
    caller knows every name. Missing or non-NIfTI files are all named in one DataError.
    """
    base = csv_path.parent
    entries, missing, not_nifti, names = [], [], [], []
    for lineno, row in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "") for k, v in row.items() if k is not None}
        rel = row["path"].strip()
        if not rel:
            raise DataError(f"{csv_path}:{lineno}: empty path")
        p = Path(rel).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            missing.append(rel)
            continue
        if not p.name.lower().endswith(NIFTI_SUFFIXES):
            not_nifti.append(rel)
            continue
        where = f"{csv_path}:{lineno}"
        if mode == "binary":
            label = _parse_label(row["label"], mapping, where)
        else:
            names.append(_parse_label_name(row["label"], mapping, where))
            label = -1  # set by the caller, once every name is known
        entries.append(
            NiftiEntry(path=p, id=Path(rel).as_posix(), label=label, sha256=file_sha256(p))
        )
    _check_listed_files(csv_path, missing, not_nifti)
    return entries, names


def _check_listed_files(csv_path: Path, missing: list[str], not_nifti: list[str]) -> None:
    """Names the listed paths that do not exist, then those that are not NIfTI files."""
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10])
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise DataError(
            f"{csv_path}: {len(missing)} listed file(s) do not exist: {shown}{more}. Paths "
            f"are relative to {csv_path.parent}; fix the CSV or add the files."
        )
    if not_nifti:
        raise DataError(
            f"{csv_path}: not NIfTI files (need .nii or .nii.gz): "
            f"{', '.join(repr(m) for m in not_nifti[:10])}"
        )


def _parse_slice_range(spec: str, depth: int) -> range | None:
    """'a:b' -> range over [0, depth) with Python slice semantics; '' -> None."""
    spec = spec.strip()
    if not spec:
        return None
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0].strip() else None
        b = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise UserError(
            f"config.data.nifti.slice_range={spec!r}: expected 'a:b' (axial indices, b "
            f"exclusive, e.g. '40:120'), or '' to use slice_fraction"
        ) from None
    return range(depth)[slice(a, b)]


def load_volume(path: Path) -> np.ndarray:
    """Reads a NIfTI file as a float32 RAS+ volume.

    Args:
      path: .nii or .nii.gz file.

    Returns:
      (X, Y, Z) float32 array, Z = inferior -> superior.

    Raises:
      DataError: unreadable file or not a 3D volume.
    """
    import nibabel as nib  # lazy: only the NIfTI reader needs it

    try:
        img = nib.load(str(path))
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises many types (ImageFileError, EOFError, zlib...)
        raise DataError(f"{path}: cannot read NIfTI file ({type(e).__name__}: {e})") from e
    while data.ndim > 3 and data.shape[-1] == 1:  # (X, Y, Z, 1): a 3D volume stored as 4D
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(
            f"{path}: expected a 3D volume, got shape {data.shape} ({data.ndim}D). Split 4D "
            f"series into 3D volumes (e.g. one file per time point) and list those in the CSV."
        )
    return data


def select_slices(
    volume: np.ndarray, slice_range: str, slice_fraction: float, min_foreground: float
) -> list[int]:
    """Axial indices to keep (range or central fraction, minus near-empty slices).

    Args:
      volume: (X, Y, Z) array.
      slice_range: "a:b" or "".
      slice_fraction: central fraction used when slice_range is "".
      min_foreground: minimum fraction of non-background voxels in a slice.

    Returns:
      Sorted slice indices.
    """
    depth = volume.shape[2]
    rng = _parse_slice_range(slice_range, depth)
    if rng is None:
        keep = max(1, int(round(depth * slice_fraction)))
        start = (depth - keep) // 2
        rng = range(start, start + keep)
    lo = float(volume.min())
    hi = float(np.percentile(volume, 99.5))
    if hi <= lo:
        hi = float(volume.max())
    threshold = lo + BACKGROUND_LEVEL * (hi - lo)
    out = []
    for z in rng:
        fg = float(np.mean(volume[:, :, z] > threshold))
        if fg >= min_foreground and fg > 0.0:
            out.append(z)
    return out


def axial_slice(volume: np.ndarray, z: int) -> np.ndarray:
    """Radiological view of axial slice z: rows anterior -> posterior, patient's right on left.

    Args:
      volume: (X, Y, Z) RAS+ array (X: left -> right, Y: posterior -> anterior).
      z: axial index.

    Returns:
      (Y, X) array.
    """
    return volume[:, :, z].T[::-1, ::-1]


def load_scan(scan: NiftiScan, size: int) -> ImageSet:
    """Decodes the volumes and preprocesses the selected slices.

    Args:
      scan: from `scan_csv`.
      size: output side.

    Returns:
      ImageSet of slices (groups = one per distinct volume file).

    Raises:
      DataError: a volume is unreadable or not 3D, or no slice survives.
    """
    images, labels, ids, keys = [], [], [], []
    skipped: list[tuple[str, str]] = []
    for e in scan.entries:
        vol = load_volume(e.path)
        zs = select_slices(vol, scan.slice_range, scan.slice_fraction, scan.min_foreground)
        n_before = len(images)
        for z in zs:
            try:
                arr = preprocess.preprocess_array(axial_slice(vol, z), size)
            except preprocess.RejectedImage:
                continue  # e.g. a constant slice inside the range: not a file-level event
            images.append(arr)
            labels.append(e.label)
            ids.append(f"{e.id}#z={z}")
            keys.append(e.sha256)
        if len(images) == n_before:
            reason = (
                f"no usable axial slice (depth {vol.shape[2]}, range "
                f"{scan.slice_range or f'central {scan.slice_fraction:g}'}, min_foreground "
                f"{scan.min_foreground:g})"
            )
            skipped.append((e.id, reason))
            log.warning("Skipping %s: %s", e.path, reason)
    if not images:
        raise DataError(
            f"{scan.csv_path}: no usable slices in any listed volume; widen "
            f"config.data.nifti.slice_range/slice_fraction or lower min_foreground."
        )
    return ImageSet(
        images=np.stack(images).astype(np.float32),  # (N, S, S, 1)
        labels=np.asarray(labels, np.int32),
        class_names=tuple(scan.class_names),
        ids=ids,
        groups=groups_from_keys(keys),
        fingerprint=scan.fingerprint(size),
        skipped=skipped,
    )
