"""bench/spectrum_probe.py: band means, per-set scores on known images, a tiny run's probe."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import REPO, load_script

SCRIPT = REPO / "bench" / "spectrum_probe.py"


def _load():
    return load_script(SCRIPT, "bench_spectrum_probe")


def test_band_means_split_the_radii_in_quarters_and_eighths():
    sp = _load()
    diff = np.r_[np.full(8, 1.0), np.full(12, -2.0), np.full(12, 3.0)]  # R = 32: 8 / 20 / 32
    assert sp.band_means(diff) == {"low": 1.0, "mid": -2.0, "high": 3.0}


def test_score_sees_blur_lose_and_noise_add_high_frequency_power():
    sp = _load()
    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.random((12, 32, 32)), (0, 1.0, 1.0))
    real = (base - base.min()) / (base.max() - base.min())
    test, train = real[:6, ..., None], real[6:, ..., None]
    blur = ndimage.gaussian_filter(test, (0, 2.0, 2.0, 0))
    noise = np.clip(test + 0.2 * rng.standard_normal(test.shape), 0, 1)
    own = sp.score(test, test, train, 8)
    blurred, noisy = sp.score(blur, test, train, 8), sp.score(noise, test, train, 8)
    assert blurred["bands"]["high"] < -0.2 and noisy["bands"]["high"] > 0.2, (blurred, noisy)
    assert blurred["median"] > own["median"] and noisy["median"] > own["median"]
    assert own["grid"] is not None and sp.score(test, test, train, None)["grid"] is None


def test_probe_of_a_tiny_run(tiny_runs):
    sp = _load()
    res = sp.probe(str(tiny_runs["ldm_dir"]), guidance=2.0, per_class=1)
    names = list(res["rows"])
    assert names[:3] == ["real validation", "real test", "VAE reconstructions of validation"]
    assert len(names) == 3 + len(sp.SAMPLERS)
    for row in res["rows"].values():
        assert np.isfinite(row["median"]) and row["iqr"][0] <= row["iqr"][1]
        assert 0 < row["nn_ssim"] <= 1
    # the reference is the test split itself
    assert res["rows"]["real test"]["set_distance"] == pytest.approx(0.0, abs=1e-12)
    assert sp.render(res).count("\n| ") == len(names) + 1  # header rule + one row per set
