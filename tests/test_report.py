"""The evaluation report on the tiny run: every section, finite numbers or explained nulls,
figures that exist and stay small, the controls and the headline, sample reuse across sections,
and the CLI (`evaluate.py --config=configs/report.py:tiny`) and its errors."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, env_for_subprocess
from jax_mri_ldm import plots
from jax_mri_ldm.data import ImageSet
from jax_mri_ldm.evaluation import (
    control_study,
    controls,
    report,
    runinfo,
    scoring,
    setmetrics,
    study,
    trust,
)
from jax_mri_ldm.evaluation.context import FALLBACK_NULL_REASON, Nulls
from jax_mri_ldm.evaluation.sections import (
    downstream,
    guidance,
    headline,
    memorisation,
    samplers,
    summary,
)
from jax_mri_ldm.sampler_settings import SamplerSpec

FAST_COMPILE = {"xla_backend_optimization_level": 0}
HEADLINE_FIELDS = (
    "fidelity",
    "real_recall",
    "fid_ratio",
    "precision",
    "recall",
    "nn_ssim_ratio",
    "grid_ratio",
    "spectrum_ratio",
    "spectrum_within_real_iqr",
    "memorised_frac",
    "memorised_frac_relative",
    "memorised_held_out_images",
    "fast_sampler",
    "fast_sampler_matches_ddpm",
    "fast_sampler_deterministic",
    "downstream_half_gain_acc",
    "downstream_half_gain_auc",
    "pipeline_minutes",
    "vae_psnr",
    "vae_ssim",
    "vae_grid_ratio",
    "vae_spectrum_ratio",
)


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


def _cli(*args, timeout=900):
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--config=configs/report.py:tiny", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_for_subprocess(),
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_report(tiny_runs, tmp_path_factory):
    """The tiny preset through the CLI, as CI runs it."""
    out = tmp_path_factory.mktemp("report")
    proc = _cli(f"--workdir={tiny_runs['ldm_dir']}", f"--out={out}", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report: {out}/report.md" in proc.stdout
    return out, _strict_json(out / "report.json")


def test_report_has_every_section_and_figure(tiny_report):
    out, result = tiny_report
    md = (out / "report.md").read_text()
    positions = [md.find(h + "\n") for h in report.SECTION_HEADERS]
    assert all(p >= 0 for p in positions), [
        h for h, p in zip(report.SECTION_HEADERS, positions, strict=True) if p < 0
    ]
    assert positions == sorted(positions)
    assert "python evaluate.py" in md and "python train.py --config=configs/ldm.py:tiny" in md
    assert "Recall's own k, chosen on a second set of controls made from the test split" in md
    assert "measured at the held-out size the controls validated" in md
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert set(linked) == set(result["figures"].values())
    for rel in linked:
        path = out / rel
        assert path.exists(), rel
        assert path.stat().st_size < plots.MAX_PNG_BYTES, (rel, path.stat().st_size)
        with Image.open(path) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    for key in ("vae_reconstructions", "loss_curves", "samples_per_class", "difference_maps"):
        assert key in result["figures"]
    for key in ("memorisation_hist", "guidance_sweep", "downstream", "controls", "spectrum"):
        assert key in result["figures"]
    # The markdown is a function of report.json alone.
    assert report.render_markdown(result) == md


def test_the_reports_sample_command_draws_with_the_main_sets_setting(tiny_report, tmp_path):
    out, r = tiny_report
    cmd = r["commands"]["sample"]
    assert cmd in (out / "report.md").read_text()
    args = [a for a in shlex.split(cmd)[2:] if not a.startswith("--num_samples")]
    proc = subprocess.run(
        [sys.executable, "sample.py", *args, "--num_samples=2", f"--out={tmp_path / 's'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_for_subprocess(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((tmp_path / "s" / "manifest.jsonl").read_text().splitlines()[0])
    spec = SamplerSpec(
        sampler=row["sampler"],
        steps=row["steps"],
        eta=row["eta"] or 0.0,
        guidance_scale=row["guidance"],
        spacing=row["spacing"],
        eps_scale=row["eps_scale"],
    )
    T = r["run"]["ldm_config"]["diffusion"]["num_timesteps"]
    assert spec.name(T) == r["main_set"]["sampler"] and row["spacing"] == r["main_set"]["spacing"]
    assert row["guidance"] == r["main_set"]["guidance"] and row["use_ema"]
    # Its `--report=<this report>` form samples the same setting: the same images at a seed.
    cmd = r["commands"]["sample_from_report"]
    assert cmd in (out / "report.md").read_text()
    args = [a for a in shlex.split(cmd)[2:] if not a.startswith("--num_samples")]
    proc = subprocess.run(
        [sys.executable, "sample.py", *args, "--num_samples=2", f"--out={tmp_path / 'r'}"],
        cwd=REPO, capture_output=True, text=True, env=env_for_subprocess(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_report = json.loads((tmp_path / "r" / "manifest.jsonl").read_text().splitlines()[0])
    fields = ("sampler", "steps", "spacing", "eta", "eps_scale", "guidance", "use_ema")
    assert {k: by_report[k] for k in fields} == {k: row[k] for k in fields}
    assert by_report["report"] == str(out)
    for name in ("normal", "tumour"):
        a, b = (sorted((tmp_path / d / name).glob("*.png")) for d in ("s", "r"))
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b], name


def test_report_json_numbers_are_finite_or_explained(tiny_report):
    _, data = tiny_report
    reasons = data["null_reasons"]
    for p, v in _leaves(data):
        if v is None:
            assert p in reasons, f"{p} is null without a reason"
            assert reasons[p] and reasons[p] != FALLBACK_NULL_REASON, (p, reasons[p])
        if isinstance(v, float):
            assert math.isfinite(v), p
    # Tiny split: 1 test image per class, so per-class test FID is n/a with a reason.
    assert data["run"]["data"]["split"]["test"] == {"normal": 1, "tumour": 1}
    assert "fid_kid.synthetic_vs_test.per_class.normal.fid" in reasons


def test_headline_has_every_field_or_a_reason(tiny_report):
    _, r = tiny_report
    h = r["headline"]
    assert set(HEADLINE_FIELDS) <= set(h)
    for k in HEADLINE_FIELDS:
        if h[k] is None:
            assert f"headline.{k}" in r["null_reasons"], k
    assert set(h["fidelity"]) == set(h["real_recall"]) == {"normal", "tumour"}
    assert h["fid_ratio"] == r["fid_kid"]["ratio_synthetic_to_real_train"]
    assert h["vae_psnr"] == r["vae"]["psnr"]["mean"]
    assert h["memorised_frac"] == r["memorisation"]["fraction_flagged"]
    assert h["memorised_frac_relative"] == r["memorisation"]["relative"]["fraction_flagged"]
    assert h["memorised_held_out_images"] == r["memorisation"]["threshold_images"]
    assert set(h["trusted"]) == set(headline.TRUST_OF)
    for k, metric in headline.TRUST_OF.items():
        assert h["trusted"][k] == r["controls"]["table"]["metrics"][metric]["trustworthy"]


def test_report_metrics_have_sane_values(tiny_report):
    _, r = tiny_report
    s = report.resolve_settings("tiny")
    vae = r["vae"]
    reported = vae["vae_run_reported_test"]
    assert vae["psnr"]["mean"] == pytest.approx(reported["psnr"], abs=1e-3)
    assert vae["ssim"]["mean"] == pytest.approx(reported["ssim"], abs=1e-4)
    assert 0 < vae["ms_ssim"]["mean"] <= 1 and vae["ms_ssim_scales"] == 2
    assert 0 <= r["classifier"]["test"]["accuracy"] <= 1
    for c in ("normal", "tumour"):
        assert 0 <= r["fidelity"]["synthetic"]["per_class"][c] <= 1
    overall = r["fid_kid"]["synthetic_vs_test"]["overall"]
    assert overall["fid"] >= -1e-6 and overall["n_b"] == 2
    ref = r["fid_kid"]["real_train_vs_test"]["overall"]
    assert overall["n_a"] == ref["n_a"] == sum(r["fid_kid"]["n_per_class"].values())
    assert 0 <= r["prdc"]["synthetic"]["overall"]["precision"] <= 1
    assert 0 < r["diversity"]["synthetic"]["mean"] <= 1
    iv = r["diversity"]["intensity"]
    assert iv["held_out"] in ("val+test", "test")
    for c, v in iv["per_class"].items():  # tiny held-out classes may be too small: a reason
        if v is None:
            assert f"diversity.intensity.per_class.{c}" in r["null_reasons"]
            continue
        assert v["n_synthetic"] == min(v["n"], s.num_synthetic_per_class)
        for lo, hi in v["synthetic_intervals"].values():
            assert lo <= hi
    mem = r["memorisation"]
    assert len(mem["synthetic_to_train"]["score"]) == 2 * s.num_synthetic_per_class
    assert 0 <= mem["fraction_flagged"] <= 1 and len(mem["nearest_pairs"]) == 5
    rel = mem["relative"]
    assert len(rel["synthetic"]["ratio"]) == 2 * s.num_synthetic_per_class
    assert rel["threshold"] == pytest.approx(min(rel["test"]["ratio"]))
    flagged = [i for i, v in enumerate(rel["synthetic"]["ratio"]) if v < rel["threshold"]]
    assert rel["flagged"] == flagged
    # The built-in run's thresholds also come from fresh slices (4 per class in :tiny).
    n_test = len(mem["test_to_train"]["score"])
    assert mem["calibration"]["counts"] == {"normal": 4, "tumour": 4}
    assert mem["threshold_images"] == n_test + 8 == len(rel["test"]["ratio"])
    held = mem["test_to_train"]["score"] + mem["calibration_to_train"]["score"]
    assert mem["threshold"] == pytest.approx(max(held))
    assert "fresh built-in slices never trained on" in memorisation.render(r)
    ds = r["downstream"]
    assert set(ds["arms"]) == {"real", "real+syn", "syn", "half+syn", "half"}
    assert all(len(a["per_seed"]) == s.seeds for a in ds["arms"].values())
    assert ds["interpretation"].strip()
    _check_downstream_sets(r, s)
    sweep = r["guidance_sweep"]
    assert [row["guidance"] for row in sweep["rows"]] == list(s.guidance_scales)
    assert r["main_set"]["guidance"] == sweep["chosen"]
    assert sweep["real_recall"] == r["classifier"]["test_recall"]["per_class"]
    assert isinstance(sweep["threshold"], float)
    assert set(sweep["threshold_per_class"]) == {"normal", "tumour"}
    assert "fidelity tumour (real " in guidance.render(r)
    # the tiny preset sweeps at the main set's size, so the chosen w's row is the main set
    assert (
        sweep["images_per_class"] == r["main_set"]["images_per_class"] == s.num_synthetic_per_class
    )
    assert sweep["is_main_set_size"] and "the row of its w holds the images" in guidance.render(r)
    off_grid = {**r, "guidance_sweep": {**sweep, "chosen": 4.0}}  # a w set by hand, not swept
    assert "the row of its w holds" not in guidance.render(off_grid)
    chosen = next(row for row in sweep["rows"] if row["guidance"] == sweep["chosen"])
    assert chosen["fidelity_detail"]["per_class"] == r["fidelity"]["synthetic"]["per_class"]
    rows = r["samplers"]["rows"]
    want = ["ddpm", "ddim", "ddim", "dpmpp_2m", "dpmpp_2m", "dpmpp_2m"]
    assert [row["sampler"] for row in rows] == want
    assert [row["eta"] for row in rows][1:3] == [0.0, 1.0]
    assert [row["eps_scale"] for row in rows][-2:] == [1.0, 0.99]  # the v runs' default
    assert rows[0]["steps"] == 100  # the tiny LDM's T: DDPM runs the full chain
    assert all(row["seconds_per_image"] > 0 for row in rows)
    assert r["spectrum"]["grid"]["median"] > 0 and r["timings_seconds"]["total"] > 0
    _check_sampler_match(r)


def _check_sampler_match(r: dict) -> None:
    """Every sampler's checks carry the numbers they were decided on, and the names agree."""
    fs, rows = r["samplers"]["fast_sampler"], r["samplers"]["rows"]
    assert set(fs["detail"]) == {row["name"] for row in rows[1:]}
    for d in fs["detail"].values():
        assert set(d) <= set(fs["metrics_used"])
        for m, c in d.items():
            lo, hi = c["ddpm_interval"]
            assert c["within"] == (lo <= c["value"] <= hi) and c["passes"] >= c["within"]
            side = samplers.PER_IMAGE[m][2]
            assert ("real" in c) == (side == "real")
            assert side != "real" or c["real"] == fs["real_reference"].get(m)
    assert set(fs["real_reference"]) == {"nn_ssim", "grid"}
    if fs["name"] is not None:  # the chosen sampler passed every check it was judged on
        assert all(c["passes"] for c in fs["detail"][fs["name"]].values())
    real_nn = r["memorisation"]["test_to_train"]["summary"]["median"]
    assert fs["real_reference"]["nn_ssim"] == pytest.approx(real_nn)
    by_name = {row["name"]: row for row in rows}
    if fs["name"] is not None:
        assert fs["deterministic"] == samplers.is_deterministic(by_name[fs["name"]])
        assert r["headline"]["fast_sampler_deterministic"] == fs["deterministic"]
    for row in rows:
        assert row["spectrum_median"] > 0
    assert "spectrum (median)" in samplers.render(r)
    assert r["headline"]["spectrum_ratio"] == r["spectrum"]["spectrum"]["ratio"]
    assert r["headline"]["vae_spectrum_ratio"] == r["vae"]["spectrum"]["ratio"]


