"""One small module over orbax's `CheckpointManager`: atomic saves, keep-last-k, run metadata.

A checkpoint directory `<workdir>/checkpoints/<step>/` holds two items:
  * `state`: the saved part of `TrainState` (step, params, opt_state, ema_params, rng);
  * `meta`:  JSON with the config, dataset fingerprint, package versions and whatever the stage
    adds at the end (latent scale factor, schedule, class names, ...), so that a run directory is
    self-describing and sampling needs nothing else.
Orbax writes into a temporary directory and renames it when complete, so a crash mid-save never
leaves a half-written checkpoint that `latest_step()` would pick up.

Orbax verifies its index, not the array bytes, so every save also stores a SHA-256 per saved
tree (over each leaf's path, dtype, shape and bytes) in the metadata, and every restore
recomputes it: a damaged or altered checkpoint is a `CheckpointError` naming the checkpoint and
the earlier ones, never silent garbage. Class names in the metadata are checked to be plain
names, since sampling joins them into output paths.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax_mri_ldm.engine.devices import sync_processes
from jax_mri_ldm.errors import CheckpointError, UserError, check_plain_name

PyTree = Any

CHECKSUM_KEY = "checksums"
# What the digests cover; stored with them so that a future change of the recipe is detectable.
CHECKSUM_RECIPE = "sha256(path, dtype, shape, C-order bytes) per leaf, leaves sorted by path"

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


def _key_name(key: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _host_array(x: Any) -> np.ndarray:
    """A leaf as a host numpy array (typed PRNG keys as their key data; multi-host safe)."""
    if isinstance(x, jax.Array):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if not x.is_fully_addressable:
            if x.sharding.is_fully_replicated:
                x = x.addressable_data(0)
            else:
                from jax.experimental import multihost_utils

                x = multihost_utils.process_allgather(x, tiled=True)
    return np.ascontiguousarray(np.asarray(x))


def tree_checksum(tree: PyTree) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, leaves sorted by path.

    Paths are written as plain key names, so a tree restored without a template (namedtuples
    come back as dicts) hashes like the tree that was saved.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    named = sorted(
        (("/".join(_key_name(k) for k in path), leaf) for path, leaf in leaves),
        key=lambda item: item[0],
    )
    digest = hashlib.sha256()
    for path, leaf in named:
        arr = _host_array(leaf)
        digest.update(f"{path}|{arr.dtype.name}|{arr.shape}|".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def tree_checksums(items: dict[str, PyTree]) -> dict[str, Any]:
    """The metadata entry stored with a checkpoint: one digest per saved tree."""
    return {
        "recipe": CHECKSUM_RECIPE,
        "trees": {name: tree_checksum(tree) for name, tree in items.items()},
    }


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def fallback_hint(directory: str, step: int, steps: list[int]) -> str:
    """How to fall back from checkpoint `step` to the newest earlier one (or that none exists)."""
    path = os.path.join(directory, str(step))
    earlier = sorted(s for s in steps if s < step)
    if not earlier:
        return "There is no earlier checkpoint: restore the run directory from a copy or retrain."
    return (
        f"Earlier checkpoints: steps {', '.join(map(str, earlier))}. To use step "
        f"{earlier[-1]}, move this one aside (mv {path} {path}.damaged) and rerun."
    )


def damaged_message(directory: str, step: int, steps: list[int], what: str) -> str:
    """Names the damaged checkpoint, what is wrong and the earlier checkpoints to fall back to."""
    path = os.path.join(directory, str(step))
    return f"checkpoint {path} is damaged: {what}. Nothing was written. " + fallback_hint(
        directory, step, steps
    )


def check_finite_samples(images: np.ndarray, workdir: str, step: int) -> None:
    """Raises CheckpointError if generated images hold NaN/Inf (broken weights), naming the
    checkpoint of `workdir` they came from and the earlier ones."""
    if np.all(np.isfinite(images)):
        return
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    checkpointer = Checkpointer(workdir)
    try:
        steps = checkpointer.all_steps()
    finally:
        checkpointer.close()
    raise CheckpointError(
        f"the images sampled from checkpoint {os.path.join(directory, str(step))} hold "
        "non-finite values (NaN/Inf): its weights are broken (a diverged training or a damaged "
        "file). Nothing was written. " + fallback_hint(directory, step, steps)
    )


def verify_items(
    items: dict[str, PyTree], meta: dict[str, Any], directory: str, step: int, steps: list[int]
) -> None:
    """Raises CheckpointError unless `items` match the checksums saved in `meta`.

    A checkpoint saved before checksums existed loads with a one-line warning.
    """
    saved = meta.get(CHECKSUM_KEY)
    if not isinstance(saved, dict) or not isinstance(saved.get("trees"), dict):
        _warn_once(
            f"checkpoint {os.path.join(directory, str(step))} has no content checksums (saved "
            "by an older version); its arrays are not verified."
        )
        return
    trees = saved["trees"]
    bad = [name for name, tree in sorted(items.items()) if trees.get(name) != tree_checksum(tree)]
    if bad:
        raise CheckpointError(
            damaged_message(
                directory,
                step,
                steps,
                f"the content of {', '.join(bad)} does not match the checksums saved with it "
                "(a disk, copy or edit error)",
            )
        )


def _closed_loop_callback(unraisable: Any) -> bool:
    """Whether `unraisable` is a callback from C that found its asyncio loop already closed."""
    exc = unraisable.exc_value
    closed = isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
    return unraisable.object is None and closed


def _drop_abandoned_read_callbacks() -> None:
    """Keeps a damaged read's late callbacks off stderr (installed once per process).

    orbax stops at the first unreadable chunk and closes its event loop while tensorstore still
    reads the step's other chunks on its own threads; as each finishes it hands its result to
    the closed loop, and Python prints "Exception ignored in: None ... RuntimeError: Event loop
    is closed" with a traceback, after the clear error. Only exactly those are dropped; every
    other unraisable exception reaches the hook that was in place.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable: Any) -> None:
        if not _closed_loop_callback(unraisable):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def check_meta(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """Validates the metadata fields that become paths (class names); returns `meta`."""
    names = meta.get("class_names")
    if names is None:
        return meta
    if not isinstance(names, list) or not names:
        raise UserError(f"class_names in {where} must be a non-empty list, not {names!r}.")
    for name in names:
        check_plain_name(name, "class name", where)
    if len(set(names)) != len(names):
        raise UserError(f"class_names {names} in {where} repeat a name; each must be unique.")
    return meta


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
        """Saves synchronously (returns once the checkpoint is committed on disk).

        The metadata gains the content checksums of `items` (see `tree_checksums`).
        """
        meta = {**meta, CHECKSUM_KEY: tree_checksums(items)}
        sync_processes("checkpoint")  # orbax's own barrier is a gloo collective (30 s rendezvous)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def _step(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        return int(step)

    def _where(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _restore_verified(self, step: int, state_args: Any) -> tuple[dict, dict]:
        # before the read: a late callback may come as soon as orbax has closed its loop
        _drop_abandoned_read_callbacks()
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore())
            )
        except Exception as e:
            # Undecodable chunks or index: tensorstore raises ValueError / OSError, and orbax
            # re-raises some read failures as a bare Exception; anything else is a bug.
            if not isinstance(e, (ValueError, OSError)) and type(e) is not Exception:
                raise
            reason = str(e).splitlines()[0][:300]
            # orbax's other read tasks for this step fail too; asyncio would later log each
            # ("Task exception was never retrieved", with a traceback) after the clear error.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            raise CheckpointError(
                damaged_message(
                    self.directory, step, self.all_steps(), f"orbax cannot read it ({reason})"
                )
            ) from e
        meta = check_meta(restored.meta, self._where(step))
        verify_items(restored.state, meta, self.directory, step, self.all_steps())
        return restored.state, meta

    def restore(self, items_like: dict[str, PyTree], step: int | None = None) -> tuple[dict, dict]:
        """Restores state items shaped/sharded like `items_like` and the metadata.

        Args:
          items_like: a pytree of arrays (or ShapeDtypeStructs with shardings) as template.
          step: which checkpoint; default the latest.

        Returns:
          (items, meta).

        Raises:
          CheckpointError: the arrays do not match their saved checksums, or the metadata holds
            unsafe class names.
        """
        step = self._step(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, items_like)
        return self._restore_verified(step, ocp.args.StandardRestore(abstract))

    def restore_meta(self, step: int | None = None) -> dict[str, Any]:
        """Only the JSON metadata of a checkpoint (cheap; no arrays read or verified)."""
        step = self._step(step)
        meta = self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        ).meta
        return check_meta(meta, self._where(step))

    def restore_raw(self, step: int | None = None) -> tuple[dict, dict]:
        """Restores state items as host numpy arrays without a template (for inference).

        Raises:
          CheckpointError: as `restore`.
        """
        return self._restore_verified(self._step(step), ocp.args.StandardRestore())

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
      UserError: the directory is missing, has no checkpoints, or no complete one.
    """
    if not os.path.isdir(workdir):
        raise UserError(
            f"--workdir={workdir} does not exist; train a model first (see README) or pass "
            "the directory of a finished training run."
        )
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(
            f"--workdir={workdir} holds no checkpoints; it is not a training run directory."
        )
    checkpointer = Checkpointer(workdir)
    try:
        if checkpointer.latest_step() is None:
            raise UserError(f"--workdir={workdir} holds no finished checkpoint yet.")
        return checkpointer.restore_meta(step)
    finally:
        checkpointer.close()
