"""Stratified, duplicate-aware train/val/test splits, saved as JSON lists of image ids.

`split_indices` works on duplicate groups, not images: every image of a group (identical
source bytes, or all slices of one NIfTI volume) lands in the same split, so no exact copy
of a training image is ever scored as test data. Within each class (a group's class is the
majority label of its members) the groups are shuffled with `default_rng([seed, class])` and
dealt out greedily to whichever split is furthest below its target image count. Before that,
each split with a positive fraction is given one group of the class when the class has enough
groups, so every split holds at least one image per class whenever that is possible. When it
is not (a class with fewer groups than splits, or no image at all) `split_indices` raises a
DataError saying how many images the class needs, before any training starts; the data
doctor calls it with `require_all=False` and reports the problems as warnings instead.
Classes are every id of `ds.class_names`, so any number of classes K is stratified alike.

Near-duplicates (the same slice saved as two different files, see `near_duplicates.py`) are
joined to one group before the deal (`split_groups`). Groups are dealt largest first (equal
sizes in the seeded order), so a cluster of copies cannot overshoot a small split; with groups
of one image each (the built-in sets) this is the plain seeded order. A split saved by
`save_split` is read back as saved by `load_split`, which warns when near-duplicate groups
span it (a split made before near-duplicate grouping).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from jax_mri_ldm import atomic
from jax_mri_ldm.data import near_duplicates
from jax_mri_ldm.data.config import get_data_config
from jax_mri_ldm.data.types import DataError, ImageSet
from jax_mri_ldm.errors import UserError

log = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def resolve_threshold(value: float | None = None) -> float:
    """`value`, or config.data.split.near_duplicate_threshold's default when it is None."""
    if value is None:
        return float(get_data_config().split.near_duplicate_threshold)
    return float(value)


def split_groups(ds: ImageSet, near_duplicate_threshold: float | None = None) -> np.ndarray:
    """The groups a split keeps whole: `ds.groups` joined where images are near-duplicates.

    Args:
      ds: the dataset.
      near_duplicate_threshold: config.data.split.near_duplicate_threshold (None: its
        default; <= 0: exact groups only).

    Returns:
      (N,) int64 group ids (a group without near-duplicates keeps its `ds.groups` id).
    """
    threshold = resolve_threshold(near_duplicate_threshold)
    return near_duplicates.merge_groups(ds.images, ds.groups, threshold)


