"""`sample.py` on the tiny run: outputs, manifest, reproducibility, read-back, every error."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, env_for_subprocess
from jax_mri_ldm import export
from jax_mri_ldm.data.folders import load_scan, scan_folder  # noqa: F401  (reader under test)
from jax_mri_ldm.export import SampleRequest, resolve_labels, run_sampling
from jax_mri_ldm.sampler_settings import SamplerSpec


def _request(tiny_runs, out, **kw):
    base = dict(
        workdir=str(tiny_runs["ldm_dir"]),
        num_samples=5,
        batch_size=4,
        spec=SamplerSpec(sampler="ddim", steps=5),
        out=str(out),
        progress=False,
    )
    base.update(kw)
    return SampleRequest(**base)


def _read_pngs(out):
    from PIL import Image

    files = sorted(p for p in out.rglob("*.png") if p.name != "grid.png")
    return files, np.stack([np.asarray(Image.open(p)) for p in files])


def test_sampling_writes_labelled_images_and_manifest(tiny_runs, tmp_path):
    out = tmp_path / "syn"
    summary = run_sampling(_request(tiny_runs, out, label="tumour"))
    assert summary["num_images"] == 5
    files, images = _read_pngs(out)
    assert len(files) == 5 and all(p.parent.name == "tumour" for p in files)
    assert images.shape == (5, 32, 32) and images.dtype == np.uint8
    assert (out / "grid.png").exists()
    rows = export.read_manifest(str(out))
    assert len(rows) == 5 and {r["label"] for r in rows} == {1}
    row = rows[0]
    for key in (
        "file",
        "label_name",
        "seed",
        "sampler",
        "steps",
        "guidance",
        "checkpoint_step",
        "config_fingerprint",
        "time",
    ):
        assert key in row
    assert row["label_name"] == "tumour" and row["sampler"] == "ddim" and row["steps"] == 5


def test_same_seed_same_images_different_seed_differs(tiny_runs, tmp_path):
    run_sampling(_request(tiny_runs, tmp_path / "a", label="all", seed=1))
    run_sampling(_request(tiny_runs, tmp_path / "b", label="all", seed=1))
    run_sampling(_request(tiny_runs, tmp_path / "c", label="all", seed=2))
    _, a = _read_pngs(tmp_path / "a")
    _, b = _read_pngs(tmp_path / "b")
    _, c = _read_pngs(tmp_path / "c")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0


def test_output_reads_back_as_labelled_dataset(tiny_runs, tmp_path):
    import ml_collections

    from jax_mri_ldm.data import load_imageset
    from jax_mri_ldm.data.config import get_data_config

    out = tmp_path / "syn"
    run_sampling(_request(tiny_runs, out, label="all", num_samples=6))
    cfg: ml_collections.ConfigDict = get_data_config()
    cfg.path = str(out)
    cfg.image_size = 32
    cfg.cache_dir = str(tmp_path / "cache")
    ds = load_imageset(cfg)
    assert len(ds) == 6 and ds.counts() == {"normal": 3, "tumour": 3}


@pytest.mark.parametrize("fmt, suffix", [("npy", ".npy"), ("nii", ".nii.gz")])
def test_other_formats(tiny_runs, tmp_path, fmt, suffix):
    out = tmp_path / fmt
    run_sampling(_request(tiny_runs, out, label="0", num_samples=2, format=fmt))
    files = sorted((out / "normal").iterdir())
    assert len(files) == 2 and all(f.name.endswith(suffix) for f in files)


def test_resolve_labels():
    names = ("normal", "tumour")
    assert list(resolve_labels("1", names, 2)) == [1, 1]
    assert list(resolve_labels("Tumor", names, 1)) == [1]
    assert list(resolve_labels("notumor", names, 1)) == [0]  # the data layer's synonyms
    assert list(resolve_labels("Meningioma", ("normal", "glioma", "meningioma"), 1)) == [2]
    assert list(resolve_labels("all", names, 4)) == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="0=normal, 1=tumour"):
        resolve_labels("7", names, 1)


def _cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "sample.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_for_subprocess(),
        timeout=300,
    )


def test_cli_happy_path(tiny_runs, tmp_path):
    out = tmp_path / "cli"
    proc = _cli(
        f"--workdir={tiny_runs['ldm_dir']}",
        "--label=1",
        "--num_samples=2",
        "--sampler=dpmpp_2m",
        "--steps=4",
        "--guidance_scale=2",
        "--guidance_interval=0.5,inf",
        f"--out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((out / "tumour").glob("*.png"))) == 2
    rows = export.read_manifest(str(out))
    assert rows[0]["guidance"] == 2.0 and rows[0]["guidance_interval"] == [0.5, None]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["num_images"] == 2


def test_cli_errors_exit_2_and_write_nothing(tiny_runs, tmp_path):
    ldm = f"--workdir={tiny_runs['ldm_dir']}"
    nonempty = tmp_path / "full"
    nonempty.mkdir()
    (nonempty / "keep.txt").write_text("mine")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    cases = [
        ([ldm, "--label=7", f"--out={tmp_path / 'o1'}"], "valid: 0=normal, 1=tumour"),
        ([f"--workdir={tiny_runs['vae_dir']}", f"--out={tmp_path / 'o2'}"], "not a diffusion"),
        ([f"--workdir={tmp_path / 'missing'}", f"--out={tmp_path / 'o3'}"], "does not exist"),
        ([f"--workdir={tmp_path}", f"--out={tmp_path / 'o4'}"], "no checkpoints"),
        ([ldm, "--num_samples=0", f"--out={tmp_path / 'o5'}"], "--num_samples=0"),
        ([ldm, f"--out={blocker / 'sub'}"], "not writable"),
        ([ldm, f"--out={nonempty}"], "--overwrite"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        assert message in proc.stderr, (args, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))
    assert sorted(p.name for p in nonempty.iterdir()) == ["keep.txt"]


def test_library_sampling_equals_the_exported_images(tiny_runs, tmp_path):
    """`LDMPipeline.sample_images` and sample.py's export draw the same images for a seed."""
    from jax_mri_ldm import pipeline

    out = tmp_path / "syn"
    run_sampling(_request(tiny_runs, out, label="all", num_samples=5, format="npy", seed=4))
    rows = export.read_manifest(str(out))
    exported = np.stack([np.load(out / r["file"]) for r in sorted(rows, key=lambda r: r["index"])])
    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    labels = np.arange(5, dtype=np.int32) % 2
    images = run.sample_images(labels, seed=4, spec=SamplerSpec(steps=5), batch_size=4)
    np.testing.assert_array_equal(images, exported)


