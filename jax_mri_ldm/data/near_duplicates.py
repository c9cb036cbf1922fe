"""Near-duplicate images: the same slice saved twice as different files.

Exact duplicates (identical bytes) already share a `groups` id; a scan re-saved at another size
or JPEG quality does not, and a split that puts one copy in training and the other in test
leaks it into every test score and into the memorisation threshold. Here each image becomes a
small fingerprint: box (area) averaged to `size` x `size`, zero mean, unit norm. Two images are
near-duplicates when the correlation of their fingerprints (their dot product) is at least the
threshold (config.data.split.near_duplicate_threshold), for the image as it is or mirrored
left-right (a flipped copy is the same slice too). Near-duplicate pairs join their groups
(union-find), so `merge_groups` returns coarser groups for `splits.split_indices`.

Correlations are computed in row chunks of matrix products, so memory stays O(chunk x N) and
thousands of images take seconds. Everything is float64: every decision here is a comparison of a
correlation with a threshold or a quantile, and matrix products differ in their last bits between
BLAS builds and chunk sizes; in float32 that is ~1e-7, enough to flip a pair near the threshold
(and so a split, or an extra image's selection) between machines, in float64 ~1e-16, which makes
such a flip far rarer, though not impossible. A run's split is recorded in its split.json and
read back from there, so a finished run never depends on this. `ds.groups` and the dataset
fingerprint are left untouched (the merge is recomputed from the images whenever a split is made).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

FINGERPRINT_SIZE = 32  # side of the box-averaged fingerprint each image is reduced to
_CHUNK_ELEMENTS = 1 << 22  # entries of one (chunk, N) correlation block (32 MiB in float64)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of exact area averaging from n_in pixels to n_out pixels."""
    edges_out = np.arange(n_out + 1) * (n_in / n_out)  # output pixel borders, in input pixels
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(n_in)[None, :] + 1)
    w = np.clip(hi - lo, 0.0, None)  # overlap of output pixel i with input pixel j
    return w / w.sum(axis=1, keepdims=True)


