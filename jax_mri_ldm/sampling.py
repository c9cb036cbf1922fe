"""Samplers for a trained diffusion model: DDPM, DDIM and DPM-Solver++(2M), with guidance.

Everything here is a pure function of a model callable ``model_fn(x, t, y) -> output`` (what
``output`` is, ``'eps'``, ``'v'`` or ``'x0'``, is given by ``prediction=``). Each sampler is a
single ``jax.lax.scan`` over its steps inside one ``jax.jit``: no Python loop over timesteps, no
host sync inside, one compile per (batch) shape.

Timestep indices follow `jax_mri_ldm.diffusion` (index ``t`` in ``{0..T-1}`` is the paper's step
``t + 1``). A sampler visits a strictly decreasing list of ``S`` indices
``timesteps[0] > ... > timesteps[S-1]`` (see `timesteps_for`), calls the network once per index
and, after the last call, returns its ``x_0`` estimate (the step to "index -1", the clean data,
where ``alpha_bar = 1``). So ``steps`` is exactly the number of (batched) network calls.

Classifier-free guidance (Ho & Salimans 2022), convention ``w = guidance_scale``::

    eps = eps_uncond + w * (eps_cond - eps_uncond)

``w = 1`` is the plain conditional model, ``w = 0`` the unconditional one, ``w > 1`` amplifies
the class. The conditional and null-class halves go through the network in ONE batched call of
``2B`` rows per step. When ``w`` is exactly 1 (or 0) only one half is evaluated. The
combination is applied to the raw model output; since ``eps`` (and ``x_0``) is an affine
function of the output at fixed ``x_t`` and the weights ``(1 - w, w)`` sum to one, this is
identical to guiding the ``eps`` prediction, also for v-prediction, and avoids dividing by
``sqrt(alpha_bar)`` at the noisiest step.

Guidance in a limited interval (Kynkäänniemi et al. 2024), ``guidance_interval=(lo, hi)``: a
step guides with ``w`` only where ``sigma_t = sqrt(1 - abar) / sqrt(abar)`` (data-std units) is
in ``(lo, hi]``, and is the plain conditional model (``w = 1``, one B-row call) elsewhere.

RNG contract: ``init_rng, step_rng = jax.random.split(rng)``; the starting noise is
``jax.random.normal(init_rng, shape)`` and the noise injected after the ``i``-th network call
(``i = 0`` at ``timesteps[0]``) is ``jax.random.normal(jax.random.fold_in(step_rng, i), shape)``.
Hence the same ``rng`` (and batch shape) gives bit-identical samples, and DDPM and DDIM with
``eta = 1`` over all ``T`` steps consume identical noise. Samples depend on the batch size.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax_mri_ldm.diffusion import Schedule, check_parameterisation, x0_eps_from_output
from jax_mri_ldm.timesteps import (  # noqa: F401 (re-export)
    MAX_EPS_SCALE_JUMP,
    SAMPLERS,
    SPACINGS,
    check_eps_scale,
    eps_scale_jump,
    timesteps_for,
)

DDPM_VARIANCES: tuple[str, ...] = ("fixed_small", "fixed_large")

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
ApplyFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]
# None, a symmetric bound c, or per-channel (lo, hi) bounds; see `normalize_clip`.
ClipX0 = float | tuple[tuple[float, ...], tuple[float, ...]] | None
# None (guide every step) or the (lo, hi] range of sigma_t that is guided; see the docstring.
Interval = tuple[float, float] | None
# x, t -> (x0, eps) at one step, and step i -> the noise injected after it; see `_sample_impl`.
Predict = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
Noise = Callable[[jax.Array], jax.Array]


def _guided_output(
    model_fn: ModelFn,
    x: jax.Array,
    t: jax.Array,
    labels: jax.Array | None,
    guidance_scale: float,
    null_label: int | None,
    guide: jax.Array | None = None,
) -> jax.Array:
    """One (batched) network call with classifier-free guidance on the raw output. ``(B, ...)``

    The output is cast to ``x.dtype`` (e.g. a bfloat16 network still integrates in float32).
    `guide` (a traced scalar bool, or None = always) picks guided or plain conditional output;
    `lax.cond` runs only the branch taken, so an unguided step costs one B-row call.
    """
    if labels is None:
        return model_fn(x, t, None).astype(x.dtype)
    if guidance_scale == 1.0:
        return model_fn(x, t, labels).astype(x.dtype)
    if guide is not None:

        def guided(v: jax.Array) -> jax.Array:
            return _guided_output(model_fn, v, t, labels, guidance_scale, null_label)

        def plain(v: jax.Array) -> jax.Array:
            return model_fn(v, t, labels).astype(v.dtype)

        return jax.lax.cond(guide, guided, plain, x)
    null = jnp.full_like(labels, null_label)
    if guidance_scale == 0.0:
        return model_fn(x, t, null).astype(x.dtype)
    batch = x.shape[0]
    out = model_fn(
        jnp.concatenate([x, x], axis=0),  # (2B, ...)
        jnp.concatenate([t, t], axis=0),  # (2B,)
        jnp.concatenate([labels, null], axis=0),  # (2B,): conditional half, then null half
    ).astype(x.dtype)
    cond, uncond = out[:batch], out[batch:]
    return uncond + guidance_scale * (cond - uncond)


class _StepGrid(NamedTuple):
    """Per-step scalars of a timestep list, gathered once outside the loop; ``(S,)`` each.

    "next" after the last index is the clean data (index -1): ``alpha = 1``, ``sigma = 0``.
    """

    idx: jax.Array  # 0 .. S-1
    ts: jax.Array  # the timestep indices
    is_final: jax.Array  # True on the last step (next = clean data)
    a_t: jax.Array  # sqrt(abar) at ts
    s_t: jax.Array  # sqrt(1 - abar) at ts
    a_n: jax.Array  # sqrt(abar) at the next index
    s_n: jax.Array  # sqrt(1 - abar) at the next index


def _step_grid(schedule: Schedule, timesteps: tuple[int, ...]) -> _StepGrid:
    """The `_StepGrid` of a static timestep list."""
    ts = jnp.asarray(timesteps, jnp.int32)  # (S,)
    ts_next = jnp.asarray(list(timesteps[1:]) + [-1], jnp.int32)  # (S,) -1 = clean data
    idx = jnp.arange(len(timesteps), dtype=jnp.int32)  # (S,)
    is_final = ts_next < 0
    safe_next = jnp.maximum(ts_next, 0)
    a_t = schedule.sqrt_alphas_cumprod[ts]  # (S,)
    s_t = schedule.sqrt_one_minus_alphas_cumprod[ts]
    a_n = jnp.where(is_final, 1.0, schedule.sqrt_alphas_cumprod[safe_next])
    s_n = jnp.where(is_final, 0.0, schedule.sqrt_one_minus_alphas_cumprod[safe_next])
    return _StepGrid(idx, ts, is_final, a_t, s_t, a_n, s_n)


def _bcast(c: jax.Array, ndim: int) -> jax.Array:
    """A scalar as ``(1, ..., 1)``, to broadcast against ``(B, ...)`` of rank `ndim`."""
    return jnp.reshape(c, (1,) * ndim)


def _predict(
    x: jax.Array,
    t: jax.Array,
    *,
    model_fn: ModelFn,
    schedule: Schedule,
    labels: jax.Array | None,
    guidance_scale: float,
    null_label: int | None,
    prediction: str,
    clip_x0: ClipX0,
    eps_scale: float = 1.0,
    guidance_interval: Interval = None,
) -> tuple[jax.Array, jax.Array]:
    """The guided ``(x0, eps)`` estimates at ``x: (B, ...)`` and the scalar index `t`.

    ``eps_scale = lam != 1`` is epsilon scaling (Ning et al. 2024, "Elucidating the exposure
    bias in diffusion models"): ``eps / lam``, with ``x0`` re-derived from it so both stay a
    consistent split of ``x``; it acts before any clipping.
    """
    t_vec = jnp.full((x.shape[0],), t, jnp.int32)  # (B,)
    a, s = schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t]
    guide = None
    if guidance_interval is not None:
        lo, hi = guidance_interval
        sigma = s / a  # inf where abar = 0 (zero terminal SNR)
        guide = (sigma > lo) & (sigma <= hi)
    out = _guided_output(model_fn, x, t_vec, labels, guidance_scale, null_label, guide)
    x0, eps = x0_eps_from_output(schedule, x, t_vec, out, prediction)
    if eps_scale != 1.0:
        eps = eps / eps_scale
        x0 = (x - s * eps) / a
    if clip_x0 is not None:
        lo, hi = _clip_bounds(clip_x0, schedule.sqrt_alphas_cumprod.dtype)
        x0 = jnp.clip(x0, lo, hi)
        # Re-derive eps from the clipped x0 so the DDIM direction stays consistent.
        eps = (x - a * x0) / s
    return x0, eps


def _step_noise(step_rng: jax.Array, shape: tuple[int, ...], dtype: Any, i: jax.Array) -> jax.Array:
    """The noise injected after the ``i``-th network call (module docstring's RNG contract)."""
    return jax.random.normal(jax.random.fold_in(step_rng, i), shape, dtype=dtype)


def _run_ddpm(
    predict: Predict,
    noise: Noise,
    schedule: Schedule,
    grid: _StepGrid,
    x_init: jax.Array,
    variance: str,
) -> jax.Array:
    """Ancestral sampling with the posterior mean and a fixed variance (Ho et al. 2020)."""
    ts = grid.ts
    if variance == "fixed_small":
        var = schedule.posterior_variance[ts]  # beta_tilde; exactly 0 at t = 0
    else:
        # "fixed large" (sigma^2 = beta_t), with beta_tilde_1 at t = 0 as in Nichol &
        # Dhariwal's code; masked below since no noise is added on the last step.
        large = jnp.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]])
        var = large[ts]
    std = jnp.where(ts == 0, 0.0, jnp.sqrt(var))  # (S,)
    coef1 = schedule.posterior_mean_coef1[ts]
    coef2 = schedule.posterior_mean_coef2[ts]
    nd = x_init.ndim

    def step(x, xs):
        i, t, c1, c2, sd = xs
        x0, _ = predict(x, t)
        x = _bcast(c1, nd) * x0 + _bcast(c2, nd) * x + _bcast(sd, nd) * noise(i)
        return x, None

    x, _ = jax.lax.scan(step, x_init, (grid.idx, ts, coef1, coef2, std))
    return x


