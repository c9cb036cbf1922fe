"""Which timesteps a sampler visits: spacings of S of the T training steps, checked.

`timesteps_for` turns (sampler, steps, spacing) into the strictly decreasing index grid the
samplers of `jax_mri_ldm.sampling` scan over (DDPM: all T; DDIM / DPM-Solver++: S of them,
spaced uniformly, leading, trailing, quadratically or evenly in log-SNR). `sampling`
re-exports every public name here.
"""

from __future__ import annotations

import jax
import numpy as np

from jax_mri_ldm.schedules import Schedule

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmpp_2m")
SPACINGS: tuple[str, ...] = ("uniform", "leading", "trailing", "quadratic", "logSNR")


def _strictly_decreasing(ts: np.ndarray, num_timesteps: int) -> np.ndarray:
    """Nudges collisions apart so ``ts`` (ascending on input) is strictly increasing in
    ``[0, T-1]``, then returns it descending. Needs ``len(ts) <= T``."""
    ts = np.clip(np.asarray(ts, dtype=np.int64), 0, num_timesteps - 1)
    ts = np.sort(ts)
    for i in range(1, ts.size):  # push duplicates up ...
        ts[i] = max(ts[i], ts[i - 1] + 1)
    ts[-1] = min(ts[-1], num_timesteps - 1)
    for i in range(ts.size - 2, -1, -1):  # ... and back down if they ran past T-1
        ts[i] = min(ts[i], ts[i + 1] - 1)
    return ts[::-1].astype(np.int32)


def timesteps_for(
    sampler: str,
    steps: int | None,
    num_timesteps: int,
    spacing: str = "uniform",
    *,
    schedule: Schedule | None = None,
) -> np.ndarray:
    """The strictly decreasing timestep indices a sampler visits (one network call each).

    Spacings (``S = steps``, ``T = num_timesteps``):
      - ``'uniform'``: ``round(linspace(T-1, 0, S))``: starts at the noisiest index and ends
        at 0 (the "linspace" spacing of Lin et al. 2024, table 2).
      - ``'leading'``: ``arange(S) * (T // S)``, the DDIM paper's spacing (starts below T-1).
      - ``'trailing'``: ``round(T - arange(S) * T / S) - 1``: starts at T-1, ends at ``T/S-1``.
      - ``'quadratic'``: ``round(linspace(0, sqrt(T-1), S) ** 2)``: dense near the data end.
        The DDIM paper's CIFAR-10 variant stops at ``0.8 T``, which suits the linear schedule
        (``abar[0.8T] ~ 1.5e-3``) but not the cosine one (``abar[0.8T] ~ 0.09``, far from
        noise), so this one spans the whole range.
      - ``'logSNR'``: the indices whose ``lambda = log(alpha / sigma)`` is nearest to ``S``
        points uniform in lambda between ``lambda[T-1]`` and ``lambda[0]`` (DPM-Solver's
        ``logSNR`` spacing; needs ``schedule``).
    Rounding collisions (e.g. 'quadratic' near 0, 'logSNR' at the clipped last cosine step) are
    nudged to neighbouring indices so exactly ``S`` distinct indices come back.

    ``'ddpm'`` always visits all ``T`` indices (``steps`` must be None or ``T``; for fewer
    stochastic steps use ``'ddim'`` with ``eta = 1``). ``steps = None`` means ``T`` for every
    sampler.

    Args:
      sampler: one of `SAMPLERS`.
      steps: number of network calls ``S`` in ``[1, T]``, or None for ``T``.
      num_timesteps: ``T``.
      spacing: one of `SPACINGS` (ignored for ``'ddpm'``).
      schedule: the schedule; needed for ``'logSNR'`` only (must be concrete, not traced).

    Returns:
      ``(S,)`` int32 array, strictly decreasing, in ``[0, T-1]``.

    Raises:
      ValueError: unknown sampler or spacing, ``steps`` out of range, or ``'logSNR'`` without
        a schedule.
    """
    T = int(num_timesteps)
    _check_sampler_and_spacing(sampler, spacing)
    S = T if steps is None else int(steps)
    _check_steps(sampler, steps, S, T)
    if S == T:
        return np.arange(T - 1, -1, -1, dtype=np.int32)
    return _strictly_decreasing(_spaced_indices(spacing, S, T, schedule), T)