def test_sampler_spec_resolves_defaults_per_sampler():
    assert SamplerSpec().resolved(1000) == SamplerSpec(
        "ddim", steps=50, eta=1.0, guidance_scale=3.0, spacing="uniform"
    )
    ddpm = SamplerSpec("ddpm", eta=1.0).resolved(100)
    assert (ddpm.steps, ddpm.spacing, ddpm.eta) == (100, "uniform", 0.0)  # eta: DDIM only
    assert SamplerSpec("dpmpp_2m").resolved(1000).spacing == "logSNR"
    assert SamplerSpec("ddim", steps=5).name(100) == "DDIM 5 η=1"
    scaled = SamplerSpec("dpmpp_2m", steps=10, eps_scale=0.99)
    assert scaled.name(1000) == "DPM-Solver++(2M) 10 ε/0.99"
    for bad, flag in [
        (SamplerSpec("euler"), "--sampler=euler"),
        (SamplerSpec(steps=0), "--steps=0"),
        (SamplerSpec(eta=-1.0), "--eta=-1.0"),
        (SamplerSpec(spacing="cubic"), "--spacing=cubic"),
        (SamplerSpec(eps_scale=0.0), "--eps_scale=0.0"),
    ]:
        with pytest.raises(ValueError, match=flag):
            bad.validate()


def test_default_sampler_is_the_fastest_ddpm_match_for_every_target(monkeypatch):
    """v-prediction samples with DPM-Solver++ 10 eps/0.99 where its schedule bounds the
    scaling; other targets, and v on a schedule that would amplify it, with DDIM-50 eta=1."""
    from jax_mri_ldm import sampler_settings
    from jax_mri_ldm.sampler_settings import default_sampler_spec
    from jax_mri_ldm.schedules import make_schedule

    cosine = make_schedule("cosine", 1000)
    fast = default_sampler_spec("v", cosine).resolved(1000)
    assert (fast.sampler, fast.steps, fast.spacing, fast.eta) == ("dpmpp_2m", 10, "logSNR", 0.0)
    assert fast.eps_scale == 0.99
    assert fast.guidance_scale == SamplerSpec().guidance_scale
    for target in ("eps", "x0"):
        assert default_sampler_spec(target, cosine) == SamplerSpec()
    fits = sampler_settings.eps_scale_fits
    spec = SamplerSpec(**sampler_settings.FAST_DETERMINISTIC)
    assert fits(spec, make_schedule("cosine", 100))  # logSNR steps keep it bounded at T = 100
    assert not fits(dataclasses.replace(spec, steps=3), make_schedule("cosine", 100))
    assert not fits(spec, make_schedule("cosine", 8))  # fewer timesteps than its steps
    assert default_sampler_spec("v", make_schedule("cosine", 8)) == SamplerSpec()
    # no signal at t = T-1 (zero terminal SNR): scaling is undefined, so the run falls back
    zero_snr = make_schedule("cosine", 1000, zero_terminal_snr=True)
    assert not fits(spec, zero_snr)
    assert default_sampler_spec("v", zero_snr) == SamplerSpec()
    monkeypatch.setattr(sampler_settings, "DETERMINISTIC_DEFAULT_PREDICTIONS", ())
    assert default_sampler_spec("v", cosine) == SamplerSpec()


