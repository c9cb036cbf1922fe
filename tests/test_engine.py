"""The shared training engine on a toy regression task: resume, EMA, errors, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.engine import loop
from jax_mri_ldm.engine.checkpoint import Checkpointer
from jax_mri_ldm.engine.state import (
    TrainState,
    ema_decay_at,
    ema_update,
    make_lr_schedule,
    make_optimizer,
)


def toy_config(num_steps: int = 8) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "toy"
    c.seed = 3
    c.model = ml_collections.ConfigDict({"width": 4})
    c.optim = ml_collections.ConfigDict(
        dict(
            learning_rate=0.05,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            schedule="cosine",
            warmup_steps=2,
            min_lr_ratio=0.1,
            grad_clip_norm=1.0,
            ema_decay=0.9,
            ema_warmup=True,
        )
    )
    c.train = ml_collections.ConfigDict(
        dict(
            batch_size=8,
            num_epochs=0,
            num_steps=num_steps,
            eval_every_epochs=1,
            checkpoint_every_epochs=1,
            keep_checkpoints=10,
            log_every_steps=1,
            progress_bar=False,
            tensorboard=True,
        )
    )
    return c


def toy_task(nan_at_step: int | None = None, steps_per_epoch: int = 2) -> loop.Task:
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((64, 4)).astype(np.float32)
    w_true = np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)
    y_all = x_all @ w_true

    def init_params(key):
        return {"w": jax.random.normal(key, (4, 1)) * 0.1, "b": jnp.zeros((1,))}

    def loss_fn(params, batch, key):
        # Multiplicative noise from the step key: the RNG stream must resume exactly too.
        noise = 1.0 + 0.1 * jax.random.normal(key, batch["y"].shape)
        pred = batch["x"] @ params["w"] + params["b"]
        loss = jnp.mean((pred * noise - batch["y"]) ** 2)
        if nan_at_step is not None:
            loss = jnp.where(batch["step"][0] == nan_at_step, jnp.nan, loss)
        return loss, {"mae": jnp.mean(jnp.abs(pred - batch["y"]))}

    def get_batch(step, process_index, process_count):
        idx = np.random.default_rng([7, step]).choice(64, 8, replace=False)
        return {"x": x_all[idx], "y": y_all[idx], "step": np.full((8,), step, np.int32)}

    evals = []

    def evaluate(state, workdir):
        evals.append(int(state.step))
        return {"w0": float(state.params["w"][0, 0])}

    return loop.Task(
        name="toy",
        init_params=init_params,
        loss_fn=loss_fn,
        get_batch=get_batch,
        global_batch_size=8,
        steps_per_epoch=steps_per_epoch,
        evaluate=evaluate,
        finalize=lambda state, workdir: {"answer": 42},
        metadata={"dataset_fingerprint": "abc"},
    )


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def test_loss_decreases_and_run_is_self_describing(tmp_path):
    result = loop.run(toy_config(40), str(tmp_path), toy_task())
    assert not result.interrupted
    assert int(result.state.step) == 40
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert {"loss", "grad_norm", "mae", "images_per_sec", "learning_rate"} <= set(train[0])
    assert any(r["split"] == "val" for r in records)
    assert os.listdir(tmp_path / "tb")  # TensorBoard event file
    meta = json.load(open(tmp_path / "run.json"))
    assert meta["final"] and meta["answer"] == 42 and meta["dataset_fingerprint"] == "abc"
    assert meta["config"]["optim"]["learning_rate"] == 0.05
    assert "jax" in meta["versions"]


def test_resume_equals_straight_run(tmp_path):
    k = 6
    straight = loop.run(toy_config(2 * k), str(tmp_path / "a"), toy_task())
    first = loop.run(toy_config(2 * k), str(tmp_path / "b"), _stop_after(toy_task(), k))
    assert first.interrupted and int(first.state.step) == k
    resumed = loop.run(toy_config(2 * k), str(tmp_path / "b"), toy_task())
    assert int(resumed.state.step) == 2 * k
    a, b = _host(straight.state.checkpoint_items()), _host(resumed.state.checkpoint_items())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _stop_after(task: loop.Task, k: int) -> loop.Task:
    """Simulates Ctrl-C once `k` batches were fetched (the handler's flag path)."""
    inner = task.get_batch

    def get_batch(step, pi, pc):
        if step == k - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return inner(step, pi, pc)

    task.get_batch = get_batch
    return task


def test_ctrl_c_saves_checkpoint_and_returns(tmp_path):
    result = loop.run(toy_config(10), str(tmp_path), _stop_after(toy_task(), 3))
    assert result.interrupted
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == 3
    assert ckpt.restore_meta()["final"] is False
    ckpt.close()


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    with pytest.raises(loop.NonFiniteLossError, match="step 5"):
        loop.run(toy_config(10), str(tmp_path), toy_task(nan_at_step=5))
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == 4  # checkpoints every 2 steps; step 5 was never saved
    items, _ = ckpt.restore_raw()
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(items["params"]))
    ckpt.close()


