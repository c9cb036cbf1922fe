"""Trustworthy runs (issue 16): damaged or crafted checkpoints, one writer per workdir, config
typos, the error policy, quiet logs, leftovers, and the README's troubleshooting cases.

Each test asserts the exit status (or exception), the message, and that nothing was
half-written. Entry-point subprocesses are few: each costs a Python (and JAX) start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, env_for_subprocess, tiny_vae_config
from jax_mri_ldm import cli
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.engine import lock as lock_lib
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.errors import CheckpointError, UserError, check_plain_name, resolve_inside

# A damaged read's late tensorstore callbacks once reached pytest as "Event loop is closed"
# warnings (engine/checkpoint.py, _drop_abandoned_read_callbacks); here they fail the test.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


def _run_cli(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        env=env_for_subprocess(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _tree_listing(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under root (to assert nothing changed)."""
    return {
        str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()
    }


def _items(scale: float = 1.0) -> dict:
    w = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)  # incompressible
    params = {"conv": {"w": jnp.asarray(w * scale), "b": jnp.zeros((3,))}}
    return {"step": jnp.array(3), "params": params, "ema_params": params}


def flip_array_bytes(step_dir: Path, merged: bool = False) -> int:
    """Flips 16 bytes at 9 offsets in every array data file of a checkpoint (issue 16, case 1).

    The chunk files under `ocdbt.process_*/d/`; with `merged`, also `state/d/` (orbax's merged
    database, where arrays of a few bytes live inline).
    """
    pattern = ["state/ocdbt.process_*/d/*"] + (["state/d/*"] if merged else [])
    files = [p for pat in pattern for p in step_dir.glob(pat) if p.is_file()]
    for path in files:
        data = bytearray(path.read_bytes())
        for k in range(9):
            off = (len(data) * (k + 1)) // 10
            data[off : off + 16] = bytes(b ^ 0x5A for b in data[off : off + 16])
        path.write_bytes(bytes(data))
    return len(files)


def edit_meta(step_dir: Path, **changes) -> None:
    """Rewrites fields of a checkpoint's JSON metadata (a crafted or older checkpoint)."""
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


# ----------------------------------------------------------------------------- checksums


def test_checksums_survive_a_raw_restore_and_catch_flipped_bytes(tmp_path):
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.save(1, _items(1.0), {"stage": "toy"})
    ck.save(3, _items(2.0), {"stage": "toy"})
    items, meta = ck.restore_raw()  # no template: verified against the saved digests
    assert set(meta["checksums"]["trees"]) == {"step", "params", "ema_params"}
    np.testing.assert_array_equal(items["params"]["conv"]["w"], _items(2.0)["params"]["conv"]["w"])
    ck.restore(_items())  # with a template: verified as well
    ck.close()

    assert flip_array_bytes(tmp_path / "checkpoints" / "3") > 0
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        ck.restore_raw()
    msg = str(err.value)
    assert str(tmp_path / "checkpoints" / "3") in msg and "damaged" in msg
    assert "steps 1" in msg and "mv " in msg  # names the earlier checkpoint and how to use it
    with pytest.raises(CheckpointError):
        ck.restore(_items())
    items, _ = ck.restore_raw(1)  # the earlier one is intact
    ck.close()


def test_only_closed_loop_callbacks_of_damaged_reads_are_dropped(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    ckpt_lib._drop_abandoned_read_callbacks()
    ckpt_lib._drop_abandoned_read_callbacks()  # once per process: no second wrapper
    hook = sys.unraisablehook
    assert hook is not seen.append and hook.drops_closed_loop_callbacks

    def unraisable(exc, obj=None):
        return SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None, object=obj)

    hook(unraisable(RuntimeError("Event loop is closed")))  # tensorstore's late callback
    assert seen == []
    others = [
        unraisable(RuntimeError("Event loop is closed"), obj=object()),  # a __del__ of ours
        unraisable(RuntimeError("something else")),
        unraisable(ValueError("Event loop is closed")),
    ]
    for u in others:
        hook(u)
    assert seen == others


def test_checkpoint_without_checksums_loads_with_one_warning(tmp_path, capsys):
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.save(2, _items(), {"stage": "toy"})
    ck.close()
    edit_meta(tmp_path / "checkpoints" / "2", checksums=None)
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.restore_raw()
    ck.restore_raw()
    ck.close()
    err = capsys.readouterr().err
    assert err.count("has no content checksums") == 1