def _check_downstream_sets(r: dict, s) -> None:
    """The study's evaluation set is every non-empty held-out split; its sweep rows have
    `sweep_counts` synthetic images per class (or are listed as skipped)."""
    ds, split = r["downstream"], r["run"]["data"]["split"]
    used = [k for k in s.downstream_eval_splits if sum(split[k].values())] or ["test"]
    assert ds["eval_set"]["splits"] == used
    assert ds["data"]["real_eval"] == {c: sum(split[k][c] for k in used) for c in split["test"]}
    assert ds["data"]["real_test"] == split["test"]
    assert ds["eval_set"]["size"] == sum(ds["data"]["real_eval"].values())
    half = study.half_sizes(list(split["train"].values()), study.HALF_FRACTION)
    want = study.sweep_counts(half, s.downstream_syn_multiples)
    sweep = ds["syn_sweep"]
    done = [list(row["synthetic_per_class"].values()) for row in sweep["rows"]]
    skipped = [sk["multiple"] for sk in sweep.get("skipped", [])]
    assert len(done) + len(skipped) == len(want) >= 1
    assert all(counts in want for counts in done)
    assert all(len(row["per_seed"]) == s.seeds for row in sweep["rows"])
    md = downstream.render(r)
    assert "How much synthetic data" in md and "scored on the real evaluation set" in md
    assert all(f"{m:g} x half (" in md for m in s.downstream_syn_multiples if m not in skipped)
    assert ds["config"]["syn_share"] == (s.downstream_syn_share or None)
    assert ds["config"]["syn_keep_prob"] == (s.downstream_syn_keep_prob or None)
    if s.downstream_syn_keep_prob:  # the recipe is stated and every run counted
        assert "a label filter keeps" in md
        assert all("synthetic_used" in run for run in ds["arms"]["half+syn"]["per_seed"])
    comp = ds["comparisons"]["half+syn - half"]["accuracy"]
    gain = r["headline"]["downstream_half_gain_acc"]
    assert gain is None or gain == pytest.approx(
        [comp["mean"], comp["mean"] - comp["half_width"], comp["mean"] + comp["half_width"]]
    )


