"""Tests for jax_mri_ldm.evaluation.metrics against hand values and independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from scipy.ndimage import gaussian_filter

from conftest import blobs
from jax_mri_ldm.evaluation import metrics as M
from jax_mri_ldm.evaluation import neighbours as N
from jax_mri_ldm.evaluation import stats as S

C1, C2 = (0.01) ** 2, (0.03) ** 2


def _ref_ssim_terms(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """skimage.structural_similarity(gaussian_weights=True, sigma=1.5, data_range=1,
    use_sample_covariance=False) re-implemented with scipy: (ssim, mean cs) of 2D images."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")
    ux, uy = f(a), f(b)
    vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
    cs = (2 * vxy + C2) / (vx + vy + C2)
    s = (2 * ux * uy + C1) / (ux**2 + uy**2 + C1) * cs
    crop = (slice(5, -5), slice(5, -5))  # skimage crops (win_size - 1) // 2 per side
    return float(s[crop].mean()), float(cs[crop].mean())


@pytest.fixture(scope="module")
def noisy_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = blobs(3, 48, seed=1)[:, :40]  # (3, 40, 48, 1): non-square on purpose
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    return x, y


# ---------------------------------------------------------------- PSNR / SSIM / MS-SSIM


def test_psnr_hand_values():
    x = np.zeros((2, 8, 8, 1), np.float32)
    y = x.copy()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] += 0.5  # MSE 0.25 -> 6.0206 dB; also check max_val scaling below
    np.testing.assert_allclose(M.psnr(x, y), [20.0, 10 * math.log10(4.0)], rtol=1e-5)
    np.testing.assert_allclose(M.psnr(x * 2, y * 2, max_val=2.0), [20.0, 6.0206], rtol=1e-4)
    assert np.all(np.isinf(np.asarray(M.psnr(x, x))))


def test_ssim_matches_scipy_reference(noisy_pair):
    x, y = noisy_pair
    got = np.asarray(M.ssim(x, y))
    want = [_ref_ssim_terms(x[i, ..., 0], y[i, ..., 0])[0] for i in range(3)]
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert 0.1 < got.min() and got.max() < 0.9  # the noise is clearly visible to SSIM


def test_ssim_identical_and_constant_hand_case():
    x = blobs(2, 24, seed=3)
    np.testing.assert_allclose(M.ssim(x, x), 1.0, atol=1e-6)
    # Constant images: variances and covariance vanish, so SSIM = luminance term
    # (2ab + C1) / (a^2 + b^2 + C1) = (0.24 + 1e-4) / (0.40 + 1e-4).
    a = np.full((1, 16, 16, 1), 0.2, np.float32)
    b = np.full((1, 16, 16, 1), 0.6, np.float32)
    np.testing.assert_allclose(M.ssim(a, b), [0.2401 / 0.4001], rtol=1e-5)
    # An inverted image has negative structure correlation.
    assert float(M.ssim(x[:1], 1.0 - x[:1])[0]) < 0.0


def test_ssim_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        M.ssim(np.zeros((1, 16, 16, 1)), np.zeros((1, 16, 17, 1)))
    with pytest.raises(ValueError, match="win_size"):
        M.ssim(np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        M.ssim(np.zeros((16, 16)), np.zeros((16, 16)))


def test_ms_ssim_scales_and_identity():
    sizes = (256, 176, 175, 64, 32, 16, 10)
    want = (5, 5, 4, 3, 2, 1, 0)  # smallest scale must still hold an 11 px window
    assert tuple(M.ms_ssim_num_scales(s, s) for s in sizes) == want
    x = blobs(2, 64, seed=4)
    np.testing.assert_allclose(M.ms_ssim(x, x), 1.0, atol=1e-6)
    # One scale: the weight renormalises to 1 and MS-SSIM is plain SSIM.
    small = blobs(2, 16, seed=5)
    other = np.clip(small + 0.05, 0, 1)
    np.testing.assert_allclose(M.ms_ssim(small, other), M.ssim(small, other), rtol=1e-6)
    with pytest.raises(ValueError, match="scales"):
        M.ms_ssim(x, x, scales=4)


def test_ms_ssim_matches_two_scale_reference(noisy_pair):
    x, y = noisy_pair  # 40 x 48 -> 2 scales (the third would be 10 px)
    w = np.array(M.MS_SSIM_WEIGHTS[:2]) / sum(M.MS_SSIM_WEIGHTS[:2])
    want = []
    for i in range(3):
        a, b = x[i, ..., 0].astype(np.float64), y[i, ..., 0].astype(np.float64)
        _, cs0 = _ref_ssim_terms(a, b)
        pool = lambda z: z.reshape(z.shape[0] // 2, 2, z.shape[1] // 2, 2).mean(axis=(1, 3))
        s1, _ = _ref_ssim_terms(pool(a), pool(b))
        want.append(max(cs0, 0) ** w[0] * max(s1, 0) ** w[1])
    np.testing.assert_allclose(M.ms_ssim(x, y), want, atol=2e-5)


def test_ms_ssim_decreases_with_noise():
    x = blobs(2, 64, seed=6)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    vals = [float(np.mean(M.ms_ssim(x, np.clip(x + s * noise, 0, 1)))) for s in (0.02, 0.1, 0.3)]
    assert vals[0] > vals[1] > vals[2]
    assert vals[0] > 0.9


# ---------------------------------------------------------------- FID / KID


def test_fid_identical_and_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 4))
    assert abs(M.fid(a, a)) < 1e-8
    m = np.array([1.0, -0.5, 0.0, 0.25])
    b = rng.standard_normal((20000, 4)) + m
    # Same covariance, so the trace term ~ 0 and FID ~ |m|^2 = 1.3125.
    assert M.fid(a, b) == pytest.approx(float(m @ m), abs=0.03)
    assert M.fid(a, b) == pytest.approx(M.fid(b, a), rel=1e-9)


