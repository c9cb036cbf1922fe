"""Extra training images for the diffusion stage: another image folder whose slices join the
generator's training set only (no split, no score).

A small clinical set can hold few distinct slices of a class, and a diffusion model trained
long enough on them returns copies. A second set with more slices of that class (the 4-class
set's `notumor/`, say) adds new patients. These rules keep every score honest:
- the extra folder is read with the main set's preprocessing and class mode, its labels mapped
  onto the main set's class names (a class the main set lacks is an error);
- an extra file that is a near-duplicate of any main-set image (fingerprint correlation at or
  above config.data.split.near_duplicate_threshold, as is or mirrored) is dropped: next to a
  held-out image it would leak into test scores, next to a training image it adds nothing;
- an extra file less like the training split than most training slices are like each other
  (its best fingerprint correlation with a training slice below the `domain_quantile` of the
  training slices' own best correlation with another slice group) is left out: another plane,
  sequence or framing than the main set holds would be learnt as a feature of its class
  (`folder_quantiles` sets a stricter or looser quantile for named folders: a folder that mixes
  planes more than another needs a higher one);
- the report's memorisation search treats the extra images as training images.
On the binary built-in set, `builtin_per_class` adds new phantom slices instead: the generator
draws each slice from its own seed, so raising the counts yields the main set plus new ones
(same generator, so no domain filter; the near-copy rule still applies). A diffusion model
trained long on the 320 built-in training slices returns partial copies of some; more distinct
slices are the remedy the real set gets from a second folder.
The frozen VAE is not retrained on them (its test scores show how it encodes unseen slices).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from jax_mri_ldm.data import folders as folders_lib
from jax_mri_ldm.data import near_duplicates
from jax_mri_ldm.data.classes import mode_of
from jax_mri_ldm.data.sources import load_imageset, resolve_source
from jax_mri_ldm.data.splits import split_groups
from jax_mri_ldm.data.types import DataError, ImageSet
from jax_mri_ldm.errors import UserError

ID_PREFIX = "extra:"  # marks extra images' ids, so they never collide with the main set's
EXACT = 1.0 - 1e-6  # fingerprint correlation of a copy, used when near-duplicate search is off


def parse_folders(spec: str) -> tuple[str, ...]:
    """'notumor, glioma' -> ('notumor', 'glioma'); '' -> () (every folder)."""
    return tuple(s.strip() for s in str(spec or "").split(",") if s.strip())


def _read(extra_cfg: Any, data_cfg: Any) -> ImageSet:
    """The extra folder, read with the main set's preprocessing; one class folder is enough."""
    class_map = str(extra_cfg.get("class_map", "") or "")
    try:
        scan = folders_lib.scan_folder(
            str(extra_cfg.path), class_map, classes=mode_of(data_cfg), min_classes=1
        )
        return folders_lib.load_scan(scan, int(data_cfg.image_size))
    except DataError as e:
        raise DataError(f"config.extra_train.path: {e}") from e


def _keep_folders(extra: ImageSet, folders: tuple[str, ...], where: str) -> ImageSet:
    """Only the images in the named class folders (all of them when `folders` is empty)."""
    top = top_folders(extra)
    if not folders:
        return extra
    missing = [f for f in folders if f not in set(top.tolist())]
    if missing:
        raise DataError(
            f"{where}: no class folder {', '.join(repr(m) for m in missing)} (found "
            f"{', '.join(sorted(set(top.tolist())))}); fix config.extra_train.folders."
        )
    return extra.subset(np.flatnonzero(np.isin(top, folders)))


def _relabel(extra: ImageSet, class_names: tuple[str, ...], where: str) -> ImageSet:
    """Maps the extra set's labels onto the main set's class ids, by class name."""
    present = sorted({extra.class_names[i] for i in np.unique(extra.labels)})
    unknown = [n for n in present if n not in class_names]
    if unknown:
        raise DataError(
            f"{where}: class(es) {', '.join(unknown)} are not classes of the main data set "
            f"({', '.join(class_names)}); pick folders of known classes with "
            "config.extra_train.folders, or map them with config.extra_train.class_map."
        )
    known = [class_names.index(n) if n in class_names else -1 for n in extra.class_names]
    table = np.asarray(known)
    out = extra.subset(np.arange(len(extra)))
    out.labels = table[extra.labels].astype(np.int32)
    out.class_names = tuple(class_names)
    return out