def _imageset(n_normal: int, n_tumour: int) -> ImageSet:
    y = np.array([0] * n_normal + [1] * n_tumour, np.int32)
    x = np.zeros((y.size, 4, 4, 1), np.float32)
    ids = [f"i{i}" for i in range(y.size)]
    return ImageSet(x, y, ("normal", "tumour"), ids, np.arange(y.size), "fp")


def test_downstream_evaluation_set_names_its_splits_and_counts():
    ctx = SimpleNamespace(cfg=report.resolve_settings("paper"))
    ctx.val, ctx.test = _imageset(10, 16), _imageset(10, 15)
    (_, y), info = downstream.evaluation_set(ctx)
    assert y.size == 51 and info == {
        "requested": ["val", "test"],
        "splits": ["val", "test"],
        "per_split": {"val": {"normal": 10, "tumour": 16}, "test": {"normal": 10, "tumour": 15}},
        "size": 51,
    }
    dsr = {"data": {"real_eval": {"normal": 20, "tumour": 31}}, "eval_set": info}
    text = downstream.describe_eval_set(dsr)
    assert "val + test splits (51 images: normal 20, tumour 31; val: normal 10" in text
    ctx.val = _imageset(0, 0)  # tiny data: an empty validation split
    (_, y), info = downstream.evaluation_set(ctx)
    assert y.size == 25 and info["splits"] == ["test"]
    dsr = {"data": {"real_eval": {"normal": 10, "tumour": 15}}, "eval_set": info}
    text = downstream.describe_eval_set(dsr)
    assert "test split (25 images" in text and "(val split empty: scored on test only)" in text
    old = {"data": {"real_test": {"normal": 10, "tumour": 15}}}  # a report.json before eval_set
    assert downstream.describe_eval_set(old) == "the real test split (normal 10, tumour 15)"


