"""The data doctor: `python -m jax_mri_ldm.data --path=DIR` summarises a dataset.

Prints the images found and loaded per class, the file modes and sizes seen, exact-duplicate
groups, near-duplicate groups (the same slice saved as different files; mixed-label ones as a
WARNING), the files skipped and why, the train/val/test split per class, then, as its LAST
line, one JSON object with at least `num_images`, `classes` (name -> count, in class-id
order), `class_names` (id -> name) and `skipped` (count), plus `split`, `warnings`,
`duplicate_groups`, `redundant_files`, `unique_images`, `near_duplicate_groups`,
`near_duplicate_files`, `near_duplicate_classes`, `near_duplicate_mixed_labels`,
`near_duplicate_threshold`, `distinct_images`, `sizes`, `modes`, `skipped_files`,
`fingerprint`, ...

It loads and splits the data exactly as training does (same readers, preprocessing, cache
and split), so a dataset the doctor accepts is one training accepts. Bad input prints one
message on stderr and exits with code 2; a split that training would refuse (a class missing
from a split) is printed as a WARNING and listed under `warnings` (exit 0, so the rest of the
summary is still there to fix it from).

Examples:
  python -m jax_mri_ldm.data --path=../shared/data/brain_tumor_yes_no
  python -m jax_mri_ldm.data --builtin --image_size=64
  python -m jax_mri_ldm.data --path=../shared/data/brain_tumor_4class --classes=folders
  python -m jax_mri_ldm.data --builtin --types
  python -m jax_mri_ldm.data --path=volumes.csv --slice_range=40:120
  python -m jax_mri_ldm.data --path=IMAGES --build_tfds=~/tfds --image_size=64
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from typing import Any

import numpy as np

from jax_mri_ldm.data.classes import CLASS_MODES
from jax_mri_ldm.data.config import get_data_config
from jax_mri_ldm.data.sources import SOURCES, load_imageset_with_report
from jax_mri_ldm.data.splits import (
    SPLIT_NAMES,
    resolve_threshold,
    split_groups,
    split_indices,
    split_problems,
)
from jax_mri_ldm.data.types import DataError, ImageSet
from jax_mri_ldm.errors import UserError


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jax_mri_ldm.data",
        description="Summarise a dataset as jax_mri_ldm's training would load it.",
    )
    p.add_argument("--path", default="", help="image folder, NIfTI CSV or TFDS data_dir")
    p.add_argument("--builtin", action="store_true", help="use the built-in phantom set")
    p.add_argument("--source", default="auto", choices=SOURCES, help="config.data.source")
    p.add_argument("--image_size", type=int, default=256, help="config.data.image_size")
    p.add_argument("--classes", default="binary", choices=CLASS_MODES, help="config.data.classes")
    p.add_argument("--class_map", default="", help="config.data.class_map, e.g. 'neg=0,pos=1'")
    p.add_argument("--cache_dir", default="", help="config.data.cache_dir")
    p.add_argument("--no_cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--num_normal", type=int, default=None, help="built-in set: normal count")
    p.add_argument("--num_tumour", type=int, default=None, help="built-in set: tumour count")
    p.add_argument("--seed", type=int, default=None, help="built-in set: generator seed")
    p.add_argument(
        "--types", action="store_true", help="built-in set: glioma/meningioma/pituitary/normal"
    )
    p.add_argument("--split_train", type=float, default=None, help="config.data.split.train")
    p.add_argument("--split_val", type=float, default=None, help="config.data.split.val")
    p.add_argument("--split_seed", type=int, default=None, help="config.data.split.seed")
    p.add_argument(
        "--near_duplicate_threshold",
        type=float,
        default=None,
        help="config.data.split.near_duplicate_threshold (<= 0: exact duplicates only)",
    )
    p.add_argument("--slice_range", default=None, help="NIfTI: axial slices 'a:b'")
    p.add_argument("--slice_fraction", type=float, default=None, help="NIfTI: central fraction")
    p.add_argument("--min_foreground", type=float, default=None, help="NIfTI: skip emptier")
    p.add_argument(
        "--build_tfds",
        default="",
        metavar="DATA_DIR",
        help="also build the TFDS 'brain_mri' dataset from --path (an image folder) there",
    )
    p.add_argument("--show", type=int, default=30, help="max entries listed per section")
    return p.parse_args(argv)


def _data_config(args: argparse.Namespace) -> Any:
    cfg = get_data_config()
    if args.builtin:
        if args.path:
            raise UserError("--builtin and --path exclude each other; give one of them")
        cfg.source = "builtin"
    else:
        cfg.source = args.source
    cfg.path = args.path
    cfg.image_size = args.image_size
    cfg.classes = args.classes
    cfg.class_map = args.class_map
    cfg.cache_dir = args.cache_dir
    if args.types and not args.builtin:
        raise UserError("--types selects the built-in set with tumour types; add --builtin")
    cfg.builtin.types = bool(args.types)
    for key in ("train", "val", "seed"):
        if getattr(args, f"split_{key}") is not None:
            setattr(cfg.split, key, getattr(args, f"split_{key}"))
    if args.near_duplicate_threshold is not None:
        cfg.split.near_duplicate_threshold = args.near_duplicate_threshold
    for key in ("num_normal", "num_tumour", "seed"):
        if getattr(args, key) is not None:
            setattr(cfg.builtin, key, getattr(args, key))
    for key in ("slice_range", "slice_fraction", "min_foreground"):
        if getattr(args, key) is not None:
            setattr(cfg.nifti, key, getattr(args, key))
    return cfg


def _duplicate_groups(ds: ImageSet) -> list[list[str]]:
    by_group: dict[int, list[str]] = collections.defaultdict(list)
    for gid, i in zip(ds.groups.tolist(), ds.ids, strict=True):
        by_group[gid].append(i)
    return [v for v in by_group.values() if len(v) > 1]


def _summary(ds: ImageSet, report: dict, cfg: Any, show: int) -> dict[str, Any]:
    """Prints the human-readable part and returns the JSON summary."""
    print(f"Dataset: {cfg.path or '(built-in phantom)'}")
    print(f"Source: {report['source']}   image size: {cfg.image_size}x{cfg.image_size}")
    counts = ds.counts()
    print(f"Images loaded: {len(ds)}  (" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")")
    files = report.get("files") or {}
    out: dict[str, Any] = _files_summary(ds, files) if files else {}
    dups, conflicts = _duplicates_summary(ds, show)
    redundant = sum(len(g) - 1 for g in dups)
    groups = split_groups(ds, cfg.split.near_duplicate_threshold)
    out.update(_near_duplicates_summary(ds, groups, cfg.split.near_duplicate_threshold, show))
    reasons = _skipped_summary(ds, show)
    means = {
        c: round(float(ds.images[ds.labels == k].mean()), 4)
        for k, c in enumerate(ds.class_names)
        if np.any(ds.labels == k)
    }
    print(f"Mean intensity per class after preprocessing: {means}")
    cache = "hit" if report.get("cache_hit") else ("written" if report.get("cache_path") else "off")
    print(f"Cache: {cache} {report.get('cache_path') or ''}  ({report['seconds']:.2f} s)")
    split, warnings = _split_summary(ds, cfg, groups)
    out.update(split=split, warnings=warnings)
    out.update(
        {
            "source": report["source"],
            "path": str(cfg.path),
            "image_size": int(cfg.image_size),
            "num_images": len(ds),
            "classes": counts,
            "class_names": list(ds.class_names),
            "num_classes": len(ds.class_names),
            "skipped": len(ds.skipped),
            "skip_reasons": dict(reasons),
            "skipped_files": [list(s) for s in ds.skipped],
            "duplicate_groups": len(dups),
            "redundant_files": redundant,
            "unique_images": int(len(np.unique(ds.groups))),
            "conflicting_duplicates": len(conflicts),
            "mean_intensity": means,
            "fingerprint": ds.fingerprint,
            "cache_hit": bool(report.get("cache_hit")),
            "seconds": round(float(report["seconds"]), 3),
        }
    )
    return out


def _class_dir(file_id: str) -> str:
    """The class directory of a folder-source id (`<class_dir>/<file>`)."""
    return file_id.split("/", 1)[0]


def _files_summary(ds: ImageSet, files: dict[str, Any]) -> dict[str, Any]:
    """Prints per class directory the files found and loaded, their modes and original sizes.

    Args:
      ds: the loaded set.
      files: the folder reader's report, id -> {'mode', 'size'} (None: not decodable).

    Returns:
      The JSON summary's 'sizes' (when any file decoded), 'modes', 'files_found' and
      'size_per_class_dir'.
    """
    found = collections.Counter(_class_dir(i) for i in files)
    loaded = collections.Counter(_class_dir(i) for i in ds.ids)
    label_of = {_class_dir(i): int(lab) for i, lab in zip(ds.ids, ds.labels, strict=True)}
    print("Image files per class directory (found -> loaded):")
    for d in sorted(found):
        cname = ds.class_names[label_of[d]] if d in label_of else "?"
        print(f"  {d:<14} -> {cname:<12} {found[d]:>5} -> {loaded.get(d, 0)}")
    modes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    sizes = []
    for i, meta in files.items():
        if meta is None:
            continue
        modes[_class_dir(i)][meta["mode"]] += 1
        sizes.append(tuple(meta["size"]))
    print("Modes seen:")
    for d in sorted(modes):
        print(f"  {d}: " + ", ".join(f"{m} {n}" for m, n in sorted(modes[d].items())))
    out: dict[str, Any] = {}
    if sizes:
        out["sizes"] = _sizes_summary(sizes)
    out["modes"] = {d: dict(c) for d, c in sorted(modes.items())}
    out["files_found"] = dict(sorted(found.items()))
    out["size_per_class_dir"] = _sizes_per_dir(files)
    return out


def _sizes_summary(sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """Prints and returns the spread of the decoded files' original (W, H) sizes."""
    w = np.array([s[0] for s in sizes])
    h = np.array([s[1] for s in sizes])
    common = collections.Counter(sizes).most_common(8)
    print(
        f"Sizes (W x H): {len(set(sizes))} distinct; width min/median/max "
        f"{w.min()}/{int(np.median(w))}/{w.max()}, height {h.min()}/"
        f"{int(np.median(h))}/{h.max()}"
    )
    print("  most common: " + ", ".join(f"{a}x{b} ({n})" for (a, b), n in common))
    return {
        "distinct": len(set(sizes)),
        "width": [int(w.min()), int(np.median(w)), int(w.max())],
        "height": [int(h.min()), int(np.median(h)), int(h.max())],
        "most_common": [[f"{a}x{b}", n] for (a, b), n in common],
    }