def _run_ddim(
    predict: Predict, noise: Noise, grid: _StepGrid, x_init: jax.Array, eta: float
) -> jax.Array:
    """DDIM (Song et al. 2021); `eta` scales the injected noise (0 = deterministic)."""
    a_t, s_t, a_n, s_n = grid.a_t, grid.s_t, grid.a_n, grid.s_n
    abar_t, abar_n = a_t**2, a_n**2
    # Song et al. eq. 16: sigma = eta * sqrt((1 - abar_n) / (1 - abar_t)) *
    # sqrt(1 - abar_t / abar_n). It is 0 on the final step, where 1 - abar_n = 0.
    sig = eta * (s_n / s_t) * jnp.sqrt(jnp.maximum(1.0 - abar_t / abar_n, 0.0))  # (S,)
    dir_coef = jnp.sqrt(jnp.maximum(s_n**2 - sig**2, 0.0))  # sqrt(1 - abar_n - sigma^2)
    nd = x_init.ndim

    def step(x, xs):
        i, t, an, dc, sg = xs
        x0, eps = predict(x, t)
        x = _bcast(an, nd) * x0 + _bcast(dc, nd) * eps
        if eta > 0.0:
            x = x + _bcast(sg, nd) * noise(i)
        return x, None

    x, _ = jax.lax.scan(step, x_init, (grid.idx, grid.ts, a_n, dir_coef, sig))
    return x


