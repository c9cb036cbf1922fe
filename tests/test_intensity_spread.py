"""evaluation/intensity.py: the intensity-diversity distance, its controls and the bench table."""

from __future__ import annotations

import numpy as np

from conftest import REPO, load_script
from jax_mri_ldm.evaluation import intensity

SCRIPT = REPO / "bench" / "ablations" / "intensity_spread.py"


def _heads(n: int, seed: int) -> np.ndarray:
    """Discs of varied brightness and contrast (a darker core in a brighter disc) on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 15.5, xx - 15.5)
    out = np.zeros((n, 32, 32, 1), np.float32)
    for i in range(n):
        level, depth = rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.4)
        out[i, ..., 0] = np.where(r < 12, level - depth * (r < 6), 0.0)
    return out


def test_image_stats_reads_foreground_brightness_and_contrast():
    im = np.zeros((1, 20, 20, 1), np.float32)
    im[0, 5:10] = 0.4
    im[0, 10:15] = 0.8  # rows 0-4 and 15-19 stay background
    ((b, c),) = intensity.image_stats(im)
    assert 0.4 <= b <= 0.8 and abs(c - 0.4) < 1e-6  # p90 - p10 of two equal halves


def test_collapse_halves_the_spread_and_the_distance_catches_it():
    train, heldout = _heads(200, 0), _heads(60, 1)
    squeezed = intensity.collapse(heldout)
    tr, ho = intensity.image_stats(train), intensity.image_stats(heldout)
    row = intensity.score_set(intensity.image_stats(squeezed), tr, ho)
    assert 0.4 < row["brightness_spread_ratio"] < 0.6
    assert 0.4 < row["contrast_spread_ratio"] < 0.6
    assert intensity.score_set(ho, tr, ho)["distance"] < row["distance"]


def test_score_class_trusts_the_distance_only_when_real_beats_the_controls():
    train, heldout = _heads(200, 0), _heads(60, 1)
    good = intensity.score_class(train, heldout, synthetic=_heads(80, 2), seed=0)
    assert good["trusted"] and not good["failed_controls"] and good["n_synthetic"] == 60
    rows = good["rows"]
    assert rows["synthetic"]["distance"] < rows["collapse"]["distance"]
    # shuffled patches keep every pixel: a tie by construction
    assert rows["patch_shuffle"]["distance"] == rows["real held-out"]["distance"]
    ci = good["synthetic_intervals"]  # the same generator as real: intervals cover 0 and 1
    assert ci["distance_gap"][0] < 0 < ci["distance_gap"][1]
    assert ci["contrast_spread_ratio"][0] < 1 < ci["contrast_spread_ratio"][1]
    narrow = intensity.score_class(train, heldout, intensity.collapse(_heads(80, 2)), seed=0)
    assert narrow["synthetic_intervals"]["contrast_spread_ratio"][1] < 1  # caught as narrower


def test_trust_fails_when_a_control_is_not_worse_or_a_distance_is_nan(monkeypatch):
    train, heldout = _heads(200, 0), _heads(60, 1)
    # held-out speckled where training is not: blurring brings it nearer the training set
    flips = np.random.default_rng(3).choice([-0.25, 0.0, 0.25], heldout.shape, p=[0.2, 0.6, 0.2])
    speckled = np.clip(heldout + (heldout > 0.1) * flips, 0, 1)
    bad = intensity.score_class(train, speckled, synthetic=heldout, seed=0)
    assert not bad["trusted"] and bad["failed_controls"] == ["blur"]
    real = intensity.score_set
    monkeypatch.setattr(intensity, "score_set", lambda *a: {**real(*a), "distance": float("nan")})
    nan = intensity.score_class(train, heldout, synthetic=heldout, seed=0)
    assert not nan["trusted"] and set(nan["failed_controls"]) == set(intensity.CONTROLS)


def test_score_classes_gives_a_reason_for_small_or_flat_classes():
    train, heldout, syn = _heads(40, 0), _heads(10, 1), _heads(10, 2)
    labels = np.array([0] * 8 + [1] * 2)
    names = ("normal", "tumour")
    per = intensity.score_classes(
        (train, np.arange(40) % 2), (heldout, labels), (syn, labels), names, 0
    )
    assert per["normal"]["n"] == 8 and "fewer than" in per["tumour"]
    flat = np.repeat(heldout[:1], 10, axis=0)  # one image repeated: no spread to scale by
    per_flat = intensity.score_classes(
        (train, np.arange(40) % 2), (flat, labels), (syn, labels), names, 0
    )
    assert "no spread" in per_flat["normal"]
    sp = load_script(SCRIPT, "bench_intensity_spread")
    text = sp.render(per)
    assert "| synthetic |" in text and "tumour: fewer than" in text and "95 %" in text
