"""Errors a user can cause, and the checks on names and paths that raise them.

The entry points turn exactly these into one `error: ...` line and exit status 2 (see cli.py);
any other exception is a bug and keeps its traceback (exit 1). `UserError` subclasses
`ValueError` so that code catching `ValueError` keeps working.
"""

from __future__ import annotations

import os
import unicodedata


class UserError(ValueError):
    """Bad user input or a bad run directory; the message names it and says what to do."""


class CheckpointError(UserError):
    """A checkpoint whose content does not match what was saved (damaged, tampered, crafted)."""


def check_plain_name(name: object, what: str, source: str) -> str:
    """Returns `name` if it is safe as one path component, else raises UserError.

    A plain name is a non-empty string without path separators, without `.`/`..` and without
    control characters, so joining it under an output directory cannot leave that directory.

    Args:
      name: the candidate (e.g. a class name read from a checkpoint's metadata).
      what: what it is, for the message ("class name").
      source: where it came from, for the message (a file or directory).
    """
    problem = None
    if not isinstance(name, str) or not name.strip():
        problem = "is empty or not a string"
    elif name in (".", "..") or "/" in name or "\\" in name or (os.altsep or "/") in name:
        problem = "contains a path separator or is '.'/'..'"
    elif any(unicodedata.category(ch).startswith("C") for ch in name):
        problem = "contains control characters"
    if problem is not None:
        raise UserError(
            f"{what} {name!r} in {source} {problem}; it must be a plain name. The file was "
            "modified or crafted: use a run directory you trained yourself."
        )
    return name


def resolve_inside(root: str, relative: str) -> str:
    """`root/relative` as a real path, raising UserError unless it stays inside `root`.

    Symlinks are resolved on both sides, so a link inside `root` cannot redirect a write out.
    """
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, target]) != base or target == base:
        raise UserError(
            f"refusing to write {relative!r}: it resolves to {target}, outside the output "
            f"directory {base}."
        )
    return target
