"""Nearest training image of every query (SSIM, pixel L2 or feature cosine) and memorisation.

The SSIM search compares images downsampled to ``search_size`` (64 px by default) to keep an
all-pairs SSIM affordable on CPU: 1000 x 400 pairs at 256 px would be ~16x the work. The SSIM
matrix uses the same Gaussian window as `metrics.ssim` (applied as banded matmuls,
`metrics.filter_valid_matmul`, which is the faster form for the pair blocks).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_mri_ldm.evaluation.metrics import (
    check_images,
    filter_valid_matmul,
    pad_to,
    resize_images,
)

_METRICS = ("ssim", "l2", "feature")


@functools.partial(jax.jit, static_argnames=("max_val", "win_size", "sigma", "k1", "k2"))
def _ssim_matrix_block(q, r, max_val, win_size, sigma, k1, k2):
    """SSIM for every (query, reference) pair of two blocks. q: (A,H,W,C), r: (B,H,W,C) -> (A,B)."""
    q, r = jnp.moveaxis(q, -1, 1), jnp.moveaxis(r, -1, 1)  # (A, C, H, W), (B, C, H, W)
    # Centre each image (see _ssim_terms): moments from centred images, means shifted back.
    oq = jnp.mean(q, axis=(1, 2, 3), keepdims=True)  # (A, 1, 1, 1)
    orf = jnp.mean(r, axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
    q, r = q - oq, r - orf
    mu_q, e_qq = filter_valid_matmul(jnp.stack([q, q * q]), win_size, sigma)  # (A, C, H', W') each
    mu_r, e_rr = filter_valid_matmul(jnp.stack([r, r * r]), win_size, sigma)  # (B, C, H', W') each
    var_q, var_r = e_qq - mu_q**2, e_rr - mu_r**2
    # Only E[qr] needs a filter per pair; everything else is per image.
    e_qr = filter_valid_matmul(q[:, None] * r[None, :], win_size, sigma)  # (A, B, C, H', W')
    mu_q, var_q = mu_q[:, None], var_q[:, None]  # (A, 1, C, H', W')
    mu_r, var_r = mu_r[None], var_r[None]  # (1, B, C, H', W')
    cov = e_qr - mu_q * mu_r
    mu_q, mu_r = mu_q + oq[:, None], mu_r + orf[None]
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    smap = ((2 * mu_q * mu_r + c1) * (2 * cov + c2)) / (
        (mu_q**2 + mu_r**2 + c1) * (var_q + var_r + c2)
    )
    return jnp.mean(smap, axis=(2, 3, 4))


def _nn_ssim(q: np.ndarray, r: np.ndarray, block: int, max_val: float, groups=None):
    """Running argmax of SSIM over reference blocks; returns (index, score) per query.

    `groups` = (query_groups (Q,), reference_groups (R,)): pairs of one group are skipped.
    """
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
            if groups is not None:
                same = groups[0][qs : qs + m, None] == groups[1][None, rs : rs + k]
                s = np.where(same, -np.inf, s)
            j = np.argmax(s, axis=1)
            v = s[np.arange(m), j]
            upd = v > best_s[qs : qs + m]
            best_s[qs : qs + m] = np.where(upd, v, best_s[qs : qs + m])
            best_i[qs : qs + m] = np.where(upd, j + rs, best_i[qs : qs + m])
    return best_i, best_s


def _check_groups(groups, nq: int, nr: int):
    """(query_groups, reference_groups) as int arrays of the right lengths, or None."""
    if groups is None:
        return None
    if len(groups) != 2:
        raise ValueError("groups must be (query_groups, reference_groups).")
    gq, gr = np.asarray(groups[0], np.int64), np.asarray(groups[1], np.int64)
    if gq.shape != (nq,) or gr.shape != (nr,):
        raise ValueError(
            f"groups must have shapes ({nq},) and ({nr},); got {gq.shape} and {gr.shape}."
        )
    if np.any(np.all(gq[:, None] == gr[None, :], axis=1)):
        raise ValueError("groups leave a query with no reference outside its own group.")
    return gq, gr


def nearest_neighbours(
    queries,
    references,
    metric: str = "ssim",
    feats: tuple | None = None,
    search_size: int | None = 64,
    block_size: int = 32,
    max_val: float = 1.0,
    groups: tuple | None = None,
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
      groups: optional (query_groups (Q,), reference_groups (R,)) ints; a query never matches a
        reference of its own group (an image itself, its mirror image, its duplicates).

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
        g = _check_groups(groups, len(fq), len(fr))
        if g is not None:
            sim = np.where(g[0][:, None] == g[1][None, :], -np.inf, sim)
        idx = np.argmax(sim, axis=1)
        return {"index": idx, "score": sim[np.arange(len(idx)), idx], "higher_is_closer": True}

    q = np.asarray(check_images("queries", queries))
    r = np.asarray(check_images("references", references))
    if q.shape[1:] != r.shape[1:]:
        raise ValueError(f"queries {q.shape} and references {r.shape} differ in image shape.")
    if q.shape[0] == 0 or r.shape[0] == 0:
        raise ValueError("nearest_neighbours needs at least one query and one reference.")
    g = _check_groups(groups, q.shape[0], r.shape[0])
    q, r = resize_images(q, search_size), resize_images(r, search_size)
    if metric == "ssim":
        if min(q.shape[1:3]) < 11:
            raise ValueError(f"SSIM search needs images >= 11 px; got {q.shape[1:3]}.")
        idx, score = _nn_ssim(q, r, int(block_size), float(max_val), g)
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
        if g is not None:
            d2 = np.where(g[0][s : s + len(qb), None] == g[1][None, :], np.inf, d2)
        j = np.argmin(d2, axis=1)
        idx[s : s + len(qb)] = j
        score[s : s + len(qb)] = np.sqrt(np.clip(d2[np.arange(len(qb)), j], 0, None) / qf.shape[1])
    return {"index": idx, "score": score, "higher_is_closer": False}


TWIN_SSIM = 0.99
"""Nearest-neighbour SSIM at which two training images count as one slice stored twice: the
relative rule measures a slice's spacing to its nearest *other* slice, not to its twin."""


