"""The decoder check: the equaliser is kept only where it brings samples nearer real slices."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import equalised_copies, fourier_blur, textured
from jax_mri_ldm import cli, decoder_check, equaliser, pipeline, train_ldm
from jax_mri_ldm.errors import UserError


def _textured(n: int, seed: int) -> np.ndarray:
    return textured(n, 32, seed)


def _blur(images: np.ndarray) -> np.ndarray:
    return fourier_blur(images, 0.3)  # a loss the equaliser's capped gains can restore


def test_deviation_counts_real_interquartile_ranges():
    real = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # median 3, IQR 2
    assert decoder_check.deviation(np.array([3.0, 3.0]), real) == 0.0
    assert decoder_check.deviation(np.array([7.0]), real) == pytest.approx(2.0)
    assert decoder_check.deviation(np.array([2.0]), real) == pytest.approx(0.5)


def test_the_equaliser_is_kept_where_it_restores_the_samples_spectrum():
    real, reference = _textured(24, 1), _textured(24, 2)
    gains = equaliser.fit_gains(_textured(24, 3), _blur(_textured(24, 3)))
    blurred = _blur(_textured(16, 4))  # samples that lost the high band, as the fit's did
    rec = decoder_check.judge(blurred, gains, reference, real)
    assert rec["equalise"]
    assert rec["equalised"]["deviation"] < rec["as_trained"]["deviation"]
    assert rec["equalised"]["spectrum"]["within_real_iqr"]
    assert not rec["as_trained"]["spectrum"]["within_real_iqr"]


def test_the_equaliser_is_left_out_where_the_samples_need_none():
    real, reference = _textured(24, 1), _textured(24, 2)
    gains = equaliser.fit_gains(_textured(24, 3), _blur(_textured(24, 3)))
    sharp = _textured(16, 4)  # samples already as sharp as real: the gains over-sharpen them
    rec = decoder_check.judge(sharp, gains, reference, real)
    assert not rec["equalise"]
    assert rec["as_trained"]["deviation"] < rec["equalised"]["deviation"]


def test_a_bad_mode_is_refused_before_training():
    cfg = train_ldm_config()
    cfg.decoder.equaliser = "maybe"
    with pytest.raises(UserError, match="decoder.equaliser='maybe' is not one of auto, on, off"):
        cli.check_config_values(cfg)


def train_ldm_config():
    from jax_mri_ldm.config_loader import load_config

    return load_config("ldm", "tiny")


@pytest.fixture(scope="module")
def equalised(tiny_runs, tmp_path_factory):
    """Copies of the tiny runs, the VAE refitted with an equaliser (no training)."""
    vae_dir, ldm_dir, ldm_cfg = equalised_copies(
        tiny_runs, tmp_path_factory.mktemp("decoder_check")
    )
    return {"vae_dir": vae_dir, "ldm_dir": ldm_dir, "ldm_cfg": ldm_cfg}


def _verdict(ldm_dir) -> dict:
    return json.loads((ldm_dir / equaliser.CHOICE_FILE_NAME).read_text())


def test_a_finished_run_judges_its_equaliser_on_samples(equalised):
    ldm_dir, cfg = equalised["ldm_dir"], equalised["ldm_cfg"]
    assert cfg.decoder.equaliser == "auto"
    train_ldm.train_and_evaluate(cfg, str(ldm_dir))  # complete: copies, then judges
    rec = _verdict(ldm_dir)
    gains = pipeline.load_vae(str(equalised["vae_dir"])).equaliser
    assert rec["gains_sha256"] == equaliser.gains_sha256(gains) and rec["mode"] == "auto"
    for arm in ("as_trained", "equalised"):
        assert np.isfinite(rec[arm]["deviation"]) and rec[arm]["deviation"] >= 0
    assert rec["equalise"] == (rec["equalised"]["deviation"] <= rec["as_trained"]["deviation"])
    assert rec["step"] == pipeline.load_ldm(str(ldm_dir)).step
    run = pipeline.load_ldm(str(ldm_dir))
    if rec["equalise"]:
        np.testing.assert_allclose(run.vae.equaliser, gains)
    else:
        assert run.vae.equaliser is None
    mtime = (ldm_dir / equaliser.CHOICE_FILE_NAME).stat().st_mtime_ns
    train_ldm.train_and_evaluate(cfg, str(ldm_dir))  # same settings: the verdict is kept
    assert (ldm_dir / equaliser.CHOICE_FILE_NAME).stat().st_mtime_ns == mtime


def test_the_check_can_be_redone_at_another_guidance(equalised):
    ldm_dir, cfg = equalised["ldm_dir"], equalised["ldm_cfg"].copy_and_resolve_references()
    cfg.decoder.equaliser = "auto"
    train_ldm.train_and_evaluate(cfg, str(ldm_dir))
    run = pipeline.load_ldm(str(ldm_dir))
    gains = pipeline.load_vae(cfg.vae_workdir).equaliser  # the run's copy
    real = train_ldm.decoder_check_reals(cfg)
    per_class, seed = int(cfg.decoder.check_per_class), int(cfg.seed)
    same = decoder_check.check_run(run, gains, *real, per_class, seed)
    for arm in ("as_trained", "equalised"):  # the default w redoes the run's own verdict
        assert same[arm]["deviation"] == pytest.approx(_verdict(ldm_dir)[arm]["deviation"])
    w = run.default_spec().guidance_scale + 2.0
    other = decoder_check.check_run(run, gains, *real, per_class, seed, guidance_scale=w)
    assert other["guidance_scale"] == w and same["guidance_scale"] != w
    assert other["as_trained"]["deviation"] != same["as_trained"]["deviation"]


def test_on_and_off_override_the_check(equalised):
    ldm_dir, cfg = equalised["ldm_dir"], equalised["ldm_cfg"].copy_and_resolve_references()
    gains = pipeline.load_vae(str(equalised["vae_dir"])).equaliser
    for mode, expect in (("off", None), ("on", gains)):
        cfg.decoder.equaliser = mode
        train_ldm.train_and_evaluate(cfg, str(ldm_dir))
        assert _verdict(ldm_dir)["mode"] == mode and "as_trained" not in _verdict(ldm_dir)
        got = pipeline.load_ldm(str(ldm_dir)).vae.equaliser
        assert got is None if expect is None else np.allclose(got, expect)


def test_a_verdict_on_other_gains_is_refused_then_redone(equalised):
    ldm_dir, cfg = equalised["ldm_dir"], equalised["ldm_cfg"].copy_and_resolve_references()
    cfg.decoder.equaliser = "on"
    train_ldm.train_and_evaluate(cfg, str(ldm_dir))
    rec = _verdict(ldm_dir)
    rec["gains_sha256"] = "0" * 64
    (ldm_dir / equaliser.CHOICE_FILE_NAME).write_text(json.dumps(rec))
    with pytest.raises(UserError, match="decoder_choice.json judged other equaliser gains"):
        pipeline.load_ldm(str(ldm_dir))
    train_ldm.train_and_evaluate(cfg, str(ldm_dir))  # the rerun redoes it
    assert pipeline.load_ldm(str(ldm_dir)).vae.equaliser is not None


def test_a_run_without_an_equaliser_keeps_no_verdict(tiny_runs, tmp_path):
    ldm_dir = tmp_path / "ldm"
    shutil.copytree(tiny_runs["ldm_dir"], ldm_dir)
    (ldm_dir / equaliser.CHOICE_FILE_NAME).write_text("{}")
    train_ldm.train_and_evaluate(tiny_runs["ldm_cfg"], str(ldm_dir))
    assert not (ldm_dir / equaliser.CHOICE_FILE_NAME).exists()
    assert pipeline.load_ldm(str(ldm_dir)).vae.equaliser is None


def test_the_report_names_the_verdict_and_both_arms():
    from jax_mri_ldm.evaluation.sections import vae as vae_section

    real, reference = _textured(24, 1), _textured(24, 2)
    gains = equaliser.fit_gains(_textured(24, 3), _blur(_textured(24, 3)))
    rec = decoder_check.judge(_textured(16, 4), gains, reference, real)
    rec.update(mode="auto", sampler="DDIM 50")
    text = "\n".join(vae_section._render_check(rec))
    assert "leaves out the equaliser" in text and "DDIM 50 samples" in text
    assert f"deviation {rec['equalised']['deviation']:.2f}" in text
    assert vae_section._render_check({"mode": "off", "equalise": False})[0].startswith(
        "The decoder equaliser is off by config"
    )


def test_the_grid_period_is_the_decoders_upsampling_where_it_can_be_scored():
    assert decoder_check.grid_period(128, 16) == 8 and decoder_check.grid_period(256, 32) == 8
    assert decoder_check.grid_period(100, 16) is None  # 100 px is no multiple of period 6
    assert decoder_check.grid_period(8, 1) is None  # one period fits: no harmonic to score
    real, reference = _textured(24, 1), _textured(24, 2)
    gains = equaliser.fit_gains(_textured(24, 3), _blur(_textured(24, 3)))
    spec_only = decoder_check.judge(_blur(_textured(16, 4)), gains, reference, real, period=None)
    both = decoder_check.judge(_blur(_textured(16, 4)), gains, reference, real, period=8)
    assert spec_only["as_trained"]["grid"] is None and spec_only["equalise"]
    for arm in ("as_trained", "equalised"):  # the grid adds its own deviation to the spectrum's
        assert both[arm]["spectrum"] == spec_only[arm]["spectrum"]
        assert both[arm]["deviation"] >= spec_only[arm]["deviation"]