def test_downstream_sweep_plan_skips_what_the_main_set_cannot_fill():
    keep, skipped = downstream.sweep_plan({"normal": 78, "tumour": 124}, (1.0, 2.0, 4.0), 200)
    assert keep == (1.0, 2.0)
    assert [(sk["multiple"], sk["needs"]) for sk in skipped] == [
        (4.0, {"normal": 156, "tumour": 248})
    ]
    assert "--config.num_synthetic_per_class" in skipped[0]["reason"]
    assert downstream.sweep_plan({"normal": 78, "tumour": 124}, (), 200) == ((), [])


def test_controls_section_scores_every_control(tiny_report):
    _, r = tiny_report
    sets = r["controls"]["sets"]
    assert list(sets) == ["real", *controls.CORRUPTIONS, *controls.COPIES]
    # Mirrored training images are copies: both memorisation rules flag every one of them.
    assert sets[controls.MEMORISED]["memorised"] == 1.0
    assert sets[controls.MEMORISED]["memorised_relative"] == 1.0
    assert sets[controls.MEMORISED]["nn_ssim"] == pytest.approx(1.0, abs=1e-4)
    tab = r["controls"]["table"]["metrics"]
    assert set(tab) == set(scoring.SCALARS)
    assert r["feature_space"]["chosen"] in control_study.CANDIDATES
    assert set(r["feature_space"]["candidates"]) == set(control_study.CANDIDATES)
    # Recall's k: chosen on test-split controls, used everywhere PRDC is scored, and the size
    # recall is measured at is the held-out split's.
    pr, rk = r["prdc_reference"], r["recall_k"]
    assert rk["candidates"] == [5, 3, 2, 1] and set(rk["recall_by_k"]["5"]) >= {"real", "blur"}
    assert pr["recall_k"] == (rk["chosen"] or pr["k"]) == r["headline"]["recall_k"]
    assert (
        list(pr["equal_n_per_class"].values())
        == r["controls"]["sets"]["real"]["prdc"]["equal_n"]["n_per_class"]
    )
    syn = r["prdc"]["synthetic"]
    assert syn["overall"]["recall_k"] == pr["recall_k"]
    assert r["headline"]["recall_n"] == syn["overall"]["n_fake_equal"]
    assert syn["overall"]["n_fake_equal"] <= sum(pr["equal_n_per_class"].values())


