"""Stage 1 end to end on the tiny preset, the CLI's error paths and multi-device equality."""

from __future__ import annotations

import json
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from conftest import REPO, env_for_subprocess, tiny_vae_config
from jax_mri_ldm import pipeline, train_vae
from jax_mri_ldm.engine.logging import read_metrics, training_seconds


def test_tiny_vae_run_is_complete(tiny_runs):
    vae_dir = tiny_runs["vae_dir"]
    meta = json.loads((vae_dir / "run.json").read_text())
    assert meta["final"] and meta["stage"] == "vae"
    assert 0.05 < meta["latent_std"] < 50 and meta["latent_scale_factor"] == pytest.approx(
        1 / meta["latent_std"]
    )
    assert meta["latent_shape"] == [4, 4, 8]  # 32 px / 8, 8 latent channels
    split = json.loads((vae_dir / "split.json").read_text())
    assert set(split["ids"]) == {"train", "val", "test"}
    ids = [i for k in ("train", "val", "test") for i in split["ids"][k]]
    assert len(ids) == len(set(ids)) == 24  # 12 + 12 tiny images, each in one split
    val = read_metrics(str(vae_dir), "val")
    assert val and all(np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 for r in val)
    assert read_metrics(str(vae_dir), "test")
    figures = {p.name for p in (vae_dir / "figures").iterdir()}
    assert "vae_loss_curve.png" in figures and "vae_recon_test.png" in figures
    assert any(name.startswith("vae_recon_step") for name in figures)
    train = read_metrics(str(vae_dir), "train")
    assert train[-1]["loss"] < train[0]["loss"]
    # One session for the whole run; the LDM trained after it in this process has its own,
    # so its time does not include the VAE's (pipeline minutes count each once).
    records = read_metrics(str(vae_dir))
    (session,) = {r["session"] for r in records}
    assert session <= min(r["time"] for r in records)
    ldm_sessions = {r["session"] for r in read_metrics(str(tiny_runs["ldm_dir"]))}
    assert min(ldm_sessions) >= max(r["time"] for r in records)
    times = [r["time"] for r in records]
    assert training_seconds(records) == pytest.approx(max(times) - session)


