"""Noise schedules: the betas / alpha-bar tables of the forward process, and their metadata.

Cosine (Nichol & Dhariwal 2021) and linear (Ho et al. 2020) schedules, the zero-terminal-SNR
rescale (Lin et al. 2024), and the JSON form a run records so sampling rebuilds the exact
schedule it trained with. The timestep convention is the one in `jax_mri_ldm.diffusion`'s
docstring (index ``t`` in ``{0, ..., T-1}`` is the paper's step ``t + 1``). `diffusion`
re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SCHEDULES: tuple[str, ...] = ("cosine", "linear")

COSINE_S = 0.008  # Nichol & Dhariwal's offset: keeps beta_1 from being vanishingly small.
MAX_BETA = 0.999  # Nichol & Dhariwal's clip: avoids a singular last step where alpha_bar -> 0.


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