def _run_dpmpp_2m(predict: Predict, grid: _StepGrid, x_init: jax.Array) -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data prediction, in ``lambda``.

    ``lambda = log(alpha / sigma)``; ``x_next = (s_n / s_t) x - a_n * expm1(-h) * D`` with
    ``h = lam_n - lam_t``, ``D = x0`` (first order: first step) or
    ``(1 + 1/(2r)) x0 - 1/(2r) x0_prev``, ``r = h_prev / h``. The last step goes to
    ``sigma = 0`` (``lambda = inf``), where the update is exactly ``x0``: a first-order final
    step ("lower_order_final").
    """
    a_t, s_t, a_n, s_n, is_final = grid.a_t, grid.s_t, grid.a_n, grid.s_n, grid.is_final
    lam_t = jnp.log(a_t) - jnp.log(s_t)  # (S,)
    lam_n = jnp.log(a_n) - jnp.log(jnp.where(is_final, 1.0, s_n))  # finite placeholder at end
    h = lam_n - lam_t  # (S,)
    h_prev = jnp.concatenate([jnp.ones((1,), h.dtype), h[:-1]])
    second = (grid.idx > 0) & ~is_final
    w_prev = jnp.where(second, -0.5 * h / h_prev, 0.0)  # -1/(2r)
    w_cur = 1.0 - w_prev
    c_x = jnp.where(is_final, 0.0, s_n / s_t)
    c_d = jnp.where(is_final, 1.0, -a_n * jnp.expm1(-h))
    nd = x_init.ndim

    def step(carry, xs):
        x, x0_prev = carry
        t, cx, cd, wc, wp = xs
        x0, _ = predict(x, t)
        d = _bcast(wc, nd) * x0 + _bcast(wp, nd) * x0_prev
        return (_bcast(cx, nd) * x + _bcast(cd, nd) * d, x0), None

    xs = (grid.ts, c_x, c_d, w_cur, w_prev)
    (x, _), _ = jax.lax.scan(step, (x_init, jnp.zeros_like(x_init)), xs)
    return x


def _sample_impl(
    model_fn: ModelFn,
    schedule: Schedule,
    labels: jax.Array | None,
    rng: jax.Array,
    *,
    shape: tuple[int, ...],
    sampler: str,
    timesteps: tuple[int, ...],
    guidance_scale: float,
    null_label: int | None,
    eta: float,
    prediction: str,
    clip_x0: ClipX0,
    variance: str,
    eps_scale: float = 1.0,
    guidance_interval: Interval = None,
) -> jax.Array:
    """Traceable body shared by `sample` and `make_sample_fn` (all config static)."""
    # The state is integrated in the schedule's dtype: float32 normally (float64 only for a
    # schedule built under jax_enable_x64, used to check the float32 rounding error).
    dtype = schedule.sqrt_alphas_cumprod.dtype
    init_rng, step_rng = jax.random.split(rng)
    x_init = jax.random.normal(init_rng, shape, dtype=dtype)  # (B, ...) x at timesteps[0]
    if labels is not None:
        labels = jnp.asarray(labels, jnp.int32)
    grid = _step_grid(schedule, timesteps)
    predict = functools.partial(
        _predict,
        model_fn=model_fn,
        schedule=schedule,
        labels=labels,
        guidance_scale=guidance_scale,
        null_label=null_label,
        prediction=prediction,
        clip_x0=clip_x0,
        eps_scale=eps_scale,
        guidance_interval=guidance_interval,
    )
    noise = functools.partial(_step_noise, step_rng, shape, dtype)
    if sampler == "ddpm":
        return _run_ddpm(predict, noise, schedule, grid, x_init, variance)
    if sampler == "ddim":
        return _run_ddim(predict, noise, grid, x_init, eta)
    return _run_dpmpp_2m(predict, grid, x_init)


_STATIC = (
    "shape",
    "sampler",
    "timesteps",
    "guidance_scale",
    "null_label",
    "eta",
    "prediction",
    "clip_x0",
    "variance",
    "eps_scale",
    "guidance_interval",
)
_sample_jit = jax.jit(_sample_impl, static_argnums=(0,), static_argnames=_STATIC)


def _clip_bounds(clip_x0: float | tuple, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """``(lo, hi)`` that broadcast against ``(B, ..., C)`` from a static clip setting."""
    if isinstance(clip_x0, tuple):
        return jnp.asarray(clip_x0[0], dtype), jnp.asarray(clip_x0[1], dtype)  # (C,) each
    return jnp.asarray(-clip_x0, dtype), jnp.asarray(clip_x0, dtype)


def normalize_clip(clip_x0: Any) -> ClipX0:
    """Canonical, hashable form of a clip setting (the samplers take it as a static argument).

    Args:
      clip_x0: None (no clipping); a positive number ``c`` (clip to ``[-c, c]``); or a pair
        ``(lo, hi)`` of per-channel bound sequences of equal length ``C`` (clip channel ``k``
        of the last axis to ``[lo[k], hi[k]]``).

    Returns:
      None, a float, or a pair of float tuples.

    Raises:
      ValueError: a malformed setting.
    """
    if clip_x0 is None:
        return None
    if isinstance(clip_x0, numbers.Real) and not isinstance(clip_x0, bool):
        if not clip_x0 > 0:
            raise ValueError(f"clip_x0 must be > 0, got {clip_x0}")
        return float(clip_x0)
    try:
        lo, hi = clip_x0
        lo = tuple(float(v) for v in np.ravel(lo))
        hi = tuple(float(v) for v in np.ravel(hi))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"clip_x0 must be None, a number or a (lo, hi) pair, got {clip_x0!r}"
        ) from e
    if len(lo) != len(hi) or not lo or any(a >= b for a, b in zip(lo, hi, strict=True)):
        raise ValueError("clip_x0 (lo, hi) must have equal non-zero lengths with lo < hi")
    return lo, hi


def normalize_interval(interval: Any) -> Interval:
    """None, or the interval as hashable ``(lo, hi)`` floats, ``0 <= lo < hi <= inf`` (``hi``
    None = inf, as JSON stores it); raises ValueError for a malformed one."""
    if interval is None:
        return None
    try:
        lo, hi = interval
        lo, hi = float(lo), float("inf") if hi is None else float(hi)
    except (TypeError, ValueError) as e:
        raise ValueError(f"guidance_interval must be None or (lo, hi), got {interval!r}") from e
    if not (0.0 <= lo < hi):
        raise ValueError(f"guidance_interval (lo, hi) needs 0 <= lo < hi, got {interval!r}")
    return lo, hi


def _check_config(
    schedule: Schedule,
    sampler: str,
    guidance_scale: float,
    null_label: int | None,
    eta: float,
    prediction: str,
    variance: str,
    conditional: bool,
    eps_scale: float = 1.0,
) -> None:
    """Raises ValueError for an inconsistent sampling configuration."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    check_parameterisation(schedule, prediction)
    if variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown ddpm variance {variance!r}; choose one of {DDPM_VARIANCES}")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise ValueError(f"guidance_scale must be a Python number, got {type(guidance_scale)}")
    if eta < 0.0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if not eps_scale > 0.0:
        raise ValueError(f"eps_scale must be > 0, got {eps_scale}")
    if conditional and guidance_scale != 1.0 and null_label is None:
        raise ValueError("guidance_scale != 1 needs null_label (the unconditional class id)")


