"""Image-quality, distribution and diversity metrics.

All image functions take batches shaped (N, H, W, C) (C = 1 for our slices) with intensities in
[0, max_val] and return one value per image. The per-image kernels (PSNR, SSIM, MS-SSIM and the
query x reference SSIM matrix) are jitted JAX; everything that needs float64 linear algebra or
rank statistics (FID, KID, ROC AUC, confidence intervals) is numpy/scipy on the host.

Conventions worth knowing:

* SSIM follows Wang et al. (2004) exactly as ``skimage.metrics.structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=max_val``: an 11-tap
  Gaussian window (sigma 1.5, the same taps as ``scipy.ndimage.gaussian_filter(truncate=3.5)``),
  K1 = 0.01, K2 = 0.03, and the SSIM map averaged over the "valid" region only (skimage computes
  the map with padding and then crops ``(win_size - 1) // 2`` pixels per side, which is the same).
* MS-SSIM follows Wang et al. (2003): at scales 1..M-1 only the contrast-structure term, at
  scale M the full SSIM, combined as ``prod cs_j ** w_j * ssim_M ** w_M`` with the standard
  weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) and 2x2 average pooling between scales (odd
  trailing rows/columns are dropped). Negative terms are clamped at 0 (as tf.image and
  pytorch-msssim do) so fractional powers stay real. A valid-mode 11x11 window needs every scale
  to be at least 11 pixels, so five scales need >= 176 px: smaller images use the largest number
  of leading scales that fit, with those weights renormalised to sum to 1 (e.g. 64 px -> 3
  scales, 32 px -> 2, 16 px -> 1, where MS-SSIM equals SSIM).

Nearest-neighbour search and memorisation live in `neighbours`, confidence intervals and
classification scores in `stats`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_mri_ldm.batching import batched_apply

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Per-scale exponents from Wang, Simoncelli & Bovik (2003), finest scale first."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def check_images(name: str, x) -> jnp.ndarray:
    """Validates an (N, H, W, C) batch and returns it as float32."""
    x = jnp.asarray(x, dtype=jnp.float32)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch shaped (N, H, W, C); got shape {x.shape}.")
    return x


def _check_pair(x, y) -> tuple[jnp.ndarray, jnp.ndarray]:
    x, y = check_images("x", x), check_images("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {x.shape} and {y.shape}.")
    return x, y


def _gaussian_kernel_1d(win_size: int, sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian taps, identical to scipy.ndimage's for radius (win_size-1)//2."""
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer; got {win_size}.")
    radius = (win_size - 1) // 2
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def filter_valid(x: jnp.ndarray, win_size: int, sigma: float) -> jnp.ndarray:
    """Separable Gaussian filter over the last two axes (H, W), 'valid' mode.

    Written as a weighted sum of shifted slices on a W-minor layout rather than a depthwise
    convolution on NHWC: XLA fuses the sum into one vectorised pass, where XLA:CPU's depthwise
    conv (feature_group_count) was much slower, and keeping W (not a size-1 channel) as the
    minor axis sped a whole SSIM up again (timings: docs/performance.md, "SSIM's Gaussian
    filter").

    Args:
      x: (..., H, W).
      win_size: odd window size.
      sigma: Gaussian standard deviation in pixels.

    Returns:
      (..., H - win_size + 1, W - win_size + 1).
    """
    k = _gaussian_kernel_1d(win_size, sigma)
    h_out = x.shape[-2] - win_size + 1
    w_out = x.shape[-1] - win_size + 1
    y = sum(float(k[i]) * x[..., i : i + h_out, :] for i in range(win_size))  # (..., H', W)
    return sum(float(k[i]) * y[..., i : i + w_out] for i in range(win_size))  # (..., H', W')


def _band_matrix(n: int, win_size: int, sigma: float) -> np.ndarray:
    """(n - win_size + 1, n) matrix whose row i holds the Gaussian taps at columns i..i+win-1."""
    k = _gaussian_kernel_1d(win_size, sigma)
    m = np.zeros((n - win_size + 1, n), np.float32)
    for i in range(n - win_size + 1):
        m[i, i : i + win_size] = k
    return m


