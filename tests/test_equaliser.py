"""The decoder equaliser: its fit, its file, and runs that fit, copy and decode through it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import blobs, equalised_copies
from conftest import fourier_blur as _blur
from conftest import textured as _textured
from jax_mri_ldm import equaliser, export, pipeline, train_ldm, train_vae
from jax_mri_ldm.errors import UserError


def test_fit_restores_the_spectrum_a_blur_removes():
    real = _textured(24, 32, 0)
    recon = _blur(real, 0.35)  # the highest frequency keeps about a third of its amplitude
    target = equaliser.mean_log_radial_power(real)
    before = np.abs(equaliser.mean_log_radial_power(recon) - target)[1:]
    gains = equaliser.fit_gains(real, recon)
    fitted = np.asarray(equaliser.apply(recon, gains))
    after = np.abs(equaliser.mean_log_radial_power(fitted) - target)[1:]
    assert gains.shape == (equaliser.num_radii(32, 32),) == (24,) and gains[0] == 1.0
    # log10 power units, out to the Nyquist radius; the corners lose more than MAX_GAIN restores
    assert before.max() > 0.5 and after[:16].max() < 0.02
    assert gains[-1] == pytest.approx(equaliser.MAX_GAIN)
    assert gains[-1] > 2.0 > gains[1] > 0.9  # the high band is lifted, the low left alone
    held_out = _textured(24, 32, 1)  # gains fitted on one set equalise another
    other = np.asarray(equaliser.apply(_blur(held_out, 0.35), gains))
    gap = equaliser.mean_log_radial_power(other) - equaliser.mean_log_radial_power(held_out)
    assert np.abs(gap[1:16]).max() < 0.15


def test_the_nyquist_lines_and_the_corners_get_their_own_gains():
    # A blur loses more at the corners than on the Nyquist lines (where the latent grid's
    # period-2 harmonics lie); one pooled gain for both lifted those harmonics above their
    # neighbours (the built-in VAE's reconstructions left the real grid-score range).
    real = _textured(24, 32, 5)
    gains = equaliser.fit_gains(real, _blur(real, 0.35))
    g = equaliser.gain_map(gains, 32, 32)
    assert g[0, 16] == pytest.approx(gains[16]) and g[16, 16] == pytest.approx(gains[23])
    assert gains[23] > 1.2 * gains[16]
    assert gains[15] < gains[16] < gains[17]  # the Nyquist radius follows its neighbours


def test_unit_gains_are_the_identity_and_output_stays_in_range():
    x = _textured(3, 16, 2)
    n = equaliser.num_radii(16, 16)
    np.testing.assert_allclose(np.asarray(equaliser.apply(x, np.ones(n))), x, atol=1e-5)
    y = np.asarray(equaliser.apply(x, np.full(n, equaliser.MAX_GAIN)))
    assert y.min() >= 0.0 and y.max() <= 1.0 and y.shape == x.shape


def test_gains_are_capped():
    real = _textured(8, 32, 4)
    gains = equaliser.fit_gains(real, _blur(real, 0.1))  # loses far more than MAX_GAIN restores
    assert gains.max() == pytest.approx(equaliser.MAX_GAIN)


def test_fit_refuses_mismatched_sets():
    with pytest.raises(ValueError, match="must be equal"):
        equaliser.fit_gains(np.zeros((2, 8, 8, 1)), np.zeros((3, 8, 8, 1)))


def test_file_round_trip_and_refusals(tmp_path):
    path = str(tmp_path / equaliser.FILE_NAME)
    assert equaliser.load(path, "abc", 16) is None  # no file: no equaliser
    gains = np.linspace(1, 2, equaliser.num_radii(16, 16))
    equaliser.save(path, equaliser.record(gains, "abc", 5))
    np.testing.assert_allclose(equaliser.load(path, "abc", 16), gains)
    with pytest.raises(UserError, match="other VAE weights. Rerun the VAE's training command"):
        equaliser.load(path, "def", 16)
    with pytest.raises(UserError, match="24 finite positive gains"):
        equaliser.load(path, "abc", 32)
    old = {**equaliser.record(gains, "abc", 5), "version": equaliser.VERSION - 1}
    (tmp_path / equaliser.FILE_NAME).write_text(json.dumps(old))
    with pytest.raises(UserError, match="written by equaliser version.*model.equaliser=True"):
        equaliser.load(path, "abc", 16)
    bad = equaliser.record(np.r_[gains[:-1], np.nan], "abc", 5)
    equaliser.save(path, bad)
    with pytest.raises(UserError, match="finite positive"):
        equaliser.load(path, "abc", 16)
    (tmp_path / equaliser.FILE_NAME).write_text("{not json")
    with pytest.raises(UserError, match="not a readable equaliser file"):
        equaliser.load(path, "abc", 16)


def test_runs_fit_copy_and_decode_through_the_equaliser(tiny_runs, tmp_path):
    vae_dir, ldm_dir = tmp_path / "vae", tmp_path / "ldm"
    shutil.copytree(tiny_runs["vae_dir"], vae_dir)
    shutil.copytree(tiny_runs["ldm_dir"], ldm_dir)
    assert pipeline.load_vae(str(vae_dir)).equaliser is None
    cfg = tiny_runs["vae_cfg"].copy_and_resolve_references()
    cfg.model.equaliser = True  # a finished run resumed with the option: fitted, no training
    train_vae.train_and_evaluate(cfg, str(vae_dir))
    vae = pipeline.load_vae(str(vae_dir))
    assert vae.equaliser is not None and len(vae.equaliser) == equaliser.num_radii(32, 32)
    x = blobs(4, cfg.data.image_size, 3)
    assert not np.allclose(vae.reconstruct(x), vae.without_equaliser().reconstruct(x))

    ldm_cfg = tiny_runs["ldm_cfg"].copy_and_resolve_references()
    ldm_cfg.vae_workdir = str(vae_dir)
    ldm_cfg.decoder.equaliser = "on"  # decode through the copy (the check: test_decoder_check)
    train_ldm.train_and_evaluate(ldm_cfg, str(ldm_dir))  # complete: copies the equaliser
    run = pipeline.load_ldm(str(ldm_dir))
    np.testing.assert_allclose(run.vae.equaliser, vae.equaliser)
    outs = {}
    for flag in (True, False):
        req = export.SampleRequest(
            workdir=str(ldm_dir),
            label="all",
            num_samples=2,
            batch_size=2,
            progress=False,
            out=str(tmp_path / f"samples_{flag}"),
            format="npy",
            equalise=flag,
        )
        export.run_sampling(req)
        rows = export.read_manifest(req.out)
        assert all(r["equalised"] is flag for r in rows)
        outs[flag] = np.stack([np.load(tmp_path / f"samples_{flag}" / r["file"]) for r in rows])
    assert not np.allclose(outs[True], outs[False])

    (vae_dir / equaliser.FILE_NAME).write_text(  # stale (other weights): refitted on rerun
        json.dumps(equaliser.record(np.ones(len(vae.equaliser)), "0" * 64, 1))
    )
    train_vae.train_and_evaluate(cfg, str(vae_dir))
    np.testing.assert_allclose(pipeline.load_vae(str(vae_dir)).equaliser, vae.equaliser)

    cfg.model.equaliser = False  # switched off again: the file goes, decoding is as trained
    train_vae.train_and_evaluate(cfg, str(vae_dir))
    assert pipeline.load_vae(str(vae_dir)).equaliser is None
    train_ldm.train_and_evaluate(ldm_cfg, str(ldm_dir))  # and the diffusion run's copy too
    assert pipeline.load_ldm(str(ldm_dir)).vae.equaliser is None


def test_a_copied_equaliser_for_other_weights_is_refused(tiny_runs, tmp_path):
    ldm_dir = tmp_path / "ldm"
    shutil.copytree(tiny_runs["ldm_dir"], ldm_dir)
    size = tiny_runs["vae_cfg"].data.image_size
    rec = equaliser.record(np.ones(equaliser.num_radii(size, size)), "0" * 64, 1)
    (ldm_dir / equaliser.LDM_FILE_NAME).write_text(json.dumps(rec))
    with pytest.raises(UserError, match="vae_equaliser.json was fitted for other VAE weights"):
        pipeline.load_ldm(str(ldm_dir))


def test_without_equaliser_keeps_everything_else():
    vae = pipeline.VAEPipeline(module=None, params={"a": 1}, meta={"m": 2}, equaliser=np.ones(3))
    raw = vae.without_equaliser()
    assert raw.equaliser is None and raw.params == vae.params and raw.meta == vae.meta
    assert vae.equaliser is not None  # a copy: the original still decodes through it


def test_a_fresh_run_with_the_option_fits_at_its_end(tmp_path):
    from conftest import tiny_vae_config

    cfg = tiny_vae_config(tmp_path)
    cfg.model.equaliser = True
    cfg.train.num_epochs = 1
    train_vae.train_and_evaluate(cfg, str(tmp_path / "vae"))
    rec = json.loads((tmp_path / "vae" / equaliser.FILE_NAME).read_text())
    assert rec["version"] == equaliser.VERSION and len(rec["gains"]) == 24  # 32 px
    assert pipeline.load_vae(str(tmp_path / "vae")).equaliser is not None  # its hash matches


def _equalised_runs(tiny_runs, tmp_path):
    """Copies of the tiny VAE and LDM runs, the VAE refitted with an equaliser, copied over."""
    vae_dir, ldm_dir, ldm_cfg = equalised_copies(tiny_runs, tmp_path)
    ldm_cfg.decoder.equaliser = "on"  # decode through the copy (the check: test_decoder_check)
    train_ldm.train_and_evaluate(ldm_cfg, str(ldm_dir))
    return vae_dir, ldm_dir


def test_bench_probe_scores_the_same_latents_both_ways(tiny_runs, tmp_path):
    import types

    from conftest import REPO, load_script

    _, ldm_dir = _equalised_runs(tiny_runs, tmp_path)
    de = load_script(REPO / "bench" / "ablations" / "decoder_equaliser.py", "bench_dec_eq")
    flags = types.SimpleNamespace(
        workdir=str(ldm_dir), guidance=1.0, per_class=2, samplers="default"
    )
    res = de.probe(flags)
    raw, eq = res["images"]["default, as trained"], res["images"]["default, equalised"]
    gains = pipeline.load_ldm(str(ldm_dir)).vae.equaliser
    np.testing.assert_allclose(eq, np.asarray(equaliser.apply(raw, gains)), atol=1e-6)
    assert set(res["recon"]) == {"as trained", "equalised"}
    assert res["recon"]["as trained"]["psnr"] != res["recon"]["equalised"]["psnr"]
    assert "default samples, equalised" in res["rows"] and "# Decoder equaliser" in de.render(res)


def test_versions_probe_decodes_one_set_three_ways(tiny_runs, tmp_path):
    from conftest import REPO, load_script

    _, ldm_dir = _equalised_runs(tiny_runs, tmp_path)
    old = tmp_path / "old.json"  # unit gains of version 2's length: old must equal raw
    old.write_text(json.dumps({"gains": [1.0] * (32 // 2 + 1), "version": 2}))
    ev = load_script(REPO / "bench" / "ablations" / "equaliser_versions.py", "bench_eq_ver")
    res = ev.probe(str(ldm_dir), str(old), guidance=1.0, per_class=2)
    assert res["num_samples"] == 4 and res["old_file"] == str(old) and res["old_version"] == 2
    for key in ("recon_grid", "sample_spectrum", "sample_grid", "val_recon_spectrum"):
        assert res["old"][key]["median"] == pytest.approx(res["raw"][key]["median"], abs=1e-4)
    assert res["current"]["recon_psnr"] != pytest.approx(res["raw"]["recon_psnr"])
    assert res["current"]["sample_spectrum"] != res["raw"]["sample_spectrum"]
    text = ev.render(res)
    assert f"old gains {old} (version 2)" in text and "| current |" in text
    run = pipeline.load_ldm(str(ldm_dir))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"gains": [1.0] * 24, "vae_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="other VAE weights"):
        ev.read_old(str(other), run)
    other.write_text(json.dumps({"gains": [1.0] * 20}))
    with pytest.raises(SystemExit, match="holds 20 gains"):
        ev.read_old(str(other), run)