def test_load_vae_roundtrip(tiny_runs):
    import jax

    vae = pipeline.load_vae(str(tiny_runs["vae_dir"]))
    assert vae.meta["final"] and vae.latent_scale_factor == vae.meta["latent_scale_factor"]
    trained = jax.device_get(tiny_runs["vae_result"].state.params)
    for a, b in zip(jax.tree.leaves(vae.params), jax.tree.leaves(trained), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    images = np.random.default_rng(0).random((5, 32, 32, 1)).astype(np.float32)
    mean, logvar = vae.encode(images, batch_size=2)  # 3 calls, the last one padded
    assert mean.shape == logvar.shape == (5, 4, 4, 8)
    one_mean, _ = vae.encode(images[3:4], batch_size=2)
    np.testing.assert_allclose(one_mean[0], mean[3], rtol=1e-5, atol=1e-5)
    recon = vae.reconstruct(images, batch_size=4)
    np.testing.assert_allclose(recon, vae.decode(mean, batch_size=4), rtol=1e-5, atol=1e-5)
    assert recon.shape == images.shape and 0 <= recon.min() and recon.max() <= 1


def test_load_vae_errors(tmp_path, tiny_runs):
    with pytest.raises(ValueError, match="no VAE run"):
        pipeline.load_vae(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a VAE"):
        pipeline.load_vae(str(tiny_runs["ldm_dir"]))


def test_vae_overfits_a_tiny_batch(tmp_path):
    """The loss on a fixed 4-image batch drops by half within 60 steps (no augmentation)."""
    cfg = tiny_vae_config(tmp_path)
    cfg.data.builtin.num_normal = 4
    cfg.data.builtin.num_tumour = 4
    cfg.data.split.train = 0.5
    cfg.data.split.val = 0.25
    cfg.data.augment.enabled = False
    cfg.train.num_steps = 60
    cfg.train.eval_every_epochs = 1000
    cfg.train.checkpoint_every_epochs = 1000
    cfg.train.eval_at_end = False
    cfg.train.log_every_steps = 10
    cfg.train.tensorboard = False
    train_vae.train_and_evaluate(cfg, str(tmp_path / "run"))
    losses = [r["loss"] for r in read_metrics(str(tmp_path / "run"), "train")]
    assert losses[-1] < 0.5 * losses[0]


def _train_cli(*args, tmp_path):
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config=configs/vae.py:tiny",
            *args,
            f"--config.data.cache_dir={tmp_path / 'cache'}",
            "--config.train.progress_bar=False",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_for_subprocess(),
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.train.batch_size=0"], "batch_size"),
        (["--config.data.source=zip"], "config.data.source"),
        (["--config.data.path=/nonexistent/mri"], "/nonexistent/mri"),
    ],
)
def test_cli_bad_config_exits_2(args, message, tmp_path):
    proc = _train_cli(*args, f"--workdir={tmp_path / 'run'}", tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unwritable_workdir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = _train_cli(f"--workdir={blocker / 'run'}", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "not writable" in proc.stderr


MULTI_DEVICE_SCRIPT = r"""
import json, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import jax
from conftest import tiny_vae_config
from jax_mri_ldm import pipeline, train_vae
from jax_mri_ldm.engine.logging import read_metrics
from pathlib import Path
root = Path({root!r})
cfg = tiny_vae_config(root)
cfg.train.batch_size = 8
cfg.train.num_steps = 4
cfg.train.log_every_steps = 1
cfg.train.eval_every_epochs = 1000
cfg.train.checkpoint_every_epochs = 1000
cfg.train.eval_at_end = False
cfg.train.tensorboard = False
res = train_vae.train_and_evaluate(cfg, str(root / "run"))
losses = [r["loss"] for r in read_metrics(str(root / "run"), "train")]
total = float(sum(abs(x).sum() for x in jax.tree.leaves(res.state.params)))
print(json.dumps({{"devices": jax.device_count(), "losses": losses, "param_sum": total}}))
"""


def _run_devices(n: int, root):
    script = MULTI_DEVICE_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root))
    env = env_for_subprocess(XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_device_equals_eight_devices(tmp_path):
    one = _run_devices(1, tmp_path / "one")
    eight = _run_devices(8, tmp_path / "eight")
    assert one["devices"] == 1 and eight["devices"] == 8
    np.testing.assert_allclose(one["losses"], eight["losses"], rtol=2e-4)
    assert one["param_sum"] == pytest.approx(eight["param_sum"], rel=1e-4)


def test_build_vae_takes_the_decoder_upsampler_and_old_runs_keep_theirs():
    import ml_collections

    from jax_mri_ldm.config_loader import load_config

    cfg = load_config("vae", "tiny").model
    cfg.upsample = "nearest_conv"
    assert pipeline.build_vae(cfg).upsample == "nearest_conv"
    old = ml_collections.ConfigDict({k: v for k, v in cfg.items() if k != "upsample"})
    assert pipeline.build_vae(old).upsample == "transpose"  # a run saved before the option


def test_vae_can_infer_with_its_ema_weights(tmp_path):
    """model.inference_params=ema_params: scores, latent scale and load_vae use the EMA weights."""
    import jax

    cfg = tiny_vae_config(tmp_path)
    cfg.model.inference_params = "ema_params"
    cfg.train.num_steps = 6
    cfg.train.tensorboard = False
    result = train_vae.train_and_evaluate(cfg, str(tmp_path / "run"))
    vae = pipeline.load_vae(str(tmp_path / "run"))
    assert vae.meta["inference_params"] == "ema_params"
    ema, raw = (jax.device_get(p) for p in (result.state.ema_params, result.state.params))
    loaded = [np.asarray(a) for a in jax.tree.leaves(vae.params)]
    for a, b in zip(loaded, jax.tree.leaves(ema), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert any(
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(loaded, jax.tree.leaves(raw), strict=True)
    )
    images = _train_images(cfg, tmp_path / "run")
    _, _, z_std = train_vae.latent_statistics(
        vae.module, vae.params, images, int(cfg.train.batch_size), seed=int(cfg.seed)
    )
    assert vae.meta["latent_std"] == pytest.approx(z_std, rel=1e-4)


def _train_images(cfg, run_dir) -> np.ndarray:
    ds, split = train_vae.prepare_data(cfg, str(run_dir))
    return ds.subset(split["train"]).images


def test_vae_refuses_an_unknown_inference_params(tmp_path):
    cfg = tiny_vae_config(tmp_path)
    cfg.model.inference_params = "swa"
    with pytest.raises(ValueError, match="config.model.inference_params='swa'"):
        train_vae.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def _swap_one_train_and_test_image(split_path) -> dict:
    """Rewrites a saved split.json with one train and one test id of the same class swapped."""
    saved = json.loads(split_path.read_text())
    train, test = saved["ids"]["train"], saved["ids"]["test"]
    a = next(i for i in train if i.split("/")[0] == test[0].split("/")[0])
    train[train.index(a)], test[0] = test[0], a
    split_path.write_text(json.dumps(saved))
    return saved


def test_resumed_vae_and_its_ldm_keep_the_saved_split(tmp_path):
    """Trainers reuse a run's split.json as saved, so new split rules never reshuffle a run."""
    from conftest import tiny_ldm_config
    from jax_mri_ldm import train_ldm

    cfg = tiny_vae_config(tmp_path)
    cfg.train.num_steps, cfg.train.tensorboard = 2, False
    run = tmp_path / "run"
    train_vae.train_and_evaluate(cfg, str(run))
    fresh_ds, fresh = train_vae.prepare_data(cfg, str(tmp_path / "new"))
    saved = _swap_one_train_and_test_image(run / "split.json")
    ds, split = train_vae.prepare_data(cfg, str(run))
    assert [ds.ids[i] for i in split["test"]] == sorted(saved["ids"]["test"], key=ds.ids.index)
    assert not np.array_equal(split["test"], fresh["test"])
    vae = pipeline.load_vae(str(run))
    vae_cfg = ml_collections.ConfigDict(vae.meta["config"])
    (tmp_path / "ldm").mkdir()
    ldm_ds, ldm_split = train_ldm._vae_training_split(
        tiny_ldm_config(run), vae, vae_cfg, str(tmp_path / "ldm")
    )
    train_set = ldm_ds.subset(ldm_split["train"])
    assert sorted(train_set.ids) == sorted(saved["ids"]["train"])


def test_resuming_without_the_saved_split_is_refused(tmp_path):
    """Checkpoints but no split.json: the VAE and an LDM on it name the file, train nothing."""
    from conftest import tiny_ldm_config
    from jax_mri_ldm import train_ldm

    cfg = tiny_vae_config(tmp_path)
    cfg.train.num_steps, cfg.train.tensorboard = 2, False
    run = tmp_path / "run"
    train_vae.train_and_evaluate(cfg, str(run))
    (run / "split.json").unlink()
    with pytest.raises(ValueError, match="split.json is missing"):
        train_vae.prepare_data(cfg, str(run))
    with pytest.raises(ValueError, match="split.json is missing"):
        train_ldm.train_and_evaluate(tiny_ldm_config(run), str(tmp_path / "ldm"))
    assert not (tmp_path / "ldm" / "checkpoints").exists()


def test_builtin_budget_raises_num_steps_on_the_builtin_set_only(tmp_path, capsys):
    from configs import vae as vae_cfg

    config = vae_cfg.get_config("recommended")
    assert config.train.builtin_min_steps > config.train.num_steps > 0
    steps = config.train.num_steps
    raised = train_vae.with_builtin_budget(config)
    assert raised.train.num_steps == config.train.builtin_min_steps
    assert config.train.num_steps == steps  # the caller's config is not changed
    assert "builtin_min_steps=0" in capsys.readouterr().err  # the raise is announced
    config.train.num_steps = 2 * config.train.builtin_min_steps  # a longer run stays longer
    assert train_vae.with_builtin_budget(config).train.num_steps == config.train.num_steps
    folder = vae_cfg.get_config("recommended")
    (tmp_path / "yes").mkdir()
    folder.data.path = str(tmp_path)  # 'auto' resolves to a folder: num_steps is kept
    assert train_vae.with_builtin_budget(folder).train.num_steps == steps
    for preset in ("paper", "demo", "tiny"):  # no floor, or a budget counted in epochs
        plain = train_vae.with_builtin_budget(vae_cfg.get_config(preset))
        assert plain.train.to_dict() == vae_cfg.get_config(preset).train.to_dict()
    epochs = vae_cfg.get_config("recommended")
    epochs.train.num_steps = 0  # an epoch budget is left alone even with a floor
    assert train_vae.with_builtin_budget(epochs).train.num_steps == 0
