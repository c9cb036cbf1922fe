"""Nearest training image of every query (SSIM, pixel L2 or feature cosine) and memorisation.

The SSIM search compares images downsampled to ``search_size`` (64 px by default) to keep an
all-pairs SSIM affordable on CPU: 1000 x 400 pairs at 256 px would be ~16x the work. The SSIM
matrix uses the same kernel as `metrics.ssim`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_mri_ldm.evaluation.metrics import check_images, filter_valid, pad_to, resize_images

_METRICS = ("ssim", "l2", "feature")


@functools.partial(jax.jit, static_argnames=("max_val", "win_size", "sigma", "k1", "k2"))
def _ssim_matrix_block(q, r, max_val, win_size, sigma, k1, k2):
    """SSIM for every (query, reference) pair of two blocks. q: (A,H,W,C), r: (B,H,W,C) -> (A,B)."""
    q, r = jnp.moveaxis(q, -1, 1), jnp.moveaxis(r, -1, 1)  # (A, C, H, W), (B, C, H, W)
    # Centre each image (see _ssim_terms): moments from centred images, means shifted back.
    oq = jnp.mean(q, axis=(1, 2, 3), keepdims=True)  # (A, 1, 1, 1)
    orf = jnp.mean(r, axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
    q, r = q - oq, r - orf
    mu_q, e_qq = filter_valid(jnp.stack([q, q * q]), win_size, sigma)  # (A, C, H', W') each
    mu_r, e_rr = filter_valid(jnp.stack([r, r * r]), win_size, sigma)  # (B, C, H', W') each
    var_q, var_r = e_qq - mu_q**2, e_rr - mu_r**2
    # Only E[qr] needs a filter per pair; everything else is per image.
    e_qr = filter_valid(q[:, None] * r[None, :], win_size, sigma)  # (A, B, C, H', W')
    mu_q, var_q = mu_q[:, None], var_q[:, None]  # (A, 1, C, H', W')
    mu_r, var_r = mu_r[None], var_r[None]  # (1, B, C, H', W')
    cov = e_qr - mu_q * mu_r
    mu_q, mu_r = mu_q + oq[:, None], mu_r + orf[None]
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    smap = ((2 * mu_q * mu_r + c1) * (2 * cov + c2)) / (
        (mu_q**2 + mu_r**2 + c1) * (var_q + var_r + c2)
    )
    return jnp.mean(smap, axis=(2, 3, 4))


def _nn_ssim(q: np.ndarray, r: np.ndarray, block: int, max_val: float):
    """Running argmax of SSIM over reference blocks; returns (index, score) per query."""
    nq, nr = q.shape[0], r.shape[0]
    best_i = np.zeros(nq, np.int64)
    best_s = np.full(nq, -np.inf)
    bq, br = min(block, nq), min(block, nr)
    for qs in range(0, nq, bq):
        qb = q[qs : qs + bq]
        m = qb.shape[0]
        qb = pad_to(jnp.asarray(qb), bq)
        for rs in range(0, nr, br):
            rb = r[rs : rs + br]
            k = rb.shape[0]
            s = np.asarray(
                _ssim_matrix_block(qb, pad_to(jnp.asarray(rb), br), max_val, 11, 1.5, 0.01, 0.03)
            )[:m, :k]
            j = np.argmax(s, axis=1)
            v = s[np.arange(m), j]
            upd = v > best_s[qs : qs + m]
            best_s[qs : qs + m] = np.where(upd, v, best_s[qs : qs + m])
            best_i[qs : qs + m] = np.where(upd, j + rs, best_i[qs : qs + m])
    return best_i, best_s


def nearest_neighbours(
    queries,
    references,
    metric: str = "ssim",
    feats: tuple | None = None,
    search_size: int | None = 64,
    block_size: int = 32,
    max_val: float = 1.0,
) -> dict:
    """Nearest reference for every query image.

    Args:
      queries: (Q, H, W, C) images (ignored for metric='feature').
      references: (R, H, W, C) images (ignored for metric='feature').
      metric: 'ssim' (score = SSIM, higher is closer), 'l2' (score = pixel RMSE, lower is
        closer) or 'feature' (score = cosine similarity of `feats`, higher is closer).
      feats: for 'feature': (query_feats (Q, D), reference_feats (R, D)).
      search_size: images are resized to search_size x search_size before 'ssim'/'l2' search
        (bilinear, antialiased); None keeps full resolution.
      block_size: queries and references per jitted SSIM block (memory ~ block^2 images).
      max_val: dynamic range for SSIM.

    Returns:
      dict with 'index' (Q,) int64 nearest-reference indices, 'score' (Q,) float64 their
      scores, and 'higher_is_closer' (bool).
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    if metric == "feature":
        if feats is None or len(feats) != 2:
            raise ValueError("metric='feature' needs feats=(query_feats, reference_feats).")
        fq = np.asarray(feats[0], np.float64)
        fr = np.asarray(feats[1], np.float64)
        if fq.ndim != 2 or fr.ndim != 2 or fq.shape[1] != fr.shape[1]:
            raise ValueError(f"feats must be (Q, D) and (R, D); got {fq.shape} and {fr.shape}.")
        fq = fq / np.maximum(np.linalg.norm(fq, axis=1, keepdims=True), 1e-12)
        fr = fr / np.maximum(np.linalg.norm(fr, axis=1, keepdims=True), 1e-12)
        sim = fq @ fr.T  # (Q, R)
        idx = np.argmax(sim, axis=1)
        return {"index": idx, "score": sim[np.arange(len(idx)), idx], "higher_is_closer": True}

    q = np.asarray(check_images("queries", queries))
    r = np.asarray(check_images("references", references))
    if q.shape[1:] != r.shape[1:]:
        raise ValueError(f"queries {q.shape} and references {r.shape} differ in image shape.")
    if q.shape[0] == 0 or r.shape[0] == 0:
        raise ValueError("nearest_neighbours needs at least one query and one reference.")
    q, r = resize_images(q, search_size), resize_images(r, search_size)
    if metric == "ssim":
        if min(q.shape[1:3]) < 11:
            raise ValueError(f"SSIM search needs images >= 11 px; got {q.shape[1:3]}.")
        idx, score = _nn_ssim(q, r, int(block_size), float(max_val))
        return {"index": idx, "score": score, "higher_is_closer": True}
    # l2: squared distances from norms and a float64 matmul, blocked over queries.
    qf = q.reshape(q.shape[0], -1).astype(np.float64)
    rf = r.reshape(r.shape[0], -1).astype(np.float64)
    r2 = np.sum(rf**2, axis=1)
    idx = np.empty(q.shape[0], np.int64)
    score = np.empty(q.shape[0], np.float64)
    for s in range(0, qf.shape[0], 256):
        qb = qf[s : s + 256]
        d2 = np.sum(qb**2, axis=1)[:, None] + r2[None] - 2.0 * qb @ rf.T
        j = np.argmin(d2, axis=1)
        idx[s : s + len(qb)] = j
        score[s : s + len(qb)] = np.sqrt(np.clip(d2[np.arange(len(qb)), j], 0, None) / qf.shape[1])
    return {"index": idx, "score": score, "higher_is_closer": False}