def sample(
    model_fn: ModelFn,
    schedule: Schedule,
    *,
    shape: tuple[int, ...],
    labels: jax.Array | None,
    rng: jax.Array,
    sampler: str = "ddpm",
    steps: int | None = None,
    guidance_scale: float = 1.0,
    null_label: int | None = None,
    eta: float = 0.0,
    spacing: str = "uniform",
    prediction: str = "eps",
    clip_x0: ClipX0 = None,
    variance: str = "fixed_small",
    eps_scale: float = 1.0,
    guidance_interval: Interval = None,
) -> jax.Array:
    """Draws samples (latents) from a diffusion model.

    Compiled once per (``model_fn`` object, shape, config): ``model_fn`` is a static argument,
    so pass the same callable to reuse the compile. To jit once and vary the parameters use
    `make_sample_fn` instead of a closure over them.

    Args:
      model_fn: ``model_fn(x, t, y) -> output``; ``x: (N, ...)`` float32, ``t: (N,)`` int32,
        ``y: (N,)`` int32 or None; ``N`` is ``B`` or ``2B`` (guidance).
      schedule: the training schedule.
      shape: full sample shape ``(B, ...)``.
      labels: ``(B,)`` class ids, or None for an unconditional model.
      rng: PRNG key (see the module docstring for the RNG contract).
      sampler: ``'ddpm'`` (ancestral, all T steps), ``'ddim'`` or ``'dpmpp_2m'``.
      steps: network calls (None = T); see `timesteps_for`.
      guidance_scale: ``w``; 1 = conditional, 0 = unconditional (module docstring).
      null_label: the unconditional class id (needed when ``w != 1``).
      eta: DDIM stochasticity: 0 = deterministic DDIM, 1 = DDPM-like ancestral noise.
      spacing: timestep spacing for ddim / dpmpp_2m, one of `SPACINGS`. For ``'dpmpp_2m'``
        with the cosine schedule prefer ``'logSNR'`` at <= 25 steps: time-uniform steps end
        with one long step (e.g. index 111 -> 0 at 10 steps) that the second-order
        extrapolation overshoots (tests/test_sampling.py measures both on a Gaussian toy).
      prediction: what the model outputs: ``'eps'``, ``'v'`` or ``'x0'``.
      clip_x0: clip the ``x_0`` estimate every step: None = off; a number ``c`` clips to
        ``[-c, c]`` (1.0 for pixels in [-1, 1]); a pair ``(lo, hi)`` of per-channel bounds
        clips channel ``k`` (last axis) to ``[lo[k], hi[k]]`` (what the LDM uses: the range of
        its standardised training latents; see `jax_mri_ldm.train_ldm`).
      variance: DDPM reverse variance: ``'fixed_small'`` (``beta_tilde``, the posterior
        variance; default) or ``'fixed_large'`` (``beta_t``), Ho et al. sec. 3.2.
      eps_scale: epsilon scaling ``lam``: every step uses ``eps / lam`` (1 = off; see
        `_predict`); an option against exposure bias (v-prediction runs' default sampler
        uses 0.99: `sampler_settings.FAST_DETERMINISTIC`). It suits
        logSNR-spaced steps: a time-uniform first jump from t = T-1 multiplies its effect
        (tests/test_sampling.py's toy; docs/results.md, "Epsilon scaling"), and a setting
        whose scaling alone would move a sample by more than `MAX_EPS_SCALE_JUMP` noise
        standard deviations in one step is refused (`eps_scale_jump`).
      guidance_interval: None (guide at every step) or ``(lo, hi)``: guide with ``w`` only at
        steps with ``lo < sigma_t <= hi``, plain conditional elsewhere (module docstring).

    Returns:
      ``(B, ...)`` float32 samples.

    Raises:
      ValueError: bad configuration, or ``labels`` not matching ``shape[0]``.
    """
    conditional = labels is not None
    _check_config(
        schedule,
        sampler,
        guidance_scale,
        null_label,
        eta,
        prediction,
        variance,
        conditional,
        eps_scale,
    )
    if conditional and tuple(jnp.shape(labels)) != (shape[0],):
        raise ValueError(f"labels shape {jnp.shape(labels)} must be (B,) with B = shape[0]")
    ts = timesteps_for(sampler, steps, schedule.num_timesteps, spacing, schedule=schedule)
    check_eps_scale(schedule, ts, eps_scale)
    return _sample_jit(
        model_fn,
        schedule,
        labels,
        rng,
        shape=tuple(int(d) for d in shape),
        sampler=sampler,
        timesteps=tuple(int(t) for t in ts),
        guidance_scale=float(guidance_scale),
        null_label=None if null_label is None else int(null_label),
        eta=float(eta),
        prediction=prediction,
        clip_x0=normalize_clip(clip_x0),
        variance=variance,
        eps_scale=float(eps_scale),
        guidance_interval=normalize_interval(guidance_interval),
    )