def filter_valid_matmul(x: jnp.ndarray, win_size: int, sigma: float) -> jnp.ndarray:
    """`filter_valid` as two matmuls with banded tap matrices: G_h @ x @ G_w^T.

    The same filter (equal up to float32 rounding); it does more arithmetic but runs as
    library matmuls, which is faster inside the query x reference SSIM matrix, where the
    shifted-slice sum over a (A, B, C, H, W) product does not vectorise well. Full float32
    precision is asked for, so accelerators do not round the taps to bf16/TF32.

    Args:
      x: (..., H, W).

    Returns:
      (..., H - win_size + 1, W - win_size + 1).
    """
    g_h = jnp.asarray(_band_matrix(x.shape[-2], win_size, sigma))  # (H', H)
    g_w = jnp.asarray(_band_matrix(x.shape[-1], win_size, sigma))  # (W', W)
    hi = jax.lax.Precision.HIGHEST
    y = jnp.einsum("ph,...hw->...pw", g_h, x, precision=hi)  # (..., H', W)
    return jnp.einsum("...pw,qw->...pq", y, g_w, precision=hi)  # (..., H', W')


def _ssim_terms(
    x: jnp.ndarray,
    y: jnp.ndarray,
    max_val: float,
    win_size: int,
    sigma: float,
    k1: float,
    k2: float,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean SSIM and mean contrast-structure term per image.

    Args:
      x, y: (N, H, W, C) with H, W >= win_size.

    Returns:
      ssim (N,), cs (N,): both averaged over the valid region and channels.
    """
    x, y = jnp.moveaxis(x, -1, 1), jnp.moveaxis(y, -1, 1)  # (N, C, H, W): W-minor for speed
    # (Co)variances are shift-invariant: computing them from images centred on their global
    # mean avoids float32 cancellation in E[x^2] - E[x]^2 (an error of ~1e-8 is visible next to
    # C2 = 9e-4); the global mean is added back for the luminance term.
    ox = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    oy = jnp.mean(y, axis=(1, 2, 3), keepdims=True)
    x, y = x - ox, y - oy
    stacked = jnp.stack([x, y, x * x, y * y, x * y], axis=0)  # (5, N, C, H, W)
    mu_x, mu_y, e_xx, e_yy, e_xy = filter_valid(stacked, win_size, sigma)  # (N, C, H', W')
    # Population (biased) moments, i.e. use_sample_covariance=False.
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    mu_x, mu_y = mu_x + ox, mu_y + oy
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    cs_map = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    lum_map = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    ssim = jnp.mean(lum_map * cs_map, axis=(1, 2, 3))
    cs = jnp.mean(cs_map, axis=(1, 2, 3))
    return ssim, cs


def _avg_pool2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 average pooling, stride 2, odd last row/column dropped: (N,H,W,C) -> (N,H/2,W/2,C)."""
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2]
    return x.reshape(n, h2, 2, w2, 2, c).mean(axis=(2, 4))


def pad_to(x: np.ndarray | jnp.ndarray, n: int) -> np.ndarray | jnp.ndarray:
    """Pads axis 0 with copies of row 0 to length n (so jitted kernels see one fixed shape)."""
    if x.shape[0] == n:
        return x
    pad = jnp.repeat(x[:1], n - x.shape[0], axis=0)
    return jnp.concatenate([x, pad], axis=0)