def test_flags_override_only_what_they_set():
    from jax_mri_ldm.sampler_settings import FAST_DETERMINISTIC, spec_with

    base = SamplerSpec(**FAST_DETERMINISTIC)
    assert spec_with(base, {"sampler": None, "steps": None, "eta": None}) == base
    assert spec_with(base, {"guidance_scale": 1.5}).guidance_scale == 1.5
    same = spec_with(base, {"steps": 10, "spacing": "logSNR"})  # the same grid: scaling kept
    assert same.resolved(1000) == base.resolved(1000)
    # other steps or spacing drop the base's epsilon scaling (measured at its own steps) ...
    assert spec_with(base, {"steps": 25}).resolved(1000).steps == 25
    assert spec_with(base, {"steps": 25}).eps_scale == 1.0
    assert spec_with(base, {"spacing": "uniform"}).eps_scale == 1.0
    # ... unless it is given too
    assert spec_with(base, {"steps": 25, "eps_scale": 0.995}).eps_scale == 0.995
    # another sampler drops the base's steps, spacing and scaling: they belong to its sampler
    ddim = spec_with(base, {"sampler": "ddim"}).resolved(1000)
    want = (50, "uniform", SamplerSpec().eta, 1.0)  # eta back to the stochastic default's
    assert (ddim.steps, ddim.spacing, ddim.eta, ddim.eps_scale) == want
    assert spec_with(base, {"sampler": "ddim", "eta": 0.0}).resolved(1000).eta == 0.0
    # DDPM always runs all T: giving its steps is the same grid
    ddpm = SamplerSpec("ddpm", eps_scale=0.99)
    assert spec_with(ddpm, {"steps": 1000}).eps_scale == 0.99
    with pytest.raises(ValueError, match="--steps=0"):
        spec_with(base, {"steps": 0})


def test_unset_flags_sample_with_the_run_default(tiny_runs, tmp_path):
    """No sampler flags: the manifest records the run's default (tiny run: eps, DDIM eta=1);
    one flag changes only its field."""
    from jax_mri_ldm import pipeline

    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    want = run.default_spec().resolved(run.schedule.num_timesteps)
    out = tmp_path / "default"
    run_sampling(_request(tiny_runs, out, spec=None, num_samples=2))
    row = export.read_manifest(str(out))[0]
    assert (row["sampler"], row["steps"], row["eta"]) == (want.sampler, want.steps, want.eta)
    out = tmp_path / "w"
    run_sampling(_request(tiny_runs, out, spec=None, num_samples=2, overrides={"steps": 3}))
    row = export.read_manifest(str(out))[0]
    assert (row["sampler"], row["steps"], row["guidance"]) == (want.sampler, 3, 3.0)


def test_export_samples_with_a_deterministic_run_default(tiny_runs, tmp_path, monkeypatch):
    """The run's default reaches the images: a run whose default were the deterministic
    DPM-Solver++ (here at 3 steps, to stay fast) samples with it, and the manifest says so."""
    from jax_mri_ldm import pipeline
    from jax_mri_ldm.sampler_settings import FAST_DETERMINISTIC

    # unscaled: at 3 of the tiny run's 100 steps eps/0.99 would be amplified (and refused)
    fast = SamplerSpec(**(FAST_DETERMINISTIC | {"steps": 3, "eps_scale": 1.0}))
    monkeypatch.setattr(pipeline.LDMPipeline, "default_spec", lambda self: fast)
    out = tmp_path / "v"
    run_sampling(_request(tiny_runs, out, spec=None, num_samples=2))
    row = export.read_manifest(str(out))[0]
    assert (row["sampler"], row["steps"], row["spacing"]) == ("dpmpp_2m", 3, "logSNR")


def test_eps_scale_that_its_steps_would_amplify_is_a_user_error(tiny_runs, tmp_path):
    """DDIM 5's time-uniform steps jump from t = 99 to 74: epsilon scaling there would draw
    the image itself (`sampling.eps_scale_jump`), so it is refused before any sampling."""
    from jax_mri_ldm.errors import UserError

    out = tmp_path / "refused"
    with pytest.raises(UserError, match=r"DDIM 5 .*eps_scale=0.99 .*t=99 -> 74.*--spacing"):
        run_sampling(_request(tiny_runs, out, overrides={"eps_scale": 0.99}))
    assert not list(out.rglob("*.png"))