def test_a_changed_array_with_valid_encoding_is_caught(tmp_path):
    """A checkpoint whose arrays were replaced (not just garbled) fails the checksum."""
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.save(5, _items(1.0), {"stage": "toy"})
    ck.close()
    other = ckpt_lib.tree_checksums(_items(9.0))
    edit_meta(tmp_path / "checkpoints" / "5", checksums=other)
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    with pytest.raises(CheckpointError, match="ema_params, params does not match"):
        ck.restore_raw()
    ck.close()


def test_non_finite_samples_name_the_checkpoint_and_the_earlier_ones(tmp_path):
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.save(1, _items(), {"stage": "ldm"})
    ck.save(3, _items(), {"stage": "ldm"})
    ck.close()
    ckpt_lib.check_finite_samples(np.zeros((2, 4, 4, 1)), str(tmp_path), 3)
    bad = np.zeros((2, 4, 4, 1))
    bad[1, 2, 2, 0] = np.nan
    with pytest.raises(CheckpointError) as err:
        ckpt_lib.check_finite_samples(bad, str(tmp_path), 3)
    msg = str(err.value)
    assert str(tmp_path / "checkpoints" / "3") in msg and "non-finite" in msg
    assert "Earlier checkpoints: steps 1" in msg


# ----------------------------------------------------------------------------- names and paths


@pytest.mark.parametrize(
    "name", ["../../evil_escape", "a/b", "..", ".", "", "  ", "x\x00y", "new\nline", 3]
)
def test_crafted_class_names_are_refused(name):
    with pytest.raises(UserError, match="plain name"):
        check_plain_name(name, "class name", "ckpt/meta")


def test_crafted_class_names_in_checkpoint_metadata_are_refused(tmp_path):
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.save(1, _items(), {"stage": "ldm", "class_names": ["../../evil_escape", "tumour"]})
    with pytest.raises(UserError, match="evil_escape"):
        ck.restore_meta()
    with pytest.raises(UserError, match="evil_escape"):
        ck.restore_raw()
    ck.close()
    assert ckpt_lib.check_meta({"class_names": ["normal", "tumour"]}, "x")
    with pytest.raises(UserError, match="repeat"):
        ckpt_lib.check_meta({"class_names": ["a", "a"]}, "x")


def test_outputs_resolve_inside_the_output_directory(tmp_path):
    out = tmp_path / "out"
    (out / "tumour").mkdir(parents=True)
    assert resolve_inside(str(out), "tumour/x.png") == str((out / "tumour" / "x.png").resolve())
    with pytest.raises(UserError, match="outside"):
        resolve_inside(str(out), "../escape.png")
    (out / "link").symlink_to(tmp_path)  # a link inside --out pointing out of it
    with pytest.raises(UserError, match="outside"):
        resolve_inside(str(out), "link/x.png")


# ----------------------------------------------------------------------------- the workdir lock

