"""Image-folder reader: `<root>/<class_dir>/*.{jpg,jpeg,png,bmp,tif,tiff}`.

Class directories map to labels in one of two modes (`config.data.classes`, see `classes.py`):
- `binary` (default): a name -> label table (case-insensitive), `DEFAULT_CLASS_MAP` plus the
  overrides in `config.data.class_map` ("name=label,..."); labels index
  `jax_mri_ldm.CLASS_NAMES` (0 = normal, 1 = tumour).
- `folders`: every directory is its own class, named after it (normal synonyms -> `normal`),
  ids in `classes.class_order`; `config.data.class_map` ("dir=name,...") renames or merges.
At least two classes must be present: a single class cannot be balanced or conditioned on.

What is read and what is skipped:
- Only the files directly inside a class directory are read (not sub-directories, which are
  listed as skipped). Hidden entries (".DS_Store", ".ipynb_checkpoints") are ignored silently,
  and so are plain files at the root (README.md, labels.csv).
- Extensions are matched case-insensitively (`Y156.JPG`). Any other file is skipped with a
  warning and counted ('not an image file').
- A file that does not decode (corrupt, truncated, not really an image) is skipped with a
  warning and counted: one bad scan should not stop a run over hundreds of good ones. It is an
  error only when it leaves a class directory with no usable image, or the whole set empty.
- Images smaller than 16x16 and constant images are skipped with their reason (see
  `preprocess.py`); RGB/RGBA/palette/16-bit images are converted, never errors.

Each file's SHA-256 is computed while scanning: it keys the on-disk cache and groups exact
duplicates (same bytes -> same `groups` id) so splits keep them together. Near-duplicates (the
same slice re-saved with other bytes) are joined to these groups when a split is made
(`splits.split_groups`), not here, so the groups, the cache and the fingerprint depend only on
the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from jax_mri_ldm import CLASS_NAMES
from jax_mri_ldm.data import classes as classes_lib
from jax_mri_ldm.data import preprocess
from jax_mri_ldm.data.types import DataError, ImageSet
from jax_mri_ldm.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

DEFAULT_CLASS_MAP: dict[str, int] = {
    "no": 0,
    "normal": 0,
    "notumor": 0,
    "healthy": 0,
    "yes": 1,
    "tumor": 1,
    "tumour": 1,
    "glioma": 1,
    "meningioma": 1,
    "pituitary": 1,
}

FOLDER_READER_VERSION = 1  # bump when the scan/skip rules change (part of the fingerprint)


def parse_class_map(spec: str) -> dict[str, int]:
    """Returns DEFAULT_CLASS_MAP updated with the overrides in `spec`.

    Args:
      spec: "name=label,name=label" (config.data.class_map); label is an integer id or a class
        name from CLASS_NAMES ("normal", "tumour"). Empty -> the defaults.

    Returns:
      Lower-cased directory name -> label id.

    Raises:
      ValueError: malformed entry or unknown label.
    """
    mapping = dict(DEFAULT_CLASS_MAP)
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name or not value:
            raise UserError(
                f"config.data.class_map: bad entry {item!r}; expected 'dirname=label' items "
                f"separated by commas, e.g. --config.data.class_map='neg=0,pos=1'"
            )
        if value.lower() in CLASS_NAMES:
            label = CLASS_NAMES.index(value.lower())
        else:
            try:
                label = int(value)
            except ValueError:
                label = -1
        if not 0 <= label < len(CLASS_NAMES):
            valid = ", ".join(f"{i} ({n})" for i, n in enumerate(CLASS_NAMES))
            raise UserError(
                f"config.data.class_map: label {value!r} for {name!r} is not one of {valid}"
            )
        mapping[name] = label
    return mapping


def parse_folder_class_map(spec: str) -> dict[str, str]:
    """`folders` mode overrides: "dir=name,..." -> lower-cased directory name -> class name.

    Raises:
      ValueError: malformed entry, an integer label (ids follow the class order, so name the
        class instead), or a name that is not a plain class name.
    """
    out: dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name or not value or value.lstrip("-").isdigit():
            raise UserError(
                f"config.data.class_map: bad entry {item!r} with config.data.classes=folders; "
                f"expected 'dirname=classname' items separated by commas, e.g. "
                f"--config.data.class_map='astro=glioma,neg=normal' (class ids follow the "
                f"class order, so give names, not numbers)"
            )
        canon = classes_lib.canonical_class_name(value)
        out[name] = classes_lib.check_class_name(canon, f"config.data.class_map entry {item!r}")
    return out


def describe_class_map(mapping: dict[str, int]) -> str:
    """One line per label: "0 (normal): healthy, no, normal, notumor"."""
    parts = []
    for i, cname in enumerate(CLASS_NAMES):
        names = sorted(k for k, v in mapping.items() if v == i)
        parts.append(f"{i} ({cname}): {', '.join(names) or '-'}")
    return "; ".join(parts)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclasses.dataclass
class FolderEntry:
    """One candidate image file."""

    path: Path
    id: str  # "<class_dir>/<file name>", relative to the root, POSIX separators
    label: int
    sha256: str


@dataclasses.dataclass
class FolderScan:
    """Result of `scan_folder`: the image files to decode and what was left out."""

    root: Path
    entries: list[FolderEntry]
    skipped: list[tuple[str, str]]
    class_dirs: dict[str, int]  # directory name as on disk -> label
    class_map: dict[str, int] | dict[str, str]
    class_names: tuple[str, ...] = CLASS_NAMES  # label id -> name
    mode: str = "binary"  # config.data.classes

    def fingerprint(self, size: int) -> str:
        """Hex digest of the files' contents and the settings that shape the arrays."""
        payload = {
            "reader": "folder",
            "reader_version": FOLDER_READER_VERSION,
            "preprocess_version": preprocess.PREPROCESS_VERSION,
            "image_size": int(size),
            "class_dirs": self.class_dirs,
            "files": [(e.id, e.label, e.sha256) for e in self.entries],
            "skipped": self.skipped,
        }
        if self.mode != "binary":  # binary payload unchanged: existing runs keep their key
            payload.update(classes=self.mode, class_names=list(self.class_names))
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _check_root(root: Path) -> list[Path]:
    """The class sub-directories of `root` (sorted); DataError when there are none."""
    if not root.exists():
        raise DataError(
            f"config.data.path={str(root)!r}: directory does not exist. Point "
            f"--config.data.path at a folder laid out as <root>/<class>/<image files> "
            f"(e.g. no/ and yes/), or leave it empty to use the built-in set."
        )
    if not root.is_dir():
        raise DataError(
            f"config.data.path={str(root)!r} is a file, not a directory: the folder reader "
            f"needs <root>/<class>/<image files> (a .csv selects the NIfTI reader)."
        )
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        files = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        shown = ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
        raise DataError(
            f"{root}: no class sub-directories found (found {len(files)} files: "
            f"{shown or 'nothing'}). Put the images in one folder per class, e.g. "
            f"{root}/no/*.jpg and {root}/yes/*.jpg."
        )
    return subdirs


