"""bench/ablations/recall_noise.py: the sign test's exact tail, and both tests on features where
the real set clearly covers more of the reference than its corruption, and where it does not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, load_script

SCRIPT = REPO / "bench" / "ablations" / "recall_noise.py"


def _rn():
    return load_script(SCRIPT, "bench_recall_noise")


def test_sign_test_p_is_the_binomial_upper_tail() -> None:
    rn = _rn()
    assert rn.sign_test_p(0, 0) == 1.0
    assert rn.sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert rn.sign_test_p(1, 1) == pytest.approx(3 / 4)  # P(X >= 1), X ~ Bin(2, 1/2)
    assert rn.sign_test_p(0, 4) == 1.0


def test_tests_separate_a_covering_set_from_a_collapsed_one(tmp_path) -> None:
    rn = _rn()
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((120, 6))
    real = rng.standard_normal((30, 6))
    collapsed = real * 0.1  # same images, shrunk to the centre: covers far less
    feats = {"reference": ref, "feats__real": real, "feats__blur": collapsed,
             "feats__test-split control: real": real,
             "feats__test-split control: blur": real.copy()}  # fmt: skip
    np.savez(tmp_path / "features.npz", **feats)
    res = rn.main(str(tmp_path))
    far = res["validation"]["3"]["blur"]
    assert far["recall_real"] > far["recall_control"] and far["only_control"] == 0
    assert far["sign_p"] < 1e-6 and far["jackknife_z"] > 3
    same = res["test"]["3"]["blur"]  # an identical copy: nothing to tell apart
    assert same["only_real"] == same["only_control"] == 0 and same["sign_p"] == 1.0
    assert same["jackknife_diff"] == 0 and same["jackknife_z"] is None
    assert same["jackknife_se"] == 0 and same["jackknife_max_influence"] == 0
    assert set(res["validation"]["3"]) == {"blur"}  # corruptions without features are skipped
    assert json.loads((tmp_path / "recall_noise.json").read_text()) == res


def test_jackknife_is_the_delete_one_formula_on_counts(monkeypatch) -> None:
    rn = _rn()
    m = 20  # reference images; each judged image i covers v_i of them, none shared

    def covered(ref, feats, k):
        mask = np.zeros(len(ref), bool)
        mask[: int(np.asarray(feats).sum())] = True
        return mask

    monkeypatch.setattr(rn.prdc, "recall_covered", covered)
    real = np.array([[1.0], [2.0], [3.0], [6.0]])
    jk = rn.jackknife_z(np.zeros((m, 1)), real, np.zeros_like(real), k=1)
    # leave-one-out counts 11, 10, 9, 6 (mean 9): sqrt(3/4 * 14) / 20
    assert jk["diff"] == pytest.approx(12 / m)
    assert jk["se"] == pytest.approx(np.sqrt(0.75 * 14) / m)
    assert jk["z"] == pytest.approx(12 / np.sqrt(0.75 * 14))
    assert jk["max_influence"] == pytest.approx(6 / m)  # deleting the image that covers 6