def split_indices(
    ds: ImageSet,
    train: float = 0.8,
    val: float = 0.1,
    seed: int = 0,
    *,
    near_duplicate_threshold: float | None = None,
    require_all: bool = True,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Splits `ds` into train/val/test, stratified by label, keeping duplicate groups whole.

    Args:
      ds: the dataset (its `labels`, `groups` and, for near-duplicates, `images` are used).
      train: fraction of each class for training (config.data.split.train), in (0, 1].
      val: fraction for validation (config.data.split.val); test gets 1 - train - val.
      seed: shuffling seed (config.data.split.seed).
      near_duplicate_threshold: config.data.split.near_duplicate_threshold (None: its
        default; <= 0: only identical files are kept together).
      require_all: raise unless every split with a positive fraction holds every class.
      groups: `split_groups(ds, near_duplicate_threshold)` when the caller has it already
        (the search is not repeated); None computes it.

    Returns:
      {'train', 'val', 'test'} -> sorted int64 index arrays that partition range(len(ds)).

    Raises:
      ValueError: fractions out of range (named by their config option).
      DataError: `require_all` and a split would miss a class (message: `split_problems`).
    """
    fracs = _fractions(train, val)
    labels = np.asarray(ds.labels)
    if groups is None:  # exact groups joined by near-duplicates
        groups = split_groups(ds, near_duplicate_threshold)
    split = _deal(labels, groups, fracs, seed)
    problems = split_problems(ds, split, fracs, groups) if require_all else []
    if problems:
        raise DataError(" ".join(problems))
    return split


def _fractions(train: float, val: float) -> dict[str, float]:
    """Split name -> fraction, after checking the config values (named in the errors)."""
    if not 0.0 < train <= 1.0:
        raise UserError(f"config.data.split.train={train} must be in (0, 1]")
    if not 0.0 <= val < 1.0:
        raise UserError(f"config.data.split.val={val} must be in [0, 1)")
    if train + val > 1.0 + 1e-9:
        raise UserError(
            f"config.data.split.train + config.data.split.val = {train + val:g} exceeds 1"
        )
    return {"train": train, "val": val, "test": max(0.0, 1.0 - train - val)}


def _deal(
    labels: np.ndarray, groups: np.ndarray, fracs: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """The stratified deal of whole groups described in the module docstring."""
    active = [s for s in SPLIT_NAMES if fracs[s] > 1e-9]
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    # A group's class: majority label of its members (ties -> smaller label id).
    group_label = np.array([np.bincount(labels[m]).argmax() for m in members], np.int64)

    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLIT_NAMES}
    for c in np.unique(group_label):
        gids = np.flatnonzero(group_label == c)
        gids = gids[np.random.default_rng([seed, int(c)]).permutation(len(gids))]
        sizes = {int(g): len(members[g]) for g in gids}
        n_c = sum(sizes.values())
        target = {s: fracs[s] * n_c for s in SPLIT_NAMES}
        count = dict.fromkeys(SPLIT_NAMES, 0)
        pending = [int(g) for g in gids]
        if len(pending) >= len(active):
            # Reserve one group per split, smallest groups first for the small splits so one
            # big duplicate cluster does not blow up val/test.
            for s in sorted(active, key=lambda s: fracs[s]):
                g = min(pending, key=lambda g: sizes[g])
                pending.remove(g)
                out[s].append(members[g])
                count[s] += sizes[g]
        pending.sort(key=lambda g: -sizes[g])  # big groups first, single images fill the gaps
        for g in pending:
            s = max(active, key=lambda s: (target[s] - count[s], -SPLIT_NAMES.index(s)))
            out[s].append(members[g])
            count[s] += sizes[g]
    return {
        s: np.sort(np.concatenate(out[s])).astype(np.int64) if out[s] else np.zeros((0,), np.int64)
        for s in SPLIT_NAMES
    }


def saved_or_new_split(
    ds: ImageSet, split_cfg: Any, path: str | Path | None
) -> dict[str, np.ndarray]:
    """The split saved at `path` when that file exists (used as saved), else a new one.

    For trainers: a resumed run, or a diffusion run on a VAE run's split, keeps the split it
    started with even when the split rules changed since (near-duplicate grouping did).

    Args:
      ds: the dataset.
      split_cfg: config.data.split (`near_duplicate_threshold` may be absent in old configs).
      path: a run's split.json, or None.

    Returns:
      {'train', 'val', 'test'} -> sorted int64 indices into `ds`.

    Raises:
      DataError: see `load_split` and `split_indices`.
    """
    if path is not None and Path(path).is_file():
        return load_split(
            path, ds, near_duplicate_threshold=split_cfg.get("near_duplicate_threshold")
        )
    return split_indices(
        ds,
        float(split_cfg.train),
        float(split_cfg.val),
        int(split_cfg.seed),
        near_duplicate_threshold=split_cfg.get("near_duplicate_threshold"),
    )


def split_problems(
    ds: ImageSet,
    split: dict[str, np.ndarray],
    fracs: dict[str, float],
    groups: np.ndarray | None = None,
) -> list[str]:
    """One message per class that some split with a positive fraction does not hold.

    Args:
      ds: the dataset.
      split: from `split_indices`.
      fracs: split name -> fraction (train, val, test).
      groups: the groups the split keeps whole (`split_groups`); default `ds.groups`.

    Returns:
      Messages naming the class, the empty split(s), how many distinct images (duplicate
      groups: identical or near-identical files, or the slices of one NIfTI volume) it has and
      how many it needs.
    """
    groups = ds.groups if groups is None else np.asarray(groups)
    active = [s for s in SPLIT_NAMES if fracs[s] > 1e-9]
    out = []
    for c, name in enumerate(ds.class_names):
        missing = [s for s in active if not np.any(ds.labels[split[s]] == c)]
        if not missing:
            continue
        n_groups = len(np.unique(groups[ds.labels == c]))
        out.append(
            f"class {name!r} has {n_groups} distinct image(s) (identical or near-identical "
            f"files and the slices of one NIfTI volume count once) and no image in the "
            f"{'/'.join(missing)} split(s) (config.data.split: train={fracs['train']:g}, "
            f"val={fracs['val']:g}); every split needs each class: give it at least "
            f"{len(active)} distinct images."
        )
    return out


def save_split(path: str | Path, ds: ImageSet, split: dict[str, np.ndarray]) -> None:
    """Writes the split as JSON (ids per split plus counts), atomically.

    Args:
      path: output file, e.g. <workdir>/split.json.
      ds: the dataset the indices refer to.
      split: name -> index array, from `split_indices`.
    """
    path = Path(path)
    payload = {
        "format": 1,
        "fingerprint": ds.fingerprint,
        "num_images": len(ds),
        "class_names": list(ds.class_names),
        "counts": {
            name: {
                c: int(np.sum(ds.labels[np.asarray(idx, np.int64)] == i))
                for i, c in enumerate(ds.class_names)
            }
            for name, idx in split.items()
        },
        "ids": {name: [ds.ids[int(i)] for i in idx] for name, idx in split.items()},
    }
    atomic.write_json(str(path), payload, indent=1, sort_keys=False)


def load_split(
    path: str | Path,
    ds: ImageSet | None = None,
    *,
    near_duplicate_threshold: float | None = None,
) -> dict[str, list[str]] | dict[str, np.ndarray]:
    """Reads a split written by `save_split`; a saved split is always used as saved.

    Args:
      path: the JSON file.
      ds: optional dataset; when given, ids are mapped back to indices into it, and a warning
        is logged when near-duplicate groups of `ds` span the saved splits (a split written
        before near-duplicate grouping existed).
      near_duplicate_threshold: for that check (None: the config default; <= 0: no check).

    Returns:
      name -> list of ids when `ds` is None; otherwise name -> sorted int64 indices into `ds`.

    Raises:
      DataError: unreadable file, or ids missing from `ds` (the data changed since the split
        was written).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
        ids = {str(k): [str(i) for i in v] for k, v in payload["ids"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: cannot read split file ({e})") from e
    if ds is None:
        return ids
    index = {i: n for n, i in enumerate(ds.ids)}
    missing = [i for v in ids.values() for i in v if i not in index]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} id(s) of the saved split are not in the loaded dataset "
            f"(e.g. {missing[:3]}); the data changed since the split was written. Use the "
            f"same data, or start a new run directory."
        )
    split = {k: np.sort(np.asarray([index[i] for i in v], np.int64)) for k, v in ids.items()}
    spans = spanning_groups(ds, split, split_groups(ds, near_duplicate_threshold))
    if spans:
        log.warning(
            "%s: %d group(s) of near-identical images span splits (e.g. %s); this split "
            "predates near-duplicate grouping (config.data.split.near_duplicate_threshold). "
            "It is used as saved, so scores on those held-out images and the memorisation "
            "threshold are flattered; a new run directory gets a split that keeps them together.",
            path,
            len(spans),
            " ~ ".join(f"{i} ({s})" for s, i in spans[0]),
        )
    return split


def spanning_groups(
    ds: ImageSet, split: dict[str, np.ndarray], groups: np.ndarray
) -> list[list[tuple[str, str]]]:
    """The groups whose images lie in more than one split.

    Args:
      ds: the dataset (for ids).
      split: name -> indices into `ds`.
      groups: (N,) group ids, e.g. from `split_groups`.

    Returns:
      One list of (split name, image id) per spanning group, in id order.
    """
    where: dict[int, str] = {int(i): s for s, idx in split.items() for i in np.asarray(idx)}
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(np.asarray(groups).tolist()):
        if i in where:
            by_group.setdefault(g, []).append(i)
    return [
        [(where[i], ds.ids[i]) for i in members]
        for members in by_group.values()
        if len({where[i] for i in members}) > 1
    ]