def _binary_labels(root: Path, subdirs: list[Path], class_map: str) -> tuple[dict, dict]:
    """`binary` mode: (directory -> label, the name table used)."""
    mapping = parse_class_map(class_map)
    labels = {
        d.name: mapping.get(d.name.lower(), classes_lib.binary_label(d.name)) for d in subdirs
    }
    unknown = [d for d, lab in labels.items() if lab is None]
    if unknown:
        raise DataError(
            f"{root}: directory name(s) {', '.join(repr(u) for u in unknown)} map to no label. "
            f"Known names (case-insensitive) -> {describe_class_map(mapping)}. Extend the "
            f"mapping with --config.data.class_map='{unknown[0].lower()}=1' (name=label, "
            f"comma-separated), keep every folder as its own class with "
            f"--config.data.classes=folders, or move the directory out of {root}."
        )
    return labels, mapping


def _folder_labels(
    root: Path, subdirs: list[Path], class_map: str
) -> tuple[dict, dict, tuple[str, ...]]:
    """`folders` mode: (directory -> label, directory -> class name, class names by id)."""
    overrides = parse_folder_class_map(class_map)
    names: dict[str, str] = {}
    for d in subdirs:
        canon = overrides.get(d.name.lower(), classes_lib.canonical_class_name(d.name))
        where = f"{d} (class directory; rename it or map it with --config.data.class_map)"
        names[d.name] = classes_lib.check_class_name(canon, where)
    class_names = classes_lib.class_order(names.values())
    return {d: class_names.index(n) for d, n in names.items()}, names, class_names


def _check_two_classes(root: Path, class_dirs: dict[str, int], class_names: tuple) -> None:
    found = sorted(set(class_dirs.values()))
    if len(found) >= 2:
        return
    dirs = ", ".join(f"{d}/ -> {class_names[lab]}" for d, lab in class_dirs.items())
    raise DataError(
        f"{root}: only one class found ({dirs}); training conditions on and balances over "
        f"at least two classes. Add a folder per class (e.g. {root}/no/ for normal slices "
        f"next to {root}/yes/), or point --config.data.path at the parent of all class folders."
    )