def make_sample_fn(
    apply_fn: ApplyFn,
    schedule: Schedule,
    latent_shape: tuple[int, ...],
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    guidance_scale: float = 1.0,
    null_label: int | None = None,
    eta: float = 0.0,
    spacing: str = "uniform",
    prediction: str = "eps",
    clip_x0: ClipX0 = None,
    variance: str = "fixed_small",
    eps_scale: float = 1.0,
    guidance_interval: Interval = None,
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """Builds a jitted ``fn(params, labels, rng) -> (B, *latent_shape)`` sampler.

    ``params`` is an argument of the compiled function (not a closed-over constant), so new
    parameter values (e.g. each EMA checkpoint) reuse the compile; it compiles once per batch
    size ``B = labels.shape[0]``. Other arguments are as in `sample`.

    Args:
      apply_fn: ``apply_fn(params, x, t, y) -> output`` (e.g. a wrapper over
        ``UNet().apply({'params': p}, x, t, y)``).
      schedule: the training schedule (a small constant of the compiled function).
      latent_shape: per-example latent shape, without the batch axis (e.g. ``(32, 32, 8)``).
      sampler: see `sample`.
      steps: see `sample`.
      guidance_scale: see `sample`.
      null_label: see `sample`.
      eta: see `sample`.
      spacing: see `sample`.
      prediction: see `sample`.
      clip_x0: see `sample`.
      variance: see `sample`.
      eps_scale: see `sample`.
      guidance_interval: see `sample`.

    Returns:
      ``fn(params, labels, rng)``; ``labels`` is ``(B,)`` int (for an unconditional model pass
      any ids and ``guidance_scale=1``).

    Raises:
      ValueError: bad configuration.
    """
    _check_config(
        schedule, sampler, guidance_scale, null_label, eta, prediction, variance, True, eps_scale
    )
    ts = tuple(
        int(t)
        for t in timesteps_for(sampler, steps, schedule.num_timesteps, spacing, schedule=schedule)
    )
    check_eps_scale(schedule, ts, eps_scale)
    latent_shape = tuple(int(d) for d in latent_shape)
    config = dict(
        sampler=sampler,
        timesteps=ts,
        guidance_scale=float(guidance_scale),
        null_label=None if null_label is None else int(null_label),
        eta=float(eta),
        prediction=prediction,
        clip_x0=normalize_clip(clip_x0),
        variance=variance,
        eps_scale=float(eps_scale),
        guidance_interval=normalize_interval(guidance_interval),
    )

    def fn(params: Any, labels: jax.Array, rng: jax.Array) -> jax.Array:
        model_fn = functools.partial(apply_fn, params)
        shape = (labels.shape[0],) + latent_shape
        return _sample_impl(model_fn, schedule, labels, rng, shape=shape, **config)

    return jax.jit(fn)