def test_each_metric_ranks_noise_below_real_held_out(tiny_runs):
    """On the tiny run's own data: real held-out images beat a clearly broken (noisy) copy of
    them under every metric that is responsible for noise, and memorisation flags copies."""
    from jax_mri_ldm import data as data_lib

    cfg = data_lib.get_data_config()
    cfg.image_size = 32
    cfg.builtin.num_normal = cfg.builtin.num_tumour = 48
    cfg.cache_dir = str(tiny_runs["root"] / "cache_controls")
    ds = data_lib.load_imageset(cfg)
    idx = np.random.default_rng(0).permutation(len(ds))
    tr, va, te = (ds.subset(np.sort(idx[a:b])) for a, b in ((0, 32), (32, 64), (64, 96)))
    ssl = control_study.features.SSLSettings(widths=(8, 16), input_size=32, steps=20, batch_size=16)
    res = control_study.run_controls(
        control_study.RealSplits(
            (tr.images, tr.labels), (va.images, va.labels), (te.images, te.labels)
        ),
        ds.class_names,
        ssl,
        space="random",
        classifier_steps=30,
        classifier_input_size=32,
        search_size=32,
    )
    noise_rules = [rule for rule in trust.RULES if "noise" in rule.must_detect]
    failed = [
        rule.name
        for rule in noise_rules
        if not trust.check_metric(rule, res["table"]["metrics"][rule.name]["scores"])["worse"][
            "noise"
        ]
    ]
    assert not failed, (failed, control_study.format_table(res["table"]))
    mem = res["table"]["metrics"]["memorised"]
    assert mem["scores"][controls.MEMORISED] == 1.0 and mem["trustworthy"]


def test_synthetic_images_share_batches_and_do_not_depend_on_count(tiny_runs):
    from jax_mri_ldm import pipeline
    from jax_mri_ldm.evaluation.generator import SyntheticImages

    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    spec = SamplerSpec("ddim", 5, 0.0, 2.0, "uniform")
    key = spec.resolved(run.schedule.num_timesteps)
    gen = SyntheticImages(run, batch_size=4, seed=3, compile_options=FAST_COMPILE)
    x6, y6 = gen.generate(spec, 3)  # 6 images: batches 0 and 1 of 4
    x2, y2 = gen.generate(spec, 2)  # first 4 images: batch 0, from the cache
    assert list(y6) == [0, 1, 0, 1, 0, 1] and list(y2) == [0, 1, 0, 1]
    np.testing.assert_array_equal(x2, x6[:4])
    assert len(gen.stats[(key, 4)]["batch_seconds"]) == 2  # nothing regenerated
    np.testing.assert_array_equal(gen.generate(spec, 1)[0], x6[:2])
    assert list(gen.stats) == [(key, 4)] and gen.timing(spec, 1)["batch_size"] == 4
    gen.clear()
    np.testing.assert_allclose(gen.generate(spec, 2)[0], x2, atol=1e-6)  # same seed: same
    gen.clear()
    gen.seed = 4
    assert np.abs(gen.generate(spec, 2)[0] - x2).mean() > 1e-3
    timing = gen.timing(spec, 2)
    assert timing["seconds_per_image"] > 0 and timing["batches_timed"] == 4


def test_choose_guidance_rule_uses_only_trusted_metrics():
    rows = [
        {"guidance": 0.0, "fidelity": 0.55, "fid": 1.0},
        {"guidance": 1.0, "fidelity": 0.92, "fid": 2.0},
        {"guidance": 3.0, "fidelity": 0.99, "fid": 3.0},
    ]
    choose = setmetrics.choose_guidance
    assert choose(rows, 0.95, 0.05)["chosen"] == 1.0  # bar 0.90: best FID
    assert choose(rows, 1.0, 0.0)["chosen"] == 3.0  # nobody qualifies: highest fidelity
    assert choose(rows, None, 0.05)["chosen"] == 1.0  # no bar; w=0 excluded
    assert choose(rows, 0.95, 0.05, trusted=("fid",))["chosen"] == 1.0  # no bar, best FID
    assert choose(rows, 0.95, 0.05, trusted=("fidelity",))["chosen"] == 3.0
    none = choose(rows, 0.95, 0.05, trusted=())
    assert none["chosen"] is None and "no trustworthy metric" in none["decided_by"]


