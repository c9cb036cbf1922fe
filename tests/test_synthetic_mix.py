"""The synthetic mixing recipe: draw shares, the label filter and their use in the study."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from jax_mri_ldm.evaluation import study, synthetic_mix
from tests.test_study import TINY, _toy


def test_share_weights_give_synthetic_images_their_share_of_each_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    is_syn = np.array([False, True, True, True, False, False, True])
    w = synthetic_mix.share_weights(labels, is_syn, 0.25)
    for c in (0, 1):
        cls = labels == c
        assert w[cls & is_syn].sum() / w[cls].sum() == pytest.approx(0.25)
        assert np.ptp(w[cls & is_syn]) == 0 and np.ptp(w[cls & ~is_syn]) == 0  # equal within
    assert synthetic_mix.share_weights(labels, is_syn, None) is None
    only_real = synthetic_mix.share_weights(labels, np.zeros(7, bool), 0.25)
    assert np.all(only_real > 0)  # a class without synthetic images keeps all its draws


def test_filter_keep_and_own_label_probability():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    p = synthetic_mix.own_label_probability(probs, np.array([0, 0, 1]))
    np.testing.assert_allclose(p, [0.9, 0.3, 0.4])
    assert synthetic_mix.filter_keep(p, 0.5).tolist() == [True, False, False]
    assert synthetic_mix.filter_keep(p, None).all()


@pytest.mark.parametrize(
    "share, keep, match",
    [(0.0, None, "downstream_syn_share"), (1.0, None, "downstream_syn_share"),
     (None, 1.0, "downstream_syn_keep_prob"), (None, -0.1, "downstream_syn_keep_prob")],
)  # fmt: skip
def test_check_settings_names_the_option(share, keep, match):
    with pytest.raises(ValueError, match=match):
        synthetic_mix.check_settings(share, keep)


def _mislabelled_pool(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A toy pool whose 'tumour' half is made of blank (normal-looking) images."""
    x, y = _toy(n, seed)
    blank, _ = _toy(n, seed + 100)
    x[y == 1] = np.where(blank[y == 1] > 0.5, 0.0, blank[y == 1])  # squares removed
    return x, y


def test_study_filter_drops_off_label_synthetic_images():
    real_train, real_eval = _toy(48, seed=11), _toy(32, seed=12)
    pool = _mislabelled_pool(32, seed=13)  # 16 per class; every 'tumour' one is off-label
    kw = dict(n_per_class=12, seeds=(0, 1), steps=60, arms=("half+syn", "half"), **TINY)
    res = study.downstream_study(real_train, real_eval, pool, syn_keep_prob=0.5,
                                 syn_share=0.5, syn_multiples=(0.5,), **kw)  # fmt: skip
    assert res["config"]["syn_keep_prob"] == 0.5 and res["config"]["syn_share"] == 0.5
    for run in res["arms"]["half+syn"]["per_seed"] + res["syn_sweep"]["rows"][0]["per_seed"]:
        used = run["synthetic_used"]
        assert used["tumour"] <= 2 < used["normal"]  # the half's classifier vetoes blanks
    assert "synthetic_used" not in res["arms"]["half"]["per_seed"][0]
    counts = res["arms"]["half+syn"]["train_counts"]
    runs = res["arms"]["half+syn"]["per_seed"]
    assert counts["synthetic_drawn"] == {"normal": 12, "tumour": 12}
    assert counts["synthetic"] == {
        n: round(np.mean([r["synthetic_used"][n] for r in runs])) for n in ("normal", "tumour")
    }  # the mean kept count over seeds, not the last seed's
    plain = study.downstream_study(real_train, real_eval, pool, **kw)
    assert plain["config"]["syn_keep_prob"] is None
    assert "synthetic_used" not in plain["arms"]["half+syn"]["per_seed"][0]
    assert plain["arms"]["half"]["per_seed"] == res["arms"]["half"]["per_seed"]  # same draws


def test_study_filter_needs_the_vetting_arm():
    real, syn = _toy(16, seed=8), _toy(8, seed=9)
    with pytest.raises(ValueError, match=r"add \['half'\]"):
        study.downstream_study(real, real, syn, n_per_class=2, arms=("half+syn",),
                               syn_keep_prob=0.5, **TINY)  # fmt: skip


def test_readme_recipe_snippet_runs(monkeypatch):
    """The README's 'Adding the slices to your own classifier' code block runs as written
    (with the tests' tiny classifier settings, so that it takes seconds)."""
    from jax_mri_ldm.evaluation import domain_classifier as dc

    tiny = functools.partial(dc.train_classifier, steps=40, **TINY)
    monkeypatch.setattr(dc, "train_classifier", tiny)
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("**Adding the slices to your own classifier.**", 1)[1]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    real_x, real_y = _toy(24, seed=21)
    syn_x, syn_y = _mislabelled_pool(16, seed=22)
    ns = {"np": np, "real_x": real_x, "real_y": real_y, "syn_x": syn_x, "syn_y": syn_y}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102
    assert ns["weights"].shape == ns["y"].shape and ns["keep"].shape == syn_y.shape
    assert ns["keep"][syn_y == 1].sum() < ns["keep"][syn_y == 0].sum()  # blanks vetoed
