"""The one training loop: mesh, sharding, the jitted step, checkpoints, evaluation hooks.

Both stages call `run(config, workdir, task)`; a stage supplies a `Task` (how to initialise
parameters, its pure loss, how to fetch the batch of a step, and host-side evaluation and
finalisation hooks). Everything else — the optimiser, EMA, data parallelism over all devices,
resumption, Ctrl-C handling, non-finite checks and logging — lives here once.

Determinism contract: the batch of step `s` is `task.get_batch(s)` (a pure function of the data
seed and `s`), and the step's randomness is `fold_in(state.rng, s)` inside the jitted step, so a
run resumed from a checkpoint at step k reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jax_mri_ldm import atomic
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.engine.devices import (
    check_batch_size,
    initialize_distributed,
    make_mesh,
    replicate,
    shard_batch,
    sync_processes,
    unreplicate_to_host,
)
from jax_mri_ldm.engine.interrupt import InterruptFlag
from jax_mri_ldm.engine.state import (
    TrainState,
    ema_decay_at,
    ema_update,
    make_lr_schedule,
    make_optimizer,
)
from jax_mri_ldm.errors import UserError

PyTree = Any
Batch = dict[str, np.ndarray]
LossFn = Callable[[PyTree, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]

# What may change when a run is resumed, by section: settings that change what is logged,
# shown, evaluated or kept, or how long the run goes on, never what a trained step computed.
# Everything else (model, data, optimiser, diffusion schedule, seed, batch size) must match
# the checkpoint. Patterns are `fnmatch` patterns over flattened config keys.
RESUMABLE_SETTINGS: dict[str, tuple[str, ...]] = {
    "logging": ("train.log_every_steps", "train.progress_bar", "train.tensorboard"),
    "evaluation and sample grids": ("train.eval_*",),
    "checkpoints": ("train.checkpoint_every_epochs", "train.keep_checkpoints"),
    "run length": ("train.num_epochs", "train.num_steps", "train.builtin_min_steps"),
    "locations": ("data.cache_dir", "vae_workdir"),
    "split rules": ("data.split.near_duplicate_threshold",),  # a saved split.json is reused
    "decoder equaliser": ("model.equaliser", "decoder.*"),  # fitted, judged after the last update
}

# Settings added to the configs after runs were trained with them absent, and the value their
# absence means (what the code does for an older config: diffusion.schedule_from_config and
# diffusion.loss_options). A checkpoint without the key resumes when the current value is this.
ABSENT_MEANS: dict[str, Any] = {
    "diffusion.zero_terminal_snr": False,
    "diffusion.min_snr_gamma": 5.0,
    "data.classes": "binary",
    "data.builtin.types": False,
    "model.upsample": "transpose",
    "model.inference_params": "params",
    "loss.spectral_weight": 0.0,
    "optim.decay_fraction": 0.1,  # read only by the wsd schedule, which such a run never had
    # an older run had no extra images (path '', no generated slices); the rest is then moot
    **{f"extra_train.{k}": "" for k in ("path", "folders", "class_map", "folder_quantiles")},
    **{"extra_train.domain_quantile": 0.1, "extra_train.builtin_per_class": 0},
}


def is_resumable_setting(key: str) -> bool:
    """Whether the flattened config key `key` may differ from the checkpoint's on resume."""
    patterns = [p for group in RESUMABLE_SETTINGS.values() for p in group]
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


@dataclasses.dataclass
class Task:
    """What a training stage plugs into the engine.

    Attributes:
      name: stage name, used in logs ("vae", "ldm").
      init_params: rng -> parameter pytree.
      loss_fn: pure, jittable (params, batch, rng) -> (scalar loss, metrics dict of scalars).
      get_batch: (step, process_index, process_count) -> this process's share of the global
        batch of that step, as a dict of host numpy arrays with leading batch axis.
      global_batch_size: examples per step over all processes and devices.
      steps_per_epoch: optimiser steps in one epoch.
      evaluate: optional host hook (state, workdir) -> metrics logged under split "val".
      finalize: optional host hook (state, workdir) -> extra metadata stored with the final
        checkpoint (e.g. the VAE's latent scale factor).
      metadata: static run metadata stored with every checkpoint (dataset fingerprint, ...).
      min_updates: updates below which the end of the run warns that it is far from converged.
    """

    name: str
    init_params: Callable[[jax.Array], PyTree]
    loss_fn: LossFn
    get_batch: Callable[[int, int, int], Batch]
    global_batch_size: int
    steps_per_epoch: int
    evaluate: Callable[[TrainState, str], dict[str, Any]] | None = None
    finalize: Callable[[TrainState, str], dict[str, Any]] | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    min_updates: int = 0


