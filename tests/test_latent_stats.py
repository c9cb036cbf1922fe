"""bench/ablations/latent_stats.py: its statistics on known fields, and one run end to end;
real_vs_samples_grid.py's per-setting rows and sampler_quality.py's scores on the same tiny run."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from conftest import REPO, load_script

SCRIPT = REPO / "bench" / "ablations" / "latent_stats.py"


def _ls():
    return load_script(SCRIPT, "bench_latent_stats")


def test_roughness_and_high_band_tell_white_noise_from_a_smooth_field() -> None:
    ls = _ls()
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((8, 16, 16, 4)).astype(np.float32)
    yy, xx = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    wave = np.sin(2 * np.pi * (xx + yy) / 16.0)[None, :, :, None]
    smooth = (wave * rng.standard_normal((8, 1, 1, 4))).astype(np.float32)
    white, flat = ls.stats(noise, noise), ls.stats(smooth, smooth)
    assert 0.9 < white["roughness"] < 1.1 and flat["roughness"] < 0.1
    # white noise spreads its power evenly: the share above half the Nyquist radius is the
    # share of such frequencies in the grid; a period-16 wave has none there
    f = np.fft.fftfreq(16)
    share = float((np.hypot(*np.meshgrid(f, f)) > 0.25).mean())  # 1 - pi / 16 = 0.80 roughly
    assert abs(white["high_band_share"] - share) < 0.05 and flat["high_band_share"] < 1e-6
    assert white["std"] == pytest.approx(float(noise.std()), rel=1e-6)
    assert white["nn_distance"] < 1e-6  # each latent is in its own pool (rounding only)


def test_nearest_is_the_rms_distance_to_the_closest_pool_member() -> None:
    ls = _ls()
    pool = np.zeros((3, 2, 2, 1), np.float32)
    pool[1] += 1.0
    pool[2] += 3.0
    z = np.full((2, 2, 2, 1), 0.8, np.float32)
    z[1] = 2.5
    np.testing.assert_allclose(ls.nearest(z, pool), [0.2, 0.5], atol=1e-6)


def test_runs_on_a_finished_tiny_ldm_with_the_norm_table(tiny_runs, tmp_path) -> None:
    ls = _ls()
    out = tmp_path / "stats.json"
    args = types.SimpleNamespace(
        workdir=str(tiny_runs["ldm_dir"]),
        out=str(out),
        settings="ddim:5:uniform:1,dpmpp_2m:4:logSNR:0::0.99",
        per_class=2,
        seed=0,
        guidance=3.0,
        norms=True,
    )
    ls.main(args)
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"training (1/8 vs the rest)", *args.settings.split(",")}
    for text, calls in zip(args.settings.split(","), (5, 4), strict=True):
        assert rows[text]["seconds_per_image"] is None  # one recording pass, not timed
        untimed = {"norms", "seconds_per_image"}
        assert np.isfinite([v for k, v in rows[text].items() if k not in untimed]).all()
        norms = rows[text]["norms"]
        assert len(norms) == calls  # one entry per network call's timestep
        noisiest = norms[max(norms, key=int)]
        # at the first call both sides are (almost) pure noise: RMS near 1 on both
        assert abs(noisiest["sampled"][0] - 1) < 0.2 and abs(noisiest["training"][0] - 1) < 0.2
    # the recording pass ends in the timed sampler's latents, so the statistics are the same
    from jax_mri_ldm.pipeline import load_ldm

    run = load_ldm(str(tiny_runs["ldm_dir"]))
    spec = ls.parse_setting(args.settings.split(",")[1], 3.0).resolved(run.schedule.num_timesteps)
    timed, _ = ls.sample_latents(run, spec, 2, 0)
    np.testing.assert_allclose(ls.trajectory_norms(run, spec, 2, 0)[1], timed, atol=1e-4)


def test_grid_draws_a_row_per_setting_from_the_same_noise(tiny_runs, tmp_path) -> None:
    """Per class a real row, then one row per setting; the rows share their starting noise, so
    epsilon scaling (the only difference) changes the images but not their number."""
    grid = load_script(REPO / "bench" / "ablations" / "real_vs_samples_grid.py", "bench_grid")
    from report_samples import load_run_data

    run, _, _ = load_run_data(str(tiny_runs["ldm_dir"]))
    texts = ["dpmpp_2m:3:logSNR:0", "dpmpp_2m:3:logSNR:0::0.998"]
    sets = grid.setting_sets(run, texts, 3.0, 2)
    assert [name for _, _, name in sets] == ["DPM-Solver++(2M) 3", "DPM-Solver++(2M) 3 ε/0.998"]
    (a, ya, _), (b, yb, _) = sets
    assert a.shape == b.shape == (4, *a.shape[1:]) and np.array_equal(ya, yb)
    assert not np.array_equal(a, b)
    out = tmp_path / "grid.png"
    grid.main(str(tiny_runs["ldm_dir"]), 3.0, 2, str(out), ",".join(texts))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sampler_quality_scores_every_setting_against_one_reference(tiny_runs, tmp_path) -> None:
    sq = load_script(REPO / "bench" / "ablations" / "sampler_quality.py", "bench_sq")
    out = tmp_path / "q.json"
    texts = ["dpmpp_2m:3:logSNR:0", "dpmpp_2m:3:logSNR:0::0.998", "ddpm"]
    args = types.SimpleNamespace(
        workdir=str(tiny_runs["ldm_dir"]), out=str(out), settings=",".join(texts), step=None,
        per_class=3, seed=0, guidance=3.0, classifier_steps=5, reference=None,
    )  # fmt: skip
    sq.main(args)
    got = json.loads(out.read_text())
    assert set(got["rows"]) == set(texts)  # written with sorted keys
    real_div = got["real_test_diversity"]  # None when the tiny test split has < 2 per class
    assert real_div is None or 0 < real_div <= 1
    for row in got["rows"].values():
        assert row["fid_ratio"] > 0 and 0 <= row["memorised"] <= 1 and row["sample_seconds"] > 0
        assert set(row["fidelity"]) == {"normal", "tumour"} and 0 < row["diversity"] <= 1
    assert got["rows"][texts[1]]["name"].endswith("ε/0.998")
    match = got["ddpm_match"]
    assert match["reference"] == "ddpm" and set(match["settings"]) == set(texts[:2])
    for verdict in match["settings"].values():
        checks = verdict["checks"]
        assert {"fidelity", "nn_ssim", "spectrum"} <= set(checks)
        assert verdict["passes"] == all(c["passes"] for c in checks.values())
        lo, hi = checks["nn_ssim"]["ddpm_interval"]
        assert lo <= checks["nn_ssim"]["ddpm_value"] <= hi
    per = np.load(tmp_path / "q_per_image.npz")
    assert per[f"{texts[0]}/nn_ssim"].shape == (6,) and per["ddpm/correct"].shape == (6,)

    # a second call reuses the DDPM row and judges its one new setting against it
    again = types.SimpleNamespace(**(vars(args) | {"out": str(tmp_path / "r.json")}))
    again.settings, again.reference = texts[1], str(out)
    sq.main(again)
    reused = json.loads((tmp_path / "r.json").read_text())
    assert set(reused["rows"]) == {"ddpm", texts[1]}
    assert reused["rows"]["ddpm"] == got["rows"]["ddpm"] | {"reused_from": str(out)}
    assert reused["ddpm_match"]["settings"][texts[1]] == match["settings"][texts[1]]
    other = types.SimpleNamespace(**(vars(again) | {"seed": 1, "out": str(tmp_path / "s.json")}))
    with pytest.raises(SystemExit, match="its seed is 0"):
        sq.main(other)


def _reference_file(tmp_path, **fields) -> str:
    """An earlier sampler_quality output with one DDPM row and its per-image file."""
    row = {"sampler": "ddpm", "guidance_scale": 3.0, "eps_scale": 1.0} | fields.pop("row", {})
    prev = {"workdir": "/run", "step": 8, "seed": 0, "per_class": 3, "real_recall": {"a": 1.0},
            "guidance": 3.0, "classifier_steps": 5} | fields  # fmt: skip
    prev = {k: v for k, v in prev.items() if v is not None}  # None: a field not recorded
    path = tmp_path / "old.json"
    path.write_text(json.dumps(prev | {"rows": {"ddpm": row}}))
    np.savez(tmp_path / "old_per_image.npz", **{"ddpm/nn_ssim": np.ones(6)})
    return str(path)


def test_sampler_quality_reference_refuses_what_it_cannot_check(tmp_path) -> None:
    """A reference is reused only when every field it shares with this call is recorded and
    equal, and its DDPM row is plain DDPM at this call's w."""
    sq = load_script(REPO / "bench" / "ablations" / "sampler_quality.py", "bench_sq")
    out = {"workdir": "/run", "step": 8, "seed": 0, "per_class": 3, "real_recall": {"a": 1.0},
           "guidance": 3.0, "classifier_steps": 5}  # fmt: skip
    text, row, per = sq.load_reference(_reference_file(tmp_path), out)
    assert text == "ddpm" and row["reused_from"].endswith("old.json") and per["nn_ssim"].size == 6
    for fields, message in [
        ({"guidance": 2.0}, "its guidance is 2.0"),
        ({"guidance": None}, "its guidance is 'not recorded'"),  # written before the field
        ({"classifier_steps": 600}, "its classifier_steps is 600"),
        ({"row": {"eps_scale": 0.99}}, "not plain DDPM"),
        ({"row": {"guidance_scale": 5.0}}, "not plain DDPM"),
    ]:
        with pytest.raises(SystemExit, match=message):
            sq.load_reference(_reference_file(tmp_path, **fields), out)


