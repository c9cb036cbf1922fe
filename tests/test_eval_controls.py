"""Controls, spectrum/grid, PRDC, the trust check and the self-supervised feature space."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mri_ldm.evaluation import control_study, controls, features, prdc, spectrum, trust
from jax_mri_ldm.evaluation.context import Nulls


def _slices(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Head-like test images: a bright ellipse with smooth inner structure, on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1
    out = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        a, b = rng.uniform(0.55, 0.85, 2)
        head = ((yy / a) ** 2 + (xx / b) ** 2) < 1
        fy, fx, ph = rng.uniform(1, 3), rng.uniform(1, 3), rng.uniform(0, 6)
        tex = 0.5 + 0.25 * np.sin(np.pi * fy * yy + ph) * np.cos(np.pi * fx * xx)
        cy, cx = rng.uniform(-0.3, 0.3, 2)
        blob = 0.3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
        out[i, ..., 0] = np.clip(head * (tex + blob), 0, 1)
    return out


# ---- controls --------------------------------------------------------------------------------


def test_corruptions_stay_in_range_and_change_what_they_claim():
    x = _slices(6)
    noisy = controls.gaussian_noise(x, seed=1)
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1
    assert 0.05 < np.std(noisy - x) < 0.11
    blurred = controls.gaussian_blur(x)
    assert np.square(np.diff(blurred, axis=2)).mean() < 0.5 * np.square(np.diff(x, axis=2)).mean()
    shuffled = controls.patch_shuffle(x, patch=16, seed=0)
    np.testing.assert_allclose(np.sort(shuffled.ravel()), np.sort(x.ravel()))
    assert not np.allclose(shuffled, x)
    grid = controls.add_grid(x)
    assert np.allclose((grid - x)[:, 1:8, 1:8], 0) and (grid - x)[:, 0].max() > 0.02
    np.testing.assert_array_equal(controls.mirrored(x)[:, :, ::-1], x)


def test_patch_shuffle_small_images_use_a_quarter_side():
    x = _slices(2, size=32)
    shuffled = controls.patch_shuffle(x, patch=32, seed=3)
    assert not np.allclose(shuffled, x)


def test_make_controls_sets_and_labels():
    x, y = _slices(8), np.arange(8) % 2
    tr, ty = _slices(10, seed=5), np.arange(10) % 2
    decode = lambda z: np.full((len(z), 64, 64, 1), 0.5, np.float32) + z[:, :1, :1, :1] * 0
    recon = lambda a: np.clip(a * 0.9 + 0.2, 0, 1.5)  # a stand-in VAE (clipped to [0, 1])
    kw = dict(seed=0, decode=decode, latent_shape=(8, 8, 4), reconstruct=recon)
    sets = controls.make_controls(x, y, tr, ty, **kw)
    assert list(sets) == ["real", *controls.CORRUPTIONS, *controls.COPIES]
    for name, (imgs, labels) in sets.items():
        assert imgs.shape == x.shape and labels.shape == (8,), name
        assert imgs.min() >= 0.0 and imgs.max() <= 1.0, name
    mir, mir_y = sets[controls.MEMORISED]
    flipped = mir[:, :, ::-1]
    assert all(any(np.array_equal(f, t) for t in tr) for f in flipped)
    # The decoded copies are the same training images, reconstructed, with the same labels.
    dec, dec_y = sets[controls.DECODED_TRAIN]
    np.testing.assert_array_equal(dec_y, mir_y)
    np.testing.assert_allclose(dec, np.clip(flipped * 0.9 + 0.2, 0, 1), atol=1e-6)
    assert controls.DECODED_TRAIN not in controls.make_controls(x, y, tr, ty, seed=0)
    with pytest.raises(ValueError, match="latent_shape"):
        controls.make_controls(x, y, tr, ty, decode=decode)


# ---- spectrum and grid ----------------------------------------------------------------------


def test_grid_score_flags_an_added_grid_and_not_noise():
    x = _slices(8)
    base = spectrum.grid_score(x)
    assert np.median(spectrum.grid_score(controls.add_grid(x))) > 3 * np.median(base)
    assert spectrum.grid_score(controls.gaussian_noise(x)).max() < 3 * np.median(base) + 1
    with pytest.raises(ValueError, match="multiples"):
        spectrum.grid_score(np.zeros((1, 60, 60, 1)))


def test_spectrum_distance_grows_with_noise_and_blur():
    ref, x = _slices(16, seed=1), _slices(16, seed=2)
    real = np.median(spectrum.spectrum_distance(x, ref))
    for bad in (controls.gaussian_noise(x), controls.gaussian_blur(x)):
        assert np.median(spectrum.spectrum_distance(bad, ref)) > real + 0.1
    s = spectrum.summary_vs_real(spectrum.spectrum_distance(x, ref), np.array([1.0, 2.0, 3.0]))
    assert s["real_median"] == 2.0 and s["real_q25"] == 1.5


# ---- PRDC -----------------------------------------------------------------------------------


def test_prdc_same_distribution_vs_far_away():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 8))
    same = prdc.prdc(real, rng.standard_normal((300, 8)))
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["coverage"] > 0.8
    assert 0.6 < same["density"] < 1.4
    far = prdc.prdc(real, rng.standard_normal((300, 8)) + 10)
    assert far["precision"] == 0 and far["recall"] == 0 and far["coverage"] == 0
    collapsed = prdc.prdc(real, rng.standard_normal((300, 8)) * 0.05)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2
    with pytest.raises(ValueError):
        prdc.prdc(real, real[:1])


def test_recall_covered_is_recalls_per_image_form():
    rng = np.random.default_rng(3)
    real, near = rng.standard_normal((60, 4)), rng.standard_normal((12, 4))
    for k in (1, 3, 5):
        mask = prdc.recall_covered(real, near, k)
        assert mask.shape == (60,) and mask.dtype == bool
        assert mask.mean() == pytest.approx(prdc.prdc(real, near, 5, k)["recall"])
    assert not prdc.recall_covered(real, near + 50, 3).any()  # a far set covers nothing
    # a judged set [0, 2, 10] at k = 1 has radii 2, 2, 8: -2 sits on the first ball's edge
    # (not inside: strict <), 0.5 inside it, 13 inside the third
    judged = np.array([[0.0], [2.0], [10.0]])
    assert prdc.recall_covered(np.array([[-2.0], [0.5], [13.0]]), judged, 1).tolist() == [
        False, True, True
    ]  # fmt: skip
    small = near[:3]  # k = 5 is clipped to 2 for a 3-image set, as prdc clips it
    assert prdc.recall_covered(real, small, 5).mean() == pytest.approx(
        prdc.prdc(real, small, 5, 5)["recall"]
    )
    assert (prdc.recall_covered(real, small, 5) == prdc.recall_covered(real, small, 2)).all()
    with pytest.raises(ValueError, match=">= 2 images"):  # one image has no k-NN ball
        prdc.recall_covered(real, near[:1], 1)


def test_prdc_per_class_handles_a_missing_class():
    rng = np.random.default_rng(1)
    f = rng.standard_normal((20, 4))
    out = prdc.prdc_per_class(f, np.arange(20) % 2, f, np.zeros(20, int), ("a", "b"))
    assert out["per_class"]["b"] is None and out["per_class"]["a"]["precision"] == 1.0


def _ring(n: int, rng: np.random.Generator, d: int = 16) -> np.ndarray:
    """(n, d) points on a 2-torus (cos, sin of two angles) in the first four of d dimensions."""
    t = rng.uniform(0, 2 * np.pi, (n, 2))
    return np.concatenate([np.cos(t), np.sin(t), np.zeros((n, d - 4))], 1)


def test_prdc_dense_reference_rejects_off_manifold_noise_that_a_sparse_one_accepts():
    """Why the report's PRDC reference is the training split: k-NN balls over a few dozen real
    points are wide enough to hold noisy copies of real images; a dense reference is not."""
    rng = np.random.default_rng(0)
    dense, sparse, held = _ring(400, rng), _ring(25, rng), _ring(40, rng)
    noisy = held + 0.15 * rng.standard_normal(held.shape)  # off the real manifold
    real_d, noisy_d = prdc.prdc(dense, held), prdc.prdc(dense, noisy)
    assert real_d["precision"] >= 0.9 and real_d["recall"] >= 0.9
    assert noisy_d["precision"] <= 0.3 and noisy_d["density"] < 0.3 * real_d["density"]
    assert noisy_d["coverage"] < 0.5 * real_d["coverage"]
    assert prdc.prdc(sparse, noisy)["precision"] >= 0.9  # the failure a sparse reference has


def test_prdc_reference_scores_per_class_and_describes_itself():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 1, 1, 4))
    y = np.arange(30) % 2
    ref = prdc.build_reference("train", x, y, ("a", "b"), lambda im: im.reshape(len(im), -1), 3)
    assert ref.describe() == {
        "split": "train", "n": 30, "n_per_class": {"a": 15, "b": 15}, "k": 3,
        "features_at": "the space's own size", "recall_k": 3, "equal_n_per_class": None,
        "equal_n_subsets": 20,
    }  # fmt: skip
    res = prdc.score(ref, x[:10], y[:10])
    assert res["overall"]["precision"] == 1.0 and set(res["per_class"]) == {"a", "b"}
    with pytest.raises(ValueError, match="use one of train, test"):
        prdc.build_reference("val", x, y, ("a", "b"), lambda im: im.reshape(len(im), -1))


def test_rescore_row_replaces_prdc_and_its_null_reasons():
    from jax_mri_ldm.evaluation.context import Nulls

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((20, 1, 1, 4)), np.arange(20) % 2
    ref = prdc.build_reference("train", x, y, ("a", "b"), lambda im: im.reshape(len(im), -1))
    nulls = Nulls()
    nulls.null("s.prdc", "old reason")
    nulls.null("s.precision", "old reason")
    row = prdc.rescore_row(ref, {"precision": None}, x[:6], y[:6], nulls, "s")
    assert row["precision"] == row["prdc"]["overall"]["precision"] == 1.0
    assert "s.prdc" not in nulls.reasons and "s.precision" not in nulls.reasons
    row = prdc.rescore_row(ref, row, x[:1], y[:1], nulls, "s")  # too few images
    assert row["prdc"] is None and row["recall"] is None
    assert "s.prdc" in nulls.reasons and "s.recall" in nulls.reasons


def test_prdc_reference_sees_the_encoder_at_the_images_own_side():
    from jax_mri_ldm.evaluation import control_study

    s = features.SSLSettings(widths=(4, 8), input_size=16, steps=1, batch_size=4)
    space = control_study.random_space(s)
    x, y = _slices(6, size=32), np.arange(6) % 2
    ref = control_study.prdc_reference(space, (x, y), (x, y), ("a", "b"), k=2)
    assert ref.split == "train" and ref.input_size == 32
    want = features.random_encoder_embed(dataclasses.replace(s, input_size=32))(x)
    np.testing.assert_allclose(ref.feats, want, rtol=1e-6)
    assert not np.allclose(ref.feats, space.embed(x))  # 16 px would average the pixels away
    fixed = control_study.Space(space.embed, {})  # no at_size: the space's own size
    assert control_study.prdc_reference(fixed, (x, y), (x, y), ("a", "b"), k=2).input_size is None
    with pytest.raises(ValueError, match="use one of"):
        control_study.prdc_reference(space, (x, y), (x, y), ("a", "b"), split="val")


# ---- trust ----------------------------------------------------------------------------------


def test_check_metric_directions():
    fid = trust.RULES_BY_NAME["fid"]
    good = {"real": 1.0, **{c: 5.0 for c in controls.CORRUPTIONS}}
    assert trust.check_metric(fid, good)["trustworthy"] is True
    bad = {**good, "blur": 0.5}
    res = trust.check_metric(fid, bad)
    assert res["trustworthy"] is False and res["failures"] == ["blur"]
    grid = trust.RULES_BY_NAME["grid"]
    assert trust.check_metric(grid, {"real": 2.0, "grid": 0.5, "blur": 2.0})["trustworthy"]
    assert not trust.check_metric(grid, {"real": 2.0, "grid": 2.0})["trustworthy"]
    table = trust.controls_table({"fid": bad, "precision": {"real": 0.9, "noise": 0.1}})
    assert table["untrusted"] == ["fid"]
    assert trust.trusted(table, ["fid", "precision"]) == ["precision"]


# ---- features -------------------------------------------------------------------------------


def test_augment_keeps_shape_and_range_and_varies():
    x = jnp.asarray(_slices(4, size=32))
    v1 = features.augment(x, jax.random.PRNGKey(0))
    v2 = features.augment(x, jax.random.PRNGKey(1))
    assert v1.shape == x.shape and float(v1.min()) >= 0 and float(v1.max()) <= 1
    assert float(jnp.abs(v1 - v2).mean()) > 1e-3


def test_nt_xent_prefers_matching_views():
    z = jax.random.normal(jax.random.PRNGKey(0), (8, 16))
    other = jax.random.normal(jax.random.PRNGKey(1), (8, 16))
    assert float(features.nt_xent(z, z, 0.2)) < float(features.nt_xent(z, other, 0.2))


def test_batch_standardise_centres_every_feature():
    h = 3.0 + jax.random.normal(jax.random.PRNGKey(0), (16, 5)) * jnp.arange(1.0, 6.0)
    out = features.batch_standardise(h)
    np.testing.assert_allclose(np.asarray(out.mean(0)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.std(0)), 1.0, atol=1e-3)


def test_contrastive_encoder_learns_and_flags_collapse():
    # Distinct slices: NT-Xent must leave chance (a collapsed head sits at log(2B - 1)).
    s = features.SSLSettings(widths=(8, 16), input_size=32, steps=40, batch_size=8)
    _, info = features.load_or_train(_slices(32, size=32, seed=2), s, None, "k")
    assert info["chance_loss"] == pytest.approx(np.log(15))
    assert info["final_loss"] < 0.9 * info["chance_loss"] and not info["collapsed"]
    # Identical slices: no view can be told from another, so the loss stays at chance.
    same = np.repeat(_slices(1, size=32, seed=2), 16, axis=0)
    _, flat = features.load_or_train(same, dataclasses.replace(s, steps=10), None, "k")
    assert flat["collapsed"]


def test_contrastive_encoder_trains_caches_and_sees_noise(tmp_path):
    train = _slices(24, size=32, seed=3)
    s = features.SSLSettings(widths=(8, 16), input_size=32, steps=12, batch_size=8)
    params, info = features.load_or_train(train, s, str(tmp_path), "k1")
    assert not info["cached"] and np.isfinite(info["final_loss"])
    again, info2 = features.load_or_train(train, s, str(tmp_path), "k1")
    assert info2["cached"]
    embed = features.encoder_embed(params, s.widths, s.input_size)
    x = _slices(5, size=32, seed=9)
    np.testing.assert_allclose(
        embed(x), features.encoder_embed(again, s.widths, s.input_size)(x), rtol=1e-5
    )
    assert embed(x).shape == (5, 24)
    val, test = _slices(24, size=32, seed=4), _slices(24, size=32, seed=6)
    sets = {"real": (val, None), "noise": (controls.gaussian_noise(val), None)}
    rank = features.control_ranking(embed, sets, test, ["noise"])
    assert rank["detected"] == ["noise"] and rank["min_log_ratio"] > 0
    rankings = {"a": rank, "b": {**rank, "detected": [], "min_log_ratio": -1.0}}
    assert features.choose_space(rankings) == "a"


def test_recall_k_only_changes_the_judged_sets_balls():
    rng = np.random.default_rng(3)
    real, fake = _ring(200, rng), _ring(30, rng)
    a, b = prdc.prdc(real, fake, k=5), prdc.prdc(real, fake, k=5, recall_k=1)
    assert (a["recall_k"], b["recall_k"]) == (5, 1)
    for key in ("precision", "density", "coverage"):  # balls around real features: same k
        assert a[key] == b[key]
    assert b["recall"] < a["recall"]  # smaller balls around the 30 judged points hold less


def _ident_ref(x: np.ndarray, y: np.ndarray, **kw) -> prdc.Reference:
    flat = lambda im: np.asarray(im).reshape(len(im), -1)  # noqa: E731
    return dataclasses.replace(prdc.build_reference("train", x, y, ("a", "b"), flat, 5), **kw)


def test_equal_n_scores_a_large_set_as_the_mean_of_held_out_size_subsets():
    rng = np.random.default_rng(4)
    real = _ring(300, rng)
    ry = np.arange(300) % 2
    big, by = _ring(400, rng), np.arange(400) % 2
    whole = prdc.score_features(_ident_ref(real, ry), big, by)
    eq = prdc.score_features(_ident_ref(real, ry, equal_n=(13, 13), subsets=6), big, by)
    assert eq["equal_n"]["n_per_class"] == [13, 13] and eq["equal_n"]["subsets"] == 6
    assert eq["overall"]["n_fake_equal"] == 26
    # Both depend on n: 400 samples land in more real balls than 26 do (coverage), while 26
    # samples' own k-NN balls are wider and swallow more real points (recall).
    assert eq["overall"]["coverage"] < whole["overall"]["coverage"]
    assert eq["overall"]["recall"] > whole["overall"]["recall"]
    assert eq["overall"]["precision"] == whole["overall"]["precision"]  # n-free: unchanged
    # Each subset is a plain PRDC of 26 points; the mean is reproduced by hand.
    subs = prdc._subsets(by, [13, 13], 6)
    manual = [prdc.prdc(real, big[i], 5)["recall"] for i in subs]
    assert eq["overall"]["recall"] == pytest.approx(np.mean(manual))
    assert eq["equal_n"]["std"]["recall"] == pytest.approx(np.std(manual))
    # A set already at the held-out size is scored whole.
    small = prdc.score_features(_ident_ref(real, ry, equal_n=(13, 13)), big[subs[0]], by[subs[0]])
    assert small["equal_n"]["subsets"] == 0
    assert small["overall"]["recall"] == prdc.prdc(real, big[subs[0]], 5)["recall"]
    # A class with one held-out image has no per-class PRDC at that size, as on the controls.
    assert small["overall"]["n_fake_equal"] == 26 and small["per_class"]["a"]["n_fake_equal"] == 13
    # A class with one held-out image has no per-class recall or coverage at that size (its
    # precision and density, from the whole set, stay); the reason reaches the nulls.
    one = prdc.score_features(_ident_ref(real, ry, equal_n=(1, 13), subsets=3), big, by)
    a = one["per_class"]["a"]
    assert a["recall"] is None and a["coverage"] is None and a["precision"] is not None
    assert one["equal_n"]["undefined"] == ["a"] and one["per_class"]["b"]["n_fake_equal"] == 13
    assert one["overall"]["n_fake_equal"] == 14
    nulls = Nulls()
    prdc.null_undefined(nulls, "x.prdc", one)
    assert set(nulls.reasons) == {"x.prdc.per_class.a.recall", "x.prdc.per_class.a.coverage"}
    # A held-out size under 2 images allows no PRDC: the set is scored whole.
    tiny = prdc.score_features(_ident_ref(real, ry, equal_n=(1, 0), subsets=3), big, by)
    assert tiny["equal_n"]["subsets"] == 0 and tiny["overall"]["n_fake_equal"] == 400
    # Unequal classes: one above its target is subsampled, one below is kept whole.
    mixed = prdc.score_features(_ident_ref(real, ry, equal_n=(13, 300), subsets=4), big, by)
    assert mixed["equal_n"]["n_per_class"] == [13, 200] and mixed["equal_n"]["subsets"] == 4
    assert mixed["per_class"]["b"]["n_fake_equal"] == 200


def test_recall_k_is_chosen_on_the_controls_alone():
    """A control just off the real manifold ('blur', shifted out of it) ties with the real
    held-out set at k = 5 (26 points' 5-NN balls swallow both: recall 1.0) and is caught at
    k = 3; the choice is the largest k that catches it, and None when no k can."""
    rng = np.random.default_rng(5)
    real = _ring(300, rng)
    ry = np.arange(300) % 2
    held, hy = _ring(26, rng), np.arange(26) % 2
    shifted = held.copy()
    shifted[:, 5] += 0.2  # off the ring's four dimensions
    sets = {"real": (held, hy), "blur": (shifted, hy)}
    ref = _ident_ref(real, ry)
    k, table = control_study.choose_recall_k(ref, sets, (1, 2, 5, 3))
    assert list(table) == [5, 3, 2, 1]  # tried largest first
    assert table[5]["real"] == table[5]["blur"] == 1.0  # saturated: not a strict ranking
    assert all(table[kk]["real"] > table[kk]["blur"] for kk in (3, 2, 1))
    assert k == 3
    # A control identical to the real set can never rank worse: no k passes.
    same = {"real": (held, hy), "blur": (held.copy(), hy)}
    assert control_study.choose_recall_k(ref, same, (5, 2))[0] is None
    # fit_recall chooses k on the selection controls and takes the size from the held-out
    # ones: the same held-out sets with either selection give either answer.
    other = _ring(26, rng)  # a second held-out split, with no corruption at all
    held_sets = {"real": (other, hy), "blur": (other.copy(), hy)}
    fitted, info = control_study.fit_recall(ref, held_sets, sets, (5, 3, 2, 1), subsets=7)
    assert fitted.equal_n == (13, 13) and fitted.subsets == 7
    assert info["chosen"] == 3 and fitted.recall_k == 3 and fitted.k == ref.k
    none_ref, none_info = control_study.fit_recall(ref, held_sets, same, (5, 2), subsets=0)
    assert none_info["chosen"] is None and none_ref.recall_k == ref.k and none_ref.equal_n is None
    assert control_study.fit_recall(ref, held_sets, {}, (5, 2), subsets=7)[1] is None