@dataclasses.dataclass
class RunResult:
    """What `run` returns."""

    state: TrainState
    interrupted: bool
    final_meta: dict[str, Any]


class NonFiniteLossError(FloatingPointError):
    """Raised when a step produces a NaN/Inf loss; the last good checkpoint is left intact."""


# ----------------------------------------------------------------------------- the step


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    loss_fn: LossFn,
    ema_decay: float,
    ema_warmup: bool,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser update plus the EMA update, as a pure function.

    Args:
      state: current train state (donated by the caller's jit).
      batch: the global batch, sharded over the mesh's `data` axis.
      rng: the run's base key; this step uses `fold_in(rng, state.step)`.
      loss_fn: the stage's loss.
      ema_decay: EMA decay (e.g. 0.999).
      ema_warmup: use min(decay, (1+s)/(10+s)).

    Returns:
      (new state, metrics) where metrics hold the loss, gradient norm and the stage's metrics.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(lambda p: loss_fn(p, batch, step_rng), has_aux=True)
    (loss, metrics), grads = grad_fn(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay_at(state.step, ema_decay, ema_warmup)
    ema_params = ema_update(state.ema_params, params, decay)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
    )
    return new_state, metrics


# ----------------------------------------------------------------------------- config checks


def flatten_config(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
    """Flattens a (nested) config into {"a.b.c": value}, lists as tuples."""
    items = config.to_dict() if hasattr(config, "to_dict") else config
    flat: dict[str, Any] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-safe dict of the config (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def check_resume_compatible(
    saved: dict[str, Any], current: ml_collections.ConfigDict, workdir: str
):
    """Raises ValueError listing every setting that differs from the checkpoint's config."""
    a = flatten_config(saved)
    b = flatten_config(config_to_json(current))
    for key, value in ABSENT_MEANS.items():
        if key in b and key not in a:  # a checkpoint from before the setting existed
            a[key] = value
    diffs = []
    for key in sorted(set(a) | set(b)):
        if is_resumable_setting(key):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(
                f"  {key}: checkpoint={a.get(key, '<absent>')!r} now={b.get(key, '<absent>')!r}"
            )
    if diffs:
        raise UserError(
            f"cannot resume the run in --workdir={workdir}: its checkpoint was trained with a "
            "different config:\n" + "\n".join(diffs) + "\nUse a new --workdir, or drop the "
            "overrides that change these values."
        )


def ensure_writable_workdir(workdir: str) -> None:
    """Creates `workdir` or raises a clear error naming it.

    The probe file has a unique name: every process of a multi-host run checks the same
    workdir at once, and a shared name let one process delete another's probe.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test.") as f:
            f.write(b"ok")
    except OSError as e:
        raise UserError(
            f"--workdir={workdir} is not writable ({e.strerror}); choose a directory you can "
            "write to."
        ) from e


# ----------------------------------------------------------------------------- the loop


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """config.train.num_steps if positive, else num_epochs * steps_per_epoch."""
    if int(config.train.get("num_steps", 0)) > 0:
        return int(config.train.num_steps)
    return int(config.train.num_epochs) * steps_per_epoch


def check_same_dataset(saved_meta: dict[str, Any], fingerprint: str | None, workdir: str) -> None:
    """Refuses to resume a run whose checkpoint was trained on other data."""
    saved = saved_meta.get("dataset_fingerprint")
    if saved is not None and fingerprint is not None and saved != fingerprint:
        raise UserError(
            f"cannot resume the run in --workdir={workdir}: the dataset changed "
            f"(dataset_fingerprint {saved} -> {fingerprint}). Use a new --workdir."
        )


def check_dataset_unchanged(workdir: str, fingerprint: str) -> None:
    """Before anything is written: the same check against an existing run in `workdir`."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return
    checkpointer = ckpt_lib.Checkpointer(workdir)
    try:
        latest = checkpointer.latest_step()
        if latest is not None:
            check_same_dataset(checkpointer.restore_meta(latest), fingerprint, workdir)
    finally:
        checkpointer.close()


def run(config: ml_collections.ConfigDict, workdir: str, task: Task) -> RunResult:
    """Trains `task` to `total_steps`, resuming from `<workdir>/checkpoints` when present.

    Args:
      config: the stage config (train, optim sections are read here).
      workdir: run directory (checkpoints, metrics.jsonl, tb/, figures/).
      task: the stage.

    Returns:
      RunResult with the final state (params replicated on the mesh), whether the run was
      interrupted by Ctrl-C, and the final checkpoint's metadata.

    Raises:
      NonFiniteLossError: a step produced a NaN/Inf loss (no checkpoint is written for it).
      ValueError: bad batch size, unwritable workdir or a config that conflicts with the
        checkpoint being resumed.
    """
    ensure_writable_workdir(workdir)
    is_main = jax.process_index() == 0
    check_batch_size(task.global_batch_size)
    mesh = make_mesh()
    num_steps = total_steps(config, task.steps_per_epoch)
    state = _initial_state(config, task, make_optimizer(config.optim, num_steps), mesh)
    checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(config.train.keep_checkpoints))
    config_json = config_to_json(config)
    meta = _run_metadata(task, config_json)
    state, start_step, saved_meta = _restore_latest(
        checkpointer, state, config, workdir, task, meta, is_main
    )
    if saved_meta is not None and saved_meta.get("final") and start_step >= num_steps:
        if is_main:
            print(f"{task.name}: already complete at step {start_step}; nothing to train.")
        checkpointer.close()
        return RunResult(state=state, interrupted=False, final_meta=saved_meta)
    if is_main:
        atomic.write_json(os.path.join(workdir, "config.json"), config_json)
        log_lib.truncate_metrics(workdir, start_step)  # records past the checkpoint are redone
    lp = _start_loop(config, workdir, task, mesh, state, start_step, checkpointer, meta, num_steps)
    if _train(lp):
        return _stop_interrupted(lp)
    return _finish(lp, bool(config.train.get("eval_at_end", True)))


def _initial_state(
    config: ml_collections.ConfigDict,
    task: Task,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
) -> TrainState:
    """The freshly initialised state from `config.seed`, replicated on the mesh."""
    base_rng = jax.random.PRNGKey(int(config.seed))
    init_rng, state_rng = jax.random.split(base_rng)
    params = jax.jit(task.init_params)(init_rng)
    state = TrainState.create(params, tx, state_rng)
    return replicate(state, mesh)


def _run_metadata(task: Task, config_json: dict[str, Any]) -> dict[str, Any]:
    """The metadata stored with every checkpoint of this run."""
    return {
        "stage": task.name,
        "config": config_json,
        "versions": ckpt_lib.package_versions(),
        "steps_per_epoch": task.steps_per_epoch,
        "global_batch_size": task.global_batch_size,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        **task.metadata,
    }


def _restore_latest(
    checkpointer: ckpt_lib.Checkpointer,
    state: TrainState,
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task,
    meta: dict[str, Any],
    is_main: bool,
) -> tuple[TrainState, int, dict[str, Any] | None]:
    """Restores the latest checkpoint, if any, once it is known to belong to this run.

    Returns (state, its step, the checkpoint's metadata), or (state, 0, None) without one.
    """
    latest = checkpointer.latest_step()
    if latest is None:
        return state, 0, None
    saved_meta = checkpointer.restore_meta(latest)
    if saved_meta.get("stage") != task.name:
        raise UserError(
            f"--workdir={workdir} holds a {saved_meta.get('stage')!r} run, not {task.name!r}; "
            "use another --workdir."
        )
    check_resume_compatible(saved_meta["config"], config, workdir)
    check_same_dataset(saved_meta, meta.get("dataset_fingerprint"), workdir)
    items, saved_meta = checkpointer.restore(state.checkpoint_items(), latest)
    state = state.replace_items(items)
    start_step = int(jax.device_get(state.step))
    if is_main:
        print(f"Resuming {task.name} from step {start_step} ({checkpointer.directory}).")
    return state, start_step, saved_meta


@dataclasses.dataclass
class _Window:
    """The per-step metrics since the last log record, and the time their steps took."""

    records: list[dict[str, float]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # time spent in training steps only (not evaluation / checkpoints)

    def add(self, metrics: dict[str, Any], seconds: float) -> None:
        self.seconds += seconds
        self.records.append({k: float(v) for k, v in metrics.items()})

    def summary(self, global_batch_size: int) -> dict[str, float]:
        """Mean of each metric, and the training throughput, over the window."""
        summary = {k: float(np.mean([w[k] for w in self.records])) for k in self.records[0]}
        summary["images_per_sec"] = len(self.records) * global_batch_size / max(self.seconds, 1e-9)
        return summary


@dataclasses.dataclass
class _Loop:
    """What the training loop of one `run` carries from step to step."""

    task: Task
    workdir: str
    mesh: jax.sharding.Mesh
    step_fn: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    run_rng: jax.Array
    checkpointer: ckpt_lib.Checkpointer
    writer: log_lib.MetricWriter
    bar: Any
    meta: dict[str, Any]
    lr_schedule: optax.Schedule
    num_steps: int
    log_every: int
    eval_every: int
    ckpt_every: int
    is_main: bool
    state: TrainState
    step: int
    window: _Window = dataclasses.field(default_factory=_Window)


def _jit_step(config: ml_collections.ConfigDict, task: Task) -> Callable:
    """`train_step` for the stage's loss, jitted with the state donated."""
    return jax.jit(
        functools.partial(
            train_step,
            loss_fn=task.loss_fn,
            ema_decay=float(config.optim.ema_decay),
            ema_warmup=bool(config.optim.ema_warmup),
        ),
        donate_argnums=(0,),
    )


def _start_loop(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task,
    mesh: jax.sharding.Mesh,
    state: TrainState,
    start_step: int,
    checkpointer: ckpt_lib.Checkpointer,
    meta: dict[str, Any],
    num_steps: int,
) -> _Loop:
    """The loop's writer, jitted step, cadences and progress bar, starting at `start_step`."""
    is_main = jax.process_index() == 0
    writer = log_lib.MetricWriter(
        workdir, enabled=is_main, tensorboard=bool(config.train.tensorboard)
    )
    step_fn = _jit_step(config, task)
    steps_per_epoch = task.steps_per_epoch
    bar = log_lib.progress_bar(
        num_steps, start_step, task.name, enabled=is_main and bool(config.train.progress_bar)
    )
    return _Loop(
        task=task,
        workdir=workdir,
        mesh=mesh,
        step_fn=step_fn,
        # A separate buffer: `state` (holding its own copy of the key) is donated to each step.
        run_rng=jnp.array(jax.device_get(state.rng)),
        checkpointer=checkpointer,
        writer=writer,
        bar=bar,
        meta=meta,
        lr_schedule=make_lr_schedule(config.optim, num_steps),
        num_steps=num_steps,
        log_every=max(1, int(config.train.log_every_steps)),
        eval_every=max(1, int(config.train.eval_every_epochs)) * steps_per_epoch,
        ckpt_every=max(1, int(config.train.checkpoint_every_epochs)) * steps_per_epoch,
        is_main=is_main,
        state=state,
        step=start_step,
    )


def _train(lp: _Loop) -> bool:
    """Runs steps until the last one or a Ctrl-C; returns whether Ctrl-C stopped it."""
    try:
        with InterruptFlag() as flag:
            while lp.step < lp.num_steps:
                _one_step(lp)
                if lp.step % lp.log_every == 0 or lp.step == lp.num_steps:
                    _log_window(lp)
                if lp.step == lp.num_steps:
                    break
                if flag.requested:
                    return True
                _between_steps(lp)
    finally:
        lp.bar.close()
    return False


def _one_step(lp: _Loop) -> None:
    """Fetches, shards and trains on the batch of `lp.step`, then advances the step."""
    t_step = time.perf_counter()
    host_batch = lp.task.get_batch(lp.step, jax.process_index(), jax.process_count())
    batch = shard_batch(host_batch, lp.mesh, lp.task.global_batch_size)
    lp.state, metrics = lp.step_fn(lp.state, batch, lp.run_rng)
    metrics = jax.device_get(metrics)  # one small host sync per step
    _check_finite(lp, float(metrics["loss"]))
    lp.step += 1
    lp.window.add(metrics, time.perf_counter() - t_step)
    lp.bar.update(1)


def _check_finite(lp: _Loop, loss: float) -> None:
    """Raises NonFiniteLossError, naming the last good checkpoint, for a NaN/Inf loss."""
    if math.isfinite(loss):
        return
    last = lp.checkpointer.latest_step()
    raise NonFiniteLossError(
        f"{lp.task.name}: non-finite loss ({loss}) at step {lp.step} (epoch "
        f"{lp.step // lp.task.steps_per_epoch + 1}); nothing was saved for it. The last good "
        f"checkpoint is step {last} in {lp.checkpointer.directory}. Try a lower "
        "config.optim.learning_rate or set config.optim.grad_clip_norm."
    )


def _log_window(lp: _Loop) -> None:
    """Writes the window's mean metrics as one train record and starts a new window."""
    steps_per_epoch = lp.task.steps_per_epoch
    summary = lp.window.summary(lp.task.global_batch_size)
    summary["epoch"] = lp.step / steps_per_epoch
    summary["learning_rate"] = float(lp.lr_schedule(lp.step - 1))
    lp.writer.write(lp.step, "train", summary)
    lp.bar.set_postfix(
        epoch=f"{math.ceil(lp.step / steps_per_epoch)}",
        loss=f"{summary['loss']:.4f}",
        img_s=f"{summary['images_per_sec']:.1f}",
    )
    lp.window = _Window()


def _between_steps(lp: _Loop) -> None:
    """The evaluation and checkpoint due after `lp.step`, if any."""
    if lp.task.evaluate is not None and lp.step % lp.eval_every == 0:
        lp.writer.write(lp.step, "val", lp.task.evaluate(lp.state, lp.workdir))
        sync_processes("evaluated")  # process 0 drew figures; meet before the next step
    if lp.step % lp.ckpt_every == 0:
        lp.checkpointer.save(lp.step, lp.state.checkpoint_items(), {**lp.meta, "final": False})


def _stop_interrupted(lp: _Loop) -> RunResult:
    """After Ctrl-C: saves a resumable checkpoint of the current step."""
    lp.checkpointer.save(lp.step, lp.state.checkpoint_items(), {**lp.meta, "final": False})
    if lp.is_main:
        print(
            f"Saved step {lp.step} to {lp.checkpointer.directory}; rerun the same command to "
            "resume."
        )
    lp.writer.close()
    lp.checkpointer.close()
    return RunResult(state=lp.state, interrupted=True, final_meta=lp.meta)


def _finish(lp: _Loop, eval_at_end: bool) -> RunResult:
    """The last evaluation, the final checkpoint (replacing one of the same step) and run.json."""
    if lp.task.evaluate is not None and eval_at_end:
        lp.writer.write(lp.step, "val", lp.task.evaluate(lp.state, lp.workdir))
    final_meta = {**lp.meta, "final": True}
    if lp.task.finalize is not None:
        final_meta.update(lp.task.finalize(lp.state, lp.workdir))
    if lp.checkpointer.latest_step() == lp.step:
        lp.checkpointer.delete(lp.step)
    lp.checkpointer.save(lp.step, lp.state.checkpoint_items(), final_meta)
    if lp.is_main:
        atomic.write_json(os.path.join(lp.workdir, "run.json"), final_meta)
        _warn_if_far_from_converged(lp.task, lp.workdir, lp.step)
    lp.writer.close()
    lp.checkpointer.close()
    return RunResult(state=lp.state, interrupted=False, final_meta=final_meta)


def _warn_if_far_from_converged(task: Task, workdir: str, num_updates: int) -> None:
    """Prints `log_lib.convergence_warning` for the finished run to stderr, if any."""
    losses = [r["loss"] for r in log_lib.read_metrics(workdir, "train") if "loss" in r]
    text = log_lib.convergence_warning(
        losses, num_updates, min_updates=task.min_updates, name=task.name.upper()
    )
    if text:
        print(text, file=sys.stderr, flush=True)


__all__ = [
    "NonFiniteLossError",
    "RunResult",
    "Task",
    "check_batch_size",
    "initialize_distributed",
    "make_mesh",
    "replicate",
    "run",
    "shard_batch",
    "train_step",
    "unreplicate_to_host",
]