def test_fid_from_stats_matches_sqrtm_formula():
    rng = np.random.default_rng(1)
    la, lb = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    sa, sb = la @ la.T + 0.1 * np.eye(5), lb @ lb.T + 0.1 * np.eye(5)
    ma, mb = rng.standard_normal(5), rng.standard_normal(5)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    want = float((ma - mb) @ (ma - mb) + np.trace(sa + sb - 2 * covmean))
    assert M.fid_from_stats(ma, sa, mb, sb) == pytest.approx(want, rel=1e-8)


def test_kid_same_vs_shifted():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((600, 16)), rng.standard_normal((600, 16))
    mean_same, std_same = M.kid(a, b, num_subsets=20, subset_size=200, seed=0)
    mean_shift, std_shift = M.kid(a, b + 0.5, num_subsets=20, subset_size=200, seed=0)
    assert abs(mean_same) < 0.02 and std_same > 0
    assert mean_shift > 0.1 and mean_shift > 10 * abs(mean_same)
    # subset_size is clipped to the smaller set.
    assert np.isfinite(M.kid(a[:50], b, num_subsets=3, subset_size=1000)[0])


# ---------------------------------------------------------------- diversity / memorisation


def test_mean_pairwise_ms_ssim_diversity():
    same = np.repeat(blobs(1, 32, seed=7), 5, axis=0)
    assert M.mean_pairwise_ms_ssim(same) == pytest.approx(1.0, abs=1e-5)
    diverse = blobs(12, 32, seed=8)
    d = M.mean_pairwise_ms_ssim(diverse, max_pairs=20, seed=0)
    assert 0.0 <= d < 0.8
    pairs = M._sample_pairs(12, 20, np.random.default_rng(0))
    assert pairs.shape == (20, 2) and np.all(pairs[:, 0] < pairs[:, 1])
    assert len({tuple(p) for p in pairs}) == 20


@pytest.mark.parametrize("metric", ["ssim", "l2", "feature"])
def test_nearest_neighbours_recovers_permutation(metric):
    refs = blobs(10, 48, seed=9)
    perm = np.random.default_rng(3).permutation(10)[:6]
    rng = np.random.default_rng(4)
    queries = np.clip(refs[perm] + 0.03 * rng.standard_normal((6, 48, 48, 1)), 0, 1)
    feats = None
    if metric == "feature":
        proj = rng.standard_normal((48 * 48, 32))
        feats = (queries.reshape(6, -1) @ proj, refs.reshape(10, -1) @ proj)
    kw = dict(metric=metric, feats=feats, search_size=32, block_size=4)
    out = N.nearest_neighbours(queries, refs, **kw)
    np.testing.assert_array_equal(out["index"], perm)
    assert out["higher_is_closer"] == (metric != "l2")
    assert out["score"].shape == (6,)