def own_neighbour_scores(
    references,
    groups=None,
    metric: str = "ssim",
    feats=None,
    search_size: int | None = 64,
    block_size: int = 32,
    twin_ssim: float | None = None,
) -> np.ndarray:
    """(R,) score of every reference to its nearest reference outside its own group.

    How close the training set's images are to each other, image by image: the yardstick of
    the per-image memorisation rule (`relative_distance`). `groups` (R,) ints put an image
    with its mirror image or its duplicates (default: every image is its own group);
    `feats` (R, D) for metric='feature'. With `twin_ssim` (metric 'ssim'), nearest pairs at
    or above it are merged into one group and the search repeats, so twins (one slice stored
    twice) are measured against their nearest other slice.
    """
    if twin_ssim is not None and metric != "ssim":
        raise ValueError(f"twin_ssim needs metric='ssim'; got {metric!r}.")
    n = len(feats) if metric == "feature" else len(references)
    g = np.arange(n) if groups is None else np.asarray(groups, np.int64).copy()
    f = None if feats is None else (feats, feats)
    kw = dict(feats=f, search_size=search_size, block_size=block_size)
    while True:
        out = nearest_neighbours(references, references, metric, groups=(g, g), **kw)
        twins = [] if twin_ssim is None else np.flatnonzero(out["score"] >= twin_ssim)
        merged = _merge_groups(g, twins, out["index"])
        if merged is None:
            return out["score"]
        g = merged


def _merge_groups(g: np.ndarray, members, partners: np.ndarray) -> np.ndarray | None:
    """Groups with each member's group joined to its partner's; None if nothing to join or
    everything would become one group (then the caller keeps the last scores, twins and all)."""
    if len(members) == 0:
        return None
    g = g.copy()
    for a in members:
        g[g == g[partners[a]]] = g[a]
    return None if np.unique(g).size < 2 else g


