"""The controls on the real yes/no MRI set: real held-out images (validation split) rank above
every corruption under the metrics the report relies on (no trained generator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_DATA
from jax_mri_ldm.evaluation import control_study, controls, features, trust

# Metrics whose full control ordering is checked on real MRI (each against the controls it is
# responsible for, `trust.RULES`).
CHECKED = ("fid", "spectrum", "grid", "nn_ssim", "memorised", "memorised_relative")


@pytest.fixture(scope="module")
def real_controls(tmp_path_factory):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    from jax_mri_ldm import data as data_lib

    cfg = data_lib.get_data_config()
    cfg.path, cfg.image_size = str(SHARED_DATA), 128
    cfg.cache_dir = str(tmp_path_factory.mktemp("cache"))
    ds = data_lib.load_imageset(cfg)
    split = data_lib.split_indices(ds, **cfg.split)
    parts = [ds.subset(split[k]) for k in ("train", "val", "test")]
    ssl = features.SSLSettings(widths=(8, 16, 32, 64), input_size=128, steps=100, batch_size=32)
    return control_study.run_controls(
        control_study.RealSplits(*[(p.images, p.labels) for p in parts]),
        ds.class_names,
        ssl,
        classifier_steps=150,
        search_size=64,
    )


@pytest.mark.slow
def test_real_held_out_ranks_above_every_control(real_controls):
    table = real_controls["table"]["metrics"]
    report = control_study.format_table(real_controls["table"])
    for name in CHECKED:
        rule = trust.RULES_BY_NAME[name]
        res = trust.check_metric(rule, table[name]["scores"])
        assert res["trustworthy"], (name, res["failures"], report)
    for rule in ("memorised", "memorised_relative"):
        mem = table[rule]["scores"]
        assert mem[controls.MEMORISED] == 1.0 and mem["real"] < 0.5, (rule, report)


@pytest.mark.slow
def test_chosen_feature_space_detects_every_corruption(real_controls):
    fs = real_controls["feature_space"]
    chosen = fs["candidates"][fs["chosen"]]
    assert chosen["missed"] == [], fs
    fids = chosen["fid"]
    assert all(np.isfinite(v) for v in fids.values())
    assert all(fids[c] > fids["real"] for c in controls.CORRUPTIONS if c in fids)


PRDC = ("precision", "recall", "density", "coverage")


@pytest.fixture(scope="module")
def real_controls_random(tmp_path_factory):
    """The report's PRDC rule at the real set's 256 px in the untrained space (no encoder
    training, so this fixture is cheap): the training split as the real manifold."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    from jax_mri_ldm import config_loader
    from jax_mri_ldm import data as data_lib

    cfg = data_lib.get_data_config()
    cfg.path, cfg.image_size = str(SHARED_DATA), 256
    cfg.cache_dir = str(tmp_path_factory.mktemp("cache256"))
    ds = data_lib.load_imageset(cfg)
    split = data_lib.split_indices(ds, **cfg.split)
    parts = [ds.subset(split[k]) for k in ("train", "val", "test")]
    fc = config_loader.load_config("report", "paper").features
    ssl = features.SSLSettings(widths=tuple(fc.widths), input_size=128, steps=1, batch_size=32)
    return control_study.run_controls(
        control_study.RealSplits(*[(p.images, p.labels) for p in parts]),
        ds.class_names,
        ssl,
        space="random",
        classifier_steps=20,
        prdc_split=fc.prdc_reference,
        prdc_k=fc.prdc_k,
        prdc_input_size=fc.prdc_input_size,
    )


@pytest.mark.slow
def test_prdc_against_the_training_split_ranks_every_control(real_controls_random):
    res = real_controls_random
    assert res["prdc_reference"]["split"] == "train" and res["prdc_reference"]["n"] > 100
    table = res["table"]["metrics"]
    report = control_study.format_table(res["table"])
    for name in PRDC:
        assert table[name]["trustworthy"], (name, table[name]["failures"], report)
    real = res["sets"]["real"]
    # Real held-out images sit inside the real manifold and cover it: the 0.5 bar for samples
    # is then a real bar.
    assert real["precision"] >= 0.8 and real["recall"] >= 0.8, report
