"""The run's evaluation cache: costly arrays that depend only on the run's real images.

Why: the report, the quality curve and the sampler ablations of one run all need the same
fixed reference, and its nearest-neighbour self-search of the training images (every slice
and mirror image against every other) costs more than the samples they score on a large
training set. Each entry's file name carries a hash of everything its value depends on, so a
changed training set or setting misses the cache instead of reading a stale entry; files are
written atomically (a crash or Ctrl-C leaves no half file), and an unreadable or unwritable
cache only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from jax_mri_ldm import atomic

CACHE_SUBDIR = "eval_cache"  # inside the diffusion run's directory
CACHE_VERSION = 1  # bump when a cached computation changes its result


def run_cache_dir(workdir: str) -> str:
    """The evaluation cache of the run in `workdir` (shared by the report and the benches)."""
    return os.path.join(workdir, CACHE_SUBDIR)


def key_of(*parts: Any) -> str:
    """A short hash of `parts`: arrays by shape, dtype and bytes, anything else by repr."""
    h = hashlib.sha256(repr(CACHE_VERSION).encode())
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(repr((a.shape, a.dtype.str)).encode())
            h.update(memoryview(a).cast("B"))
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def cached_array(
    cache_dir: str | None, name: str, parts: tuple, compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """`compute()`, read from `cache_dir/<name>_<key_of(parts)>.npy` when there (None: off)."""
    if not cache_dir:
        return np.asarray(compute())
    path = os.path.join(cache_dir, f"{name}_{key_of(*parts)}.npy")
    if os.path.exists(path):
        try:
            return np.load(path)
        except (OSError, ValueError) as e:
            warnings.warn(f"{path}: unreadable cache entry ({e}); recomputing it.", stacklevel=2)
    out = np.asarray(compute())
    buf = io.BytesIO()
    np.save(buf, out)
    try:
        atomic.write_bytes(path, buf.getvalue())
    except OSError as e:
        warnings.warn(f"{path}: cannot write the evaluation cache ({e}).", stacklevel=2)
    return out