def _duplicates_summary(ds: ImageSet, show: int) -> tuple[list[list[str]], list[list[str]]]:
    """Prints the duplicate groups (the first `show`) and warns of any with mixed labels.

    Returns:
      (every duplicate group, the groups whose files carry different labels).
    """
    dups = _duplicate_groups(ds)
    redundant = sum(len(g) - 1 for g in dups)
    print(
        f"Duplicates (identical source bytes, kept in one split): {len(dups)} groups, "
        f"{redundant} redundant, {len(np.unique(ds.groups))} unique"
    )
    label_by_id = dict(zip(ds.ids, ds.labels.tolist(), strict=True))
    conflicts = [g for g in dups if len({label_by_id[i] for i in g}) > 1]
    for g in dups[:show]:
        print("  " + " = ".join(g))
    if len(dups) > show:
        print(f"  ... and {len(dups) - show} more groups")
    for g in conflicts:
        print("  WARNING: identical files with different labels: " + ", ".join(g))
    return dups, conflicts


def _near_duplicates_summary(
    ds: ImageSet, groups: np.ndarray, threshold: float, show: int
) -> dict[str, Any]:
    """Prints the near-duplicate groups (the first `show`) and warns of mixed-label ones.

    A near-duplicate group joins files of two or more exact-duplicate groups (see
    `near_duplicates.py`); its files are listed as `a ~ b`, with their class names.

    Args:
      ds: the loaded set.
      groups: from `split_groups` (exact groups joined where images are near-identical).
      threshold: config.data.split.near_duplicate_threshold.
      show: how many groups to list.

    Returns:
      The JSON summary's `near_duplicate_*` counts and `distinct_images`.
    """
    threshold = resolve_threshold(threshold)
    members: dict[int, list[int]] = collections.defaultdict(list)
    for i, g in enumerate(groups.tolist()):
        members[g].append(i)
    near = [m for m in members.values() if len(set(ds.groups[m].tolist())) > 1]
    names = [sorted({ds.class_names[ds.labels[i]] for i in m}) for m in near]
    state = f"correlation >= {threshold:g}" if threshold > 0 else "off"
    print(
        f"Near-duplicates (same slice in different files, 32x32 thumbnail {state}, as is or "
        f"mirrored; kept in one split): {len(near)} groups, {sum(map(len, near))} files, "
        f"{len(members)} distinct images"
    )
    by_classes = collections.Counter("+".join(c) for c in names)
    if by_classes:
        print("  per class: " + ", ".join(f"{k} {v}" for k, v in sorted(by_classes.items())))
    for m, cls in list(zip(near, names, strict=True))[:show]:
        print("  " + " ~ ".join(ds.ids[i] for i in m) + f"  ({'+'.join(cls)})")
    if len(near) > show:
        print(f"  ... and {len(near) - show} more groups")
    mixed = [m for m, cls in zip(near, names, strict=True) if len(cls) > 1]
    for m in mixed:
        print(
            "  WARNING: near-identical files with different labels: "
            + ", ".join(f"{ds.ids[i]} ({ds.class_names[ds.labels[i]]})" for i in m)
        )
    return {
        "near_duplicate_threshold": threshold,
        "near_duplicate_groups": len(near),
        "near_duplicate_files": int(sum(map(len, near))),
        "near_duplicate_classes": dict(sorted(by_classes.items())),
        "near_duplicate_mixed_labels": len(mixed),
        "distinct_images": len(members),
    }


