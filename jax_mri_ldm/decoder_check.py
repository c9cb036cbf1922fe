"""Decoder check: does the VAE run's equaliser bring a diffusion run's samples nearer real slices?

The equaliser (`equaliser.py`) is fitted so that the training images' *reconstructions* get the
real images' mean spectrum. Samples are not reconstructions: where the generated slices already
spread over spectra as real slices do, equalising pulls each of them towards the mean curve, and
the set ends up more alike in spectrum than real slices are (docs/results.md, "Decoder check").
So a finished diffusion run decodes one balanced batch of its default sampler's samples both
ways and keeps the equaliser only if it brings the samples' median per-image spectrum distance
and median latent-grid score nearer the real images' medians (distances counted in real
interquartile ranges, summed over the two scores).

The real images are the VAE run's training split (the mean spectrum the distances are taken
to) and its validation split (the real spread; the training split when there is no
validation split). The test split is never read, so the report's scores stay held out.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from jax_mri_ldm import atomic, equaliser
from jax_mri_ldm.evaluation import spectrum
from jax_mri_ldm.pipeline import LDMPipeline, load_ldm


def deviation(values: np.ndarray, real: np.ndarray) -> float:
    """|median(values) - median(real)| in units of real's interquartile range."""
    q25, q50, q75 = np.percentile(real, [25, 50, 75])
    return float(abs(np.median(values) - q50) / max(q75 - q25, 1e-12))


def per_image(images: np.ndarray, reference: np.ndarray, period: int | None) -> dict:
    """Per-image spectrum distances to `reference`'s mean log spectrum and, where `period` is
    set, grid scores at that period, of (N, H, W, 1) images in [0, 1]."""
    out = {"spectrum": spectrum.spectrum_distance(images, reference)}
    if period is not None:
        out["grid"] = spectrum.grid_score(images, period)
    return out


def scores(images: np.ndarray, reference: np.ndarray, real: dict, period: int | None) -> dict:
    """Median spectrum distance and grid score of `images` next to the real images' quartiles,
    and their summed deviation (`deviation`) from the real medians.

    Args:
      images: (N, H, W, 1) in [0, 1], the set judged.
      reference: (M, H, W, 1) real images whose mean log spectrum the distances are taken to.
      real: `per_image` of the real images whose scores give the real spread.
      period: the latent grid's period in pixels (None: the image size has no grid score).
    """
    mine = per_image(images, reference, period)
    out: dict[str, Any] = {"grid": None, "deviation": 0.0}
    for key, values in mine.items():
        out[key] = spectrum.summary_vs_real(values, real[key])
        out["deviation"] += deviation(values, real[key])
    return out


def grid_period(image_size: int, latent_size: int) -> int | None:
    """The decoder's upsampling factor, where `spectrum.grid_score` can score that period."""
    period = image_size // latent_size
    return period if image_size % period == 0 and image_size >= 2 * period else None


def judge(
    raw: np.ndarray,
    gains: np.ndarray,
    reference: np.ndarray,
    real: np.ndarray,
    period: int | None = spectrum.LATENT_PERIOD,
) -> dict[str, Any]:
    """Scores decoded samples as trained (`raw`, (N, H, W, 1)) and equalised by `gains`;
    'equalise' is True when the equalised set deviates no more from the real images."""
    eq = equaliser.apply_chunked(raw, gains)
    real_scores = per_image(real, reference, period)  # once for both arms
    rec = {
        "as_trained": scores(raw, reference, real_scores, period),
        "equalised": scores(eq, reference, real_scores, period),
    }
    rec["equalise"] = bool(rec["equalised"]["deviation"] <= rec["as_trained"]["deviation"])
    return rec


def check(
    workdir: str, reference: np.ndarray, real: np.ndarray, per_class: int, seed: int
) -> dict[str, Any]:
    """`check_run` of the finished run in `workdir` with its equaliser copy, at its default
    guidance (the caller removes an old verdict first, so the copy loads)."""
    run = load_ldm(workdir)
    return check_run(run, run.vae.equaliser, reference, real, per_class, seed)


def check_run(
    run: LDMPipeline,
    gains: np.ndarray,
    reference: np.ndarray,
    real: np.ndarray,
    per_class: int,
    seed: int,
    guidance_scale: float | None = None,
) -> dict[str, Any]:
    """Samples `per_class` images of each class from `run` with its default sampler (at
    `guidance_scale` where given), decodes them without the equaliser, and `judge`s `gains`
    on them."""
    spec = run.default_spec()
    if guidance_scale is not None:
        spec = dataclasses.replace(spec, guidance_scale=float(guidance_scale))
    labels = np.repeat(np.arange(len(run.class_names)), per_class)
    raw_run = dataclasses.replace(run, vae=run.vae.without_equaliser())
    period = grid_period(run.image_size, run.latent_shape[0])
    rec = judge(raw_run.sample_images(labels, seed, spec), gains, reference, real, period)
    rec.update(
        sampler=spec.name(run.schedule.num_timesteps),
        guidance_scale=float(spec.guidance_scale),
        step=run.step,
    )
    return rec


def _settings(mode: str, gains: np.ndarray, step: int, per_class: int, seed: int) -> dict:
    """What a verdict depends on: an existing one with the same settings is kept."""
    out = {"mode": mode, "gains_sha256": equaliser.gains_sha256(gains)}
    if mode == "auto":
        out.update(step=int(step), per_class=int(per_class), seed=int(seed))
    return out


def _read(path: str) -> dict[str, Any] | None:
    """The verdict in `path`, or None when it is missing or unreadable (it is redone)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def sync(
    workdir: str,
    mode: str,
    gains: np.ndarray | None,
    step: int,
    real: tuple[np.ndarray, np.ndarray],
    per_class: int,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Makes a finished diffusion run's verdict (`equaliser.CHOICE_FILE_NAME`) follow `mode`.

    Args:
      workdir: the finished diffusion run.
      mode: 'auto' (judge on samples: `check`), 'on' or 'off'.
      gains: the equaliser copied into the run (None: there is nothing to judge).
      step: the run's final step (an 'auto' verdict of another step is redone).
      real: (reference, spread) real image sets, (N, H, W, 1) in [0, 1] (`scores`).
      per_class: samples of each class the check draws.
      seed: the check's sampling seed.

    Returns:
      The verdict written (or kept), None when the run has no equaliser.
    """
    if mode not in equaliser.CHOICE_MODES:
        modes = ", ".join(equaliser.CHOICE_MODES)
        raise ValueError(f"config.decoder.equaliser={mode!r}; use one of {modes}.")
    path = os.path.join(workdir, equaliser.CHOICE_FILE_NAME)
    if gains is None:
        if os.path.exists(path):
            os.remove(path)
        return None
    want = _settings(mode, gains, step, per_class, seed)
    old = _read(path)
    if old is not None and all(old.get(k) == v for k, v in want.items()):
        return old
    if os.path.exists(path):
        os.remove(path)  # a stale verdict would make the loader refuse the run
    rec = {"equalise": mode == "on"} if mode != "auto" else check(workdir, *real, per_class, seed)
    rec.update(want)
    atomic.write_text(path, json.dumps(rec, indent=1))
    return rec
