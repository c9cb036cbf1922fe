"""Tests for models/classifier.py and evaluation/study.py on tiny toy data."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mri_ldm.evaluation import domain_classifier as dc
from jax_mri_ldm.evaluation import metrics, stats, study
from jax_mri_ldm.models.classifier import ClassifierCNN

# One tiny configuration everywhere, so the cached jitted train step compiles once per session.
TINY = dict(batch_size=16, lr=2e-3, input_size=32, widths=(8, 16))


def _toy(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Dim noise (label 0) vs dim noise plus a bright 8x8 square at a random place (label 1)."""
    rng = np.random.default_rng(seed)
    x = 0.2 * rng.random((n, size, size, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int32)
    for i in np.flatnonzero(y == 1):
        r, c = rng.integers(1, size - 9, 2)
        x[i, r : r + 8, c : c + 8] = 0.9
    return x, y


def test_classifier_shapes_and_resize():
    model = ClassifierCNN(widths=(8, 16), input_size=32)
    x = jnp.asarray(_toy(3, 0, size=48)[0])  # resized 48 -> 32 inside
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
    apply = jax.jit(model.apply, static_argnames=("return_features",))
    logits, feats = apply({"params": params}, x, return_features=True)
    assert logits.shape == (3, 2) and feats.shape == (3, 16)
    assert np.all(np.isfinite(np.asarray(logits)))
    # The same parameters work at another input size (global pooling), and resizing is skipped
    # when the input already has input_size.
    small = jax.image.resize(x, (3, 32, 32, 1), "linear", antialias=True)
    np.testing.assert_allclose(model.apply({"params": params}, small), logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="B, H, W, C"):
        model.apply({"params": params}, x[0])


def test_train_classifier_separates_toy():
    tx, ty = _toy(64, seed=1)
    vx, vy = _toy(64, seed=2)
    clf, hist = dc.train_classifier(tx, ty, seed=0, steps=40, val=(vx, vy), log_every=10, **TINY)
    assert hist["step"] == [10, 20, 30, 40]
    assert hist["loss"][-1] < hist["loss"][0]
    final = hist["val"][-1]
    assert final["step"] == 40
    assert final["accuracy"] >= 0.9 and final["auc"] >= 0.95
    scores = dc.evaluate_classifier(clf, vx, vy)
    assert scores == pytest.approx({k: v for k, v in final.items() if k != "step"})
    probs = dc.predict_proba(clf, vx[:5])
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    feats = dc.extract_features(clf, vx)
    assert feats.shape == (64, 16)
    # Features of the two classes differ in distribution: domain FID between classes is well
    # above the FID between two halves of the same class.
    neg, pos = feats[vy == 0], feats[vy == 1]
    assert metrics.fid(neg, pos) > 5 * metrics.fid(neg[:16], neg[16:])


def test_train_classifier_fine_tunes_from_given_params():
    tx, ty = _toy(64, seed=1)
    vx, vy = _toy(64, seed=2)
    pre, _ = dc.train_classifier(tx, ty, seed=0, steps=40, **TINY)
    assert dc.evaluate_classifier(pre, vx, vy)["accuracy"] >= 0.9
    frozen = {**TINY, "lr": 0.0}  # no update: the start is all there is
    tuned, _ = dc.train_classifier(tx, ty, seed=3, steps=2, init_params=pre.params, **frozen)
    fresh, _ = dc.train_classifier(tx, ty, seed=3, steps=2, **frozen)
    np.testing.assert_allclose(dc.predict_proba(tuned, vx), dc.predict_proba(pre, vx), rtol=1e-5)
    assert not np.allclose(dc.predict_proba(fresh, vx), dc.predict_proba(pre, vx), atol=1e-3)
    other, _ = dc.train_classifier(tx, ty, seed=0, steps=1, **{**TINY, "widths": (8, 8)})
    with pytest.raises(ValueError, match="init_params do not fit this classifier"):
        dc.train_classifier(tx, ty, seed=0, steps=1, init_params=other.params, **TINY)


def test_train_classifier_rejects_missing_class():
    tx, ty = _toy(8, seed=3)
    with pytest.raises(ValueError, match="no examples of class"):
        dc.train_classifier(tx, np.zeros_like(ty), steps=1, **TINY)
    with pytest.raises(ValueError, match="labels"):
        dc.train_classifier(tx, ty[:4], steps=1, **TINY)


def test_class_draws_follow_sample_weights():
    labels = np.array([0, 0, 0, 1, 1, 1])
    members = [np.flatnonzero(labels == c) for c in (0, 1)]
    draw = dc._class_draws(members, np.array([1.0, 0.0, 3.0, 0.0, 0.0, 2.0]), 6)
    rng = np.random.default_rng(0)
    zeros = np.array([draw(rng, 0) for _ in range(4000)])
    assert set(zeros) == {0, 2}  # weight 0 is never drawn
    assert abs(np.mean(zeros == 2) - 0.75) < 0.03  # 3 : 1 within the class
    assert {draw(rng, 1) for _ in range(100)} == {5}
    uniform = dc._class_draws(members, None, 6)
    assert {uniform(rng, 1) for _ in range(200)} == {3, 4, 5}
    for bad in (np.ones(5), np.array([1, 1, 1, 0, 0, 0.0]), np.array([1, -1, 1, 1, 1, 1.0])):
        with pytest.raises(ValueError, match="sample_weights"):
            dc._class_draws(members, bad, 6)


def test_train_classifier_ignores_zero_weight_images():
    tx, ty = _toy(64, seed=1)
    vx, vy = _toy(64, seed=2)
    flipped = ty.copy()
    flipped[:32] = 1 - flipped[:32]  # the first half carries wrong labels ...
    w = np.r_[np.zeros(32), np.ones(32)]  # ... and is never drawn
    clf, _ = dc.train_classifier(tx, flipped, seed=0, steps=40, sample_weights=w, **TINY)
    assert dc.evaluate_classifier(clf, vx, vy)["accuracy"] >= 0.9


@pytest.fixture(scope="module")
def tiny_study() -> dict:
    real_train, real_test, syn = _toy(32, seed=4), _toy(32, seed=5), _toy(24, seed=6)
    return study.downstream_study(
        real_train,
        real_test,
        syn,
        n_per_class=6,
        seeds=(0, 1),
        steps=20,
        syn_multiples=(0.5, 1.0),
        **TINY,
    )


def test_downstream_study_runs_every_arm(tiny_study):
    res = tiny_study
    json.dumps(res, allow_nan=False)  # plain, strict JSON
    assert list(res["arms"]) == list(study.ARMS)
    counts = {a: res["arms"][a]["train_counts"] for a in study.ARMS}
    assert counts["real"] == {
        "real": {"normal": 16, "tumour": 16},
        "synthetic": {"normal": 0, "tumour": 0},
    }
    assert counts["real+syn"]["synthetic"] == {"normal": 6, "tumour": 6}
    assert counts["syn"]["real"] == {"normal": 0, "tumour": 0}
    assert counts["half"]["real"] == {"normal": 8, "tumour": 8}
    assert counts["half+syn"] == {
        "real": {"normal": 8, "tumour": 8},
        "synthetic": {"normal": 6, "tumour": 6},
    }
    for arm in study.ARMS:
        runs = res["arms"][arm]["per_seed"]
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            for m in study.METRIC_NAMES:
                assert math.isfinite(r[m]) and 0.0 <= r[m] <= 1.0
        for m in study.METRIC_NAMES:
            summ = res["arms"][arm]["summary"][m]
            mean, half = stats.mean_ci([r[m] for r in runs], 0.95)
            assert summ["n"] == 2
            assert summ["mean"] == pytest.approx(mean) and summ["half_width"] == pytest.approx(half)
    assert set(res["comparisons"]) == {
        "real+syn - real",
        "syn - real",
        "half+syn - half",
        "half+syn - real",
        "half - real",
    }
    diff = res["comparisons"]["half+syn - half"]["auc"]["mean"]
    pairs = zip(res["arms"]["half+syn"]["per_seed"], res["arms"]["half"]["per_seed"], strict=True)
    want = np.mean([a["auc"] - b["auc"] for a, b in pairs])
    assert diff == pytest.approx(want)
    assert set(res["real_data_equivalence"]) == set(study.METRIC_NAMES)
    assert res["data"]["synthetic"] == {"normal": 12, "tumour": 12}
    assert res["data"]["real_eval"] == {"normal": 16, "tumour": 16}
    assert "paired" in res["config"]["pairing"]


def _diffs(runs_a, runs_b, m):
    return [a[m] - b[m] for a, b in zip(runs_a, runs_b, strict=True)]


def test_paired_gain_is_the_mean_of_per_seed_differences(tiny_study):
    res = tiny_study
    half = res["arms"]["half"]["per_seed"]
    for m in study.METRIC_NAMES:
        comp = res["comparisons"]["half+syn - half"][m]
        d = _diffs(res["arms"]["half+syn"]["per_seed"], half, m)
        assert comp["per_seed"] == pytest.approx(d)
        mean, half_width = stats.mean_ci(d)
        assert comp["mean"] == pytest.approx(mean) and comp["n"] == 2
        assert comp["half_width"] == pytest.approx(half_width)
    # Sweep rows are paired with the same 'half' runs.
    for row in res["syn_sweep"]["rows"]:
        d = _diffs(row["per_seed"], half, "accuracy")
        assert row["gain"]["accuracy"]["mean"] == pytest.approx(np.mean(d))
        assert row["gain"]["accuracy"]["per_seed"] == pytest.approx(d)


def test_sweep_rows_use_multiples_of_the_half(tiny_study):
    sweep = tiny_study["syn_sweep"]
    assert sweep["baseline"] == "half" and sweep["half_per_class"] == [8, 8]
    assert [r["multiple"] for r in sweep["rows"]] == [0.5, 1.0]
    assert [r["synthetic_per_class"] for r in sweep["rows"]] == [
        {"normal": 4, "tumour": 4},
        {"normal": 8, "tumour": 8},
    ]
    assert [r["arm"] for r in sweep["rows"]] == ["half+syn x0.5", "half+syn x1"]
    for row in sweep["rows"]:
        assert [r["seed"] for r in row["per_seed"]] == [0, 1]
        assert set(row["summary"]) == set(row["gain"]) == set(study.METRIC_NAMES)
    assert tiny_study["config"]["syn_multiples"] == [0.5, 1.0]


def test_sweep_counts_and_half_sizes():
    assert study.half_sizes([78, 124], 0.5) == [39, 62]
    assert study.half_sizes([1, 3], 0.5) == [1, 2]  # at least one image, Python rounding
    assert study.sweep_counts([39, 62], (1.0, 2.0)) == [[39, 62], [78, 124]]
    assert study.sweep_counts([39, 62], (0.01,)) == [[1, 1]]
    with pytest.raises(ValueError, match="downstream_syn_multiples"):
        study.sweep_counts([39, 62], (1.0, 0.0))


def test_sweep_input_errors():
    real, syn = _toy(16, seed=8), _toy(8, seed=9)  # half: 4 per class; pool: 4 per class
    with pytest.raises(ValueError, match="syn_multiples need up to"):
        study.downstream_study(real, real, syn, n_per_class=2, syn_multiples=(2.0,), **TINY)
    with pytest.raises(ValueError, match="'half' arm"):
        study.downstream_study(
            real, real, syn, n_per_class=2, arms=("real",), syn_multiples=(1.0,), **TINY
        )


def _split(n_normal: int, n_tumour: int, value: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([0] * n_normal + [1] * n_tumour, np.int32)
    return np.full((y.size, 4, 4, 1), value, np.float32), y


def test_evaluation_set_joins_val_and_test():
    splits = {"val": _split(3, 2, 0.1), "test": _split(1, 4, 0.2)}
    (x, y), used, note = study.evaluation_set(splits, ("val", "test"))
    assert used == ("val", "test") and note is None
    assert x.shape == (10, 4, 4, 1) and np.bincount(y).tolist() == [4, 6]
    assert np.all(x[:5] == 0.1) and np.all(x[5:] == 0.2)  # val first, then test
    (x, y), used, _ = study.evaluation_set(splits, ("test",))
    assert used == ("test",) and np.bincount(y).tolist() == [1, 4]


def test_evaluation_set_falls_back_to_test_when_val_is_empty():
    splits = {"val": _split(0, 0, 0.1), "test": _split(1, 1, 0.2)}
    for requested in (("val", "test"), ("val",)):
        (x, y), used, note = study.evaluation_set(splits, requested)
        assert used == ("test",) and y.tolist() == [0, 1] and np.all(x == 0.2)
        assert note == "val split empty: scored on test only"
    with pytest.raises(ValueError, match="both empty"):
        study.evaluation_set({"val": _split(0, 0, 0), "test": _split(0, 0, 0)}, ("val", "test"))
    for bad in (("train",), (), ("test", "test")):
        with pytest.raises(ValueError, match="downstream_eval_splits"):
            study.evaluation_set(splits, bad)


def test_paired_mean_ci_hand_values():
    a, b = [0.8, 0.9, 0.7, np.nan], [0.7, 0.85, 0.7, 0.6]
    mean, half, n = stats.paired_mean_ci(a, b)
    assert n == 3 and mean == pytest.approx(0.05)
    assert half == pytest.approx(4.302652729911275 * 0.05 / np.sqrt(3))  # t(0.975, 2) * s / sqrt(n)
    one = stats.paired_mean_ci([1.0], [0.5])
    assert one[0] == 0.5 and math.isnan(one[1]) and one[2] == 1
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_mean_ci([1.0, 2.0], [1.0])
    # A shared per-seed offset cancels in the paired interval but not in separate ones.
    base = np.array([0.6, 0.9, 0.7, 0.8, 0.65])
    gain = base + np.array([0.05, 0.04, 0.06, 0.05, 0.05])
    paired = stats.paired_mean_ci(gain, base)[1]
    assert paired < 0.1 * stats.mean_ci(base)[1]


def test_arms_of_a_seed_share_the_classifier_initialisation():
    """With lr = 0 the weights stay at their initialisation: two arms' data of different sizes
    and class balance give identical weights for one seed, and other weights for another."""
    kw = {**TINY, "lr": 0.0}
    small, large = _toy(8, seed=10), _toy(40, seed=11)
    p1 = dc.train_classifier(*small, seed=3, steps=2, **kw)[0].params
    p2 = dc.train_classifier(*large, seed=3, steps=2, **kw)[0].params
    p3 = dc.train_classifier(*small, seed=4, steps=2, **kw)[0].params
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(u, v) for u, v in zip(leaves(p1), leaves(p2), strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(leaves(p1), leaves(p3), strict=True))


def test_downstream_study_ci_shrinks_with_more_seeds():
    # A weak signal and very short training make the per-seed scores vary; the Student-t
    # interval over 4 seeds must be narrower than over the first 2 of them.
    rng = np.random.default_rng(7)
    x = rng.random((48, 32, 32, 1)).astype(np.float32)
    y = (np.arange(48) % 2).astype(np.int32)
    x[y == 1] = np.clip(x[y == 1] + 0.05, 0, 1)
    train, test = (x[:32], y[:32]), (x[32:], y[32:])
    res = study.downstream_study(
        train, test, None, n_per_class=1, seeds=(0, 1, 2, 3), arms=("real",), steps=3, **TINY
    )
    aucs = [r["auc"] for r in res["arms"]["real"]["per_seed"]]
    assert len(set(aucs)) > 1  # the seeds really differ
    h2 = stats.mean_ci(aucs[:2])[1]
    h4 = res["arms"]["real"]["summary"]["auc"]["half_width"]
    assert h4 == pytest.approx(stats.mean_ci(aucs)[1])
    assert res["comparisons"] == {} and res["real_data_equivalence"] == {}
    assert h4 < h2


def test_downstream_study_input_errors():
    real, syn = _toy(16, seed=8), _toy(8, seed=9)
    with pytest.raises(ValueError, match="unknown arms"):
        study.downstream_study(real, real, syn, n_per_class=2, arms=("real", "gan"), **TINY)
    with pytest.raises(ValueError, match="n_per_class=5"):
        study.downstream_study(real, real, syn, n_per_class=5, **TINY)
    with pytest.raises(ValueError, match="real_train has no"):
        only_normal = (real[0][real[1] == 0], real[1][real[1] == 0])
        study.downstream_study(only_normal, real, syn, n_per_class=2, **TINY)
    with pytest.raises(ValueError, match="synthetic is None"):
        study.downstream_study(real, real, None, n_per_class=2, arms=("syn",), **TINY)


def _toy_k(n: int, k: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Class c: a bright 8x8 square in quadrant c (class 0: no square)."""
    rng = np.random.default_rng(seed)
    x = 0.2 * rng.random((n, size, size, 1)).astype(np.float32)
    y = (np.arange(n) % k).astype(np.int32)
    for i in range(n):
        if y[i]:
            r, c = divmod(int(y[i]) - 1, 2)
            x[i, 2 + 16 * r : 10 + 16 * r, 2 + 16 * c : 10 + 16 * c] = 0.9
    return x, y


def test_metric_names_per_number_of_classes():
    assert study.metric_names(("normal", "tumour")) == study.METRIC_NAMES
    names = ("normal", "glioma", "pituitary")
    assert study.metric_names(names) == ("accuracy", "auc", *(f"recall_{n}" for n in names))


def test_multiclass_metrics_hand_values():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    out = dc.multiclass_metrics([0, 1, 2, 1], probs, ("a", "b", "c"))
    assert out["accuracy"] == 0.75 and out["recall_b"] == 0.5 and out["recall_a"] == 1.0
    assert list(out) == ["accuracy", "auc", "recall_a", "recall_b", "recall_c"]
    assert 0.5 < out["auc"] <= 1.0
    assert math.isnan(dc.multiclass_metrics([0, 0], probs[:2, :3], ("a", "b", "c"))["auc"])


@pytest.mark.parametrize("k", [3, 4])
def test_downstream_study_with_k_classes(k):
    names = ("normal", "glioma", "meningioma", "pituitary")[:k]
    train, test, syn = _toy_k(8 * k, k, 1), _toy_k(4 * k, k, 2), _toy_k(4 * k, k, 3)
    res = study.downstream_study(
        train, test, syn, n_per_class=2, seeds=(0, 1), steps=5, class_names=names, **TINY
    )
    json.dumps(res, allow_nan=False)
    assert res["config"]["metric_names"] == list(study.metric_names(names))
    assert res["arms"]["half+syn"]["train_counts"]["real"] == {n: 4 for n in names}
    assert res["arms"]["syn"]["train_counts"]["synthetic"] == {n: 2 for n in names}
    for r in res["arms"]["real"]["per_seed"]:
        assert 0 <= r["accuracy"] <= 1 and all(f"recall_{n}" in r for n in names)
    assert set(res["comparisons"]["half+syn - half"]) == set(study.metric_names(names))