# --------------------------------------------------------------------------------------------
# PSNR / SSIM / MS-SSIM
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("max_val",))
def _psnr(x: jnp.ndarray, y: jnp.ndarray, max_val: float) -> jnp.ndarray:
    mse = jnp.mean((x - y) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(max_val**2 / mse)


def psnr(x, y, max_val: float = 1.0) -> jnp.ndarray:
    """Peak signal-to-noise ratio per image, in dB.

    Args:
      x: (N, H, W, C) images in [0, max_val].
      y: (N, H, W, C) images, same shape.
      max_val: dynamic range of the images.

    Returns:
      (N,) float32; +inf where x and y are identical.
    """
    x, y = _check_pair(x, y)
    return _psnr(x, y, max_val=float(max_val))


@functools.partial(jax.jit, static_argnames=("max_val", "win_size", "sigma", "k1", "k2"))
def _ssim(x, y, max_val, win_size, sigma, k1, k2):
    return _ssim_terms(x, y, max_val, win_size, sigma, k1, k2)[0]


def ssim(
    x,
    y,
    max_val: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jnp.ndarray:
    """Structural similarity per image (Wang et al. 2004; skimage-compatible, see module doc).

    Args:
      x: (N, H, W, C) images in [0, max_val].
      y: (N, H, W, C) images, same shape.
      max_val: dynamic range L (C1 = (k1 L)^2, C2 = (k2 L)^2).
      win_size: Gaussian window size (odd); H and W must be at least this.
      sigma: Gaussian standard deviation.
      k1: luminance stabiliser.
      k2: contrast stabiliser.

    Returns:
      (N,) float32 mean SSIM over the valid region (1 for identical images).
    """
    x, y = _check_pair(x, y)
    if min(x.shape[1:3]) < win_size:
        raise ValueError(f"ssim needs H and W >= win_size={win_size}; got shape {x.shape}.")
    return _ssim(x, y, float(max_val), int(win_size), float(sigma), float(k1), float(k2))


def ms_ssim_num_scales(height: int, width: int, win_size: int = 11, max_scales: int = 5) -> int:
    """Number of MS-SSIM scales whose downsampled size still holds one full window.

    Args:
      height: image height.
      width: image width.
      win_size: SSIM window size.
      max_scales: upper bound (len of the weight vector).

    Returns:
      Number of usable scales (0 if even the full-resolution image is smaller than the window).
    """
    s, size = 0, min(height, width)
    while s < max_scales and size >= win_size:
        s += 1
        size //= 2
    return s


@functools.partial(jax.jit, static_argnames=("weights", "max_val", "win_size", "sigma", "k1", "k2"))
def _ms_ssim(x, y, weights, max_val, win_size, sigma, k1, k2):
    w = jnp.asarray(weights, dtype=jnp.float32)
    w = w / jnp.sum(w)
    terms = []
    for level in range(len(weights)):
        s, cs = _ssim_terms(x, y, max_val, win_size, sigma, k1, k2)
        if level == len(weights) - 1:
            terms.append(s)
        else:
            terms.append(cs)
            x, y = _avg_pool2(x), _avg_pool2(y)
    stacked = jnp.maximum(jnp.stack(terms, axis=-1), 0.0)  # (N, S)
    return jnp.prod(stacked ** w[None, :], axis=-1)


def ms_ssim(
    x,
    y,
    max_val: float = 1.0,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    scales: int | None = None,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jnp.ndarray:
    """Multi-scale SSIM per image (Wang et al. 2003; fewer scales for small images).

    Args:
      x: (N, H, W, C) images in [0, max_val].
      y: (N, H, W, C) images, same shape.
      max_val: dynamic range.
      weights: per-scale exponents, finest first.
      scales: number of scales to use; None = as many of len(weights) as the image size allows
        (see ms_ssim_num_scales). The leading `scales` weights are renormalised to sum to 1.
      win_size: Gaussian window size.
      sigma: Gaussian standard deviation.
      k1: luminance stabiliser.
      k2: contrast stabiliser.

    Returns:
      (N,) float32 in [0, 1]; 1 for identical images.
    """
    x, y = _check_pair(x, y)
    possible = ms_ssim_num_scales(x.shape[1], x.shape[2], win_size, len(weights))
    if possible == 0:
        raise ValueError(f"ms_ssim needs H and W >= win_size={win_size}; got shape {x.shape}.")
    if scales is None:
        scales = possible
    if not 1 <= scales <= possible:
        raise ValueError(
            f"ms_ssim scales={scales} is not possible for {x.shape[1]}x{x.shape[2]} images "
            f"(at most {possible}); pass scales=None to pick automatically."
        )
    w = tuple(float(v) for v in weights[:scales])
    return _ms_ssim(x, y, w, float(max_val), int(win_size), float(sigma), float(k1), float(k2))


# --------------------------------------------------------------------------------------------
# FID / KID
# --------------------------------------------------------------------------------------------


def _check_feats(name: str, f) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must be (N, D) features with N >= 2; got shape {f.shape}.")
    return f


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ddof=1) covariance of a feature set, in float64.

    Args:
      feats: (N, D) features, N >= 2.

    Returns:
      mu (D,), sigma (D, D).
    """
    f = _check_feats("feats", feats)
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD matrix square root via eigh (negative round-off eigenvalues clipped)."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def fid_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b).

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}). The cross term is computed as
    tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}), which has the same eigenvalues as (S_a S_b)^{1/2} but is
    symmetric PSD, so float64 eigh gives a real, stable answer even for singular covariances
    (N < D), where scipy.linalg.sqrtm can return complex noise.

    Args:
      mu_a: (D,) mean of set a.
      sigma_a: (D, D) covariance of set a.
      mu_b: (D,) mean of set b.
      sigma_b: (D, D) covariance of set b.

    Returns:
      The squared Fréchet distance (>= 0 up to round-off), as a Python float.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    root_a = _sqrtm_psd(sigma_a)
    middle = root_a @ sigma_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    tr_cross = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_cross)


def fid(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID given features).

    With Inception pool features this is FID; with the domain classifier's penultimate
    features (models/classifier.py) it is the "domain FID" used in this project.

    Args:
      feats_a: (N_a, D) features.
      feats_b: (N_b, D) features.

    Returns:
      Squared Fréchet distance as a Python float.
    """
    fa, fb = _check_feats("feats_a", feats_a), _check_feats("feats_b", feats_b)
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature dims differ: {fa.shape[1]} vs {fb.shape[1]}.")
    return fid_from_stats(*gaussian_stats(fa), *gaussian_stats(fb))


def _poly_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 for equal-size samples x, y: (m, d)."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    sum_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sum_xx + sum_yy - 2.0 * kxy.mean())


def kid(
    feats_a, feats_b, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018) given features.

    Each of `num_subsets` rounds draws `subset_size` rows from each set without replacement and
    computes the unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3.

    Args:
      feats_a: (N_a, D) features.
      feats_b: (N_b, D) features.
      num_subsets: number of random subsets.
      subset_size: rows per subset; clipped to min(N_a, N_b) (as clean-fid and torch-fidelity
        do) so small evaluation sets still work.
      seed: numpy seed for the subset draws.

    Returns:
      (mean, std) of MMD^2 over subsets; the mean is unbiased and can be slightly negative.
    """
    fa, fb = _check_feats("feats_a", feats_a), _check_feats("feats_b", feats_b)
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature dims differ: {fa.shape[1]} vs {fb.shape[1]}.")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1; got {num_subsets}.")
    m = min(int(subset_size), fa.shape[0], fb.shape[0])
    if m < 2:
        raise ValueError(f"kid subset_size must be >= 2; got {subset_size}.")
    rng = np.random.default_rng(seed)
    vals = np.empty(num_subsets, np.float64)
    for i in range(num_subsets):
        xa = fa[rng.choice(fa.shape[0], m, replace=False)]
        xb = fb[rng.choice(fb.shape[0], m, replace=False)]
        vals[i] = _poly_mmd2_unbiased(xa, xb)
    return float(vals.mean()), float(vals.std())


# --------------------------------------------------------------------------------------------
# Diversity and memorisation
# --------------------------------------------------------------------------------------------


def _sample_pairs(n: int, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct unordered index pairs (i < j): all of them, or max_pairs drawn at random."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
        return np.stack([i, j], axis=1)
    chosen: set[tuple[int, int]] = set()
    # Rejection of repeats; cheap because max_pairs < total here.
    while len(chosen) < max_pairs:
        k = max_pairs - len(chosen)
        a = rng.integers(0, n, size=2 * k)
        b = (a + 1 + rng.integers(0, n - 1, size=2 * k)) % n  # b != a
        for p, q in zip(np.minimum(a, b), np.maximum(a, b), strict=True):
            chosen.add((int(p), int(q)))
            if len(chosen) == max_pairs:
                break
    return np.array(sorted(chosen), dtype=np.int64)


def mean_pairwise_ms_ssim(
    images, max_pairs: int = 1000, seed: int = 0, batch_size: int = 64, **ms_ssim_kwargs
) -> float:
    """Mean MS-SSIM over distinct pairs within one set: a diversity score (lower = more diverse).

    Args:
      images: (N, H, W, C) images, N >= 2.
      max_pairs: use every pair when N(N-1)/2 <= max_pairs, else this many random pairs.
      seed: numpy seed for the pair draw.
      batch_size: pairs per jitted MS-SSIM call.
      **ms_ssim_kwargs: forwarded to ms_ssim (max_val, scales, ...).

    Returns:
      The mean MS-SSIM as a Python float.
    """
    images = np.asarray(check_images("images", images))
    if images.shape[0] < 2:
        raise ValueError(f"mean_pairwise_ms_ssim needs >= 2 images; got {images.shape[0]}.")
    pairs = _sample_pairs(images.shape[0], int(max_pairs), np.random.default_rng(seed))
    fn = lambda a, b: ms_ssim(a, b, **ms_ssim_kwargs)
    vals = batched_apply(fn, images[pairs[:, 0]], images[pairs[:, 1]], batch_size=batch_size)
    return float(np.mean(vals))


@functools.partial(jax.jit, static_argnames=("size",))
def _resize_jit(b: jnp.ndarray, size: int) -> jnp.ndarray:
    return jax.image.resize(b, (b.shape[0], size, size, b.shape[3]), "linear", antialias=True)


def resize_images(images, size: int | None, batch_size: int = 256) -> np.ndarray:
    """Bilinear, antialiased resize of a batch to size x size (host array in, host array out).

    Args:
      images: (N, H, W, C) images.
      size: target side length; None (or already that size) returns the input as float32.
      batch_size: images per jitted call (one compiled shape per call).

    Returns:
      (N, size, size, C) float32 numpy array.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}.")
    if size is None or images.shape[1:3] == (size, size):
        return images
    if images.shape[0] == 0:
        return np.zeros((0, size, size, images.shape[3]), np.float32)
    fn = functools.partial(_resize_jit, size=int(size))
    return np.asarray(batched_apply(fn, images, batch_size=batch_size), np.float32)