def fingerprints(images: np.ndarray, size: int = FINGERPRINT_SIZE) -> np.ndarray:
    """Zero-mean, unit-norm area-averaged thumbnails, one row per image.

    Args:
      images: (N, H, W, 1) or (N, H, W) floats.
      size: thumbnail side.

    Returns:
      (N, size, size) float64; a constant image gives all zeros (it matches nothing).
    """
    x = np.asarray(images)
    x = x[..., 0] if x.ndim == 4 else x  # (N, H, W), not copied
    ry = _area_matrix(x.shape[1], size)  # (size, H)
    rx = _area_matrix(x.shape[2], size)  # (size, W)
    step = max(1, _CHUNK_ELEMENTS // max(x.shape[1] * x.shape[2], 1))  # images per float64 copy
    blocks = [
        np.einsum("ih,nhw,jw->nij", ry, x[i : i + step].astype(np.float64), rx, optimize=True)
        for i in range(0, len(x), step)
    ]
    small = np.concatenate(blocks) if blocks else np.zeros((0, size, size))  # (N, size, size)
    small -= small.mean(axis=(1, 2), keepdims=True)
    norm = np.sqrt(np.sum(small**2, axis=(1, 2), keepdims=True))
    return np.where(norm > 1e-6, small / np.maximum(norm, 1e-12), 0.0)


def _chunk_rows(n_cols: int, chunk_rows: int | None) -> int:
    return max(1, chunk_rows or _CHUNK_ELEMENTS // max(n_cols, 1))


def best_matches(
    queries: np.ndarray,
    refs: np.ndarray,
    *,
    exclude_self: bool = False,
    groups: np.ndarray | None = None,
    chunk_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's highest fingerprint correlation with a reference (as is or mirrored).

    Args:
      queries: (Q, s, s) from `fingerprints`.
      refs: (R, s, s) from `fingerprints`, R >= 1 (R >= 2 with `exclude_self`).
      exclude_self: queries and refs are the same set; skip each image's match with itself.
      groups: (R,) group ids when queries and refs are the same set; skip every match within a
        query's own group (its copies); -inf where a query has no other group.
      chunk_rows: queries per block (default: a block of about 4M entries).

    Returns:
      (Q,) best correlation and (Q,) int64 index of that reference.
    """
    r = refs.reshape(len(refs), -1)  # (R, D)
    best = np.empty(len(queries), np.float64)
    arg = np.empty(len(queries), np.int64)
    step = _chunk_rows(len(r), chunk_rows)
    for i0 in range(0, len(queries), step):
        i1 = min(i0 + step, len(queries))
        s = correlations(queries[i0:i1], r)  # (chunk, R)
        if exclude_self:
            s[np.arange(i1 - i0), np.arange(i0, i1)] = -np.inf
        if groups is not None:
            s[groups[i0:i1, None] == groups[None, :]] = -np.inf
        arg[i0:i1] = s.argmax(axis=1)
        best[i0:i1] = s[np.arange(i1 - i0), arg[i0:i1]]
    return best, arg


def best_other_group(
    fps: np.ndarray, groups: np.ndarray, *, chunk_rows: int | None = None
) -> np.ndarray:
    """Each image's highest correlation with an image of another group (-inf: no other group).

    Args:
      fps: (N, s, s) from `fingerprints`.
      groups: (N,) group ids; an image's own group (its copies) does not count.
      chunk_rows: rows per block (default: a block of about 4M entries).

    Returns:
      (N,) float64.
    """
    return best_matches(fps, fps, groups=groups, chunk_rows=chunk_rows)[0]


def correlations(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(Q, s, s) fingerprints vs (R, D) flattened ones -> (Q, R), the larger of as-is/mirrored."""
    plain = q.reshape(len(q), -1) @ r.T
    mirrored = q[:, :, ::-1].reshape(len(q), -1) @ r.T
    return np.maximum(plain, mirrored)


def near_pairs(fps: np.ndarray, threshold: float, *, chunk_rows: int | None = None) -> np.ndarray:
    """Every pair (i < j) whose correlation, as is or mirrored, is >= threshold.

    Args:
      fps: (N, s, s) from `fingerprints`.
      threshold: correlation in (0, 1].
      chunk_rows: rows per block (default: a block of about 4M entries).

    Returns:
      (P, 2) int64 pairs, sorted.
    """
    f = fps.reshape(len(fps), -1)  # (N, D)
    out = []
    step = _chunk_rows(len(f), chunk_rows)
    for i0 in range(0, len(f), step):
        i, j = np.nonzero(correlations(fps[i0 : i0 + step], f) >= threshold)  # block (chunk, N)
        i += i0
        keep = i < j
        out.append(np.stack([i[keep], j[keep]], axis=1))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))].astype(np.int64)


def merge_groups(
    images: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    *,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """Joins the groups of near-duplicate images.

    Args:
      images: (N, H, W, 1) in [0, 1].
      groups: (N,) existing (exact-duplicate) group ids.
      threshold: fingerprint correlation at or above which two images are one slice;
        <= 0 disables the merge.
      chunk_rows: rows per correlation block (a memory knob; the result does not depend on it).

    Returns:
      (N,) int64 group ids: each merged group takes the smallest id among its members' groups,
      so a group with no near-duplicate keeps its id.
    """
    groups = np.asarray(groups, np.int64)
    if threshold <= 0 or len(groups) < 2:
        return groups.copy()
    pairs = near_pairs(fingerprints(images), threshold, chunk_rows=chunk_rows)
    uniq, g = np.unique(groups, return_inverse=True)  # g: (N,) dense group index
    n = len(groups)
    # Graph on images + groups: image i -- its group node, and image i -- image j per pair.
    rows = np.concatenate([np.arange(n), pairs[:, 0]])
    cols = np.concatenate([n + g, pairs[:, 1]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n + len(uniq),) * 2)
    _, comp = connected_components(graph, directed=False)
    comp = comp[:n]
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(smallest, comp, groups)
    return smallest[comp]
