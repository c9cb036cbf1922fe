"""The controls on the real yes/no MRI set: real held-out images (validation split) rank above
every corruption under the metrics the report relies on (no trained generator needed)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import OPT_LEVEL_FLAG, REPO, SHARED_DATA, env_for_subprocess
from jax_mri_ldm.evaluation import control_study, controls, trust

JOB = REPO / "tests" / "real_controls_job.py"

# Metrics whose full control ordering is checked on real MRI (each against the controls it is
# responsible for, `trust.RULES`).
CHECKED = ("fid", "spectrum", "grid", "nn_ssim", "memorised", "memorised_relative")


def _study(name: str, tmp) -> dict:
    """`real_controls_job`'s study `name`, run at XLA's usual optimisation level."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    out = tmp / "controls.pkl"
    proc = subprocess.run(
        [sys.executable, str(JOB), name, str(tmp / "cache"), str(out)],
        capture_output=True,
        text=True,
        env=env_for_subprocess(XLA_FLAGS=f"{OPT_LEVEL_FLAG}=2"),
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pickle.loads(out.read_bytes())


@pytest.fixture(scope="module")
def real_controls(tmp_path_factory):
    return _study("held_out", tmp_path_factory.mktemp("held_out"))


@pytest.mark.slow
def test_real_held_out_ranks_above_every_control(real_controls):
    table = real_controls["table"]["metrics"]
    report = control_study.format_table(real_controls["table"])
    for name in CHECKED:
        rule = trust.RULES_BY_NAME[name]
        res = trust.check_metric(rule, table[name]["scores"])
        assert res["trustworthy"], (name, res["failures"], report)
    for rule in ("memorised", "memorised_relative"):
        mem = table[rule]["scores"]
        assert mem[controls.MEMORISED] == 1.0 and mem["real"] < 0.5, (rule, report)


@pytest.mark.slow
def test_chosen_feature_space_detects_every_corruption(real_controls):
    fs = real_controls["feature_space"]
    chosen = fs["candidates"][fs["chosen"]]
    assert chosen["missed"] == [], fs
    fids = chosen["fid"]
    assert all(np.isfinite(v) for v in fids.values())
    assert all(fids[c] > fids["real"] for c in controls.CORRUPTIONS if c in fids)


PRDC = ("precision", "recall", "density", "coverage")


@pytest.fixture(scope="module")
def real_controls_random(tmp_path_factory):
    """The report's PRDC rule at 256 px in the untrained space (cheap: no encoder training)."""
    return _study("prdc", tmp_path_factory.mktemp("prdc"))


@pytest.mark.slow
def test_prdc_against_the_training_split_ranks_every_control(real_controls_random):
    res = real_controls_random
    assert res["prdc_reference"]["split"] == "train" and res["prdc_reference"]["n"] > 100
    table = res["table"]["metrics"]
    report = control_study.format_table(res["table"])
    for name in PRDC:
        assert table[name]["trustworthy"], (name, table[name]["failures"], report)
    real = res["sets"]["real"]
    # Real held-out images sit inside the real manifold and cover it: the 0.5 bar for samples
    # is then a real bar.
    assert real["precision"] >= 0.8 and real["recall"] >= 0.8, report
