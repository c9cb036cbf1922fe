"""Data parallel stage 2 and sharded sampling: 8 forced host devices reproduce one device.

Each configuration runs in its own subprocess, because the device count is fixed when JAX
starts (``XLA_FLAGS=--xla_force_host_platform_device_count=8``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, env_for_subprocess, merge_xla_flags

SCRIPT = r"""
import json, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import jax
import numpy as np
from pathlib import Path
from conftest import tiny_ldm_config
from jax_mri_ldm import train_ldm
from jax_mri_ldm.engine.logging import read_metrics
from jax_mri_ldm.export import SampleRequest, run_sampling
from jax_mri_ldm.sampler_settings import SamplerSpec

root = Path({root!r})
# Stage 2 for a few steps on every device (global batch 8 = 1 row per device with 8 devices).
cfg = tiny_ldm_config(Path({vae_dir!r}))
cfg.train.batch_size = 8
cfg.train.num_steps = 4
cfg.train.log_every_steps = 1
cfg.train.eval_every_epochs = 1000
cfg.train.checkpoint_every_epochs = 1000
cfg.train.eval_at_end = False
cfg.train.tensorboard = False
res = train_ldm.train_and_evaluate(cfg, str(root / "ldm"))
losses = [r["loss"] for r in read_metrics(str(root / "ldm"), "train")]
total = float(sum(abs(x).sum() for x in jax.tree.leaves(res.state.params)))
# Sampling from the finished tiny run, batch sharded over the devices.
summary = run_sampling(SampleRequest(
    workdir={ldm_dir!r}, label="all", num_samples=8, batch_size=8,
    spec=SamplerSpec("ddim", steps=5), seed=3, out=str(root / "syn"), format="npy", progress=False))
print(json.dumps({{"devices": jax.device_count(), "losses": losses, "param_sum": total,
                  "num_images": summary["num_images"]}}))
"""


def _run(n: int, root, tiny_runs) -> dict:
    script = SCRIPT.format(
        repo=str(REPO),
        tests=str(REPO / "tests"),
        root=str(root),
        vae_dir=str(tiny_runs["vae_dir"]),
        ldm_dir=str(tiny_runs["ldm_dir"]),
    )
    env = env_for_subprocess(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    files = sorted((root / "syn").rglob("*.npy"))
    out["images"] = np.stack([np.load(p) for p in files])
    out["files"] = [str(p.relative_to(root / "syn")) for p in files]
    return out


@pytest.mark.slow
def test_ldm_training_and_sampling_on_eight_devices_equal_one(tiny_runs, tmp_path):
    one = _run(1, tmp_path / "one", tiny_runs)
    eight = _run(8, tmp_path / "eight", tiny_runs)
    assert one["devices"] == 1 and eight["devices"] == 8
    assert len(one["losses"]) == 4
    np.testing.assert_allclose(one["losses"], eight["losses"], rtol=2e-4)
    assert one["param_sum"] == pytest.approx(eight["param_sum"], rel=1e-4)
    # Same seed and batch: the sharded sampler writes the same files with the same pixels.
    assert one["num_images"] == eight["num_images"] == 8
    assert one["files"] == eight["files"]
    assert one["images"].shape[0] == 8
    np.testing.assert_allclose(one["images"], eight["images"], atol=2e-4)


def test_subprocess_flags_add_to_the_suites_and_replace_what_they_name(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_a=1")
    env = env_for_subprocess(XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_a=2")
    assert env["XLA_FLAGS"].split() == [
        "--xla_backend_optimization_level=0",
        "--xla_force_host_platform_device_count=8",
        "--xla_a=2",
    ]
    assert merge_xla_flags("", "--xla_b") == "--xla_b"
    assert (
        env_for_subprocess(FOO="1")["XLA_FLAGS"] == "--xla_backend_optimization_level=0 --xla_a=1"
    )