_HOLD_LOCK = """
import sys, time
from jax_mri_ldm.engine.lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold_lock(workdir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(workdir)],
        env=env_for_subprocess(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    proc = _hold_lock(tmp_path / "run")
    try:
        with pytest.raises(UserError) as err:
            lock_lib.WorkdirLock(str(tmp_path / "run")).acquire()
        msg = str(err.value)
        assert f"process {proc.pid} on host {socket.gethostname()}" in msg
        assert "--workdir=" in msg
    finally:
        proc.kill()
        proc.wait()
    # The holder died without releasing: the next writer takes the lock over and says so.
    lock = lock_lib.WorkdirLock(str(tmp_path / "run"))
    with lock:
        held = json.loads((tmp_path / "run" / ".lock").read_text())
        assert held["pid"] == os.getpid()
    assert (tmp_path / "run" / ".lock").read_text() == ""  # a clean release empties it


def test_stale_lock_of_a_dead_process_is_recovered_with_a_message(tmp_path, capsys):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 999_999_999, "host": "elsewhere"}))
    with lock_lib.WorkdirLock(str(tmp_path)):
        pass
    assert "took over the stale lock of process 999999999 on host elsewhere" in (
        capsys.readouterr().err
    )


# ----------------------------------------------------------------------------- leftovers


def test_stale_sampling_temp_folders_are_cleaned(tmp_path):
    out = tmp_path / "samples"
    dead = tmp_path / ".samples.tmpdead"
    dead.mkdir()
    (dead / "x.png").write_bytes(b"partial")
    (dead / ".owner").write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname()}))
    alive = tmp_path / ".samples.tmpalive"
    alive.mkdir()
    lock_lib.mark_owner(str(alive))  # this process: still running
    foreign = tmp_path / ".samples.tmpforeign"
    foreign.mkdir()
    (foreign / ".owner").write_text(json.dumps({"pid": 1, "host": "another-host"}))
    unmarked_old = tmp_path / ".samples.tmpold"
    unmarked_old.mkdir()
    os.utime(unmarked_old, (time.time() - 3600, time.time() - 3600))
    other = tmp_path / ".other.tmpdead"
    other.mkdir()
    removed = lock_lib.clean_stale_temp_dirs(str(out))
    assert sorted(removed) == sorted([str(dead), str(unmarked_old)])
    assert alive.exists() and foreign.exists() and other.exists()


def test_metrics_are_truncated_to_the_checkpoint_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "spl')  # torn last line from a kill
    assert log_lib.truncate_metrics(str(tmp_path), 2) == 3
    assert [r["step"] for r in log_lib.read_metrics(str(tmp_path))] == [1, 2]
    assert log_lib.truncate_metrics(str(tmp_path), 2) == 0
    assert log_lib.truncate_metrics(str(tmp_path / "none"), 2) == 0


def test_training_time_skips_the_gap_between_a_stop_and_its_resume(tmp_path):
    # Two sessions: started at 100, records until 160; resumed at 10,000, records until 10,030.
    recs = [{"step": s, "time": t, "session": 100.0} for s, t in ((10, 130), (20, 160))]
    recs += [{"step": s, "time": t, "session": 10_000.0} for s, t in ((30, 10_010), (40, 10_030))]
    assert log_lib.training_seconds(recs) == pytest.approx(60 + 30)
    # A log from before sessions were stamped: first to last record, as before.
    legacy = [{"step": 10, "time": 5.0}, {"step": 20, "time": 65.0}]
    assert log_lib.training_seconds(legacy) == pytest.approx(60)
    assert log_lib.training_seconds(legacy[:1]) is None
    assert log_lib.training_seconds([{"step": 1, "time": 7.0, "session": 2.0}]) == 5.0
    # The writer stamps its run's session start on every record; a new session (a resume, or
    # the next run of a process that trains two) gets a new stamp.
    start = log_lib.start_session(str(tmp_path))
    log_lib.MetricWriter(str(tmp_path), tensorboard=False).write(1, "train", {"loss": 1.0})
    later = log_lib.start_session(str(tmp_path))
    log_lib.MetricWriter(str(tmp_path), tensorboard=False).write(2, "train", {"loss": 1.0})
    assert [r["session"] for r in log_lib.read_metrics(str(tmp_path))] == [start, later]
    assert start <= later and log_lib.session_start(str(tmp_path / "other")) >= later


# ----------------------------------------------------------------------------- config flags


def test_unknown_config_fields_and_presets_are_named(tmp_path):
    cfg = cli.load_config_file("configs/ldm.py:tiny")
    with pytest.raises(UserError) as err:
        cli.check_config_fields(cfg, ["model.nonexistent"])
    assert "'nonexistent'" in str(err.value) and "num_res_blocks" in str(err.value)
    with pytest.raises(UserError, match="config has no field 'data'.*vae_workdir"):
        cli.check_config_fields(cfg, ["data.path"])
    with pytest.raises(UserError, match="Did you mean config.train.batch_size"):
        cli.check_config_fields(cfg, ["train.batchsize"])
    with pytest.raises(UserError, match="is a value, not a section"):
        cli.check_config_fields(cfg, ["seed.x"])
    cli.check_config_fields(cfg, ["model.channels", "train.num_steps"])
    with pytest.raises(UserError, match="tinyy.*paper, demo or tiny"):
        cli.load_config_file("configs/vae.py:tinyy")
    argv = ["--config=x.py", "--config.a.b=1", "--noconfig.c", "--config.d", "2", "--other.e=1"]
    assert cli.config_overrides(argv) == ["a.b", "c", "d"]


def test_bad_config_values_are_named_before_training(tmp_path):
    vae = cli.load_config_file("configs/vae.py:tiny")
    ldm = cli.load_config_file("configs/ldm.py:tiny")
    cli.check_config_values(vae)
    cli.check_config_values(ldm)
    cases = [
        (ldm, "diffusion.prediction", "velocity", "--config.diffusion.prediction='velocity'"),
        (ldm, "diffusion.schedule", "sqrt", "--config.diffusion.schedule='sqrt'"),
        (ldm, "diffusion.num_timesteps", 1, "--config.diffusion: num_timesteps must be >= 2"),
        (vae, "loss.kl_reduction", "max", "--config.loss.kl_reduction='max'"),
        (vae, "optim.schedule", "step", "--config.optim: config.optim.schedule='step'"),
    ]
    for cfg, field, value, message in cases:
        bad = cfg.copy_and_resolve_references()
        section, name = field.split(".")
        bad[section][name] = value
        with pytest.raises(UserError) as err:
            cli.check_config_values(bad)
        assert message in str(err.value), str(err.value)
    bad = vae.copy_and_resolve_references()
    bad.optim.schedule = "step"
    assert cli.run_training(bad, str(tmp_path / "run")) == 2
    assert not (tmp_path / "run").exists()


def test_config_typos_exit_2_before_anything_is_written(tmp_path):
    workdir = tmp_path / "run"
    cases = [
        (["--config=configs/ldm.py:tiny", "--config.model.nonexistent=1"], "nonexistent"),
        (["--config=configs/vae.py:tinyy"], "tinyy"),
        (["--config=configs/vae.py:tiny", "--config.train.batch_size=abc"], "batch_size=abc"),
        (["--config=configs/vae.py:tiny", "--no_such_flag=1"], "no_such_flag"),
    ]
    for args, name in cases:
        proc = _run_cli("train.py", *args, f"--workdir={workdir}", timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and name in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not workdir.exists()


# ----------------------------------------------------------------------------- evaluation


def test_unfinished_run_warns_on_the_console(tmp_path, capsys):
    ck = ckpt_lib.Checkpointer(str(tmp_path))
    ck.save(4, _items(), {"stage": "ldm", "final": False})
    ck.close()
    cli.warn_if_unfinished(str(tmp_path))
    assert "unfinished run" in capsys.readouterr().err
    edit_meta(tmp_path / "checkpoints" / "4", final=True)
    cli.warn_if_unfinished(str(tmp_path))
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- training starts


def test_second_training_on_a_locked_workdir_exits_2_naming_the_holder(tmp_path, capsys):
    workdir = tmp_path / "run"
    proc = _hold_lock(workdir)  # another writer, e.g. a training started a moment earlier
    try:
        before = _tree_listing(workdir)
        rc = cli.run_training(tiny_vae_config(tmp_path), str(workdir))
    finally:
        proc.kill()
        proc.wait()
    assert rc == 2
    err = capsys.readouterr().err
    assert f"is in use by process {proc.pid} on host {socket.gethostname()}" in err
    assert _tree_listing(workdir) == before  # no config.json, split.json or metrics written


def test_failed_start_leaves_no_workdir(tmp_path, capsys):
    cfg = tiny_vae_config(tmp_path)
    cfg.data.path = str(tmp_path / "no_such_mri")
    rc = cli.run_training(cfg, str(tmp_path / "run"))
    assert rc == 2 and "no_such_mri" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_refused_resume_writes_nothing(tiny_runs, tmp_path, capsys):
    workdir = tmp_path / "vae"
    shutil.copytree(tiny_runs["vae_dir"], workdir)
    before = _tree_listing(workdir)
    split_mtime = (workdir / "split.json").stat().st_mtime_ns
    cfg = tiny_vae_config(tiny_runs["root"])
    cfg.optim.learning_rate = 3e-3  # the race of issue 16 case 3, one after the other
    assert cli.run_training(cfg, str(workdir)) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "optim.learning_rate" in err
    after = _tree_listing(workdir)
    after.pop(".lock", None)  # the (released, empty) lock file is all that is new
    assert after == before
    assert (workdir / "split.json").stat().st_mtime_ns == split_mtime


def test_resume_on_changed_data_writes_nothing(tiny_runs, tmp_path, capsys, monkeypatch):
    from jax_mri_ldm import data as data_lib

    workdir = tmp_path / "vae"
    shutil.copytree(tiny_runs["vae_dir"], workdir)
    before = _tree_listing(workdir)
    split_mtime = (workdir / "split.json").stat().st_mtime_ns
    real = data_lib.load_imageset
    changed = lambda cfg: dataclasses.replace(real(cfg), fingerprint="0" * 16)  # files changed
    monkeypatch.setattr(data_lib, "load_imageset", changed)
    assert cli.run_training(tiny_vae_config(tiny_runs["root"]), str(workdir)) == 2
    assert "the dataset changed" in capsys.readouterr().err
    after = _tree_listing(workdir)
    after.pop(".lock", None)
    assert after == before
    assert (workdir / "split.json").stat().st_mtime_ns == split_mtime


# ----------------------------------------------------------------------------- sampling


def _sample_request(workdir, out, **kw):
    from jax_mri_ldm.export import SampleRequest
    from jax_mri_ldm.sampler_settings import SamplerSpec

    base = dict(
        workdir=str(workdir),
        label="all",
        num_samples=3,
        batch_size=3,
        spec=SamplerSpec(sampler="ddim", steps=4),
        out=str(out),
        progress=False,
    )
    base.update(kw)
    return SampleRequest(**base)


def _copy_run(tiny_runs, tmp_path) -> tuple[Path, Path]:
    run = tmp_path / "ldm"
    shutil.copytree(tiny_runs["ldm_dir"], run)
    step_dir = max((run / "checkpoints").glob("[0-9]*"), key=lambda p: int(p.name))
    return run, step_dir


def test_sample_cli_damaged_checkpoint_exits_2_and_writes_nothing(tiny_runs, tmp_path):
    """Issue 16, case 1: flipped bytes in every array data file."""
    run, step_dir = _copy_run(tiny_runs, tmp_path)
    assert flip_array_bytes(step_dir) > 0
    out = tmp_path / "samples"
    proc = _run_cli("sample.py", f"--workdir={run}", f"--out={out}", "--num_samples=2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: checkpoint ") and str(step_dir) in proc.stderr
    assert "is damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ldm"]  # no --out, no temp folder


def test_crafted_class_names_cannot_write_outside_out(tiny_runs, tmp_path):
    """Issue 16, case 2."""
    from jax_mri_ldm.export import run_sampling

    run, step_dir = _copy_run(tiny_runs, tmp_path)
    edit_meta(step_dir, class_names=["../../evil_escape", "tumour"])
    (tmp_path / "deep" / "er").mkdir(parents=True)
    out = tmp_path / "deep" / "er" / "samples"
    with pytest.raises(UserError, match="plain name"):
        run_sampling(_sample_request(run, out))
    assert not (tmp_path / "evil_escape").exists() and not out.exists()
    assert sorted(p.name for p in (tmp_path / "deep" / "er").iterdir()) == []


def test_non_finite_samples_exit_2_and_write_nothing(tiny_runs, tmp_path):
    """A checkpoint whose checksums match but whose weights are NaN (a diverged run)."""
    import jax

    from jax_mri_ldm.export import run_sampling

    run, step_dir = _copy_run(tiny_runs, tmp_path)
    ck = ckpt_lib.Checkpointer(str(run))
    items, meta = ck.restore_raw()
    items["ema_params"] = jax.tree.map(lambda x: np.full_like(x, np.nan), items["ema_params"])
    meta = {k: v for k, v in meta.items() if k != "checksums"}
    ck.delete(int(step_dir.name))
    ck.save(int(step_dir.name), items, meta)
    ck.close()
    out = tmp_path / "samples"
    with pytest.raises(CheckpointError, match="non-finite") as err:
        run_sampling(_sample_request(run, out))
    assert str(step_dir) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ldm"]


def test_pixels_do_not_depend_on_the_batch_size(tiny_runs, tmp_path):
    from PIL import Image

    from jax_mri_ldm.export import run_sampling

    def pixels(batch_size):
        out = tmp_path / f"b{batch_size}"
        run_sampling(_sample_request(tiny_runs["ldm_dir"], out, batch_size=batch_size))
        files = sorted(p for p in out.rglob("*.png") if p.name != "grid.png")
        return [p.name for p in files], np.stack([np.asarray(Image.open(p)) for p in files])

    names1, one = pixels(1)
    names3, three = pixels(3)
    assert names1 == names3 and len(names1) == 3
    # Same noise per image; the batched network may round differently in the last float bit,
    # which can move a pixel that sits on a rounding boundary by one grey level.
    diff = np.abs(one.astype(int) - three.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3


def test_sample_cli_is_quiet_and_cleans_stale_temp_folders(tiny_runs, tmp_path):
    out = tmp_path / "samples"
    stale = tmp_path / ".samples.tmpkilled"
    stale.mkdir()
    (stale / "normal_00000.png").write_bytes(b"partial")
    (stale / ".owner").write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname()}))
    proc = _run_cli(
        "sample.py",
        f"--workdir={tiny_runs['ldm_dir']}",
        f"--out={out}",
        "--num_samples=2",
        "--steps=2",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not stale.exists() and "removed" in proc.stderr
    log_lines = [ln for ln in proc.stderr.splitlines() if ln[:1] in "IW" and ln[1:5].isdigit()]
    assert not [ln for ln in log_lines if ln.startswith("I")], log_lines[:5]  # no absl INFO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]
    assert not (out / ".owner").exists()


def test_verbosity_flag_restores_info_logs(monkeypatch):
    from absl import flags
    from absl import logging as absl_logging

    before = absl_logging.get_verbosity()
    try:
        monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 0)
        cli.setup_logging()
        assert absl_logging.get_verbosity() == absl_logging.WARNING
        absl_logging.set_verbosity(absl_logging.INFO)
        monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 1)  # --verbosity=0 given
        cli.setup_logging()
        assert absl_logging.get_verbosity() == absl_logging.INFO
    finally:
        absl_logging.set_verbosity(before)


# ----------------------------------------------------------------------------- resume


def test_resume_leaves_no_duplicate_metrics(tmp_path):
    """Records logged after the last checkpoint (a crash) are dropped, then logged once."""
    from test_engine import toy_config, toy_task

    from jax_mri_ldm.engine import loop

    workdir = str(tmp_path / "toy")
    loop.run(toy_config(num_steps=4), workdir, toy_task())
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:  # logged, never checkpointed
        for step in (5, 6):
            f.write(json.dumps({"step": step, "split": "train", "loss": 9.0}) + "\n")
    loop.run(toy_config(num_steps=8), workdir, toy_task())
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        keys = [(r["split"], r["step"]) for r in map(json.loads, f)]
    assert len(keys) == len(set(keys)), sorted(keys)
    assert sorted(s for split, s in keys if split == "train") == list(range(1, 9))


# ----------------------------------------------------------------------------- error policy

_BUG = """
import runpy, sys
import jax_mri_ldm.train_vae as trainer
def train_and_evaluate(config, workdir):
    a, = []  # a bug: ValueError('not enough values to unpack ...')
