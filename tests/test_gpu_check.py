"""bench/gpu_check.sh: the budget skips stages it cannot fit, the backend guard stops a run on
the wrong device, the log and packed artefacts come back either way, and old runs in the work
folder are refused (they would be resumed)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from conftest import REPO, env_for_subprocess

SCRIPT = REPO / "bench" / "gpu_check.sh"
STAGES = ("vae", "ldm", "sample_default", "sample_ddpm", "bench", "report")


def _run(tmp_path: Path, budget: int, backend: str) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    env = env_for_subprocess(
        JAX_PLATFORMS="cpu",  # the guard below must see the CPU, also on a GPU machine
        GPU_CHECK_BACKEND=backend,
        WORK=str(tmp_path / "work"),
        PYTHON=sys.executable,
    )
    data = tmp_path / "no_such_data"  # never read: no stage runs in these tests
    args = ["bash", str(SCRIPT), str(data), str(data), str(out), str(budget)]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, (out / "gpu_check.log").read_text(), out / "gpu_check.tgz"


def test_spent_budget_skips_every_stage_and_still_packs(tmp_path):
    rc, log, tgz = _run(tmp_path, budget=1, backend="cpu")
    assert rc == 0, log
    assert "backend cpu" in log  # the import check ran and printed the versions
    for name in STAGES:
        assert f"=== {name} skipped" in log
    assert "=== packed" in log
    with tarfile.open(tgz) as t:
        assert any(n.endswith("gpu_util.csv") for n in t.getnames())


def test_wrong_backend_stops_before_any_stage(tmp_path):
    rc, log, tgz = _run(tmp_path, budget=600, backend="gpu")
    assert rc == 1
    assert "backend is not gpu: stopping" in log
    assert not any(f"=== {name}" in log for name in STAGES)
    assert tgz.exists()


def test_refuses_a_work_folder_with_old_runs(tmp_path):
    (tmp_path / "work" / "vae").mkdir(parents=True)  # a previous check's run would be resumed
    env = env_for_subprocess(WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    args = ["bash", str(SCRIPT), "d", "e", str(tmp_path / "out"), "60"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "is not empty" in proc.stderr
    assert not (tmp_path / "out").exists()
