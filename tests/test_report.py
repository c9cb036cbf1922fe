"""The evaluation report on the tiny run: every section, finite numbers or explained nulls,
figures that exist and stay small, sample reuse across sections, and the CLI's errors."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, env_for_subprocess
from jax_mri_ldm.evaluation import report

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _strict_json(path):
    def refuse(token):
        raise AssertionError(f"{path} contains {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _leaves(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}.{i}")
    else:
        yield path, obj


@pytest.fixture(scope="module")
def tiny_report(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = report.write_report(str(tiny_runs["ldm_dir"]), str(out), preset="tiny", verbose=False)
    return out, result


def test_report_has_every_section_and_figure(tiny_report):
    out, result = tiny_report
    md = (out / "report.md").read_text()
    positions = [md.find(h + "\n") for h in report.SECTION_HEADERS]
    assert all(p >= 0 for p in positions), [
        h for h, p in zip(report.SECTION_HEADERS, positions, strict=True) if p < 0
    ]
    assert positions == sorted(positions)
    assert "python evaluate.py" in md and "python train.py --config=configs/ldm.py:tiny" in md
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(linked) == set(result["figures"].values())
    for rel in linked:
        path = out / rel
        assert path.exists(), rel
        assert path.stat().st_size < report.MAX_PNG_BYTES, (rel, path.stat().st_size)
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    for key in ("vae_reconstructions", "loss_curves", "samples_per_class", "difference_maps"):
        assert key in result["figures"]
    for key in ("memorisation_hist", "memorisation_pairs", "guidance_sweep", "downstream"):
        assert key in result["figures"]


def test_report_json_numbers_are_finite_or_explained(tiny_report):
    out, _ = tiny_report
    data = _strict_json(out / "report.json")
    reasons = data["null_reasons"]
    nulls = [p for p, v in _leaves(data) if v is None]
    for p in nulls:
        assert p in reasons, f"{p} is null without a reason"
        assert reasons[p] and reasons[p] != report._FALLBACK_NULL_REASON, (p, reasons[p])
    for p, v in _leaves(data):
        if isinstance(v, float):
            assert math.isfinite(v), p
    # Tiny split: 1 test image per class, so per-class test FID and test diversity are n/a
    # with a reason, while overall numbers exist.
    assert data["run"]["data"]["split"]["test"] == {"normal": 1, "tumour": 1}
    assert "fid_kid.synthetic_vs_test.per_class.normal.fid" in reasons


def test_report_metrics_have_sane_values(tiny_report, tiny_runs):
    _, r = tiny_report
    s = report.resolve_settings("tiny")
    vae = r["vae"]
    # Same frozen VAE, same test split: matches what the VAE run logged for its test split.
    reported = r["vae"]["vae_run_reported_test"]
    assert vae["psnr"]["mean"] == pytest.approx(reported["psnr"], abs=1e-3)
    assert vae["ssim"]["mean"] == pytest.approx(reported["ssim"], abs=1e-4)
    assert 0 < vae["ms_ssim"]["mean"] <= 1 and vae["ms_ssim_scales"] == 2
    assert 0 <= r["classifier"]["test"]["accuracy"] <= 1
    for c in ("normal", "tumour"):
        assert 0 <= r["fidelity"]["synthetic"]["per_class"][c] <= 1
    overall = r["fid_kid"]["synthetic_vs_test"]["overall"]
    assert overall["fid"] >= -1e-6 and overall["n_b"] == 2
    # Equal n per class on both sides of the synthetic and real-train comparisons.
    ref = r["fid_kid"]["real_train_vs_test"]["overall"]
    assert overall["n_a"] == ref["n_a"] == sum(r["fid_kid"]["n_per_class"].values())
    assert 0 < r["diversity"]["synthetic"]["mean"] <= 1
    mem = r["memorisation"]
    assert len(mem["synthetic_to_train"]["score"]) == 2 * s.num_synthetic_per_class
    assert 0 <= mem["fraction_flagged"] <= 1 and len(mem["nearest_pairs"]) == 5
    ds = r["downstream"]
    assert set(ds["arms"]) == {"real", "real+syn", "syn", "half+syn", "half"}
    assert all(len(a["per_seed"]) == s.study_seeds for a in ds["arms"].values())
    assert ds["arms"]["real+syn"]["train_counts"]["synthetic"] == {
        "normal": s.num_synthetic_per_class,
        "tumour": s.num_synthetic_per_class,
    }
    assert ds["interpretation"].strip()
    sweep = r["guidance_sweep"]
    assert [row["guidance"] for row in sweep["rows"]] == list(s.guidance_scales)
    assert sweep["chosen"] in s.guidance_scales and r["main_set"]["guidance"] == sweep["chosen"]
    rows = r["samplers"]["rows"]
    assert [row["sampler"] for row in rows] == ["ddpm", "ddim", "ddim", "dpmpp_2m", "dpmpp_2m"]
    assert [row["eta"] for row in rows][1:3] == [0.0, 1.0]
    assert rows[0]["steps"] == 100  # the tiny LDM's T: DDPM runs the full chain
    assert all(row["seconds_per_image"] > 0 for row in rows)
    assert r["timings_seconds"]["total"] > 0


def test_synthetic_images_share_batches_and_do_not_depend_on_count(tiny_runs):
    from jax_mri_ldm.train_ldm import LoadedLDM

    run = LoadedLDM(str(tiny_runs["ldm_dir"]))
    spec = report.SamplerSpec("ddim", 5, "uniform", 2.0)
    gen = report.SyntheticImages(
        run, run.ema_params, batch_size=4, seed=3, compile_options=FAST_COMPILE
    )
    x6, y6 = gen.generate(spec, 3)  # 6 images: batches 0 and 1 of 4
    x2, y2 = gen.generate(spec, 2)  # first 4 images: batch 0, from the cache
    assert list(y6) == [0, 1, 0, 1, 0, 1] and list(y2) == [0, 1, 0, 1]
    np.testing.assert_array_equal(x2, x6[:4])
    assert len(gen.stats[(spec, 4)]["batch_seconds"]) == 2  # nothing regenerated
    # Fewer images than a batch: served from the cached batch of 4, no compile for a batch of 2.
    np.testing.assert_array_equal(gen.generate(spec, 1)[0], x6[:2])
    assert list(gen.stats) == [(spec, 4)] and gen.timing(spec, 1)["batch_size"] == 4
    gen.clear()
    np.testing.assert_allclose(gen.generate(spec, 2)[0], x2, atol=1e-6)  # same seed: same
    gen.clear()
    gen.seed = 4
    assert np.abs(gen.generate(spec, 2)[0] - x2).mean() > 1e-3
    timing = gen.timing(spec, 2)
    assert timing["seconds_per_image"] > 0 and timing["batches_timed"] == 4


def test_choose_guidance_rule():
    rows = [
        {"guidance": 0.0, "fidelity": 0.55, "fid": 1.0},
        {"guidance": 1.0, "fidelity": 0.92, "fid": 2.0},
        {"guidance": 3.0, "fidelity": 0.99, "fid": 3.0},
    ]
    assert report.choose_guidance(rows, 0.95, 0.05)["chosen"] == 1.0  # bar 0.90: best FID
    assert report.choose_guidance(rows, 1.0, 0.0)["chosen"] == 3.0  # nobody qualifies
    assert report.choose_guidance(rows, None, 0.05)["chosen"] == 1.0  # no bar; w=0 excluded


def test_shrink_png_keeps_figures_small(tmp_path):
    rng = np.random.default_rng(0)
    noisy = (rng.random((700, 700, 3)) * 255).astype(np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(noisy).save(path)
    assert path.stat().st_size > 300_000
    size = report.shrink_png(str(path), 300_000)
    assert size == path.stat().st_size <= 300_000


def test_resolve_settings_errors():
    assert report.resolve_settings("tiny", study_seeds=None).study_seeds == 2
    with pytest.raises(ValueError, match="--preset=huge"):
        report.resolve_settings("huge")
    with pytest.raises(ValueError, match="unknown report option"):
        report.resolve_settings("tiny", num_images=3)
    with pytest.raises(ValueError, match="--study_seeds=0"):
        report.resolve_settings("tiny", study_seeds=0)


def _cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--preset=tiny", "--quiet", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_for_subprocess(),
        timeout=300,
    )


def test_cli_errors_exit_2(tiny_runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = f"--out={tmp_path / 'out'}"
    cases = [
        ([f"--workdir={tmp_path / 'missing'}", out], "does not exist"),
        ([f"--workdir={tiny_runs['vae_dir']}", out], "not a diffusion run"),
        ([f"--workdir={tiny_runs['ldm_dir']}", f"--out={blocker}"], "not a directory"),
        ([f"--workdir={tiny_runs['ldm_dir']}", out, "--guidance_scales=a,b"], "must be numbers"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        assert message in proc.stderr, (args, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_interpretation_follows_the_intervals():
    def summ(mean, half):
        return {"mean": mean, "half_width": half, "n": 5}

    ds = {
        "config": {"seeds": [0, 1, 2, 3, 4]},
        "data": {"real_test": {"normal": 60, "tumour": 70}},
        "arms": {"real": {"summary": {"accuracy": summ(0.80, 0.02)}}},
        "comparisons": {"real+syn - real": {"accuracy": summ(0.05, 0.02), "auc": summ(0.0, 0.01)}},
        "real_data_equivalence": {},
    }
    text = report.interpret_downstream(ds, 0.95, 0.96, 1.2)
    assert "+0.050 (95 % CI [+0.030, +0.070]): an improvement" in text
    assert "did not measurably help" not in text
    ds["comparisons"]["real+syn - real"]["accuracy"] = summ(-0.01, 0.03)
    text = report.interpret_downstream(ds, 0.70, 0.96, 3.0)
    assert "no detectable effect" in text and "did not measurably help" in text
    assert "(0.700) is below the classifier's accuracy" in text and "3.0x" in text