def test_choose_guidance_per_class_bar_catches_an_under_guided_class():
    def row(w, normal, tumour, fid):
        per = {"normal": normal, "tumour": tumour}
        return {
            "guidance": w,
            "fidelity": (normal + tumour) / 2,
            "fid": fid,
            "fidelity_detail": {"per_class": per},
        }

    # w=1: overall 0.89 clears an overall bar of 0.87 - 0.05, but tumour 0.78 is 0.15 under
    # its real recall; w=3 keeps both classes within 0.05 of real.
    rows = [row(1.0, 1.00, 0.78, 1.0), row(3.0, 0.80, 0.90, 2.0)]
    recall = {"normal": 0.80, "tumour": 0.93}
    choose = setmetrics.choose_guidance
    assert choose(rows, 0.87, 0.05)["chosen"] == 1.0  # overall rule: w=1 hides the shortfall
    per = choose(rows, 0.87, 0.05, real_recall=recall)
    assert per["chosen"] == 3.0 and per["qualified"] == [3.0]
    assert per["threshold_per_class"] == pytest.approx({"normal": 0.75, "tumour": 0.88})
    assert per["threshold"] == pytest.approx(0.82) and "every class" in per["rule"]
    # nobody qualifies: the best worst-class margin wins (w=3: -0.05 vs w=1: -0.17)
    strict = choose(rows, 0.87, 0.0, real_recall={"normal": 0.85, "tumour": 0.95})
    assert strict["chosen"] == 3.0 and strict["qualified"] == []
    # no known recall: the overall rule; one unknown recall: that class meets the overall bar
    assert choose(rows, 0.87, 0.05, real_recall={"normal": None})["chosen"] == 1.0
    part = choose(rows, 0.87, 0.05, real_recall={"normal": 0.80, "tumour": None})
    assert part["qualified"] == [3.0] and part["threshold_per_class"]["tumour"] == 0.82
    # a row that lacks a class's fidelity cannot qualify
    rows_missing = [rows[0], {**rows[1], "fidelity_detail": {"per_class": {"normal": 0.8}}}]
    assert choose(rows_missing, 0.87, 0.05, real_recall=recall)["qualified"] == []
    # 4 images per class: one image (0.25) is the resolution, so w=1's tumour 0.78 qualifies
    coarse = choose(rows, 0.87, 0.05, real_recall=recall, images_per_class=4)
    assert coarse["tolerance"] == 0.25 and coarse["chosen"] == 1.0
    assert choose(rows, 0.87, 0.05, real_recall=recall, images_per_class=32)["tolerance"] == 0.05


