"""Gaussian diffusion maths: noise schedules, the forward process and the training loss.

This module knows no network. Everything a model touches goes through a plain callable
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
import numpy as np
from flax import struct

SCHEDULES: tuple[str, ...] = ("cosine", "linear")
PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0")
LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "min_snr")

COSINE_S = 0.008  # Nichol & Dhariwal's offset: keeps beta_1 from being vanishingly small.
MAX_BETA = 0.999  # Nichol & Dhariwal's clip: avoids a singular last step where alpha_bar -> 0.
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023 ("Min-SNR weighting"), their recommended gamma.

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


@struct.dataclass
class Schedule:
    """A discrete noise schedule of ``num_timesteps`` steps (a JAX pytree of float32 arrays).

    All arrays have shape ``(T,)`` and are indexed by the timestep index ``t`` (see the module
    docstring: index ``t`` is the paper's step ``t + 1``). They are computed in float64 and
    cast to float32 once, so e.g. ``sqrt_one_minus_alphas_cumprod`` is accurate near ``t = 0``.

    Attributes:
      betas: ``beta`` per step.
      alphas: ``1 - beta``.
      alphas_cumprod: ``alpha_bar[t] = prod_{i<=t} alphas[i]``.
      alphas_cumprod_prev: ``alpha_bar[t-1]``, with 1.0 at ``t = 0``.
      sqrt_alphas_cumprod: ``sqrt(alpha_bar)`` (the signal scale, called ``alpha`` in DPM-Solver).
      sqrt_one_minus_alphas_cumprod: ``sqrt(1 - alpha_bar)`` (the noise scale ``sigma``).
      posterior_variance: ``beta_tilde[t] = beta[t] (1 - abar_prev[t]) / (1 - abar[t])``, the
        variance of ``q(x_{t-1} | x_t, x_0)``; exactly 0 at ``t = 0``.
      posterior_log_variance_clipped: ``log beta_tilde`` with the ``t = 0`` entry replaced by the
        ``t = 1`` one (the log of 0 is not finite), as in Ho et al.'s code.
      posterior_mean_coef1: coefficient of ``x_0`` in the posterior mean.
      posterior_mean_coef2: coefficient of ``x_t`` in the posterior mean.
      num_timesteps: ``T`` (static, not a pytree leaf).
      kind: the schedule's name, ``'cosine'``, ``'linear'`` or ``'custom'`` (static).
      zero_terminal_snr: ``alpha_bar[T-1] == 0`` exactly (`rescale_zero_terminal_snr`; static).
    """

    betas: jax.Array
    alphas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array
    num_timesteps: int = struct.field(pytree_node=False, default=0)
    kind: str = struct.field(pytree_node=False, default="custom")
    zero_terminal_snr: bool = struct.field(pytree_node=False, default=False)


def cosine_alpha_bar(t: np.ndarray | float, num_timesteps: int, s: float = COSINE_S) -> np.ndarray:
    """The continuous cosine ``alpha_bar(t) = f(t) / f(0)`` of Nichol & Dhariwal (2021).

    ``f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)``. Here ``t`` is the paper's continuous
    step in ``[0, T]``, so the discrete ``alphas_cumprod[i]`` equals ``cosine_alpha_bar(i + 1)``
    for every index whose beta was not clipped (all but the last for ``T = 1000``).

    Args:
      t: paper step(s), float or array, in ``[0, T]``.
      num_timesteps: ``T``.
      s: the small offset (0.008 in the paper).

    Returns:
      float64 array of ``alpha_bar(t)``.
    """
    t = np.asarray(t, dtype=np.float64)

    def f(u: np.ndarray) -> np.ndarray:
        return np.cos((u / num_timesteps + s) / (1.0 + s) * np.pi / 2.0) ** 2

    return f(t) / f(np.zeros((), np.float64))


def cosine_betas(num_timesteps: int, max_beta: float = MAX_BETA) -> np.ndarray:
    """Betas of the cosine schedule: ``beta_t = 1 - abar(t) / abar(t-1)``, clipped at ``max_beta``.

    Args:
      num_timesteps: ``T``.
      max_beta: upper clip (0.999 in the paper). For ``T = 1000`` only the last beta is
        clipped (its unclipped value is 1 because ``f(T) = 0``).

    Returns:
      ``(T,)`` float64 betas.
    """
    abar = cosine_alpha_bar(np.arange(num_timesteps + 1), num_timesteps)  # (T+1,) paper 0..T
    betas = 1.0 - abar[1:] / abar[:-1]
    return np.clip(betas, 0.0, max_beta)


def linear_betas(num_timesteps: int) -> np.ndarray:
    """Betas of the DDPM linear schedule (Ho et al. 2020): 1e-4 -> 0.02 over ``T = 1000``.

    For ``T != 1000`` both ends are scaled by ``1000 / T`` (as in Nichol & Dhariwal's code) so
    that the total amount of noise, and hence ``alpha_bar[T-1]``, stays about the same.

    Args:
      num_timesteps: ``T``.

    Returns:
      ``(T,)`` float64 betas.
    """
    scale = 1000.0 / num_timesteps
    return np.linspace(1e-4 * scale, 0.02 * scale, num_timesteps, dtype=np.float64)


def _check_betas(betas: np.ndarray) -> None:
    """Raises ValueError unless betas are 1-D in ``(0, 1)``; the last one may be exactly 1."""
    if betas.ndim != 1 or betas.size < 1:
        raise ValueError(f"schedule betas must be a non-empty 1-D array, got shape {betas.shape}")
    inner_ok = np.all((betas[:-1] > 0.0) & (betas[:-1] < 1.0))
    if not (inner_ok and 0.0 < betas[-1] <= 1.0):
        raise ValueError(
            "schedule betas must lie strictly between 0 and 1 (the last may be 1: zero SNR)"
        )


def schedule_from_betas(betas: np.ndarray, kind: str = "custom") -> Schedule:
    """Builds a `Schedule` (all derived quantities) from a beta sequence.

    Args:
      betas: ``(T,)`` betas in ``(0, 1)``; the last may be exactly 1 (a zero-terminal-SNR
        schedule, ``alpha_bar[T-1] = 0``). Computed on in float64.
      kind: name stored on the schedule.

    Returns:
      The `Schedule`, float32 arrays.

    Raises:
      ValueError: betas not 1-D or outside ``(0, 1)``.
    """
    betas = np.asarray(betas, dtype=np.float64)
    _check_betas(betas)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    # log(0) at t=0 is replaced by the t=1 value; the samplers add no noise at t=0 anyway.
    first = post_var[1] if betas.size > 1 else betas[0]
    post_logvar = np.log(np.concatenate([[first], post_var[1:]]))
    coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)
    coef2 = (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)

    def f32(a: np.ndarray) -> jax.Array:
        return jnp.asarray(a, dtype=jnp.float32)

    return Schedule(
        betas=f32(betas),
        alphas=f32(alphas),
        alphas_cumprod=f32(abar),
        alphas_cumprod_prev=f32(abar_prev),
        sqrt_alphas_cumprod=f32(np.sqrt(abar)),
        sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - abar)),
        posterior_variance=f32(post_var),
        posterior_log_variance_clipped=f32(post_logvar),
        posterior_mean_coef1=f32(coef1),
        posterior_mean_coef2=f32(coef2),
        num_timesteps=int(betas.size),
        kind=str(kind),
        zero_terminal_snr=bool(abar[-1] == 0.0),
    )


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescales betas so that ``alpha_bar[T-1] = 0`` exactly (Lin et al. 2024, Algorithm 1).

    ``sqrt(alpha_bar)`` is shifted so its last value is 0 and scaled so its first value is
    unchanged; the sampler then starts from pure noise, as at inference, instead of from a
    signal-bearing ``x_T`` the model never learned to ignore. Needs a model that predicts
    ``'v'`` (or ``'x0'``): ``eps`` carries no information about ``x_0`` at zero SNR.

    Args:
      betas: ``(T,)`` betas in ``(0, 1)``.

    Returns:
      ``(T,)`` float64 betas whose last entry is 1.
    """
    root = np.sqrt(np.cumprod(1.0 - np.asarray(betas, np.float64)))  # (T,) sqrt(alpha_bar)
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    abar = np.square(root)
    abar[-1] = 0.0  # exact, whatever the rounding above
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def make_schedule(
    kind: str = "cosine", num_timesteps: int = 1000, zero_terminal_snr: bool = False
) -> Schedule:
    """Makes a named schedule.

    Args:
      kind: ``'cosine'`` (Nichol & Dhariwal 2021; the paper's choice) or ``'linear'`` (DDPM).
      num_timesteps: ``T`` (1000 in the paper).
      zero_terminal_snr: apply `rescale_zero_terminal_snr` (off in the paper).

    Returns:
      The `Schedule`.

    Raises:
      ValueError: unknown ``kind`` or ``num_timesteps < 2``.
    """
    if int(num_timesteps) < 2:
        raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
    if kind == "cosine":
        betas = cosine_betas(int(num_timesteps))
    elif kind == "linear":
        betas = linear_betas(int(num_timesteps))
    else:
        raise ValueError(f"unknown noise schedule {kind!r}; choose one of {SCHEDULES}")
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return schedule_from_betas(betas, kind=kind)


def schedule_from_config(cfg: Mapping[str, Any]) -> Schedule:
    """The schedule of a ``config.diffusion`` section; a missing ``zero_terminal_snr`` is off.

    Args:
      cfg: mapping with ``schedule``, ``num_timesteps`` and optionally ``zero_terminal_snr``.

    Returns:
      The `Schedule`.
    """
    return make_schedule(
        cfg["schedule"],
        int(cfg["num_timesteps"]),
        zero_terminal_snr=bool(cfg.get("zero_terminal_snr", False)),
    )


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    """A JSON-serialisable description of a schedule, for checkpoint metadata.

    The betas are stored too, so a ``'custom'`` schedule round-trips exactly.

    Args:
      schedule: the schedule.

    Returns:
      ``{"kind": str, "num_timesteps": int, "betas": list[float]}``, plus
      ``"zero_terminal_snr": True`` for a rescaled named schedule.
    """
    d = {
        "kind": schedule.kind,
        "num_timesteps": int(schedule.num_timesteps),
        "betas": [float(b) for b in np.asarray(schedule.betas, dtype=np.float64)],
    }
    if schedule.zero_terminal_snr:
        d["zero_terminal_snr"] = True
    return d


def schedule_from_dict(d: Mapping[str, Any]) -> Schedule:
    """Rebuilds a schedule written by `schedule_to_dict`.

    Named kinds are recomputed from their formula (float64 accuracy); ``'custom'`` ones, or
    dicts without a known kind, are rebuilt from the stored betas.

    Args:
      d: the dict.

    Returns:
      The `Schedule`.

    Raises:
      ValueError: the dict has neither a known kind nor betas, or its betas disagree with the
        named kind (a checkpoint written by a different schedule definition).
    """
    kind = d.get("kind", "custom")
    if kind in SCHEDULES and "num_timesteps" in d:
        schedule = make_schedule(
            kind, int(d["num_timesteps"]), bool(d.get("zero_terminal_snr", False))
        )
        if "betas" in d:
            stored = np.asarray(d["betas"], dtype=np.float64)
            if stored.shape != (schedule.num_timesteps,) or not np.allclose(
                stored, np.asarray(schedule.betas, np.float64), rtol=1e-5, atol=1e-8
            ):
                raise ValueError(
                    f"schedule dict says kind={kind!r}, T={d['num_timesteps']} but its stored "
                    "betas differ from that formula; rebuild it with kind='custom'"
                )
        return schedule
    if "betas" not in d:
        raise ValueError(
            f"schedule dict needs a kind in {SCHEDULES} with num_timesteps, or 'betas'; got "
            f"keys {sorted(d)}"
        )
    return schedule_from_betas(np.asarray(d["betas"], dtype=np.float64), kind=kind)


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