def test_nearest_neighbours_ssim_matches_direct_ssim():
    q, r = blobs(3, 24, seed=10), blobs(5, 24, seed=11)
    out = N.nearest_neighbours(q, r, search_size=None, block_size=2)
    qq, rr = np.repeat(q, 5, axis=0), np.tile(r, (3, 1, 1, 1))  # all 15 (query, ref) pairs
    full = np.asarray(M.ssim(qq, rr)).reshape(3, 5)
    np.testing.assert_array_equal(out["index"], full.argmax(1))
    np.testing.assert_allclose(out["score"], full.max(1), atol=1e-5)


def test_matmul_filter_equals_the_shifted_sum_and_scipy_on_non_square_images():
    x = np.random.default_rng(3).random((2, 3, 17, 29)).astype(np.float32)  # (..., H, W)
    a = np.asarray(M.filter_valid(x, 11, 1.5))
    b = np.asarray(M.filter_valid_matmul(x, 11, 1.5))
    assert a.shape == b.shape == (2, 3, 7, 19)
    np.testing.assert_allclose(b, a, atol=1e-6)
    ref = gaussian_filter(x[1, 2].astype(np.float64), sigma=1.5, truncate=3.5)[5:-5, 5:-5]
    np.testing.assert_allclose(b[1, 2], ref, atol=1e-6)


