"""`TrainState` (step, params, optimiser state, EMA params, RNG) and the optimiser factory."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any


class TrainState(flax.struct.PyTreeNode):
    """Everything a training run carries from step to step; a plain pytree (checkpointable).

    Attributes:
      step: int32 scalar, number of optimiser updates applied so far.
      params: model parameters (float32 pytree).
      opt_state: optax state of `tx`.
      ema_params: exponential moving average of `params` (used for sampling/evaluation).
      rng: base PRNG key of the run; step keys are `fold_in(rng, step)`, so the random stream
        of a resumed run equals that of an uninterrupted one.
      tx: the optax transformation (static, not saved).
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    rng: jax.Array
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: PyTree, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
        """Builds step-0 state; EMA starts as a copy of the parameters."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params),
            rng=rng,
            tx=tx,
        )

    def checkpoint_items(self) -> dict[str, PyTree]:
        """The saved part of the state (everything but the static optimiser)."""
        return {
            "step": self.step,
            "params": self.params,
            "opt_state": self.opt_state,
            "ema_params": self.ema_params,
            "rng": self.rng,
        }

    def replace_items(self, items: dict[str, PyTree]) -> TrainState:
        """Inverse of `checkpoint_items`."""
        return self.replace(**items)


def make_lr_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Learning-rate schedule: constant, cosine or warmup-stable-decay, with optional warmup.

    'wsd' holds the rate constant and then decays it linearly to ``lr * min_lr_ratio`` over the
    last ``decay_fraction`` of the run (Hu et al. 2024, "MiniCPM"): until the decay starts it is
    the constant schedule, so a constant-rate checkpoint from before that point resumes into
    exactly the run a fresh 'wsd' run would have made. The decay window is a fraction of the
    run's length, so changing the length on resume moves it.

    Args:
      optim: `config.optim` (learning_rate, warmup_steps, schedule in {"constant", "cosine",
        "wsd"}, min_lr_ratio, and decay_fraction for 'wsd').
      total_steps: number of training steps of the run (cosine and the wsd decay end there).

    Returns:
      step -> learning rate.
    """
    lr = float(optim.learning_rate)
    warmup = int(optim.warmup_steps)
    if optim.schedule == "constant":
        if warmup <= 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
        )
    if optim.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warmup > 0 else lr,
            peak_value=lr,
            warmup_steps=max(warmup, 0),
            decay_steps=max(total_steps, warmup + 1),
            end_value=lr * float(optim.min_lr_ratio),
        )
    if optim.schedule == "wsd":
        return _wsd_schedule(optim, total_steps)
    raise ValueError(
        f"config.optim.schedule={optim.schedule!r} is not known; use 'constant', 'cosine' or 'wsd'."
    )


def _wsd_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Warmup, constant, then a linear decay over the last `optim.decay_fraction` of the run."""
    frac = float(optim.decay_fraction)
    if not 0.0 < frac <= 1.0:
        raise ValueError(
            f"config.optim.decay_fraction={frac} must be in (0, 1] for schedule 'wsd'."
        )
    lr, warmup = float(optim.learning_rate), max(int(optim.warmup_steps), 0)
    start = max(total_steps - max(int(round(frac * total_steps)), 1), warmup)
    decay = max(total_steps - start, 1)  # a warmup longer than the stable phase shortens it
    pieces = [
        optax.constant_schedule(lr),
        optax.linear_schedule(lr, lr * float(optim.min_lr_ratio), decay),
    ]
    bounds = [start]
    if warmup > 0:
        pieces, bounds = [optax.linear_schedule(0.0, lr, warmup), *pieces], [warmup, start]
    return optax.join_schedules(pieces, bounds)


def make_optimizer(
    optim: ml_collections.ConfigDict, total_steps: int
) -> optax.GradientTransformation:
    """Adam (AdamW if weight_decay > 0) on `make_lr_schedule`, optional global-norm clipping.

    Args:
      optim: `config.optim` (learning_rate, b1, b2, eps, weight_decay, warmup_steps, schedule,
        min_lr_ratio, grad_clip_norm).
      total_steps: number of training steps of the run.

    Returns:
      An optax transformation.
    """
    schedule = make_lr_schedule(optim, total_steps)
    parts = []
    if optim.grad_clip_norm and float(optim.grad_clip_norm) > 0:
        parts.append(optax.clip_by_global_norm(float(optim.grad_clip_norm)))
    if float(optim.weight_decay) > 0:
        parts.append(
            optax.adamw(schedule, optim.b1, optim.b2, optim.eps, weight_decay=optim.weight_decay)
        )
    else:
        parts.append(optax.adam(schedule, optim.b1, optim.b2, optim.eps))
    return optax.chain(*parts)


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array:
    """EMA decay for the update that produces step `step + 1`.

    With warmup the decay is min(decay, (1 + step) / (10 + step)), so early EMA weights are not
    dominated by the random initialisation (as in the DDPM/score_sde code bases).
    """
    decay = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay
    s = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + s) / (10.0 + s))


def ema_update(ema: PyTree, params: PyTree, decay: jax.Array) -> PyTree:
    """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
