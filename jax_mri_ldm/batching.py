"""The one pad-to-batch helper: apply a jitted function over fixed-size batches of rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def batched_apply(fn: Callable[..., Any], *arrays: np.ndarray, batch_size: int) -> Any:
    """Applies ``fn(*batch)`` to aligned rows of `arrays`, `batch_size` rows at a time.

    Every call gets the same number of rows, ``min(batch_size, N)``, so a jitted `fn` compiles
    once per call of this function: the last batch is padded by repeating its last row (real
    data, so padding cannot produce NaN) and the padded rows are dropped from the result. `fn`
    must treat rows independently.

    Args:
      fn: ``fn(*batch) -> array or tuple of arrays``, each with a leading row axis.
      *arrays: arrays with the same leading size N.
      batch_size: rows per call (> 0).

    Returns:
      What `fn` returns (an array or a tuple of arrays), concatenated over all N rows.

    Raises:
      ValueError: a non-positive `batch_size`, no arrays, or arrays of different lengths.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not arrays or len({int(np.shape(a)[0]) for a in arrays}) != 1:
        raise ValueError("batched_apply needs one or more arrays with the same number of rows")
    n = int(np.shape(arrays[0])[0])
    if n == 0:
        return _empty_result(fn, arrays)
    size = min(batch_size, n)
    parts: list[tuple[np.ndarray, ...]] = []
    single = False
    for start in range(0, n, size):
        stop = min(start + size, n)
        batch = [_pad_rows(np.asarray(a[start:stop]), size) for a in arrays]
        out = fn(*batch)
        single = not isinstance(out, tuple)
        parts.append(tuple(np.asarray(o)[: stop - start] for o in ((out,) if single else out)))
    result = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
    return result[0] if single else result


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """(m, ...) -> (size, ...) by repeating the last row."""
    missing = size - x.shape[0]
    if missing <= 0:
        return x
    return np.concatenate([x, np.repeat(x[-1:], missing, axis=0)])


def _empty_result(fn: Callable[..., Any], arrays: tuple[np.ndarray, ...]) -> Any:
    """Zero-row outputs of the shapes and dtypes `fn` would return."""
    specs = [jax.ShapeDtypeStruct((1,) + np.shape(a)[1:], np.asarray(a).dtype) for a in arrays]
    shapes = jax.eval_shape(fn, *specs)
    empty = jax.tree.map(lambda s: np.zeros((0,) + s.shape[1:], s.dtype), shapes)
    return tuple(empty) if isinstance(empty, list | tuple) else empty
