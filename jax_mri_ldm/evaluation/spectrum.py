"""Power-spectrum realism: radially averaged spectrum distance and the latent-grid score.

Both scores are per image, so a set is summarised by its median and judged against the spread
of the same score on real held-out images (their interquartile range), never against a fixed
number: real JPEG slices carry 8x8 block artefacts of their own, so "no power at the grid
harmonics" is not the target, "as much as real images have" is.

* `spectrum_distance`: per image, RMS over radii of its log10 relative radial power minus the
  mean curve of a reference set (real images); `set_spectrum_distance` compares a set's mean
  curve instead (the image-to-image spread averages out). Noise lifts the high radii, blur
  lowers them, patch shuffles add edges: each moves the curve away from the real one.
* `grid_score`: the power at each harmonic of the latent period p (frequencies k * H / p and
  l * W / p, (k, l) != (0, 0)) divided by the power at its neighbouring frequencies, averaged
  over the harmonics; about 1 for an image without a period-p pattern, larger when a decoder
  draws a grid at its upsampling period.
"""

from __future__ import annotations

import numpy as np

from jax_mri_ldm.equaliser import radius_index

LATENT_PERIOD = 8
"""The VAE's downsampling factor: a decoder artefact repeats every this many pixels."""


def _power(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 1) or (N, H, W) images -> (N, H, W) 2D power spectra (mean removed)."""
    x = np.asarray(images, np.float64)
    if x.ndim == 4:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"images must be (N, H, W, 1); got shape {np.shape(images)}.")
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return np.abs(np.fft.fft2(x)) ** 2  # (N, H, W)


def radial_spectrum(images: np.ndarray) -> np.ndarray:
    """Radially averaged log10 relative power spectrum of each image.

    Each image's power is divided by its total (non-DC) power first, so the curve describes
    how the image's variance is spread over frequencies, not its contrast.

    Args:
      images: (N, H, W, 1) in [0, 1].

    Returns:
      (N, R) log10 mean relative power per integer radius 1..min(H, W) // 2 (DC excluded).
    """
    p = _power(images)
    p = p / np.maximum(p.reshape(len(p), -1).sum(axis=1), 1e-30)[:, None, None]
    n, h, w = p.shape
    r = radius_index(h, w).ravel()  # the equaliser's radii, so the two curves agree
    rmax = min(h, w) // 2
    counts = np.bincount(r, minlength=rmax + 1)[1 : rmax + 1]
    sums = np.stack([np.bincount(r, weights=pi.ravel(), minlength=rmax + 1) for pi in p])
    return np.log10(sums[:, 1 : rmax + 1] / counts + 1e-20)  # (N, R)


def spectrum_distance(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-image RMS distance of the log radial spectrum to the reference set's mean.

    Args:
      images: (N, H, W, 1) images to score.
      reference: (M, H, W, 1) real images (their mean log spectrum is the target).

    Returns:
      (N,) distances in log10 power units (0 = the reference's mean curve).
    """
    return distance_to_mean(images, radial_spectrum(reference).mean(axis=0))


def distance_to_mean(images: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(N,) RMS distance of each image's log radial spectrum to a mean curve `mean` (R,)."""
    rs = radial_spectrum(images)  # (N, R)
    return np.sqrt(np.mean((rs - mean[None]) ** 2, axis=1))


def set_spectrum_distance(images: np.ndarray, reference: np.ndarray) -> float:
    """RMS over radii between the mean log radial spectra of a set and of the reference.

    Averaging over the set first removes the image-to-image spread, so small but systematic
    changes (noise lifting the high frequencies, blur lowering them) stand out.

    Args:
      images: (N, H, W, 1) the set.
      reference: (M, H, W, 1) real images.

    Returns:
      The distance in log10 power units.
    """
    a = radial_spectrum(images).mean(axis=0)
    b = radial_spectrum(reference).mean(axis=0)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _lattice(h: int, w: int, period: int) -> np.ndarray:
    """(H, W) mask of the period-`period` harmonic lattice (DC included)."""
    on_y = np.arange(h) % (h // period) == 0
    on_x = np.arange(w) % (w // period) == 0
    return on_y[:, None] & on_x[None, :]


def _local_ratios(p: np.ndarray, lattice: np.ndarray, radius: int = 2) -> np.ndarray:
    """(N, L) power of every lattice bin (DC excluded) / mean power of its off-lattice
    neighbours within `radius` bins (periodic, as the FFT is)."""
    off = (~lattice).astype(np.float64)
    num = np.zeros_like(p)
    cnt = np.zeros(lattice.shape)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            num += np.roll(p * off, (dy, dx), axis=(1, 2))
            cnt += np.roll(off, (dy, dx), axis=(0, 1))
    harm = lattice.copy()
    harm[0, 0] = False
    neighbour_mean = num[:, harm] / np.maximum(cnt[harm], 1.0)
    return p[:, harm] / np.maximum(neighbour_mean, 1e-30)


def grid_score(images: np.ndarray, period: int = LATENT_PERIOD) -> np.ndarray:
    """Power at the period-`period` harmonics relative to the neighbouring frequencies.

    Each harmonic bin (k * H / period, l * W / period), (k, l) != (0, 0), is divided by the
    mean power of the non-harmonic bins within 2 of it, and the ratios are averaged: a grid of
    lines lifts the on-axis harmonics, a checkerboard the off-axis ones, and either raises the
    mean.

    Args:
      images: (N, H, W, 1) in [0, 1]; H and W must be multiples of `period` and >= 2 * period.
      period: the grid period in pixels (the latent downsampling factor).

    Returns:
      (N,) mean local harmonic-to-neighbour power ratios (about 1 without a grid).
    """
    p = _power(images)
    h, w = p.shape[1:]
    if h % period or w % period or min(h, w) < 2 * period:
        raise ValueError(
            f"grid_score needs H and W to be multiples of period={period} and >= {2 * period}; "
            f"got {h}x{w}."
        )
    return _local_ratios(p, _lattice(h, w, period)).mean(axis=1)


def summary_vs_real(values: np.ndarray, real_values: np.ndarray) -> dict:
    """A set's median score next to the real images' quartiles.

    Args:
      values: (N,) per-image scores of the set.
      real_values: (M,) the same score on real held-out images.

    Returns:
      {'median', 'real_median', 'real_q25', 'real_q75', 'ratio' (median / real median),
       'within_real_iqr'}.
    """
    med = float(np.median(values))
    q25, q50, q75 = (float(v) for v in np.percentile(real_values, [25, 50, 75]))
    return {
        "median": med,
        "real_median": q50,
        "real_q25": q25,
        "real_q75": q75,
        "ratio": med / q50 if q50 > 0 else None,
        "within_real_iqr": bool(q25 <= med <= q75),
    }
