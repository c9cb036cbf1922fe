"""The one atomic-write helper: write beside the target, then rename onto it.

A reader (or a crash, or Ctrl-C) never sees a half-written file: the content goes to a
temporary name in the same directory and `os.replace` swaps it in only when complete; on any
error the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any


def _temporary_name(path: str) -> str:
    """A fresh name beside `path` that keeps its extension (savefig / PIL / np.savez read it)."""
    directory, name = os.path.split(os.path.abspath(path))
    ext = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{ext}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path to write; renames it onto `path` when the block succeeds.

    The parent directory is created. The temporary file is not created beforehand, so the
    writer's own permissions apply.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    """Atomically writes `data` to `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    """Atomically writes `text` to `path`."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    """Atomically writes `obj` as JSON (default: indent=2, sorted keys)."""
    kwargs = {"indent": 2, "sort_keys": True, **dump_kwargs}
    write_text(path, json.dumps(obj, **kwargs))


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yields a fresh temporary directory; it replaces `path` (and what was there) on success.

    On an error (or Ctrl-C) the temporary directory is removed and `path` is untouched.
    """
    out = os.path.abspath(path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp", dir=os.path.dirname(out))
    try:
        yield tmp
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