def scan_folder(
    root: str | Path, class_map: str = "", classes: str = "binary", *, min_classes: int = 2
) -> FolderScan:
    """Lists and hashes the images under `root` without decoding them.

    Args:
      root: dataset root holding one sub-directory per class.
      class_map: config.data.class_map overrides ("name=label,..." in binary mode,
        "dir=name,..." in folders mode).
      classes: config.data.classes, 'binary' or 'folders' (see `classes.py`).
      min_classes: 2 for a training set; 1 for extra images of one class (data/extra.py).

    Returns:
      A FolderScan (entries sorted by id, so the order is the same on every machine).

    Raises:
      DataError: missing root, no class sub-directories, a directory that maps to no label,
        fewer than two classes, an unreadable file, or a class directory without image files.
      ValueError: a bad class_map or classes value (named).
    """
    root = Path(root).expanduser()
    mode = classes_lib.check_mode(classes)
    subdirs = _check_root(root)
    if mode == "binary":
        class_dirs, mapping = _binary_labels(root, subdirs, class_map)
        class_names = tuple(CLASS_NAMES)
    else:
        class_dirs, mapping, class_names = _folder_labels(root, subdirs, class_map)
    if min_classes >= 2:
        _check_two_classes(root, class_dirs, class_names)

    entries: list[FolderEntry] = []
    skipped: list[tuple[str, str]] = []
    for d in subdirs:
        found = _scan_class_dir(d, class_dirs[d.name], entries, skipped)
        if found == 0:
            raise DataError(
                f"{d}: class directory holds no image files "
                f"({'/'.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}). Add images to it or "
                f"remove it from {root}."
            )
    return FolderScan(
        root=root,
        entries=entries,
        skipped=skipped,
        class_dirs=class_dirs,
        class_map=mapping,
        class_names=class_names,
        mode=mode,
    )


def _scan_class_dir(
    d: Path, label: int, entries: list[FolderEntry], skipped: list[tuple[str, str]]
) -> int:
    """Appends the image files of one class directory; returns how many were found."""
    n_images = 0
    for p in sorted(d.iterdir(), key=lambda q: q.name):
        if p.name.startswith("."):
            continue
        rel = f"{d.name}/{p.name}"
        if p.is_dir():
            skipped.append((rel, "sub-directory (only <root>/<class>/<file> is read)"))
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((rel, f"not an image file (extension {p.suffix or 'none'!r})"))
            log.warning("Skipping %s: not an image file", p)
            continue
        try:
            digest = file_sha256(p)
        except OSError as e:  # dangling or self-referencing symlink, no permission, ...
            raise DataError(
                f"{p}: cannot read this file ({e.strerror or e}). Fix it (e.g. a broken or "
                f"looping symlink) or remove it from {d}."
            ) from e
        entries.append(FolderEntry(path=p, id=rel, label=label, sha256=digest))
        n_images += 1
    return n_images


def decode_image(path: Path) -> Image.Image:
    """Opens and fully decodes one image file (first frame of multi-frame files).

    Args:
      path: image file.

    Returns:
      A loaded PIL image.

    Raises:
      preprocess.RejectedImage: the file is corrupt, truncated or not an image.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns on odd-but-readable files (e.g. truncated EXIF); the decode decides.
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.load()
                return img.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise preprocess.RejectedImage(f"corrupt or truncated image ({e})") from e


def load_scan(
    scan: FolderScan,
    size: int,
    *,
    on_file: Callable[[FolderEntry, Image.Image | None], None] | None = None,
) -> ImageSet:
    """Decodes and preprocesses the scanned files.

    Args:
      scan: from `scan_folder`.
      size: output side (config.data.image_size).
      on_file: optional callback(entry, decoded image or None) for reports (the doctor).

    Returns:
      ImageSet (ids are "<class_dir>/<file>", groups number the distinct SHA-256s).

    Raises:
      DataError: every file of a class directory, or of the whole set, was skipped.
    """
    images, labels, ids, hashes = [], [], [], []
    skipped = list(scan.skipped)
    for e in scan.entries:
        img = None
        try:
            img = decode_image(e.path)
            arr = preprocess.preprocess_pil(img, size)  # (S, S, 1)
        except preprocess.RejectedImage as err:
            skipped.append((e.id, str(err)))
            log.warning("Skipping %s: %s", e.path, err)
            if on_file is not None:
                on_file(e, img)
            continue
        if on_file is not None:
            on_file(e, img)
        images.append(arr)
        labels.append(e.label)
        ids.append(e.id)
        hashes.append(e.sha256)

    used_dirs = {i.split("/", 1)[0] for i in ids}
    for d in scan.class_dirs:
        if d not in used_dirs:
            reasons = [f"{i}: {r}" for i, r in skipped if i.startswith(d + "/")][:5]
            raise DataError(
                f"{scan.root / d}: no usable image in this class directory; every file was "
                f"skipped ({'; '.join(reasons)}). Replace the files or remove the directory."
            )
    if not images:
        raise DataError(f"{scan.root}: no usable images (all files skipped).")
    return ImageSet(
        images=np.stack(images).astype(np.float32),  # (N, S, S, 1)
        labels=np.asarray(labels, np.int32),
        class_names=tuple(scan.class_names),
        ids=ids,
        groups=groups_from_keys(hashes),
        fingerprint=scan.fingerprint(size),
        skipped=skipped,
    )


def groups_from_keys(keys: list[str]) -> np.ndarray:
    """Numbers distinct keys in order of first appearance: equal keys -> equal group id.

    Args:
      keys: one key (e.g. content hash) per image.

    Returns:
      (N,) int64 group ids.
    """
    first: dict[str, int] = {}
    return np.asarray([first.setdefault(k, len(first)) for k in keys], np.int64)