def test_ddpm_checks_pass_a_copy_of_ddpm_and_fail_a_worse_fidelity() -> None:
    sq = load_script(REPO / "bench" / "ablations" / "sampler_quality.py", "bench_sq")
    rng = np.random.default_rng(0)
    ddpm = {"correct": np.ones(40), "nn_ssim": rng.uniform(0.4, 0.6, 40),
            "spectrum": rng.uniform(0.2, 0.3, 40), "grid": rng.uniform(1.0, 1.1, 40)}  # fmt: skip
    worse = dict(ddpm, correct=np.r_[np.ones(20), np.zeros(20)])
    pers = {"ddpm": ddpm, "copy": dict(ddpm), "worse": worse}
    rows = {t: {"sampler": t if t == "ddpm" else "ddim"} for t in pers}
    real = types.SimpleNamespace(
        ref=types.SimpleNamespace(test_nn=np.full(5, 0.5)), test_grid=np.full(5, 1.05)
    )
    got = sq.ddpm_checks(pers, rows, real)
    assert got["reference"] == "ddpm" and set(got["settings"]) == {"copy", "worse"}
    assert got["settings"]["copy"]["within"] and got["settings"]["copy"]["passes"]
    assert not got["settings"]["worse"]["checks"]["fidelity"]["passes"]
    assert not got["settings"]["worse"]["passes"]
    assert sq.ddpm_checks({"copy": ddpm}, {"copy": {"sampler": "ddim"}}, real) is None
