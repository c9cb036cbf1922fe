"""Devices and processes: multi-host start, the data mesh, batch sharding, host transfer.

Training code places batches and states through these; nothing here knows a model or a loss.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jax_mri_ldm.errors import UserError

Batch = dict[str, Any]
PyTree = Any

# How long a process waits at `sync_processes` for the others (host work such as a figure or an
# evaluation on a busy machine can take minutes; a process that crashed is found long before).
SYNC_TIMEOUT_S = 1800
_sync_counter = itertools.count()


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """Multi-host entry: calls `jax.distributed.initialize` when asked to.

    With no arguments nothing happens (single process). On a cluster that JAX can auto-detect
    (TPU pods, SLURM), pass `coordinator_address="auto"`.
    """
    if not coordinator_address:
        return
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        # CPU-only processes need a collectives backend for cross-process all-reduces.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )


def make_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh named `data` over every device of every process."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(global_batch_size: int, option: str = "config.train.batch_size") -> None:
    """Raises a clear error unless the global batch divides over devices and processes."""
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if global_batch_size <= 0 or global_batch_size % n_dev or global_batch_size % n_proc:
        raise UserError(
            f"{option}={global_batch_size} must be a positive multiple of the number of devices "
            f"({n_dev}) and processes ({n_proc}); e.g. use "
            f"{max(n_dev, n_proc) * max(1, round(global_batch_size / max(n_dev, n_proc)))}."
        )


def shard_batch(batch: Batch, mesh: jax.sharding.Mesh, global_batch_size: int) -> dict:
    """Assembles each process's host batch into global arrays sharded on `data`."""
    sharding = NamedSharding(mesh, P("data"))
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        global_shape = (global_batch_size,) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


def sync_processes(name: str) -> None:
    """Waits until every process reaches this point; a no-op for a single process.

    A barrier of the coordination service, with a long timeout. XLA:CPU's gloo collectives give
    a peer only 30 s to reach a collective's rendezvous, and processes drift apart on host work
    (compiling on a busy CPU, process 0 drawing figures), so they meet here before collectives
    that may follow such work. Every process must call it in the same order.
    """
    if jax.process_count() == 1:
        return
    import orbax.checkpoint as ocp  # its barrier wraps the distributed client's

    key = f"jax_mri_ldm.{name}.{next(_sync_counter)}"
    ocp.multihost.get_barrier_sync_fn()(key=key, timeout_ms=SYNC_TIMEOUT_S * 1000)


def replicate(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    """Places every leaf fully replicated on the mesh (a collective across processes)."""
    sync_processes("replicate")
    return jax.device_put(tree, NamedSharding(mesh, P()))


def unreplicate_to_host(tree: PyTree) -> PyTree:
    """Fetches a replicated pytree as host numpy arrays."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