def domain_floor(train: ImageSet, quantile: float, threshold: float) -> float:
    """The `quantile` of each training slice's best correlation with another slice group.

    Groups are the split's (`splits.split_groups` at `threshold`), so a slice's own copies do
    not count. Returns -inf for quantile <= 0 or fewer than two groups.
    """
    return domain_floors(train, [quantile], threshold)[0]


def domain_floors(train: ImageSet, quantiles: list[float], threshold: float) -> list[float]:
    """`domain_floor` for several quantiles, the best-match search done once."""
    if all(q <= 0 for q in quantiles):
        return [float("-inf")] * len(quantiles)
    groups = split_groups(train, threshold)
    if len(np.unique(groups)) < 2:
        return [float("-inf")] * len(quantiles)
    best = near_duplicates.best_other_group(near_duplicates.fingerprints(train.images), groups)
    return [float(np.quantile(best, q)) if q > 0 else float("-inf") for q in quantiles]


def _keep_in_domain(
    extra: ImageSet, train: ImageSet, floor: float | np.ndarray
) -> tuple[ImageSet, list[dict[str, Any]]]:
    """Leaves out extra images whose best correlation with a training slice is below `floor`
    (one value, or one per image)."""
    best, _ = near_duplicates.best_matches(
        near_duplicates.fingerprints(extra.images), near_duplicates.fingerprints(train.images)
    )
    out = best < floor
    left = [{"id": extra.ids[i], "best_correlation": float(best[i])} for i in np.flatnonzero(out)]
    return extra.subset(np.flatnonzero(~out)), left


def drop_near_copies(
    extra: ImageSet, ds: ImageSet, threshold: float
) -> tuple[ImageSet, list[dict[str, Any]]]:
    """Drops extra images that are near-duplicates of a main-set image; lists what it dropped."""
    cut = threshold if threshold > 0 else EXACT
    best, arg = near_duplicates.best_matches(
        near_duplicates.fingerprints(extra.images), near_duplicates.fingerprints(ds.images)
    )
    drop = best >= cut
    dropped = [
        {"id": extra.ids[i], "matches": ds.ids[int(arg[i])], "correlation": float(best[i])}
        for i in np.flatnonzero(drop)
    ]
    return extra.subset(np.flatnonzero(~drop)), dropped


def builtin_per_class(extra_cfg: Any, data_cfg: Any) -> int:
    """New phantom slices per class to add: config.extra_train.builtin_per_class when the main
    set is the binary built-in set, else 0 (a data path or the 4-class phantoms: moot)."""
    n = int((extra_cfg.get("builtin_per_class", 0) or 0) if extra_cfg is not None else 0)
    if n < 0:
        raise UserError(f"config.extra_train.builtin_per_class={n} must be >= 0 (0 = none).")
    return n if n and draws_new_slices(data_cfg) else 0


def draws_new_slices(data_cfg: Any) -> bool:
    """Whether the main set is the binary built-in set, whose generator can draw new slices."""
    binary = not bool(data_cfg.builtin.get("types", False))
    return binary and resolve_source(data_cfg) == "builtin"


def generated_slices(per_class: int, data_cfg: Any, skip: int = 0) -> ImageSet:
    """`per_class` new built-in slices of each class: the generator's images of each class
    after the main set's and `skip` more (slice k of a class comes from its own seed)."""
    cfg = ml_collections.ConfigDict(data_cfg.to_dict())
    main = (int(cfg.builtin.num_normal) + skip, int(cfg.builtin.num_tumour) + skip)
    cfg.builtin.num_normal, cfg.builtin.num_tumour = main[0] + per_class, main[1] + per_class
    big = load_imageset(cfg)  # the main set's slices plus the new ones, each class in order
    new = [np.flatnonzero(big.labels == c)[n:] for c, n in enumerate(main)]
    return big.subset(np.sort(np.concatenate(new)))