def _summary(v: np.ndarray) -> dict:
    return {
        "mean": float(np.mean(v)),
        "median": float(np.median(v)),
        "p95": float(np.percentile(v, 95)),
        "min": float(np.min(v)),
        "max": float(np.max(v)),
    }


def memorisation_report(
    synthetic,
    train,
    test_real,
    metric: str = "ssim",
    feats: tuple | None = None,
    search_size: int | None = 64,
    top_k: int = 5,
    block_size: int = 32,
) -> dict:
    """Are synthetic images closer to the training set than held-out real images are?

    Real test images were never seen by the generator, so their nearest-train scores show how
    close an honest new image can be. A synthetic image scoring closer to some training image
    than every real test image does is flagged as a memorisation candidate.

    Args:
      synthetic: (S, H, W, C) generated images.
      train: (T, H, W, C) the generator's training images.
      test_real: (R, H, W, C) real images not used for training.
      metric: 'ssim', 'l2' or 'feature' (see nearest_neighbours).
      feats: for 'feature': (synthetic_feats, train_feats, test_feats).
      search_size: resize for the 'ssim'/'l2' search (see nearest_neighbours).
      top_k: how many of the closest synthetic-train pairs to list.
      block_size: SSIM block size.

    Returns:
      JSON-able dict: 'metric', 'higher_is_closer', 'search_size'; 'synthetic_to_train' and
      'test_to_train' each with 'index' and 'score' lists and a 'summary' (mean, median, p95,
      min, max); 'threshold' (the closest test->train score); 'flagged' (synthetic indices
      strictly closer than the threshold); 'fraction_flagged'; 'nearest_pairs' (top_k dicts
      with 'synthetic', 'train', 'score', closest first).
    """
    if metric == "feature":
        if feats is None or len(feats) != 3:
            raise ValueError("metric='feature' needs feats=(synthetic, train, test) features.")
        syn = nearest_neighbours(None, None, "feature", feats=(feats[0], feats[1]))
        ref = nearest_neighbours(None, None, "feature", feats=(feats[2], feats[1]))
    else:
        kw = dict(metric=metric, search_size=search_size, block_size=block_size)
        syn = nearest_neighbours(synthetic, train, **kw)
        ref = nearest_neighbours(test_real, train, **kw)
    hi = syn["higher_is_closer"]
    threshold = float(np.max(ref["score"]) if hi else np.min(ref["score"]))
    closer = syn["score"] > threshold if hi else syn["score"] < threshold
    order = np.argsort(-syn["score"] if hi else syn["score"], kind="stable")[:top_k]
    return {
        "metric": metric,
        "higher_is_closer": bool(hi),
        "search_size": search_size if metric != "feature" else None,
        "synthetic_to_train": {
            "index": syn["index"].tolist(),
            "score": syn["score"].tolist(),
            "summary": _summary(syn["score"]),
        },
        "test_to_train": {
            "index": ref["index"].tolist(),
            "score": ref["score"].tolist(),
            "summary": _summary(ref["score"]),
        },
        "threshold": threshold,
        "flagged": np.flatnonzero(closer).tolist(),
        "fraction_flagged": float(np.mean(closer)),
        "nearest_pairs": [
            {"synthetic": int(i), "train": int(syn["index"][i]), "score": float(syn["score"][i])}
            for i in order
        ],
    }