def _skipped_summary(ds: ImageSet, show: int) -> collections.Counter:
    """Prints the skipped files (the first `show`); returns how many per reason."""
    print(f"Skipped: {len(ds.skipped)}")
    for i, reason in ds.skipped[:show]:
        print(f"  {i}: {reason}")
    if len(ds.skipped) > show:
        print(f"  ... and {len(ds.skipped) - show} more")
    return collections.Counter(r.split(" (")[0] for _, r in ds.skipped)


def _sizes_per_dir(files: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Most common original size per class directory; prints a note when they differ.

    Sizes are resized away by preprocessing, but framing that comes with them is not: when the
    classes come from different sources a classifier can tell them apart by that alone.
    """
    by_dir: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for i, meta in files.items():
        if meta is not None:
            by_dir[i.split("/", 1)[0]][tuple(meta["size"])] += 1
    out = {}
    for d, c in sorted(by_dir.items()):
        (w, h), n = c.most_common(1)[0]
        out[d] = {"most_common": f"{w}x{h}", "share": round(n / sum(c.values()), 3)}
    if len({v["most_common"] for v in out.values()}) > 1:
        print(
            "Note: the most common original size differs by class directory ("
            + ", ".join(f"{d}: {v['most_common']} {v['share']:.0%}" for d, v in out.items())
            + "); images are resized, but framing may still give the class away."
        )
    return out


def _split_summary(
    ds: ImageSet, cfg: Any, groups: np.ndarray
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Prints the split training would make, per class; returns it and its problems.

    Args:
      ds: the loaded set.
      cfg: the data config (its `split` block).
      groups: the groups the split keeps whole (`split_groups`), for the problem messages.
    """
    sp = cfg.split
    fracs = {"train": sp.train, "val": sp.val, "test": max(0.0, 1.0 - sp.train - sp.val)}
    split = split_indices(
        ds,
        sp.train,
        sp.val,
        sp.seed,
        near_duplicate_threshold=sp.near_duplicate_threshold,
        require_all=False,
        groups=groups,
    )
    table = {
        s: {c: int(np.sum(ds.labels[split[s]] == k)) for k, c in enumerate(ds.class_names)}
        for s in SPLIT_NAMES
    }
    print(f"Split (config.data.split train={sp.train:g} val={sp.val:g} seed={sp.seed}):")
    for s in SPLIT_NAMES:
        print(f"  {s:<5} " + ", ".join(f"{c}: {n}" for c, n in table[s].items()))
    problems = split_problems(ds, split, fracs, groups)
    for msg in problems:
        print(f"WARNING: training would stop here: {msg}")
    return table, problems


def main(argv: list[str] | None = None) -> int:
    """Runs the doctor; returns the process exit code (0 ok, 2 bad input)."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    try:
        cfg = _data_config(args)
        ds, report = load_imageset_with_report(cfg, use_cache=not args.no_cache)
        summary = _summary(ds, report, cfg, args.show)
        if args.build_tfds:
            if report["source"] != "folder":
                raise UserError("--build_tfds needs --path to be an image folder")
            if cfg.classes != "binary":
                raise UserError("--build_tfds stores binary labels; drop --classes=folders")
            from jax_mri_ldm.data import tfds_builder

            builder = tfds_builder.build(
                cfg.path, args.build_tfds, image_size=cfg.image_size, class_map=cfg.class_map
            )
            n = builder.info.splits["train"].num_examples
            print(f"TFDS: built {builder.name}/{builder.builder_config.name} ({n} examples) in")
            print(f"  {builder.data_dir}")
            summary["tfds_dir"] = str(builder.data_dir)
            summary["tfds_examples"] = int(n)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