def test_incompatible_resume_is_refused(tmp_path):
    loop.run(toy_config(4), str(tmp_path), toy_task())
    other = toy_config(4)
    other.model.width = 8
    with pytest.raises(ValueError, match="model.width"):
        loop.run(other, str(tmp_path), toy_task())
    longer = toy_config(6)  # more steps is a compatible change: it continues
    assert int(loop.run(longer, str(tmp_path), toy_task()).state.step) == 6


def test_bad_batch_size_and_workdir(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        loop.check_batch_size(0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        loop.ensure_writable_workdir(str(blocker / "sub"))


def test_convergence_warning() -> None:
    flat = [1.0] * 40
    falling = list(np.linspace(2.0, 1.0, 40))
    assert log_lib.convergence_warning(flat, 10_000, min_updates=9_000) is None
    short = log_lib.convergence_warning(flat, 500, min_updates=9_000, name="LDM")
    assert short is not None and "LDM" in short and "500 updates" in short
    assert "--config.train.num_steps=9000" in short
    slope = log_lib.convergence_warning(falling, 20_000, min_updates=9_000)
    assert slope is not None and "still falling" in slope and "num_steps=40000" in slope
    assert log_lib.convergence_warning(falling[:5], 20_000, min_updates=9_000) is None  # too few


def test_a_short_run_ends_with_the_convergence_warning(tmp_path, capsys):
    task = toy_task()
    task.min_updates = 100
    loop.run(toy_config(4), str(tmp_path / "short"), task)
    err = capsys.readouterr().err
    assert "TOY is likely far from converged" in err and "4 updates" in err
    task.min_updates = 4
    loop.run(toy_config(4), str(tmp_path / "enough"), task)
    assert "far from converged" not in capsys.readouterr().err  # 4 log points: slope not judged


def test_ema_matches_closed_form():
    # Constant parameters p and EMA e0: after n updates with fixed decay d,
    # e_n = d^n e0 + (1 - d^n) p.
    params = {"a": jnp.full((3,), 2.0)}
    ema = {"a": jnp.zeros((3,))}
    d = 0.9
    for _ in range(7):
        ema = ema_update(ema, params, jnp.float32(d))
    np.testing.assert_allclose(ema["a"], (1 - d**7) * 2.0, rtol=1e-6)
    assert float(ema_decay_at(jnp.int32(0), 0.999, True)) == pytest.approx(0.1)
    assert float(ema_decay_at(jnp.int32(10**6), 0.999, True)) == pytest.approx(0.999)


def test_train_step_ema_inside_step():
    cfg = toy_config()
    cfg.optim.ema_warmup = False
    tx = make_optimizer(cfg.optim, 10)
    params = {"w": jnp.ones((2,))}
    state = TrainState.create(params, tx, jax.random.PRNGKey(0))

    def loss_fn(p, batch, key):
        return jnp.sum(p["w"] ** 2), {}

    new, metrics = loop.train_step(
        state, {}, state.rng, loss_fn=loss_fn, ema_decay=0.9, ema_warmup=False
    )
    expected = 0.9 * 1.0 + 0.1 * np.asarray(new.params["w"])
    np.testing.assert_allclose(new.ema_params["w"], expected, rtol=1e-6)
    assert int(new.step) == 1 and float(metrics["loss"]) == pytest.approx(2.0)


def _stage_configs() -> dict[str, ml_collections.ConfigDict]:
    from jax_mri_ldm.config_loader import load_config

    return {name: load_config(name, "tiny") for name in ("vae", "ldm")}


def _resumable_keys() -> list[tuple[str, str]]:
    return [
        (name, key)
        for name, cfg in _stage_configs().items()
        for key in loop.flatten_config(cfg.to_dict())
        if loop.is_resumable_setting(key)
    ]


# Settings left None (placeholders: "the run's default") and a set value of their type.
SET_PLACEHOLDERS = {"eval_sampler": "ddpm", "eval_eta": 0.5, "eval_guidance_scale": 2.0}


def _changed(value, leaf=""):
    if value is None:
        return SET_PLACEHOLDERS[leaf]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if value in ("ddim", "ddpm"):
        return "ddpm" if value == "ddim" else "ddim"
    return f"{value}_elsewhere"


def test_resumable_settings_cover_logging_evaluation_grids_and_length():
    keys = {key for _, key in _resumable_keys()}
    expected = {
        "train.log_every_steps",
        "train.progress_bar",
        "train.tensorboard",
        "train.eval_every_epochs",
        "train.eval_at_end",
        "train.eval_num_images",
        "train.eval_sampler",
        "train.eval_sample_steps",
        "train.eval_eta",
        "train.eval_guidance_scale",
        "train.checkpoint_every_epochs",
        "train.keep_checkpoints",
        "train.num_epochs",
        "train.num_steps",
        "train.builtin_min_steps",  # raises num_steps on the built-in set: run length too
        "data.cache_dir",
        "vae_workdir",
        "data.split.near_duplicate_threshold",  # trainers reuse the saved split.json
        "model.equaliser",  # fitted after the last update (train_vae.py)
        "decoder.equaliser",  # judged on samples after the last update (decoder_check.py)
        "decoder.check_per_class",
    }
    assert keys == expected
    for fixed in ("train.batch_size", "model.channels", "optim.learning_rate", "seed"):
        assert not loop.is_resumable_setting(fixed)
    training = {k for k in keys if k.startswith(("model.", "optim.", "diffusion.", "latents."))}
    assert training == {"model.equaliser"}


@pytest.mark.parametrize("stage, key", _resumable_keys())
def test_each_resumable_setting_may_change(stage, key):
    saved = loop.config_to_json(_stage_configs()[stage])
    current = _stage_configs()[stage]
    *path, leaf = key.split(".")
    node = current
    for part in path:
        node = node[part]
    node[leaf] = _changed(node[leaf], leaf)
    assert loop.flatten_config(loop.config_to_json(current))[key] != loop.flatten_config(saved)[key]
    loop.check_resume_compatible(saved, current, "/runs/x")  # does not raise


def test_changed_model_width_is_refused_with_the_list_of_differences():
    saved = loop.config_to_json(_stage_configs()["ldm"])
    current = _stage_configs()["ldm"]
    current.model.channels = (32, 64)
    current.optim.learning_rate = 1e-3
    current.train.tensorboard = False  # allowed: not listed
    with pytest.raises(ValueError, match="cannot resume") as err:
        loop.check_resume_compatible(saved, current, "/runs/x")
    lines = [ln.strip() for ln in str(err.value).splitlines() if ln.startswith("  ")]
    assert lines == [
        "model.channels: checkpoint=(16, 32) now=(32, 64)",
        "optim.learning_rate: checkpoint=0.0003 now=0.001",
    ]


def test_a_checkpoint_from_before_a_setting_existed_resumes_at_its_old_meaning():
    for stage in ("vae", "ldm"):
        saved = loop.config_to_json(_stage_configs()[stage])
        removed = 0
        for key in loop.ABSENT_MEANS:
            *parents, leaf = key.split(".")
            node = saved
            for p in parents:
                node = node.get(p, {})
            removed += node.pop(leaf, None) is not None
        assert removed  # each stage has settings older checkpoints lack
        loop.check_resume_compatible(saved, _stage_configs()[stage], "/runs/x")  # no raise
    current = _stage_configs()["ldm"]
    current.diffusion.zero_terminal_snr = True  # not what the old run did
    with pytest.raises(ValueError, match="zero_terminal_snr: checkpoint=False now=True"):
        loop.check_resume_compatible(saved, current, "/runs/x")
    # The registry states what the diffusion code does for a config without the key.
    from jax_mri_ldm import diffusion

    old = {"schedule": "cosine", "num_timesteps": 50, "prediction": "eps", "p_uncond": 0.1}
    means = loop.ABSENT_MEANS
    assert diffusion.loss_options(old)["min_snr_gamma"] == means["diffusion.min_snr_gamma"]
    zt = means["diffusion.zero_terminal_snr"]
    np.testing.assert_array_equal(
        diffusion.schedule_from_config(old).betas,
        diffusion.make_schedule("cosine", 50, zero_terminal_snr=zt).betas,
    )


def test_processes_sharing_a_workdir_can_all_check_it_at_once(tmp_path) -> None:
    # Every process of a multi-host run checks the same --workdir at start; a shared probe file
    # name let one process delete another's probe (FileNotFoundError -> "not writable").
    import concurrent.futures

    def check_many(_):
        for _ in range(200):
            loop.ensure_writable_workdir(str(tmp_path / "run"))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(check_many, range(8)))
    assert list((tmp_path / "run").iterdir()) == []  # no probe left behind


def test_wsd_schedule_is_constant_then_decays_linearly_over_the_last_fraction():
    optim = toy_config().optim
    optim.update(schedule="wsd", warmup_steps=10, decay_fraction=0.25, min_lr_ratio=0.1)
    sched = make_lr_schedule(optim, total_steps=100)
    lrs = np.array([float(sched(s)) for s in range(101)])
    np.testing.assert_allclose(lrs[[0, 5, 10]], [0.0, 0.025, 0.05], rtol=1e-6)  # warmup
    np.testing.assert_allclose(lrs[10:76], 0.05, rtol=1e-6)  # stable until 100 - 25
    np.testing.assert_allclose(lrs[[75, 100]], [0.05, 0.005], rtol=1e-5)  # to lr * min_lr_ratio
    assert np.all(np.diff(lrs[75:]) < 0)  # strictly decaying once it starts
    # Before the decay it is the constant schedule, so a constant run resumes into it exactly.
    optim.update(schedule="constant")
    const = make_lr_schedule(optim, total_steps=100)
    np.testing.assert_array_equal(lrs[:75], [float(const(s)) for s in range(75)])
    # A warmup longer than the stable phase shortens the decay; it still ends with the run.
    optim.update(schedule="wsd", warmup_steps=90)
    late = make_lr_schedule(optim, total_steps=100)
    np.testing.assert_allclose([float(late(s)) for s in (90, 100)], [0.05, 0.005], rtol=1e-5)
    optim.update(schedule="wsd", decay_fraction=1.5)
    with pytest.raises(ValueError, match="decay_fraction=1.5"):
        make_lr_schedule(optim, total_steps=100)