def _check_sampler_and_spacing(sampler: str, spacing: str) -> None:
    """Raises ValueError for a sampler or spacing name that does not exist."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")


def _check_steps(sampler: str, steps: int | None, S: int, T: int) -> None:
    """Raises ValueError unless ``S`` network calls suit `sampler` over ``T`` timesteps."""
    if sampler == "ddpm":
        if S != T:
            raise ValueError(
                f"sampler 'ddpm' runs all {T} steps but steps={steps}; use sampler='ddim' with "
                "eta=1.0 for fewer ancestral steps"
            )
    elif not 1 <= S <= T:
        raise ValueError(f"steps must be in [1, {T}] (num_timesteps), got {steps}")


def _spaced_indices(spacing: str, S: int, T: int, schedule: Schedule | None) -> np.ndarray:
    """The ``S < T`` indices of `spacing`, before collisions are nudged apart (any order)."""
    if spacing == "uniform":
        return np.array([T - 1]) if S == 1 else np.round(np.linspace(0, T - 1, S))
    if spacing == "leading":
        return np.arange(S) * (T // S)
    if spacing == "trailing":
        return np.round(T - np.arange(S) * T / S) - 1
    if spacing == "quadratic":
        return np.round(np.linspace(0.0, np.sqrt(T - 1), S) ** 2)
    return _logsnr_indices(*_concrete_alphas_sigmas(schedule, T), S)


def _concrete_alphas_sigmas(
    schedule: Schedule | None, T: int, purpose: str = "timestep spacing 'logSNR'"
) -> tuple[np.ndarray, np.ndarray]:
    """``(sqrt(abar), sqrt(1 - abar))`` as float64 host arrays, for `purpose` (named in errors)."""
    if schedule is None:
        raise ValueError(f"{purpose} needs the schedule (schedule=...)")
    if schedule.num_timesteps != T:
        raise ValueError(f"schedule has {schedule.num_timesteps} steps, expected {T}")
    try:
        a = np.asarray(schedule.sqrt_alphas_cumprod, np.float64)
        s = np.asarray(schedule.sqrt_one_minus_alphas_cumprod, np.float64)
    except jax.errors.TracerArrayConversionError as e:
        raise ValueError(
            f"{purpose} needs a concrete schedule; do not pass it as a traced argument"
        ) from e
    return a, s


def _logsnr_indices(a: np.ndarray, s: np.ndarray, steps: int) -> np.ndarray:
    """Indices nearest to ``steps`` points uniform in ``lambda = log(a / s)``, unsorted.

    On a zero-terminal-SNR schedule ``lambda[T-1] = -inf``: the points span the finite range
    and the noisiest one is moved to ``T-1``, so sampling still starts from pure noise.
    """
    with np.errstate(divide="ignore"):
        lam = np.log(a) - np.log(s)  # (T,) decreasing in t
    finite = np.isfinite(lam)
    targets = np.linspace(lam[finite][-1], lam[0], steps)  # (S,)
    dist = np.abs(np.where(finite, lam, np.inf)[None, :] - targets[:, None])  # (S, T)
    ts = np.argmin(dist, axis=1)
    if not finite[-1]:
        ts[np.argmax(ts)] = a.size - 1
    return ts


# Epsilon scaling (`sampling._predict`) may move a sample by at most this many standard
# deviations of the unit noise in one step; beyond it the scaling itself draws the image.
MAX_EPS_SCALE_JUMP = 1.0


def eps_scale_jump(schedule: Schedule, timesteps: np.ndarray, eps_scale: float) -> tuple:
    """``(jump, t, t_next)``: the largest one-step change that epsilon scaling alone makes to
    a sample, in units of the unit noise, and the step where it happens (``t_next = -1``: the
    last step, to clean data).

    Scaling ``eps`` by ``1 / lam`` with ``x0`` re-derived from it (``x = a x0 + s eps``) moves
    ``x0`` by ``-s (1/lam - 1) eps / a``; a first-order step to ``t'`` then moves the sample by
    ``(1/lam - 1) eps (s' - a' s / a)`` (the last step has ``a' = 1, s' = 0``). On the cosine
    schedule ``a`` at ``t = T-1`` is tiny, so a long first step (time-uniform spacing)
    multiplies the scaling by ``a' / a`` in the hundreds, while logSNR spacing's short first
    step keeps it small. The bound is first order: exact for DDIM with eta = 0; DDPM, eta > 0
    and DPM-Solver++'s second-order term change it by a few per cent.
    """
    ts = np.asarray(timesteps, np.int64)  # (S,) noisiest first
    if eps_scale == 1.0:  # before reading the schedule, which may be traced
        return 0.0, int(ts[0]), -1
    a, s = _concrete_alphas_sigmas(schedule, schedule.num_timesteps, "epsilon scaling")
    nxt = np.append(ts[1:], -1)  # (S,) -1 = clean data
    a_n = np.where(nxt < 0, 1.0, a[np.maximum(nxt, 0)])
    s_n = np.where(nxt < 0, 0.0, s[np.maximum(nxt, 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.abs(a_n * s[ts] / a[ts] - s_n)  # (S,); inf where a[t] = 0
    jump = abs(1.0 / eps_scale - 1.0) * np.nan_to_num(gain, nan=np.inf, posinf=np.inf)
    i = int(np.argmax(jump))
    return float(jump[i]), int(ts[i]), int(nxt[i])


def check_eps_scale(schedule: Schedule, timesteps: np.ndarray, eps_scale: float) -> None:
    """Raises ValueError when epsilon scaling would move a sample by more than
    `MAX_EPS_SCALE_JUMP` noise standard deviations in one step (`eps_scale_jump`)."""
    jump, t, nxt = eps_scale_jump(schedule, timesteps, eps_scale)
    if not np.isfinite(jump):
        raise ValueError(
            f"eps_scale={eps_scale:g} is undefined on this schedule: it has no signal left at "
            f"t={t} (zero terminal SNR), where x0 cannot be re-derived from a scaled epsilon; "
            "use eps_scale=1 with it"
        )
    if jump > MAX_EPS_SCALE_JUMP:
        to = "clean data" if nxt < 0 else str(nxt)
        raise ValueError(
            f"eps_scale={eps_scale:g} would move each sample by {jump:.3g} noise standard "
            f"deviations in the step t={t} -> {to} (at most {MAX_EPS_SCALE_JUMP:g}), which ruins "
            "the samples; use 'logSNR' spacing (short steps where the noise is highest, e.g. "
            "DPM-Solver++(2M) 10 steps), more steps, or a scale nearer 1"
        )