def relative_distance(
    score: np.ndarray, index: np.ndarray, own: np.ndarray, higher_is_closer: bool
) -> np.ndarray:
    """(Q,) a query's distance to its nearest reference j over j's distance to its own nearest.

    Below 1, the query is closer to j than every other training image is (the authenticity
    test of Alaa et al. 2022). Dividing by j's own spacing makes the rule local: a smooth,
    typical slice in a dense region is not flagged for being close to many look-alikes, while
    a copy (distance 0) is flagged wherever it lands. Distances are 1 - similarity for SSIM
    and cosine scores and the score itself for pixel RMSE.
    """
    score, own = np.asarray(score, np.float64), np.asarray(own, np.float64)[np.asarray(index)]
    d, d_own = (1.0 - score, 1.0 - own) if higher_is_closer else (score, own)
    return np.maximum(d, 0.0) / np.maximum(d_own, 1e-12)


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
    train_groups=None,
    train_own: np.ndarray | None = None,
    calibration=None,
    calibration_nn: dict | None = None,
) -> dict:
    """Are synthetic images closer to the training set than held-out real images are?

    Real test images were never seen by the generator, so their nearest-train scores show how
    close an honest new image can be. A synthetic image scoring closer to some training image
    than every real test image (and every `calibration` image) does is flagged as a
    memorisation candidate. The 'relative' rule measures each nearest distance in units of that
    training image's own nearest-neighbour distance (`relative_distance`) and flags a synthetic
    image below every held-out image's. With n held-out images an honest new image is flagged
    with probability 1/(n+1), so more held-out images make a sharper rule.

    Args:
      synthetic: (S, H, W, C) generated images.
      train: (T, H, W, C) the generator's training images.
      test_real: (R, H, W, C) real images not used for training.
      metric: 'ssim', 'l2' or 'feature' (see nearest_neighbours).
      feats: for 'feature': (synthetic_feats, train_feats, test_feats).
      search_size: resize for the 'ssim'/'l2' search (see nearest_neighbours).
      top_k: how many of the closest synthetic-train pairs to list.
      block_size: SSIM block size.
      train_groups: (T,) ints; training images of one group (an image and its mirror image)
        are not each other's neighbours in the relative rule (default: one group each);
        with metric 'ssim', twins (`TWIN_SSIM`) are joined too.
      train_own: the `own_neighbour_scores` of `train` if already computed.
      calibration: (M, H, W, C) more held-out images that set both thresholds together with
        `test_real` (a threshold from n held-out images flags 1/(n+1) of honest new images);
        for metric 'feature', their (M, D) features.
      calibration_nn: the `nearest_neighbours` result of `calibration` against `train` if
        already computed (then `calibration` itself is not searched).

    Returns:
      JSON-able dict: 'metric', 'higher_is_closer', 'search_size'; 'synthetic_to_train' and
      'test_to_train' each with 'index' and 'score' lists and a 'summary' (mean, median, p95,
      min, max); 'calibration_to_train' (the same for `calibration`, or None);
      'threshold_images' (how many held-out images set the thresholds); 'threshold' (the
      closest held-out->train score); 'flagged' (synthetic indices
      strictly closer than the threshold); 'fraction_flagged'; 'nearest_pairs' (top_k dicts
      with 'synthetic', 'train', 'score', closest first); 'relative' (see `_relative_rule`).
    """
    if metric == "feature":
        if feats is None or len(feats) != 3:
            raise ValueError("metric='feature' needs feats=(synthetic, train, test) features.")
        search = lambda q: nearest_neighbours(None, None, "feature", feats=(q, feats[1]))  # noqa: E731
        synthetic, test_real = feats[0], feats[2]
    else:
        kw = dict(metric=metric, search_size=search_size, block_size=block_size)
        search = lambda q: nearest_neighbours(q, train, **kw)  # noqa: E731
    syn, ref = search(synthetic), search(test_real)
    cal = calibration_nn
    if cal is None and calibration is not None:
        cal = search(calibration)
    hi = syn["higher_is_closer"]
    if train_own is None:
        twin = TWIN_SSIM if metric == "ssim" else None
        f = feats[1] if metric == "feature" else None
        train_own = own_neighbour_scores(
            train, train_groups, metric, f, search_size, block_size, twin_ssim=twin
        )
    own = np.asarray(train_own)
    held = held_out_nn(ref, cal)
    threshold = float(np.max(held["score"]) if hi else np.min(held["score"]))
    closer = syn["score"] > threshold if hi else syn["score"] < threshold
    order = np.argsort(-syn["score"] if hi else syn["score"], kind="stable")[:top_k]
    return {
        "metric": metric,
        "higher_is_closer": bool(hi),
        "search_size": search_size if metric != "feature" else None,
        "synthetic_to_train": _listed(syn),
        "test_to_train": _listed(ref),
        "calibration_to_train": None if cal is None else _listed(cal),
        "threshold_images": int(len(held["score"])),
        "threshold": threshold,
        "flagged": np.flatnonzero(closer).tolist(),
        "fraction_flagged": float(np.mean(closer)),
        "nearest_pairs": [
            {"synthetic": int(i), "train": int(syn["index"][i]), "score": float(syn["score"][i])}
            for i in order
        ],
        "relative": _relative_rule(syn, held, own, hi),
    }


def _listed(nn: dict) -> dict:
    """A `nearest_neighbours` result as JSON lists plus a summary of its scores."""
    score = np.asarray(nn["score"])
    return {"index": nn["index"].tolist(), "score": score.tolist(), "summary": _summary(score)}


def held_out_nn(ref: dict, cal: dict | None) -> dict:
    """Test and calibration `nearest_neighbours` results as one (index, score) set."""
    if cal is None:
        return ref
    return {k: np.concatenate([ref[k], cal[k]]) for k in ("index", "score")}


def _relative_rule(syn: dict, ref: dict, own: np.ndarray, hi: bool) -> dict:
    """Relative distances of synthetic and held-out images; flags below the smallest held-out
    one ('test' holds the held-out images' ratios: test split, then any calibration images)."""
    rel_syn = relative_distance(syn["score"], syn["index"], own, hi)
    rel_test = relative_distance(ref["score"], ref["index"], own, hi)
    threshold = float(np.min(rel_test))
    flagged = rel_syn < threshold
    return {
        "threshold": threshold,
        "synthetic": {"ratio": rel_syn.tolist(), "summary": _summary(rel_syn)},
        "test": {"ratio": rel_test.tolist(), "summary": _summary(rel_test)},
        "train_own_summary": _summary(np.asarray(own, np.float64)),
        "flagged": np.flatnonzero(flagged).tolist(),
        "fraction_flagged": float(np.mean(flagged)),
    }
