"""Class names: synonyms, the two labelling modes and the order of the class ids.

`config.data.classes` picks how class directories (or NIfTI CSV label names) become labels:
- `binary` (default, the paper): every normal synonym -> 0 (`normal`), every tumour name -> 1
  (`tumour`); `jax_mri_ldm.CLASS_NAMES` are the class names.
- `folders`: every class directory is its own class, named after the directory (lower-cased,
  spaces -> `_`), except that synonyms keep their canonical name: `no`, `notumor`, `healthy`,
  ... mean `normal`; `yes`, `tumor` mean `tumour`. Class ids follow `class_order`: `normal`
  first (id 0) when present, then the other names sorted. The names are recorded in the run
  (`split.json`, checkpoint metadata), so a run never depends on this order being recomputed.

Class names end up in output paths (`<out>/<class>/`), so `check_class_name` only admits
plain names: no path separators, no leading dot, no control characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from jax_mri_ldm import CLASS_NAMES
from jax_mri_ldm.errors import UserError

CLASS_MODES: tuple[str, ...] = ("binary", "folders")

# Separator-free, lower-case spellings -> canonical class name (same table in both modes).
SYNONYMS: dict[str, str] = {
    "normal": "normal",
    "no": "normal",
    "notumor": "normal",
    "notumour": "normal",
    "healthy": "normal",
    "yes": "tumour",
    "tumor": "tumour",
    "tumour": "tumour",
}

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,63}$")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def canonical_class_name(name: str) -> str:
    """The class a directory / label / `--label` name means.

    Synonyms map to their canonical name (`No`, `no_tumor`, `notumor`, `healthy` -> `normal`;
    `yes`, `Tumor` -> `tumour`); any other name is lower-cased with whitespace runs turned
    into `_` (`Glioma` -> `glioma`, `low grade` -> `low_grade`).
    """
    key = _key(name)
    if key in SYNONYMS:
        return SYNONYMS[key]
    return re.sub(r"\s+", "_", str(name).strip().lower())


def check_class_name(name: str, where: str = "class name") -> str:
    """Returns `name` when it is safe as a directory name; raises UserError otherwise.

    Args:
      name: a class name (from a folder, a CSV, or a run's metadata).
      where: what to name in the error (a path or option).

    Raises:
      UserError: empty, over 64 characters, a leading dot, a path separator, `..`, a control
        character or any character outside letters, digits and `_.+-`.
    """
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or ".." in name:
        raise UserError(
            f"{where}: {name!r} is not a plain class name (letters, digits and _.+- only, "
            f"starting with a letter or digit, at most 64 characters); rename it."
        )
    return name


def class_order(names: Iterable[str]) -> tuple[str, ...]:
    """Class ids for `folders` mode: `normal` first when present, then the rest sorted."""
    uniq = set(names)
    rest = sorted(uniq - {"normal"})
    return ("normal", *rest) if "normal" in uniq else tuple(rest)


def check_mode(mode: str) -> str:
    """Returns the lower-cased `config.data.classes`; raises UserError naming the valid ones."""
    m = str(mode or "binary").strip().lower()
    if m not in CLASS_MODES:
        raise UserError(
            f"config.data.classes={mode!r} is not known; valid values: {', '.join(CLASS_MODES)}"
        )
    return m


def mode_of(data_cfg) -> str:
    """`config.data.classes` of a config, 'binary' for configs written before the field."""
    return check_mode(data_cfg.get("classes", "binary") if hasattr(data_cfg, "get") else "binary")


def binary_label(name: str) -> int | None:
    """Label id of a directory / label name in `binary` mode, None when it is no known name."""
    canon = canonical_class_name(name)
    if canon in CLASS_NAMES:
        return CLASS_NAMES.index(canon)
    return None


__all__ = [
    "CLASS_MODES",
    "SYNONYMS",
    "binary_label",
    "canonical_class_name",
    "check_class_name",
    "check_mode",
    "class_order",
    "mode_of",
]
