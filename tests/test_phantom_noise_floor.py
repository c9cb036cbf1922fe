"""bench/phantom_noise_floor.py: only the noise is redrawn; the expected slice beats one draw."""

from __future__ import annotations

import numpy as np

from conftest import REPO, load_script
from jax_mri_ldm.data import phantom

SCRIPT = REPO / "bench" / "phantom_noise_floor.py"


def _load():
    return load_script(SCRIPT, "bench_phantom_noise_floor")


def test_redraw_changes_only_the_noise():
    nf = _load()
    shipped = phantom.generate_slice(np.random.default_rng([0, 1, 3]), 1, 64)
    a, b = nf._redraw(0, 1, 3, 64, 0), nf._redraw(0, 1, 3, 64, 1)
    assert not np.array_equal(a, shipped) and not np.array_equal(a, b)
    # Same anatomy: the per-pixel differences are noise-sized, far below the slice's contrast.
    assert np.median(np.abs(a - shipped)) < 0.05
    assert np.corrcoef(a.ravel(), shipped.ravel())[0, 1] > 0.95
    # The module is restored: a plain draw gives the shipped bytes again.
    again = phantom.generate_slice(np.random.default_rng([0, 1, 3]), 1, 64)
    assert np.array_equal(again, shipped)


def test_expected_slice_scores_above_a_single_redraw_and_blur_ranks_by_width():
    nf = _load()
    result = nf.probe(64, 2, 0, 4, [0.5, 1.5])
    rows = result["rows"]
    expected = rows["expected slice (mean of 4 noise redraws)"]
    single = nf.score(*nf.draw_pairs(64, 2, 0, 1))
    assert expected["ssim"][1] > single["ssim"][1]
    assert expected["psnr"][1] > single["psnr"][1]
    assert (
        rows["Gaussian smoothing 0.5 px"]["ssim"][1] > rows["Gaussian smoothing 1.5 px"]["ssim"][1]
    )
    assert "| approximation |" in nf.table(result)
