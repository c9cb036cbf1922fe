"""Gaussian diffusion maths: the forward process, parameterisations and the training loss.

Noise schedules live in `jax_mri_ldm.schedules` (re-exported here). This module knows no
network. Everything a model touches goes through a plain callable
``model_fn(x_t, t, y) -> output`` with ``output.shape == x_t.shape``.

Timestep convention (read this once, it holds everywhere in the package):
  A timestep *index* ``t`` is an integer in ``{0, ..., T-1}``. Index ``t`` is the paper's step
  ``t + 1`` (Ho et al. 2020 number steps ``1..T``). So ``betas[0]`` is the paper's ``beta_1``,
  ``alphas_cumprod[t] = prod_{i <= t} (1 - betas[i])`` is the paper's ``alpha_bar_{t+1}``, and
  ``alphas_cumprod_prev[t]`` is ``alpha_bar_t`` with ``alphas_cumprod_prev[0] = 1`` (clean data).
  ``x_t`` at index ``t`` is ``sqrt(alpha_bar[t]) x_0 + sqrt(1 - alpha_bar[t]) eps``; the sampler
  starts from index ``T-1`` (nearly pure noise) and its last network call is at index 0.

Prediction targets (``prediction=``): ``'eps'`` (the noise, as in the paper), ``'v'``
(Salimans & Ho 2022: ``v = sqrt(abar) eps - sqrt(1 - abar) x_0``) or ``'x0'``. Only ``'v'``
and ``'x0'`` are well posed at every t: recovering ``x_0`` from ``eps`` divides by
``sqrt(abar)``, which is tiny at the noisiest cosine step and exactly 0 on a zero-terminal-SNR
schedule (Lin et al. 2024), so ``'eps'`` is refused on such a schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jax_mri_ldm.schedules import (  # noqa: F401  (re-exported: diffusion.Schedule, ...)
    COSINE_S,
    MAX_BETA,
    SCHEDULES,
    Schedule,
    cosine_alpha_bar,
    cosine_betas,
    linear_betas,
    make_schedule,
    rescale_zero_terminal_snr,
    schedule_from_betas,
    schedule_from_config,
    schedule_from_dict,
    schedule_to_dict,
)

PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0")
LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "min_snr")

MIN_SNR_GAMMA = 5.0  # Hang et al. 2023 ("Min-SNR weighting"), their recommended gamma.

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def extract(arr: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """Gathers ``arr[t]`` and reshapes it to broadcast against a rank-``ndim`` batch.

    Args:
      arr: ``(T,)`` schedule array.
      t: ``(B,)`` integer timestep indices.
      ndim: rank of the tensor it will multiply (e.g. 4 for ``(B, H, W, C)``).

    Returns:
      ``(B, 1, ..., 1)`` float32.
    """
    out = jnp.take(arr, t, axis=0)  # (B,)
    return out.reshape(out.shape + (1,) * (ndim - out.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Samples ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with the given noise.

    Args:
      schedule: the schedule.
      x0: ``(B, ...)`` clean data.
      t: ``(B,)`` timestep indices.
      noise: ``(B, ...)`` standard normal noise.

    Returns:
      ``x_t``, ``(B, ...)``.
    """
    a = extract(schedule.sqrt_alphas_cumprod, t, x0.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
    return a * x0 + s * noise


def predict_x0_from_eps(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array
) -> jax.Array:
    """Inverts `q_sample`: ``x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``.

    Args:
      schedule: the schedule.
      x_t: ``(B, ...)`` noisy data.
      t: ``(B,)`` timestep indices.
      eps: ``(B, ...)`` noise (or a prediction of it).

    Returns:
      ``(B, ...)`` estimate of ``x_0``.
    """
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return (x_t - s * eps) / a


def predict_eps_from_x0(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array
) -> jax.Array:
    """The noise implied by ``x_t`` and an ``x_0``: ``(x_t - sqrt(abar) x_0) / sqrt(1 - abar)``.

    Args:
      schedule: the schedule.
      x_t: ``(B, ...)`` noisy data.
      t: ``(B,)`` timestep indices.
      x0: ``(B, ...)`` clean data (or a prediction of it).

    Returns:
      ``(B, ...)`` noise.
    """
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return (x_t - a * x0) / s


def get_v(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """The v-prediction target ``v = sqrt(abar) eps - sqrt(1 - abar) x_0`` (Salimans & Ho 2022).

    Args:
      schedule: the schedule.
      x0: ``(B, ...)`` clean data.
      t: ``(B,)`` timestep indices.
      noise: ``(B, ...)`` the noise used to make ``x_t``.

    Returns:
      ``(B, ...)`` v.
    """
    a = extract(schedule.sqrt_alphas_cumprod, t, x0.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
    return a * noise - s * x0


def x0_eps_from_v(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, v: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Recovers ``(x_0, eps)`` from ``x_t`` and v (no division, so stable at every t).

    ``x_0 = sqrt(abar) x_t - sqrt(1 - abar) v`` and ``eps = sqrt(1 - abar) x_t + sqrt(abar) v``.

    Args:
      schedule: the schedule.
      x_t: ``(B, ...)`` noisy data.
      t: ``(B,)`` timestep indices.
      v: ``(B, ...)`` v (or a prediction of it).

    Returns:
      ``(x0, eps)``, each ``(B, ...)``.
    """
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return a * x_t - s * v, s * x_t + a * v


def x0_eps_from_output(
    schedule: Schedule, x_t: jax.Array, t: jax.Array, output: jax.Array, prediction: str
) -> tuple[jax.Array, jax.Array]:
    """Converts a model output of any parameterisation into ``(x_0, eps)`` estimates.

    Args:
      schedule: the schedule.
      x_t: ``(B, ...)`` noisy data.
      t: ``(B,)`` timestep indices.
      output: ``(B, ...)`` model output.
      prediction: ``'eps'``, ``'v'`` or ``'x0'``: what the model predicts.

    Returns:
      ``(x0, eps)``, each ``(B, ...)``.

    Raises:
      ValueError: unknown ``prediction``.
    """
    if prediction == "eps":
        return predict_x0_from_eps(schedule, x_t, t, output), output
    if prediction == "v":
        return x0_eps_from_v(schedule, x_t, t, output)
    if prediction == "x0":
        return output, predict_eps_from_x0(schedule, x_t, t, output)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def snr(schedule: Schedule, t: jax.Array) -> jax.Array:
    """Signal-to-noise ratio ``abar / (1 - abar)`` at indices ``t`` (``(B,)`` float32)."""
    abar = jnp.take(schedule.alphas_cumprod, t, axis=0)
    return abar / (1.0 - abar)


def _drop_mask(rng: jax.Array, shape: tuple[int, ...], p: float) -> jax.Array:
    """Bernoulli(p) mask, True where the label is dropped."""
    return jax.random.bernoulli(rng, p, shape)


def min_snr_weight(snr_t: jax.Array, prediction: str, gamma: float = MIN_SNR_GAMMA) -> jax.Array:
    """Min-SNR-gamma loss weight (Hang et al. 2023) for a model predicting ``prediction``.

    The x0-loss weight is ``min(SNR, gamma)``; eps and v losses are ``SNR`` and ``SNR + 1``
    times the x0 loss, so their weights are ``min(SNR, gamma) / SNR`` and
    ``min(SNR, gamma) / (SNR + 1)``. The eps form is written as 1 below ``gamma`` so it stays
    finite at ``SNR = 0`` (the last step of a zero-terminal-SNR schedule).

    Args:
      snr_t: ``(B,)`` signal-to-noise ratios (`snr`).
      prediction: ``'eps'``, ``'v'`` or ``'x0'``.
      gamma: the clip value (5 in the paper).

    Returns:
      ``(B,)`` weights.
    """
    if prediction == "eps":
        return jnp.where(snr_t > gamma, gamma / jnp.maximum(snr_t, gamma), 1.0)
    clipped = jnp.minimum(snr_t, gamma)
    if prediction == "v":
        return clipped / (snr_t + 1.0)
    return clipped


def _loss_weight(snr_t: jax.Array, prediction: str, loss_weighting: str, gamma: float) -> jax.Array:
    """Per-example loss weight ``(B,)``."""
    if loss_weighting == "none":
        return jnp.ones_like(snr_t)
    if loss_weighting == "min_snr":
        return min_snr_weight(snr_t, prediction, gamma)
    raise ValueError(f"unknown loss_weighting {loss_weighting!r}; choose one of {LOSS_WEIGHTINGS}")


def check_parameterisation(
    schedule: Schedule, prediction: str, loss_weighting: str = "none"
) -> None:
    """Raises ValueError for an unknown target or weighting, or eps on a zero-SNR schedule.

    Args:
      schedule: the schedule.
      prediction: the model's target.
      loss_weighting: the loss weighting.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
    if loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(
            f"unknown loss_weighting {loss_weighting!r}; choose one of {LOSS_WEIGHTINGS}"
        )
    if prediction == "eps" and schedule.zero_terminal_snr:
        raise ValueError(
            "diffusion.zero_terminal_snr=True needs diffusion.prediction='v' (or 'x0'): at "
            "zero SNR an eps prediction says nothing about x0"
        )


def _dropped_labels(
    labels: jax.Array | None, drop_rng: jax.Array, p_uncond: float, null_label: int | None
) -> tuple[jax.Array | None, jax.Array]:
    """Labels with a Bernoulli(``p_uncond``) share replaced by ``null_label``, and that share.

    Returns ``(y, drop_frac)``: ``(B,)`` labels (None for an unconditional model) and the
    scalar fraction dropped.
    """
    if labels is None:
        return None, jnp.zeros((), jnp.float32)
    if p_uncond > 0.0:
        if null_label is None:
            raise ValueError("diffusion_loss: p_uncond > 0 needs null_label (the 'no class' id)")
        mask = _drop_mask(drop_rng, labels.shape, p_uncond)  # (B,)
        y = jnp.where(mask, jnp.asarray(null_label, labels.dtype), labels)
        return y, jnp.mean(mask.astype(jnp.float32))
    return labels, jnp.zeros((), jnp.float32)


def _target(
    schedule: Schedule, prediction: str, x0: jax.Array, t: jax.Array, noise: jax.Array
) -> jax.Array:
    """What a ``prediction`` model should output at ``x_t = q_sample(x0, t, noise)``. (B, ...)"""
    if prediction == "eps":
        return noise
    if prediction == "v":
        return get_v(schedule, x0, t, noise)
    return x0


def diffusion_loss(
    model_fn: ModelFn,
    schedule: Schedule,
    x0: jax.Array,
    labels: jax.Array | None,
    rng: jax.Array,
    *,
    prediction: str = "eps",
    p_uncond: float = 0.1,
    null_label: int | None = None,
    loss_weighting: str = "none",
    min_snr_gamma: float = MIN_SNR_GAMMA,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The denoising loss of one batch (the paper's stage-2 objective for ``prediction='eps'``).

    Draws per example ``t ~ U{0, ..., T-1}``, ``eps ~ N(0, I)`` and (for classifier-free
    guidance) a Bernoulli(``p_uncond``) label drop, each from its own independent sub-key of
    ``rng`` (``jax.random.split(rng, 3)``: t, noise, drop). The loss is the squared error
    averaged over *all* elements, i.e. ``mean((out - target)**2)`` like PyTorch's
    ``F.mse_loss(reduction='mean')``; with ``loss_weighting='none'`` it equals the mean of the
    per-example means. ``'min_snr'`` multiplies each per-example mean by the Min-SNR-gamma
    weight (`min_snr_weight`) before averaging.

    Args:
      model_fn: ``model_fn(x_t, t, y) -> output`` with ``x_t: (B, ...)``, ``t: (B,)`` int32,
        ``y: (B,)`` labels (or None when ``labels`` is None); output shaped like ``x_t``.
      schedule: the schedule.
      x0: ``(B, ...)`` clean latents.
      labels: ``(B,)`` integer labels, or None for an unconditional model.
      rng: PRNG key.
      prediction: the model's target, ``'eps'``, ``'v'`` or ``'x0'``.
      p_uncond: label-drop probability (0.1 in the paper); ignored when ``labels`` is None.
      null_label: the label id meaning "unconditional"; required when ``labels`` is given and
        ``p_uncond > 0``.
      loss_weighting: ``'none'`` or ``'min_snr'``.
      min_snr_gamma: the ``gamma`` of ``'min_snr'``.

    Returns:
      ``(loss, aux)``: scalar float32 loss; aux has ``'loss_per_example'`` ``(B,)`` (unweighted
      per-example MSE), ``'t'`` ``(B,)`` int32 and ``'drop_frac'`` (scalar fraction of labels
      replaced by ``null_label``).

    Raises:
      ValueError: bad ``prediction``, ``loss_weighting`` or a missing ``null_label``.
    """
    check_parameterisation(schedule, prediction, loss_weighting)
    batch = x0.shape[0]
    t_rng, noise_rng, drop_rng = jax.random.split(rng, 3)
    t = jax.random.randint(t_rng, (batch,), 0, schedule.num_timesteps, dtype=jnp.int32)
    noise = jax.random.normal(noise_rng, x0.shape, dtype=jnp.float32)  # (B, ...)
    x0 = x0.astype(jnp.float32)
    x_t = q_sample(schedule, x0, t, noise)
    y, drop_frac = _dropped_labels(labels, drop_rng, p_uncond, null_label)
    target = _target(schedule, prediction, x0, t, noise)
    out = model_fn(x_t, t, y).astype(jnp.float32)
    if out.shape != x_t.shape:
        raise ValueError(f"model output shape {out.shape} != input shape {x_t.shape}")
    sq = jnp.square(out - target)  # (B, ...)
    per_example = jnp.mean(sq.reshape(batch, -1), axis=1)  # (B,)
    weight = _loss_weight(snr(schedule, t), prediction, loss_weighting, min_snr_gamma)  # (B,)
    loss = jnp.mean(weight * per_example)
    aux = {"loss_per_example": per_example, "t": t, "drop_frac": drop_frac}
    return loss, aux


def loss_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`diffusion_loss` keyword arguments of a ``config.diffusion`` section.

    Fields missing from an older config mean the old behaviour (no weighting, gamma 5).

    Args:
      cfg: mapping with ``prediction``, ``p_uncond`` and optionally ``loss_weighting`` and
        ``min_snr_gamma``.

    Returns:
      ``{prediction, p_uncond, loss_weighting, min_snr_gamma}``.
    """
    return {
        "prediction": str(cfg["prediction"]),
        "p_uncond": float(cfg["p_uncond"]),
        "loss_weighting": str(cfg.get("loss_weighting", "none")),
        "min_snr_gamma": float(cfg.get("min_snr_gamma", MIN_SNR_GAMMA)),
    }
