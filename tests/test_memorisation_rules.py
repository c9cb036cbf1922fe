"""bench/memorisation_rules.py: near copies, both rules on planted copies, a tiny run's probe."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REPO, blobs, load_script

SCRIPT = REPO / "bench" / "memorisation_rules.py"


def _load():
    return load_script(SCRIPT, "bench_memorisation_rules")


def test_near_copies_rotate_and_stay_in_range():
    mr = _load()
    x = blobs(3, 32, seed=0)
    y = mr.near_copies(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert 0.005 < np.abs(y - x).mean() < 0.2


def test_score_flags_planted_copies_by_both_rules_and_renders_a_row_per_set():
    mr = _load()
    train, test = blobs(12, 32, seed=1), blobs(6, 32, seed=2)
    sets = {"real validation": blobs(6, 32, seed=3), "mirrored train": train[:6, :, ::-1]}
    res = {"workdir": "w", "sets": mr.score(sets, train, test, 32)}
    copies, new = res["sets"]["mirrored train"], res["sets"]["real validation"]
    assert copies["fixed"] == copies["relative"] == copies["fixed_and_ratio_below_1"] == 1.0
    assert max(copies["ratio"]) < 1e-4
    # "fixed and ratio < 1" flags a subset of what the fixed rule flags.
    assert new["fixed_and_ratio_below_1"] <= new["fixed"]
    assert copies["nn_ssim_median"] == pytest.approx(1.0, abs=1e-5)
    assert new["nn_ssim_median"] < 0.99
    assert len(new["ratio"]) == len(new["nn_ssim"]) == 6
    assert mr.render(res).count("\n| ") == len(sets) + 1  # header rule + one row per set


def test_probe_of_a_tiny_run(tiny_runs):
    mr = _load()
    res = mr.probe(
        str(tiny_runs["ldm_dir"]),
        guidance=2.0,
        synthetic=True,
        per_class=2,
        calibration_per_class=4,
    )
    names = list(res["sets"])
    assert names[:4] == list(mr.NEW) and set(mr.COPIES) <= set(names)
    assert names[-1] == "synthetic main set" and res["sets"][names[-1]]["n"] == 4
    # Exact copies: every rule flags every one (the tiny VAE's decodes are no copies yet).
    mirrored = res["sets"]["mirrored train"]
    assert mirrored["fixed"] == mirrored["relative"] == mirrored["fixed_and_ratio_below_1"] == 1.0
    for r in res["sets"].values():  # the combined rule never flags more than the fixed one
        assert r["fixed_and_ratio_below_1"] <= r["fixed"]
        assert r["relative_threshold"] == res["sets"]["mirrored train"]["relative_threshold"]
    # The probe draws the report's fresh held-out slices: the tiny run is on the built-in set.
    from jax_mri_ldm import pipeline

    test = mr.qc.load_splits(pipeline.load_ldm(str(tiny_runs["ldm_dir"])))[2]
    assert res["sets"]["mirrored train"]["threshold_images"] == len(test) + 8  # 4 fresh per class


def test_score_reads_the_training_self_search_from_the_run_cache(tmp_path):
    mr = _load()
    train, test = blobs(10, 32, seed=4), blobs(5, 32, seed=5)
    sets = {"real validation": blobs(4, 32, seed=6)}
    plain = mr.score(sets, train, test, 32)
    first = mr.score(sets, train, test, 32, cache_dir=str(tmp_path))
    (entry,) = tmp_path.glob("train_own_*.npy")
    # A planted entry is what the second call reads: the relative ratios follow it.
    own = np.load(entry)
    np.save(entry, own * 0.5)
    second = mr.score(sets, train, test, 32, cache_dir=str(tmp_path))
    assert first["real validation"]["ratio"] == plain["real validation"]["ratio"]
    assert second["real validation"]["ratio"] != first["real validation"]["ratio"]


def test_report_settings_read_the_chosen_w_and_held_out_slices(tmp_path):
    mr = _load()
    path = tmp_path / "report.json"
    path.write_text(
        '{"main_set": {"guidance": 3.0}, "settings": {"memorisation_calibration_per_class": 4}}'
    )
    assert mr.report_settings(str(path)) == (3.0, 4)
    path.write_text('{"main_set": {"guidance": 2.0}, "settings": {}}')  # an older report
    assert mr.report_settings(str(path)) == (2.0, 0)
