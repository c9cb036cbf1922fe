"""Decoder equaliser: a radial gain filter that gives decoded images the real images' spectrum.

Why: an L1-trained VAE decoder returns images with less high-frequency power than the real
slices it reconstructs (the decoder averages texture it cannot infer from the latent), and a
sample decoded by it inherits the loss. The equaliser is one real gain per integer spatial
frequency radius, applied in the Fourier domain after decoding: ``x -> clip(ifft2(G(|f|) *
fft2(x)), 0, 1)``. The gains are fitted once, on the training split, so that the mean log
radial power of the training images' reconstructions equals that of the training images
(a fixed-point iteration, as clipping is not linear).

What it is not: it adds no anatomy. It rescales the frequencies the decoder already draws, so
it sharpens edges and grain the decoder produced faintly; the mean-squared-error-optimal
filter would instead damp them (the perception-distortion trade-off, Blau & Michaeli 2018), so
the equalised reconstructions trade a little PSNR for the real spectrum. docs/results.md
measures both sides.

The gains live in the run directory as JSON (`FILE_NAME`), with the SHA-256 of the VAE
parameters they were fitted for; a loader refuses gains fitted for other weights.

A diffusion run copies the gains, and its trainer then judges them on its samples
(`decoder_check.py`): the equaliser matches the *reconstructions'* mean spectrum, which need not
bring the *samples* nearer the real images. The verdict (`CHOICE_FILE_NAME`) names the gains it
judged; `chosen_gains` reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from jax_mri_ldm import atomic
from jax_mri_ldm.errors import UserError

FILE_NAME = "equaliser.json"  # in a VAE run directory
LDM_FILE_NAME = "vae_equaliser.json"  # in a diffusion run directory, beside its VAE copy
CHOICE_FILE_NAME = "decoder_choice.json"  # in a diffusion run directory: decode with the gains?
CHOICE_MODES = ("auto", "on", "off")  # configs/ldm.py decoder.equaliser (decoder_check.py)
VERSION = 3  # bump when the fit or the file format changes (2: absolute power; 3: corner radii)
REFIT = (
    "Rerun the VAE's training command with --config.model.equaliser=True (it refits the "
    "equaliser in seconds; or delete the file to decode without one), then the diffusion "
    "run's command to copy it there."
)
ITERATIONS = 4  # fixed-point iterations of the fit (the residual stops shrinking by then)
MAX_GAIN = 4.0  # no frequency is amplified (or damped) by more than this factor


def radius_index(h: int, w: int) -> np.ndarray:
    """(H, W) integer radius of every FFT bin, in frequency bins of the shorter side."""
    fy = np.fft.fftfreq(h) * min(h, w)
    fx = np.fft.fftfreq(w) * min(h, w)
    return np.rint(np.hypot(fy[:, None], fx[None, :])).astype(np.int64)


def num_radii(h: int, w: int) -> int:
    """Integer radii of an (H, W) FFT, DC to the corners: the length of a gain vector."""
    return int(radius_index(h, w).max()) + 1


def mean_log_radial_power(images: np.ndarray, chunk: int = 64) -> np.ndarray:
    """(N, H, W, 1) images -> (R + 1,) mean over images of log10 power per radius.

    Absolute power (mean removed), not power relative to each image's total: the fit pairs
    every real image with its own reconstruction, so the low band, which the decoder keeps,
    gets gains of about 1 instead of absorbing the high band's lift. Every radius out to the
    corners (R + 1 = `num_radii`) has its own entry: pooling the corners into the Nyquist
    radius gave the Nyquist lines, where harmonics of the latent grid lie, the corners' larger
    gain and lifted them above their neighbours. Entry 0 (DC) is 0.
    """
    h, w = images.shape[1:3]
    n = num_radii(h, w)
    r = radius_index(h, w).ravel()
    counts = np.bincount(r, minlength=n)
    total = np.zeros(n)
    for i in range(0, len(images), chunk):  # bounded memory on large training sets
        x = np.asarray(images[i : i + chunk], np.float64)[..., 0]
        x = x - x.mean(axis=(1, 2), keepdims=True)
        p = (np.abs(np.fft.fft2(x)) ** 2).reshape(len(x), -1)  # (n, H * W)
        sums = np.stack([np.bincount(r, weights=pi, minlength=n) for pi in p])
        total += np.log10(sums / counts + 1e-20).sum(axis=0)  # (R + 1,)
    logs = total / len(images)
    logs[0] = 0.0
    return logs


def gain_map(gains: np.ndarray, h: int, w: int) -> np.ndarray:
    """(R + 1,) radial gains -> (H, W) float32 multiplier of the FFT bins (radii beyond R get
    R's gain: a shorter, version-2 vector pools the corners into its Nyquist radius)."""
    gains = np.asarray(gains, np.float64)
    return gains[np.minimum(radius_index(h, w), len(gains) - 1)].astype(np.float32)


def apply(images: Any, gains: np.ndarray) -> Any:
    """Equalises (B, H, W, 1) images in [0, 1]; jnp, so it runs inside a jitted decoder."""
    g = jnp.asarray(gain_map(gains, images.shape[1], images.shape[2]))  # (H, W)
    spectrum = jnp.fft.fft2(images[..., 0].astype(jnp.float32))  # (B, H, W)
    out = jnp.real(jnp.fft.ifft2(spectrum * g))
    return jnp.clip(out, 0.0, 1.0)[..., None].astype(images.dtype)


def apply_chunked(images: np.ndarray, gains: np.ndarray, chunk: int = 64) -> np.ndarray:
    """`apply` over a large set in chunks (bounded memory); numpy in, numpy out."""
    parts = [np.asarray(apply(images[i : i + chunk], gains)) for i in range(0, len(images), chunk)]
    return np.concatenate(parts)


def fit_gains(real: np.ndarray, recon: np.ndarray, iterations: int = ITERATIONS) -> np.ndarray:
    """Radial gains that make `recon`'s mean log radial power equal `real`'s.

    Args:
      real: (N, H, W, 1) training images in [0, 1].
      recon: (N, H, W, 1) their reconstructions by the decoder being equalised.
      iterations: fixed-point iterations (each re-measures the equalised reconstructions).

    Returns:
      (R + 1,) float64 gains, R + 1 = `num_radii(H, W)`; gains[0] (DC) is 1.
    """
    if real.shape != recon.shape or real.ndim != 4 or real.shape[-1] != 1:
        raise ValueError(f"real {real.shape} and recon {recon.shape} must be equal (N, H, W, 1).")
    target = mean_log_radial_power(real)
    gains = np.ones(num_radii(*real.shape[1:3]))
    for _ in range(iterations):
        residual = target - mean_log_radial_power(apply_chunked(recon, gains))
        gains = np.clip(gains * 10 ** (residual / 2), 1 / MAX_GAIN, MAX_GAIN)
        gains[0] = 1.0
    return gains


def record(gains: np.ndarray, vae_sha256: str, num_images: int) -> dict[str, Any]:
    """The JSON record of fitted gains (what `save` writes)."""
    return {
        "version": VERSION,
        "gains": [float(g) for g in gains],
        "vae_sha256": vae_sha256,
        "fitted_on": f"posterior-mean reconstructions of {num_images} training images",
    }


def save(path: str, rec: dict[str, Any]) -> None:
    """Writes a `record` atomically."""
    atomic.write_text(path, json.dumps(rec, indent=1))


def load(path: str, vae_sha256: str, image_size: int) -> np.ndarray | None:
    """The gains in `path` (None when there is no file), checked against the VAE and size.

    Raises:
      UserError: the file is unreadable, of another version, fitted for other VAE weights, or
        for another image size (the message names the file and what to do).
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            rec = json.load(f)
        gains = np.asarray(rec["gains"], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a readable equaliser file ({e}). {REFIT}") from e
    if rec.get("version") != VERSION:
        raise UserError(
            f"{path} was written by equaliser version {rec.get('version')!r}; this code reads "
            f"version {VERSION}. {REFIT}"
        )
    if rec.get("vae_sha256") != vae_sha256:
        raise UserError(f"{path} was fitted for other VAE weights. {REFIT}")
    n = num_radii(image_size, image_size)
    if len(gains) != n or not np.all(np.isfinite(gains) & (gains > 0)):
        raise UserError(
            f"{path} does not hold {n} finite positive gains (one per radius of "
            f"{image_size}px images). {REFIT}"
        )
    return gains


def gains_sha256(gains: np.ndarray) -> str:
    """SHA-256 of a gains vector (float64 bytes): names the gains a decoder check judged."""
    return hashlib.sha256(np.asarray(gains, np.float64).tobytes()).hexdigest()


def chosen_gains(workdir: str, gains: np.ndarray | None) -> np.ndarray | None:
    """The gains a diffusion run decodes with: `gains`, or None where its decoder check
    (`CHOICE_FILE_NAME`, written by `decoder_check.py`) chose the decoder as trained.

    Raises:
      UserError: the verdict is unreadable or judged other gains (the message says what to do).
    """
    path = os.path.join(workdir, CHOICE_FILE_NAME)
    if gains is None or not os.path.exists(path):
        return gains
    redo = "Rerun the diffusion run's training command to redo the check (under a minute)."
    try:
        with open(path) as f:
            rec = json.load(f)
        equalise, judged = bool(rec["equalise"]), rec["gains_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a readable decoder check ({e}). {redo}") from e
    if judged != gains_sha256(gains):
        raise UserError(f"{path} judged other equaliser gains than {LDM_FILE_NAME}. {redo}")
    return gains if equalise else None
