"""What a stopped report already computed, kept on disk so that rerunning it resumes.

Why: on a CPU the full report of a real run is long (its Timings section), most of it in two
places, the sampled images (DDPM-1000's row alone is about T network calls per image) and the
downstream study's classifiers. A crash, Ctrl-C or a lost machine would otherwise throw all
of it away.
The report keeps each finished sample batch and each finished classifier run here, under a
key that hashes everything its value depends on (weights, the run's metadata, setting, seed,
batch, data), so a rerun of the same command reads them back and a changed run or setting
misses instead of reading a stale entry (`RESUME_VERSION` covers changes to this code).
Entries are written atomically (a stop leaves no half file); the report deletes the folder,
which a marker file names as its own, once report.json is written.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jax_mri_ldm import atomic
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.evaluation.cache import key_of

RESUME_SUBDIR = "partial"  # inside the report's --out folder
RESUME_VERSION = 1  # part of every key: bump when what a stored entry holds changes
MARKER = ".report_partial"  # marks the folder as the report's own (only then is it deleted)


def _plain(x: Any) -> Any:
    """NumPy scalars and arrays as Python numbers and lists (for json.dumps)."""
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def tree_key(tree: Any) -> str:
    """A short hash of a parameter pytree: its structure and every leaf's bytes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return key_of(str(treedef), *(np.asarray(x) for x in leaves))


class ResumeStore:
    """Sample batches (.npz) and JSON results of a report, keyed by content hashes.

    Args:
      root: the folder (created on the first write).

    Raises:
      UserError: `root` exists, is not empty and was not made by a report.
    """

    def __init__(self, root: str):
        self.root = root
        self.hits = {"sample_batches": 0, "runs": 0}  # entries of an earlier process read back
        self._written: set[str] = set()  # entries this process wrote (not counted as hits)
        owned = os.path.exists(os.path.join(root, MARKER))
        if os.path.isdir(root) and os.listdir(root) and not owned:
            raise UserError(
                f"{root} exists and was not made by a report; the report keeps its partial "
                "results there. Move that folder or choose another --out."
            )

    def count(self) -> int:
        """Entries on disk now."""
        if not os.path.isdir(self.root):
            return 0
        return sum(1 for n in os.listdir(self.root) if not n.startswith("."))

    def _path(self, kind: str, parts: tuple, ext: str) -> str:
        return os.path.join(self.root, f"{kind}_{key_of(RESUME_VERSION, kind, *parts)}.{ext}")

    def _hit(self, kind: str, path: str) -> None:
        if path not in self._written:
            self.hits[kind] += 1

    def _write(self, path: str, data: bytes) -> None:
        try:
            marker = os.path.join(self.root, MARKER)
            if not os.path.exists(marker):
                atomic.write_bytes(marker, b"partial results of evaluate.py; safe to delete\n")
            atomic.write_bytes(path, data)
            self._written.add(path)
        except OSError as e:
            warnings.warn(f"{path}: cannot keep this result for a resume ({e}).", stacklevel=3)

    def load_batch(self, parts: tuple) -> tuple[np.ndarray, dict[str, float]] | None:
        """A stored batch: (images, {'seconds', 'compile_seconds'}) or None."""
        path = self._path("batch", parts, "npz")
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as z:
                images = np.array(z["images"])
                timing = {k: float(z[k]) for k in ("seconds", "compile_seconds")}
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(
                f"{path}: unreadable stored batch ({e}); generating it again.", stacklevel=2
            )
            return None
        self._hit("sample_batches", path)
        return images, timing

    def save_batch(
        self, parts: tuple, images: np.ndarray, seconds: float, compile_seconds: float
    ) -> None:
        """Keeps a generated batch with the seconds it took (and its setting's compile)."""
        buf = io.BytesIO()
        np.savez(buf, images=images, seconds=seconds, compile_seconds=compile_seconds)
        self._write(self._path("batch", parts, "npz"), buf.getvalue())

    def result(self, parts: tuple, compute: Callable[[], dict]) -> dict:
        """`compute()` (a JSON-able dict), read back when stored under `parts`."""
        path = self._path("run", parts, "json")
        if os.path.exists(path):
            try:
                with open(path) as f:
                    out = json.load(f)
                self._hit("runs", path)
                return out
            except (OSError, ValueError) as e:
                warnings.warn(
                    f"{path}: unreadable stored result ({e}); computing it again.", stacklevel=2
                )
        out = compute()
        self._write(path, json.dumps(out, default=_plain).encode())
        return out

    def remove(self) -> None:
        """Deletes the folder (the report that needed it is written), if it is the report's."""
        if os.path.exists(os.path.join(self.root, MARKER)):
            shutil.rmtree(self.root, ignore_errors=True)