def test_eps_scale_flag_reaches_the_images_and_the_manifest(tiny_runs, tmp_path):
    """--eps_scale changes a deterministic sampler's images at the same seed and is recorded;
    left unset, the manifest says 1 (off). Same flags and seed give bit-identical images
    (test above), so any difference is the scaling reaching the sampler; the tiny eps run clips
    x0, which keeps that difference small."""
    fast = SamplerSpec("dpmpp_2m", steps=3, eta=0.0)
    rows, images = {}, {}
    for name, scale in (("off", None), ("on", 0.998)):
        out = tmp_path / name
        over = {"eps_scale": scale}
        run_sampling(
            _request(tiny_runs, out, spec=fast, num_samples=2, format="npy", overrides=over)
        )
        rows[name] = sorted(export.read_manifest(str(out)), key=lambda r: r["index"])
        images[name] = np.stack([np.load(out / r["file"]) for r in rows[name]])
    assert rows["off"][0]["eps_scale"] == 1.0 and rows["on"][0]["eps_scale"] == 0.998
    assert np.all(np.isfinite(images["on"]))
    assert not np.array_equal(images["on"], images["off"])


def _write_report(path, spec: SamplerSpec, step, fingerprint) -> None:
    """A report.json as evaluate.py writes it, with only the fields `--report` reads."""
    run = {"checkpoint_step": step, "config_fingerprint": fingerprint}
    path.write_text(json.dumps({"main_set": {"spec": dataclasses.asdict(spec)}, "run": run}))


def test_report_setting_is_sampled_and_flags_override_it(tiny_runs, tmp_path):
    """--report samples with the report's main-set setting (every field, EMA included) and says
    so in the manifest; a flag given beside it changes only its own field."""
    from jax_mri_ldm import pipeline

    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    spec = SamplerSpec("ddim", steps=4, eta=0.0, guidance_scale=2.0, use_ema=False)
    (tmp_path / "rep").mkdir()
    _write_report(tmp_path / "rep" / "report.json", spec, run.step, run.config_fingerprint)
    run_sampling(_request(tiny_runs, tmp_path / "a", spec=None, report=str(tmp_path / "rep")))
    row = export.read_manifest(str(tmp_path / "a"))[0]
    got = (row["sampler"], row["steps"], row["eta"], row["guidance"], row["use_ema"])
    assert got == ("ddim", 4, 0.0, 2.0, False)
    assert row["report"] == str(tmp_path / "rep")
    req = _request(tiny_runs, tmp_path / "b", spec=None, report=str(tmp_path / "rep"))
    run_sampling(dataclasses.replace(req, overrides={"guidance_scale": 1.0}))
    row = export.read_manifest(str(tmp_path / "b"))[0]
    got = (row["sampler"], row["steps"], row["guidance"], row["use_ema"])
    assert got == ("ddim", 4, 1.0, False)


def test_report_of_another_checkpoint_or_without_a_setting_is_refused(tiny_runs, tmp_path):
    """A report's sampler and w were chosen on one checkpoint: another step or config, a report
    without `main_set.spec` or a file that is not a report fails before sampling, naming
    --report and what to do."""
    from jax_mri_ldm import pipeline
    from jax_mri_ldm.errors import UserError

    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    spec = SamplerSpec("ddim", steps=4)
    cases = {
        "step.json": (lambda p: _write_report(p, spec, run.step + 1, run.config_fingerprint),
                      r"--report=.*step\.json is a report of checkpoint step .*drop --report"),
        "config.json": (lambda p: _write_report(p, spec, run.step, "0" * 12),
                        r"config 000000000000, but --workdir"),
        "old.json": (lambda p: p.write_text(json.dumps({"main_set": {}, "run": {}})),
                     r"records no sampler setting .*Regenerate"),
        "bad.json": (lambda p: p.write_text("not json"), r"not a readable report\.json"),
    }  # fmt: skip
    for name, (write, message) in cases.items():
        write(tmp_path / name)
        out = tmp_path / f"out_{name}"
        with pytest.raises(UserError, match=message):
            run_sampling(_request(tiny_runs, out, spec=None, report=str(tmp_path / name)))
        assert not out.exists(), name
    with pytest.raises(UserError, match="spec or report, not both"):
        run_sampling(_request(tiny_runs, tmp_path / "both", report=str(tmp_path / "step.json")))
