"""Multi-host data parallelism: 2 processes on localhost (gloo CPU collectives) train the tiny VAE
for a few steps and must agree with each other and with one process driving 2 devices."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, env_for_subprocess, tiny_vae_config
from jax_mri_ldm.data import load_imageset

SCRIPT = r"""
import json, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from jax_mri_ldm.engine import loop
pid, nproc, addr = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if nproc > 1:
    loop.initialize_distributed(addr, nproc, pid)
import time
import jax
jax.devices()  # the backends start (they wait for every process); then one falls behind:
time.sleep({late_s} if pid == nproc - 1 else 0)  # a late process, as on a busy machine
from pathlib import Path
from conftest import tiny_vae_config
from jax_mri_ldm import train_vae
root = Path({root!r})
cfg = tiny_vae_config(root)
cfg.train.batch_size = 4
cfg.train.num_steps = 3
cfg.train.eval_every_epochs = 1000
cfg.train.checkpoint_every_epochs = 1000
cfg.train.eval_at_end = False
cfg.train.tensorboard = False
res = train_vae.train_and_evaluate(cfg, str(root / "run"))
params = loop.unreplicate_to_host(res.state.params)
leaves = jax.tree.leaves(params)
print(json.dumps({{"pid": pid, "processes": jax.process_count(), "devices": jax.device_count(),
                   "sums": [float(abs(x).sum()) for x in leaves]}}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root, nproc: int, devices_per_process: int, late_s: float = 0.0):
    """Starts `nproc` processes training the tiny VAE under `root`; `_collect` waits for them."""
    # Build the data cache first, so neither process spends its start building it. (gloo gives
    # a peer 30 s at a collective's rendezvous; `devices.sync_processes` makes the processes meet
    # before the collectives that follow uneven host work, which a busy CI machine stretches.)
    load_imageset(tiny_vae_config(root).data)
    script = SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root), late_s=late_s)
    env = env_for_subprocess(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}"
    )
    addr = f"127.0.0.1:{_free_port()}"
    return [
        subprocess.Popen(
            [sys.executable, "-c", script, str(pid), str(nproc), addr],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for pid in range(nproc)
    ]


def _collect(procs: list[subprocess.Popen]) -> list[dict]:
    """Each process's JSON line, once all have exited 0 (else their stderr, in the failure)."""
    results = [p.communicate(timeout=600) for p in procs]
    failed = [
        f"process {pid} exited {p.returncode}:\n{err[:2000]}\n[...]\n{err[-2000:]}"
        for pid, (p, (_, err)) in enumerate(zip(procs, results, strict=True))
        if p.returncode != 0
    ]
    assert not failed, "\n\n".join(failed)
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in results]


@pytest.mark.slow
def test_two_processes_agree_with_each_other_and_with_one_process(tmp_path):
    # The last process starts its run 40 s late: past gloo's 30 s rendezvous, so the processes
    # must meet at the coordination service's barrier first (`devices.sync_processes`). The
    # one-process reference trains meanwhile, on the CPU the waiting processes leave idle.
    two = _start(tmp_path / "multi", nproc=2, devices_per_process=1, late_s=40.0)
    one = _start(tmp_path / "single", nproc=1, devices_per_process=2)
    (single,) = _collect(one)
    two = _collect(two)
    assert [o["processes"] for o in two] == [2, 2] and two[0]["devices"] == 2
    np.testing.assert_allclose(two[0]["sums"], two[1]["sums"], rtol=0, atol=0)
    assert single["processes"] == 1 and single["devices"] == 2
    np.testing.assert_allclose(two[0]["sums"], single["sums"], rtol=1e-5)
