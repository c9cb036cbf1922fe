"""One small module over orbax's `CheckpointManager`: atomic saves, keep-last-k, run metadata.

A checkpoint directory `<workdir>/checkpoints/<step>/` holds two items:
  * `state`: the saved part of `TrainState` (step, params, opt_state, ema_params, rng);
  * `meta`:  JSON with the config, dataset fingerprint, package versions and whatever the stage
    adds at the end (latent scale factor, schedule, class names, ...), so that a run directory is
    self-describing and sampling needs nothing else.
Orbax writes into a temporary directory and renames it when complete, so a crash mid-save never
leaves a half-written checkpoint that `latest_step()` would pick up.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any

_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide numerics and checkpoint format."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class Checkpointer:
    """Saves and restores `(state items, metadata)` pairs under `<workdir>/checkpoints`.

    Args:
      workdir: the run directory.
      keep: number of most recent checkpoints kept on disk.
    """

    def __init__(self, workdir: str, keep: int = 3):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        """Step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, items: dict[str, PyTree], meta: dict[str, Any]) -> None:
        """Saves synchronously (returns once the checkpoint is committed on disk)."""
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore(self, items_like: dict[str, PyTree], step: int | None = None) -> tuple[dict, dict]:
        """Restores state items shaped/sharded like `items_like` and the metadata.

        Args:
          items_like: a pytree of arrays (or ShapeDtypeStructs with shardings) as template.
          step: which checkpoint; default the latest.

        Returns:
          (items, meta).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, items_like)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

    def restore_meta(self, step: int | None = None) -> dict[str, Any]:
        """Only the JSON metadata of a checkpoint (cheap; no arrays read)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        return self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        ).meta

    def restore_raw(self, step: int | None = None) -> tuple[dict, dict]:
        """Restores state items as host numpy arrays without a template (for inference)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
        return restored.state, restored.meta

    def delete(self, step: int) -> None:
        """Removes one checkpoint (used to replace a step's checkpoint by the final one)."""
        self._manager.delete(int(step))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def read_run_meta(workdir: str, step: int | None = None) -> dict[str, Any]:
    """Metadata of a run directory's checkpoint, with clear errors for what is not a run.

    Args:
      workdir: a run directory (what train.py wrote).
      step: checkpoint step; default the latest.

    Returns:
      The checkpoint's metadata (config, stage, ...).

    Raises:
      ValueError: the directory is missing, has no checkpoints, or no complete one.
    """
    if not os.path.isdir(workdir):
        raise ValueError(
            f"--workdir={workdir} does not exist; train a model first (see README) or pass "
            "the directory of a finished training run."
        )
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ValueError(
            f"--workdir={workdir} holds no checkpoints; it is not a training run directory."
        )
    checkpointer = Checkpointer(workdir)
    try:
        if checkpointer.latest_step() is None:
            raise ValueError(f"--workdir={workdir} holds no finished checkpoint yet.")
        return checkpointer.restore_meta(step)
    finally:
        checkpointer.close()