def parse_folder_quantiles(spec: str, folders: set[str], where: str) -> dict[str, float]:
    """'glioma=0.3, pituitary=0.3' -> {'glioma': 0.3, 'pituitary': 0.3}; '' -> {}.

    Raises:
      DataError: an item that is not 'folder=q', q outside [0, 1], a folder named twice, or
        one that is not among `folders` (those read).
    """
    out: dict[str, float] = {}
    for item in (s.strip() for s in str(spec or "").split(",") if s.strip()):
        name, _, value = (x.strip() for x in item.partition("="))
        try:
            q = float(value)
        except ValueError:
            q = float("nan")
        if not name or not 0.0 <= q <= 1.0 or name in out:
            raise DataError(
                f"{where}: config.extra_train.folder_quantiles has {item!r}; expected "
                "'folder=q' items, each folder once, with 0 <= q <= 1, e.g. "
                "'glioma=0.3,pituitary=0.3'."
            )
        if name not in folders:
            raise DataError(
                f"{where}: config.extra_train.folder_quantiles names {name!r}, not a folder "
                f"read ({', '.join(sorted(folders))}); fix the name or config.extra_train.folders."
            )
        out[name] = q
    return out


def top_folders(images: ImageSet) -> np.ndarray:
    """(N,) the class folder of each image (the first part of its id)."""
    return np.asarray([i.split("/", 1)[0] for i in images.ids])


def _image_floors(
    extra: ImageSet, train: ImageSet, quantile: float, per_folder: dict[str, float], data_cfg: Any
) -> tuple[np.ndarray, float, dict[str, float]]:
    """Each extra image's domain floor: its folder's `per_folder` quantile, else `quantile`.
    Returns (floors (N,), the default floor, {folder: floor})."""
    floors = domain_floors(train, [quantile, *per_folder.values()], near_copy_threshold(data_cfg))
    named = dict(zip(per_folder, floors[1:], strict=True))
    return np.asarray([named.get(t, floors[0]) for t in top_folders(extra)]), floors[0], named


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _floors_text(floor: float, per_folder: dict[str, float]) -> str:
    """'floor 0.644; glioma 0.743' ('off' for a quantile of 0)."""

    def one(x: float) -> str:
        return f"{x:.3f}" if np.isfinite(x) else "off"

    return f"floor {one(floor)}" + "".join(f"; {k} {one(v)}" for k, v in per_folder.items())


def _from_folder(
    extra_cfg: Any, data_cfg: Any, ds: ImageSet, train: ImageSet, where: str
) -> tuple[ImageSet, dict[str, Any]]:
    """The folder's images of the named classes, relabelled, near-copies and unlike ones out."""
    extra = _read(extra_cfg, data_cfg)
    folders = parse_folders(extra_cfg.get("folders", ""))
    extra = _relabel(_keep_folders(extra, folders, where), tuple(ds.class_names), where)
    spec = extra_cfg.get("folder_quantiles", "")
    per_folder = parse_folder_quantiles(spec, set(top_folders(extra).tolist()), where)
    extra, dropped = _drop_copies(extra, ds, data_cfg, where)
    quantile = float(extra_cfg.get("domain_quantile", 0.0) or 0.0)
    floors, floor, named = _image_floors(extra, train, quantile, per_folder, data_cfg)
    extra, unlike = _keep_in_domain(extra, train, floors)
    if len(extra) == 0:
        raise DataError(
            f"{where}: no image is as like the training split as the domain filter asks "
            f"(config.extra_train.domain_quantile={quantile:g}"
            f"{f', folder_quantiles={spec!r}' if per_folder else ''}: "
            f"{_floors_text(floor, named)}); lower them (0 keeps all)."
        )
    summary = {
        "path": str(extra_cfg.path),
        "folders": list(folders),
        "dropped_near_copies": dropped,
        "domain_quantile": quantile,
        "domain_floor": _finite(floor),
        "left_out_unlike_training": unlike,
    }
    if named:
        summary["folder_floors"] = {k: _finite(v) for k, v in named.items()}
    return extra, summary


def near_copy_threshold(data_cfg: Any) -> float:
    """config.data.split.near_duplicate_threshold (0 = exact copies only)."""
    return float(data_cfg.split.get("near_duplicate_threshold", 0.0) or 0.0)


def _drop_copies(
    extra: ImageSet, ds: ImageSet, data_cfg: Any, where: str
) -> tuple[ImageSet, list[dict[str, Any]]]:
    """`drop_near_copies` at the split's threshold; an error when nothing is left."""
    extra, dropped = drop_near_copies(extra, ds, near_copy_threshold(data_cfg))
    if len(extra) == 0:
        raise DataError(f"{where}: every image copies one of the main data set; nothing to add.")
    return extra, dropped