def test_memorisation_report_flags_planted_copy():
    train = blobs(12, 48, seed=12)
    test_real = blobs(6, 48, seed=13)
    synthetic = blobs(8, 48, seed=14)
    synthetic[5] = train[7]  # a memorised training image
    rep = N.memorisation_report(synthetic, train, test_real, search_size=32, block_size=8)
    assert 5 in rep["flagged"]
    assert rep["nearest_pairs"][0]["synthetic"] == 5
    assert rep["nearest_pairs"][0]["train"] == 7
    assert rep["nearest_pairs"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert len(rep["nearest_pairs"]) == 5
    assert rep["threshold"] == pytest.approx(max(rep["test_to_train"]["score"]))
    assert rep["threshold"] < 0.99
    assert rep["fraction_flagged"] == pytest.approx(len(rep["flagged"]) / 8)
    assert len(rep["synthetic_to_train"]["index"]) == 8
    assert len(rep["test_to_train"]["score"]) == 6
    # The same with pixel L2 (lower is closer): the copy is at distance ~0.
    rep_l2 = N.memorisation_report(synthetic, train, test_real, metric="l2", search_size=None)
    assert 5 in rep_l2["flagged"] and rep_l2["nearest_pairs"][0]["score"] < 1e-3


@pytest.mark.parametrize("metric", ["ssim", "l2", "feature"])
def test_nearest_neighbours_groups_skip_own_group(metric):
    x = blobs(9, 32, seed=21)
    feats = None
    if metric == "feature":
        f = x.reshape(9, -1) @ np.random.default_rng(5).standard_normal((32 * 32, 16))
        feats = (f, f)
    g = np.arange(9) // 3  # three groups of three
    kw = dict(metric=metric, feats=feats, search_size=None, block_size=4)
    plain = N.nearest_neighbours(x, x, **kw)
    np.testing.assert_array_equal(plain["index"], np.arange(9))  # each image finds itself
    out = N.nearest_neighbours(x, x, groups=(g, g), **kw)
    assert np.all(g[out["index"]] != g)  # never a member of its own group
    # The same as searching only the other groups by hand.
    for i in range(9):
        others = np.flatnonzero(g != g[i])
        fi = None if feats is None else (feats[0][i : i + 1], feats[1][others])
        one = N.nearest_neighbours(x[i : i + 1], x[others], metric, fi, None, 4)
        assert others[one["index"][0]] == out["index"][i]
        assert one["score"][0] == pytest.approx(out["score"][i], abs=1e-6)


def test_nearest_neighbours_groups_errors():
    x = blobs(4, 24, seed=22)
    with pytest.raises(ValueError, match="shapes"):
        N.nearest_neighbours(x, x, groups=(np.zeros(3), np.zeros(4)))
    with pytest.raises(ValueError, match="no reference outside"):
        N.nearest_neighbours(x, x, groups=(np.zeros(4), np.zeros(4)))


def test_own_neighbour_scores_skip_twins():
    x = blobs(6, 32, seed=23)
    refs = np.concatenate([x, x[2:3]])  # slice 2 stored twice (index 6)
    kw = dict(search_size=None, block_size=4)
    plain = N.own_neighbour_scores(refs, **kw)
    assert plain[2] == pytest.approx(1.0, abs=1e-5) and plain[6] == pytest.approx(1.0, abs=1e-5)
    own = N.own_neighbour_scores(refs, twin_ssim=N.TWIN_SSIM, **kw)
    alone = N.own_neighbour_scores(x, **kw)  # the set without the twin
    np.testing.assert_allclose(own[:6], alone, atol=1e-6)
    assert own[6] == pytest.approx(alone[2], abs=1e-6)
    with pytest.raises(ValueError, match="twin_ssim"):
        N.own_neighbour_scores(refs, metric="l2", twin_ssim=0.99)


def test_relative_distance_hand_values():
    own = np.array([0.8, 0.6, 1.0])
    # SSIM-like (higher is closer): (1 - score) / (1 - own[index]).
    r = N.relative_distance(np.array([0.9, 0.8, 1.0]), np.array([0, 1, 0]), own, True)
    np.testing.assert_allclose(r, [0.5, 0.5, 0.0])
    # A training image with an exact twin (own = 1) gives an infinite ratio, never a flag.
    assert N.relative_distance(np.array([0.99]), np.array([2]), own, True)[0] > 1e9
    # RMSE-like (lower is closer): score / own[index].
    r = N.relative_distance(np.array([0.1, 0.3]), np.array([0, 1]), own, False)
    np.testing.assert_allclose(r, [0.125, 0.5])


def test_relative_rule_flags_copies_not_typical_members_of_a_dense_cluster():
    """A new member of a tight cluster of training look-alikes is closer to them than any
    spread-out test image is (the fixed rule flags it) but not closer than the cluster's
    members are to each other (the relative rule does not); a copy is flagged by both."""
    rng = np.random.default_rng(0)
    proto = blobs(1, 48, seed=30)
    cluster = np.clip(proto + 0.04 * rng.standard_normal((10, 48, 48, 1)), 0, 1)
    train = np.concatenate([cluster, blobs(10, 48, seed=31)]).astype(np.float32)
    test_real = blobs(6, 48, seed=32)
    new_member = np.clip(proto + 0.04 * rng.standard_normal((1, 48, 48, 1)), 0, 1)
    synthetic = np.concatenate([new_member, train[14:15]]).astype(np.float32)  # new, copy
    rep = N.memorisation_report(synthetic, train, test_real, search_size=None, block_size=8)
    assert rep["flagged"] == [0, 1]  # fixed rule: both
    rel = rep["relative"]
    assert rel["flagged"] == [1]  # relative rule: only the copy
    assert rel["synthetic"]["ratio"][1] == pytest.approx(0.0, abs=1e-5)
    assert rel["synthetic"]["ratio"][0] > rel["threshold"]
    assert rel["threshold"] == pytest.approx(min(rel["test"]["ratio"]))
    assert rel["fraction_flagged"] == 0.5


# ---------------------------------------------------------------- statistics / classification


def test_mean_ci_hand_value_and_shrinks():
    mean, half = S.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(scipy.stats.t.ppf(0.975, 2) / math.sqrt(3), rel=1e-12)
    assert half == pytest.approx(2.4841, abs=1e-4)
    widths = [S.mean_ci([0.7, 0.9] * k)[1] for k in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))
    assert S.mean_ci([0.7, 0.9], confidence=0.99)[1] > S.mean_ci([0.7, 0.9])[1]
    assert math.isnan(S.mean_ci([0.5])[1])


def _brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return wins / (len(pos) * len(neg))


def test_roc_auc_hand_cases_and_ties():
    assert S.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert S.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert S.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert S.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert S.roc_auc([0, 1, 1], [0.3, 0.3, 0.9]) == 0.75
    assert math.isnan(S.roc_auc([1, 1], [0.2, 0.3]))
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    assert S.roc_auc(y, s) == pytest.approx(_brute_auc(y, s), abs=1e-12)


def test_binary_metrics_hand_case():
    labels = [1, 1, 1, 0, 0]
    preds = [1, 0, 1, 0, 1]
    assert S.accuracy(labels, preds) == 0.6
    assert S.sensitivity(labels, preds) == pytest.approx(2 / 3)
    assert S.specificity(labels, preds) == 0.5
    out = S.binary_metrics(labels, [0.9, 0.2, 0.5, 0.1, 0.7], threshold=0.5)
    assert out["accuracy"] == 0.6 and out["specificity"] == 0.5
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["auc"] == pytest.approx(4 / 6)  # pos {.9,.2,.5} vs neg {.1,.7}: 4 of 6 wins
    with pytest.raises(ValueError, match="0 .* or 1"):
        S.binary_metrics([0, 2], [0.1, 0.2])