trainer.train_and_evaluate = train_and_evaluate
sys.argv = ["train.py", "--config=configs/vae.py:tiny", "--workdir=" + sys.argv[1]]
runpy.run_path("train.py", run_name="__main__")
"""


def test_unexpected_exception_keeps_its_traceback_and_exit_1(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _BUG, str(tmp_path / "run")],
        cwd=REPO,
        env=env_for_subprocess(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and "not enough values to unpack" in proc.stderr
    assert "error: not enough values" not in proc.stderr
    assert not (tmp_path / "run").exists()  # the failed start left no workdir


# ----------------------------------------------------------------------------- README cases


def test_sample_request_errors_write_nothing(tiny_runs, tmp_path):
    from jax_mri_ldm.export import run_sampling
    from jax_mri_ldm.sampler_settings import SamplerSpec

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cases = [
        (tiny_runs["ldm_dir"], full, "exists and is not empty"),
        (tmp_path / "missing", tmp_path / "o1", "does not exist"),
        (full, tmp_path / "o2", "holds no checkpoints"),
        (tiny_runs["vae_dir"], tmp_path / "o3", "is a 'vae' run, not a diffusion run"),
    ]
    for workdir, out, message in cases:
        with pytest.raises(UserError, match=message):
            run_sampling(_sample_request(workdir, out))
    with pytest.raises(UserError, match="sampler settings do not fit"):
        run_sampling(
            _sample_request(tiny_runs["ldm_dir"], tmp_path / "o4", spec=SamplerSpec(steps=10**6))
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]


def test_missing_vae_run_and_diverged_training_exit_2(tmp_path, monkeypatch, capsys):
    from jax_mri_ldm import pipeline, train_vae
    from jax_mri_ldm.engine.loop import NonFiniteLossError

    with pytest.raises(UserError, match="no VAE run in"):
        pipeline.load_vae(str(tmp_path / "absent"))

    def diverge(config, workdir):
        raise NonFiniteLossError("vae: non-finite loss (nan) at step 3 (epoch 1)")

    monkeypatch.setattr(train_vae, "train_and_evaluate", diverge)
    assert cli.run_training(tiny_vae_config(tmp_path), str(tmp_path / "run")) == 2
    assert "error: vae: non-finite loss (nan) at step 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# README row (its first backticked message) -> the test in this file that runs that case.
TROUBLESHOOTING_TESTS = {
    "error: --config.model.nonexistent: config.model has no field": "config_typos_exit_2",
    "error: --config=configs/vae.py:tinyy: unknown preset": "config_typos_exit_2",
    "error: flag --config.train.batch_size=abc:": "config_typos_exit_2",
    "error: --workdir=runs/vae is in use by process 1234 on host h": "second_training_on_a",
    "error: cannot resume the run in --workdir=...: its checkpoint was trained with a "
    "different config": "refused_resume_writes_nothing",
    "error: checkpoint .../checkpoints/N is damaged": "sample_cli_damaged_checkpoint",
    "error: the images sampled from checkpoint ... hold non-finite values": "non_finite_samples",
    "error: ...: non-finite loss (nan) at step": "diverged_training_exit_2",
    "error: class name '../x' in ... contains a path separator": "crafted_class_names",
    "error: --out=... exists and is not empty": "sample_request_errors_write_nothing",
    "error: --workdir=... does not exist": "sample_request_errors_write_nothing",
    "error: no VAE run in ...": "missing_vae_run",
    "Data errors (": "failed_start_leaves_no_workdir",
    "warning: checkpoint ... has no content checksums": "without_checksums_loads",
    "warning: ... is an unfinished run": "unfinished_run_warns",
    "note: removed .../.samples.tmpXXXX": "cleans_stale_temp_folders",
    "error: .../split.json is missing: a resumed run must keep the split it trained on": (
        "without_the_saved_split_is_refused"
    ),
    "...split.json: N group(s) of near-identical images span splits ...; this split predates "
    "near-duplicate grouping": "predating_near_duplicates_is_used_as_saved",
}

# The two split cases are tested where the split code is; listed here for the README check.
from test_data_splits import (  # noqa: E402
    test_saved_split_predating_near_duplicates_is_used_as_saved_with_a_warning,  # noqa: F401
)
from test_train_vae import test_resuming_without_the_saved_split_is_refused  # noqa: E402, F401


def test_every_troubleshooting_case_of_the_readme_is_tested():
    text = (REPO / "README.md").read_text()
    section = text.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    keys = []
    for row in rows:
        first = row.split("|")[1].strip()
        keys.append(first.split("`")[1] if first.startswith("`") else first.split("`")[0])
    assert keys and sorted(keys) == sorted(TROUBLESHOOTING_TESTS), sorted(keys)
    names = [n for n in globals() if n.startswith("test_")]
    for key, fragment in TROUBLESHOOTING_TESTS.items():
        assert any(fragment in n for n in names), (key, fragment)


def test_resume_from_a_damaged_checkpoint_is_refused_and_writes_nothing(tmp_path):
    from test_engine import toy_config, toy_task

    from jax_mri_ldm.engine import loop

    workdir = tmp_path / "toy"
    loop.run(toy_config(num_steps=4), str(workdir), toy_task())
    assert flip_array_bytes(workdir / "checkpoints" / "4", merged=True) > 0
    before = _tree_listing(workdir)
    with pytest.raises(CheckpointError) as err:
        loop.run(toy_config(num_steps=8), str(workdir), toy_task())
    assert str(workdir / "checkpoints" / "4") in str(err.value)
    assert "Earlier checkpoints: steps 2" in str(err.value)
    assert _tree_listing(workdir) == before


@pytest.mark.parametrize(
    "error, damaged",
    [
        (Exception("Encountered error while reading array index: 3"), True),  # orbax's wrap
        (ValueError("Error decoding chunk"), True),  # tensorstore
        (TypeError("a bug"), False),
    ],
)
def test_checkpoint_read_failures_are_damage_and_bugs_stay_bugs(
    tiny_runs, monkeypatch, error, damaged
):
    checkpointer = ckpt_lib.Checkpointer(str(tiny_runs["ldm_dir"]))

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(checkpointer._manager, "restore", fail)
    try:
        with pytest.raises(CheckpointError if damaged else TypeError) as err:
            checkpointer.restore_raw()
    finally:
        checkpointer.close()
    assert ("is damaged" in str(err.value)) == damaged
