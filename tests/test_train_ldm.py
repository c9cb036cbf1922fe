"""Stage 2 end to end on the tiny preset: self-describing run, resume, errors, multi-device."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, env_for_subprocess, tiny_ldm_config
from jax_mri_ldm import pipeline, train_ldm
from jax_mri_ldm.engine.logging import read_metrics


def test_tiny_ldm_run_is_self_describing(tiny_runs):
    ldm_dir = tiny_runs["ldm_dir"]
    meta = json.loads((ldm_dir / "run.json").read_text())
    assert meta["final"] and meta["stage"] == "ldm"
    assert meta["class_names"] == ["normal", "tumour"] and meta["null_label"] == 2
    assert meta["schedule"]["kind"] == "cosine" and meta["schedule"]["num_timesteps"] == 100
    vae_meta = json.loads((tiny_runs["vae_dir"] / "run.json").read_text())
    assert meta["latent_scale_factor"] == pytest.approx(vae_meta["latent_scale_factor"])
    # Per-channel standardisation: shift/scale reproduce the cached latents' moments.
    assert meta["latent_normalize"] == "channel"
    shift, scale = np.asarray(meta["latent_shift"]), np.asarray(meta["latent_channel_scale"])
    assert shift.shape == scale.shape == (8,) and np.all(scale > 0)
    with np.load(next(ldm_dir.glob("latents_*.npz"))) as f:
        m, lv = f["mean"], f["logvar"]
    z = ((m - shift) * scale).reshape(-1, 8)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    var = z.var(0) + (np.exp(lv) * scale**2).reshape(-1, 8).mean(0)  # + posterior spread
    np.testing.assert_allclose(var, 1.0, rtol=1e-3)
    lo, hi = (np.asarray(b) for b in meta["x0_clip"])  # sampler's per-channel x0 bounds
    zm = ((m - shift) * scale).reshape(-1, 8)  # the bounds are percentiles of the means
    assert lo.shape == hi.shape == (8,)
    np.testing.assert_allclose(lo, np.percentile(zm, 0.5, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hi, np.percentile(zm, 99.5, axis=0), rtol=1e-5, atol=1e-6)
    val = read_metrics(str(ldm_dir), "val")
    assert val and all(abs(r["sample_latent_std"]) < 2 * max(-lo.min(), hi.max()) for r in val)
    assert (ldm_dir / "vae_params.msgpack").exists()
    assert list(ldm_dir.glob("latents_*.npz"))
    figures = {p.name for p in (ldm_dir / "figures").iterdir()}
    assert "ldm_loss_curve.png" in figures
    assert any(n.startswith("ldm_samples_epoch") for n in figures)
    train = read_metrics(str(ldm_dir), "train")
    assert all(np.isfinite(r["loss"]) for r in train)


def test_loaded_ldm_has_everything_to_sample(tiny_runs):
    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    assert run.final and run.class_names == ("normal", "tumour")
    assert run.latent_shape == (4, 4, 8) and run.schedule.num_timesteps == 100
    state = tiny_runs["ldm_result"].state
    for a, b in zip(
        jax.tree.leaves(run.ema_params), jax.tree.leaves(state.ema_params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    z = np.zeros((2, 4, 4, 8), np.float32)
    images = run.decode(z)
    assert images.shape == (2, 32, 32, 1) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(run.latent_shift, np.asarray(run.meta["latent_shift"], "f4"))
    assert run.latent_scale_factor == run.meta["latent_scale_factor"]


def test_tampered_vae_copy_is_detected(tiny_runs, tmp_path):
    import shutil

    copy = tmp_path / "ldm"
    shutil.copytree(tiny_runs["ldm_dir"], copy)
    blob = bytearray((copy / "vae_params.msgpack").read_bytes())
    blob[-1] ^= 0xFF
    (copy / "vae_params.msgpack").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        pipeline.load_ldm(str(copy))


def test_missing_or_wrong_vae_workdir(tiny_runs, tmp_path):
    cfg = tiny_ldm_config(tmp_path / "nothing_here")
    with pytest.raises(ValueError, match="no VAE run"):
        train_ldm.train_and_evaluate(cfg, str(tmp_path / "ldm"))
    cfg = tiny_ldm_config(tiny_runs["ldm_dir"])  # an LDM run is not a VAE run
    with pytest.raises(ValueError, match="not a VAE"):
        train_ldm.train_and_evaluate(cfg, str(tmp_path / "ldm2"))


def test_ldm_resume_equals_straight(tiny_runs, tmp_path):
    """k steps, then k more after a restart == 2k straight (same data order and RNG)."""
    k = 3

    def cfg(steps):
        c = tiny_ldm_config(tiny_runs["vae_dir"])
        c.train.num_steps = steps
        c.train.eval_every_epochs = 1000
        c.train.checkpoint_every_epochs = 1000
        c.train.eval_at_end = False
        c.train.tensorboard = False
        return c

    straight = train_ldm.train_and_evaluate(cfg(2 * k), str(tmp_path / "a"))
    train_ldm.train_and_evaluate(cfg(k), str(tmp_path / "b"))
    resumed = train_ldm.train_and_evaluate(cfg(2 * k), str(tmp_path / "b"))
    assert int(resumed.state.step) == 2 * k
    for a, b in zip(
        jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_cli_missing_vae_workdir_exits_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config=configs/ldm.py:tiny",
            f"--config.vae_workdir={tmp_path / 'absent'}",
            f"--workdir={tmp_path / 'ldm'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_for_subprocess(),
        timeout=300,
    )
    assert proc.returncode == 2
    assert "no VAE run" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "override",
    [
        {"tensorboard": False},
        {"eval_sampler": "dpmpp_2m", "eval_sample_steps": 3, "eval_guidance_scale": 1.0},
        {"eval_eta": 0.0, "progress_bar": True, "log_every_steps": 7},
    ],
)
def test_rerunning_a_finished_run_with_harmless_changes_exits_0(tiny_runs, override):
    """Logging and grid-sampler settings may change on a finished run: nothing is retrained."""
    from jax_mri_ldm.cli import run_training
    from jax_mri_ldm.engine.checkpoint import Checkpointer

    ldm_dir = tiny_runs["ldm_dir"]
    metrics_before = (ldm_dir / "metrics.jsonl").read_text()
    cfg = tiny_ldm_config(tiny_runs["vae_dir"])
    for key, value in override.items():
        cfg.train[key] = value
    assert run_training(cfg, str(ldm_dir)) == 0
    assert (ldm_dir / "metrics.jsonl").read_text() == metrics_before  # no step, no evaluation
    ckpt = Checkpointer(str(ldm_dir))
    try:
        assert ckpt.latest_step() == tiny_runs["ldm_result"].final_meta["steps_per_epoch"] * 4
    finally:
        ckpt.close()


def test_rerunning_with_a_wider_model_is_refused(tiny_runs, capsys):
    from jax_mri_ldm.cli import run_training

    cfg = tiny_ldm_config(tiny_runs["vae_dir"])
    cfg.model.channels = (32, 64)
    assert run_training(cfg, str(tiny_runs["ldm_dir"])) == 2
    err = capsys.readouterr().err
    assert "model.channels: checkpoint=(16, 32) now=(32, 64)" in err


def test_the_convergence_floor_scales_with_the_training_set() -> None:
    # A 202-image set is short below ~1.6k updates; a large set keeps the published 9k floor.
    assert train_ldm.min_updates_for(202) == 8 * 202
    assert train_ldm.min_updates_for(480) == 8 * 480
    assert train_ldm.min_updates_for(100_000) == train_ldm.MIN_UPDATES
    assert train_ldm.min_updates_for(10) < train_ldm.min_updates_for(1000)