def test_shrink_png_keeps_figures_small(tmp_path):
    rng = np.random.default_rng(0)
    noisy = (rng.random((700, 700, 3)) * 255).astype(np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(noisy).save(path)
    assert path.stat().st_size > 300_000
    size = plots.shrink_png(str(path), 300_000)
    assert size == path.stat().st_size <= 300_000


def test_resolve_settings_presets_and_errors():
    tiny = report.resolve_settings("tiny", seeds=None)
    assert tiny.seeds == 2 and tiny.preset == "tiny"
    assert report.resolve_settings("tiny", **{"features.steps": 3}).features.steps == 3
    assert report.resolve_settings("paper").seeds == 5
    with pytest.raises(ValueError, match="huge"):
        report.resolve_settings("huge")
    with pytest.raises(ValueError, match="unknown report option"):
        report.resolve_settings("tiny", num_images=3)
    with pytest.raises(ValueError, match="--config.seeds=0"):
        report.resolve_settings("tiny", seeds=0)
    with pytest.raises(ValueError, match="--config.sweep_per_class=-1"):
        report.resolve_settings("tiny", sweep_per_class=-1)
    paper = report.resolve_settings("paper", sweep_per_class=0)
    assert guidance.sweep_size(paper) == paper.num_synthetic_per_class  # 0: the main set's size
    assert guidance.sweep_size(report.resolve_settings("paper")) == 32
    with pytest.raises(ValueError, match="--config.memorisation_calibration_per_class=-1"):
        report.resolve_settings("tiny", memorisation_calibration_per_class=-1)
    bad = {
        "downstream_eval_splits": [("valid",), ("train", "test"), ("test", "test"), ()],
        "downstream_syn_multiples": [(0.0,), (1.0, 1.0), (-2.0,)],
        "downstream_syn_share": [-0.5, 1.5],
        "downstream_syn_keep_prob": [1.0, -0.5],
    }
    for option, values in bad.items():
        for value in values:  # refused up front, before any sampling
            with pytest.raises(ValueError, match=f"--config.{option}="):
                report.resolve_settings("tiny", **{option: value})


def test_cli_errors_exit_2(tiny_runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = f"--out={tmp_path / 'out'}"
    cases = [
        ([f"--workdir={tmp_path / 'missing'}", out], "does not exist"),
        ([f"--workdir={tiny_runs['vae_dir']}", out], "not a diffusion run"),
        ([f"--workdir={tiny_runs['ldm_dir']}", f"--out={blocker}"], "not a directory"),
        ([f"--workdir={tiny_runs['ldm_dir']}", out, "--config.num_images=3"], "num_images"),
        ([f"--workdir={tiny_runs['ldm_dir']}", out, "--config.seeds=0"], "seeds=0"),
    ]
    for args, message in cases:
        proc = _cli(*args, "--quiet", timeout=300)
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
    text = downstream.interpret_downstream(ds, 0.95, 0.96, 1.2)
    assert "+0.050 (95 % CI [+0.030, +0.070]): an improvement" in text
    assert "did not measurably help" not in text and "Caveats:" in text
    assert "helped only" not in text
    ds["comparisons"]["real+syn - real"]["accuracy"] = summ(-0.01, 0.03)
    text = downstream.interpret_downstream(ds, 0.70, 0.96, 3.0)
    assert "no detectable effect" in text and "did not measurably help" in text
    assert "(0.700) is below the classifier's accuracy" in text and "3.0x" in text
    assert "evaluation set has only" not in text  # 130 images
    ds["data"]["real_eval"] = {"normal": 20, "tumour": 31}  # real_eval wins over real_test
    ds["comparisons"]["half+syn - half"] = {"accuracy": summ(0.02, 0.01), "auc": summ(0.0, 0.01)}
    text = downstream.interpret_downstream(ds, 0.70, 0.96, 3.0)
    assert "the evaluation set has only 51 real images" in text
    assert "measurably helped only with half the real data" in text  # +0.02 ± 0.01
    assert "with all real images it did not" in text and "did not measurably help" not in text
    del ds["comparisons"]["real+syn - real"]
    text = downstream.interpret_downstream(ds, 0.70, 0.96, 3.0)
    assert "with all real images it was not measured" in text
    assert "adding synthetic images: accuracy changed by +0.020" in text
    assert "AUC changed by +0.000 (95 % CI [-0.010, +0.010]): no detectable effect" in text
    ds["comparisons"]["half+syn - half"]["accuracy"] = summ(0.02, 0.03)
    text = downstream.interpret_downstream(ds, 0.70, 0.96, 3.0)
    assert "did not measurably help" in text and "helped only" not in text
    ds["comparisons"]["half+syn - half"]["auc"] = summ(0.03, 0.01)  # AUC alone counts too
    assert "helped only" in downstream.interpret_downstream(ds, 0.70, 0.96, 3.0)


def test_realism_reading_names_low_novelty_and_unrealistic_sets():
    def mem(syn: float, flagged: float = 0.0) -> dict:
        summ = lambda m: {"summary": {"median": m}}  # noqa: E731
        return {
            "synthetic_to_train": summ(syn),
            "test_to_train": summ(0.3),
            "fraction_flagged": flagged,
        }

    assert memorisation.realism(mem(0.3))["reading"].startswith("as close")
    assert memorisation.realism(mem(0.15))["reading"].startswith("too far")
    high = memorisation.realism(mem(0.72))
    assert high["ratio"] == pytest.approx(2.4) and high["reading"].startswith("low novelty")
    assert memorisation.realism(mem(0.72, flagged=0.05))["reading"].startswith("too close")


def test_nulls_record_reasons():
    n = Nulls()
    assert n.value("a", lambda: float("nan")) is None and n.reasons["a"] == FALLBACK_NULL_REASON
    assert n.value("b", lambda: 1.5) == 1.5 and "b" not in n.reasons


def test_vae_workdir_follows_moved_runs(tmp_path, monkeypatch):
    """A run trained elsewhere records a VAE path that no longer exists: the LDM config's
    relative vae_workdir is used when it exists here, else the recorded path is kept."""
    from jax_mri_ldm.evaluation.context import Context

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "vae").mkdir(parents=True)
    here = str(tmp_path / "runs" / "vae")

    def vae_dir(recorded, given):
        meta = {"vae": {"source_workdir": recorded}}
        run = SimpleNamespace(meta=meta, config={"vae_workdir": given})
        return Context.vae_workdir.fget(SimpleNamespace(run=run))

    assert vae_dir("/elsewhere/runs/vae", "runs/vae") == "runs/vae"
    assert vae_dir(here, "runs/other") == here
    assert vae_dir("/elsewhere/runs/vae", "runs/missing") == "/elsewhere/runs/vae"


@pytest.mark.slow
def test_report_with_four_classes(tmp_path):
    """K = 4 (built-in set with tumour types): every section is written per class."""
    from conftest import tiny_ldm_config, tiny_vae_config
    from jax_mri_ldm import train_ldm, train_vae

    vae_cfg = tiny_vae_config(tmp_path)
    vae_cfg.data.builtin.types = True
    vae_cfg.data.builtin.num_normal, vae_cfg.data.builtin.num_tumour = 12, 36
    train_vae.train_and_evaluate(vae_cfg, str(tmp_path / "vae"))
    train_ldm.train_and_evaluate(tiny_ldm_config(tmp_path / "vae"), str(tmp_path / "ldm"))
    # Two sampler rows and one w: each is one more compile, and the per-class code is the same.
    rows = (("ddpm", None, "uniform", 0.0), ("dpmpp_2m", 10, "logSNR", 0.0))
    r = report.write_report(
        str(tmp_path / "ldm"), str(tmp_path / "out"), "tiny", verbose=False,
        samplers=rows, guidance_scales=(3.0,),
    )  # fmt: skip
    names = r["run"]["class_names"]
    assert names == ["normal", "glioma", "meningioma", "pituitary"]
    # Every per-class number is keyed by the run's classes, in the run's order.
    assert list(r["headline"]["fidelity"]) == names == list(r["headline"]["real_recall"])
    assert set(r["fidelity"]["synthetic"]["per_class"]) == set(names)
    assert set(r["fid_kid"]["n_per_class"]) == set(names)
    assert set(r["prdc"]["synthetic"]["per_class"]) == set(names)
    assert [row["sampler"] for row in r["samplers"]["rows"]] == ["ddpm", "dpmpp_2m"]
    for row in r["samplers"]["rows"]:
        assert list(row["fidelity_detail"]["per_class"]) == names, row["name"]
    study = r["downstream"]["config"]
    assert study["num_classes"] == 4
    assert study["metric_names"] == ["accuracy", "auc", *(f"recall_{n}" for n in names)]
    assert set(r["downstream"]["data"]["real_test"]) == set(names)
    assert r["downstream"]["arms"]["syn"]["train_counts"]["synthetic"] == {n: 8 for n in names}
    md = (tmp_path / "out" / "report.md").read_text()
    assert all(f"| {n} |" in md or f" {n} " in md for n in names)


def test_sampler_rows_take_an_optional_eps_scale():
    """A `samplers` entry is (sampler, steps, spacing[, eta[, eps_scale]]); left out: 0, 1."""
    ddim = samplers.row_spec(("ddim", 50, "uniform"), 3.0, True).resolved(1000)
    assert (ddim.eta, ddim.eps_scale, ddim.guidance_scale) == (0.0, 1.0, 3.0)
    scaled = samplers.row_spec(("dpmpp_2m", 10, "logSNR", 0.0, 0.99), 2.0, False)
    assert (scaled.eps_scale, scaled.use_ema) == (0.99, False)
    assert scaled.name(1000) == "DPM-Solver++(2M) 10 ε/0.99"
    ddpm = samplers.row_spec(("ddpm", None, "uniform", 0.0), 3.0, True).resolved(100)
    assert (ddpm.steps, ddpm.eps_scale) == (100, 1.0)
    with pytest.raises(ValueError, match="eps_scale"):
        samplers.row_spec(("dpmpp_2m", 10, "logSNR", 0.0, 0.0), 3.0, True)


def test_machine_record_names_the_cpu_family_that_timings_depend_on():
    zen5 = "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
    zen5 += "flags\t\t: fpu sse4_2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\ncpu family\t: 25\n"
    info = runinfo.parse_cpuinfo(zen5)
    assert info == {"cpu": "AMD EPYC", "cpu_family": 26, "cpu_model": 2, "cpu_simd": "avx512f"}
    avx2 = runinfo.parse_cpuinfo("model name : Intel(R) Core(TM)\nflags : sse4_2 avx2 fma\n")
    assert avx2["cpu_simd"] == "avx2" and avx2["cpu_family"] is None
    assert runinfo.parse_cpuinfo("") == dict.fromkeys(info)  # not Linux: all unknown
    m = runinfo.machine_info()
    assert m["cpu"] and m["cpu_count"] >= 1
    assert summary._cpu_detail(info | {"cpu_count": 2}) == "family 26, model 2, avx512f; "
    assert summary._cpu_detail({"cpu": "x", "cpu_count": 2}) == ""  # reports before the fields