def _from_generator(
    per_class: int, data_cfg: Any, ds: ImageSet, where: str
) -> tuple[ImageSet, dict[str, Any]]:
    """New built-in slices less near-copies of main-set ones (same generator: no domain filter)."""
    extra, dropped = _drop_copies(generated_slices(per_class, data_cfg), ds, data_cfg, where)
    summary = {
        "path": f"the built-in generator (config.extra_train.builtin_per_class={per_class})",
        "folders": [],
        "builtin_per_class": per_class,
        "dropped_near_copies": dropped,
        "domain_quantile": None,
        "domain_floor": None,
        "left_out_unlike_training": [],
    }
    return extra, summary


def load_extra_train(
    extra_cfg: Any, data_cfg: Any, ds: ImageSet, train: ImageSet
) -> tuple[ImageSet | None, dict[str, Any]]:
    """The extra training images of `config.extra_train`, checked against the main set `ds`.

    Args:
      extra_cfg: config.extra_train (path, folders, class_map, domain_quantile,
        folder_quantiles, builtin_per_class); an empty path and no generated slices means none.
      data_cfg: the main set's config.data (image size, class mode, near-duplicate threshold).
      ds: the main data set (all splits: an extra image may copy none of them).
      train: its training split (the domain filter's reference).

    Returns:
      (ImageSet with ids prefixed `ID_PREFIX` and labels in `ds.class_names`, or None; a JSON
      summary: path, folders, per-class counts used, the dropped near-copies, the images left
      out by the domain filter and its floor, fingerprint).

    Raises:
      DataError: unreadable folder, unknown folder or class, nothing left after filtering, or
        both a folder and generated slices asked for.
    """
    path = str(extra_cfg.get("path", "") or "").strip() if extra_cfg is not None else ""
    per_class = builtin_per_class(extra_cfg, data_cfg)
    if path and per_class:
        raise DataError(
            f"config.extra_train.path={path!r} and config.extra_train.builtin_per_class="
            f"{per_class} both add images; keep one (--config.extra_train.builtin_per_class=0)."
        )
    if per_class:
        where = f"config.extra_train.builtin_per_class={per_class}"
        extra, summary = _from_generator(per_class, data_cfg, ds, where)
    elif path:
        where = f"config.extra_train.path={path!r}"
        extra, summary = _from_folder(extra_cfg, data_cfg, ds, train, where)
    else:
        return None, {}
    extra.ids = [ID_PREFIX + i for i in extra.ids]
    extra.groups = extra.groups + int(np.max(ds.groups, initial=-1)) + 1
    return extra, {**summary, "fingerprint": extra.fingerprint, "counts": extra.counts()}


def join(train: ImageSet, extra: ImageSet | None) -> ImageSet:
    """`train` followed by `extra` (same class names); `train` itself when extra is None."""
    if extra is None:
        return train
    return ImageSet(
        images=np.concatenate([train.images, extra.images]),
        labels=np.concatenate([train.labels, extra.labels]).astype(np.int32),
        class_names=train.class_names,
        ids=list(train.ids) + list(extra.ids),
        groups=np.concatenate([train.groups, extra.groups]),
        fingerprint=train.fingerprint,
        skipped=list(train.skipped),
    )


def generator_train_set(
    meta: dict[str, Any], ds: ImageSet, train: ImageSet, where: str
) -> ImageSet:
    """Every image a diffusion run trained on: `train` plus its extra images, re-read and checked.

    Args:
      meta: the LDM run's metadata (its `config.extra_train`, the `extra_train` summary it
        recorded and `vae.data`); runs from before extra images existed have neither.
      ds, train: the main data set and the run's training split of it.
      where: the run directory, for messages.

    Raises:
      DataError: the extra folder, or what the filters keep of it, changed since training.
    """
    recorded = meta.get("extra_train") or {}
    extra_cfg = ml_collections.ConfigDict(meta.get("config", {}).get("extra_train") or {})
    data_cfg = ml_collections.ConfigDict(meta["vae"]["data"])
    extra, summary = load_extra_train(extra_cfg, data_cfg, ds, train)
    keys = ("fingerprint", "counts")  # the folder, and what the filters kept of it
    if any(summary.get(k) != recorded.get(k) for k in keys):
        raise DataError(
            f"the extra training images of the run in {where} "
            f"(config.extra_train.path={extra_cfg.get('path', '')!r}) changed since training; "
            "restore them or retrain."
        )
    return join(train, extra)
