"""A stopped report resumes: evaluation/resume.py and its use by the generator, the study and
the report."""

from __future__ import annotations

import numpy as np
import pytest

from jax_mri_ldm.evaluation import study
from jax_mri_ldm.evaluation.resume import RESUME_SUBDIR, ResumeStore, tree_key

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def test_store_keeps_batches_and_results_by_key(tmp_path):
    store = ResumeStore(str(tmp_path / "partial"))
    assert store.count() == 0 and store.load_batch(("a", 1)) is None
    images = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    store.save_batch(("a", 1), images, seconds=1.5, compile_seconds=7.0)
    got, timing = store.load_batch(("a", 1))
    np.testing.assert_array_equal(got, images)
    assert timing == {"seconds": 1.5, "compile_seconds": 7.0}
    assert store.load_batch(("a", 2)) is None and store.hits["sample_batches"] == 0  # its own
    calls = []

    def compute():
        calls.append(1)
        return {"auc": np.float32(0.75), "n": np.int64(3)}

    first = store.result(("run", np.arange(3)), compute)
    again = store.result(("run", np.arange(3)), compute)  # its own entry: not a resume
    assert len(calls) == 1 and again == {"auc": 0.75, "n": 3} and first["auc"] == 0.75
    assert store.hits == {"sample_batches": 0, "runs": 0}
    later = ResumeStore(store.root)  # the rerun after a stop
    assert later.result(("run", np.arange(3)), compute) == again and later.hits["runs"] == 1
    other = later.result(("run", np.arange(4)), compute)  # other inputs: computed
    assert len(calls) == 2 and other == again and later.count() == 3
    later.remove()
    assert not (tmp_path / "partial").exists() and store.count() == 0


def test_store_refuses_a_folder_it_did_not_make(tmp_path):
    from jax_mri_ldm.errors import UserError

    mine = tmp_path / "partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(UserError, match="not made by a report"):
        ResumeStore(str(mine))
    empty = ResumeStore(str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    empty.remove()  # no marker: left alone
    assert (tmp_path / "empty").is_dir()


def test_store_recomputes_an_unreadable_entry(tmp_path):
    store = ResumeStore(str(tmp_path))
    store.result(("x",), lambda: {"v": 1})
    (path,) = tmp_path.glob("run_*.json")
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable stored result"):
        assert store.result(("x",), lambda: {"v": 2}) == {"v": 2}
    store.save_batch(("b",), np.zeros((1, 2, 2, 1)), 1.0, 1.0)
    (batch,) = tmp_path.glob("batch_*.npz")
    batch.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable stored batch"):
        assert store.load_batch(("b",)) is None


def test_tree_key_sees_every_leaf():
    a = {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}
    b = {"w": np.ones((2, 2), np.float32), "b": np.array([0, 1e-7], np.float32)}
    assert tree_key(a) == tree_key({k: v.copy() for k, v in a.items()})
    assert tree_key(a) != tree_key(b)


def test_generator_reads_stored_batches_back_without_sampling(tiny_runs, tmp_path, monkeypatch):
    from jax_mri_ldm import pipeline
    from jax_mri_ldm.evaluation.generator import SyntheticImages
    from jax_mri_ldm.sampler_settings import SamplerSpec

    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    spec = SamplerSpec("ddim", 5, 0.0, 2.0, "uniform")
    store = ResumeStore(str(tmp_path / "partial"))
    gen = SyntheticImages(run, batch_size=4, seed=3, compile_options=FAST_COMPILE, store=store)
    x, y = gen.generate(spec, 3)  # batches 0 and 1 of 4
    first = gen.timing(spec, 3)
    assert store.count() == 2 and first["resumed_batches"] == 0

    def refuse(*args, **kwargs):
        raise AssertionError("sampled again instead of reading the stored batch")

    monkeypatch.setattr(run, "make_sampler", refuse)
    store = ResumeStore(store.root)  # a new process
    again = SyntheticImages(run, batch_size=4, seed=3, compile_options=FAST_COMPILE, store=store)
    x2, y2 = again.generate(spec, 3)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    timing = again.timing(spec, 3)
    assert timing["resumed_batches"] == 2 and store.hits["sample_batches"] == 2
    assert timing["seconds_per_image"] == pytest.approx(first["seconds_per_image"])
    assert timing["compile_seconds"] == pytest.approx(first["compile_seconds"])
    other_seed = SyntheticImages(
        run, batch_size=4, seed=4, compile_options=FAST_COMPILE, store=store
    )
    with pytest.raises(AssertionError, match="sampled again"):
        other_seed.generate(spec, 1)  # another seed is another key


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 0.2 * rng.random((n, 16, 16, 1)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int32)
    x[y == 1, 4:10, 4:10] = 0.9
    return x, y


def test_study_resumes_its_classifier_runs(tmp_path, monkeypatch):
    store = ResumeStore(str(tmp_path))
    kw = dict(n_per_class=4, seeds=(0, 1), steps=3, batch_size=8, input_size=16, widths=(4, 8))
    args = (_toy(24, 0), _toy(12, 1), _toy(12, 2))
    first = study.downstream_study(*args, memo=store.result, **kw)
    runs = store.count()
    assert runs == 2 * len(study.ARMS)

    def refuse(*a, **k):
        raise AssertionError("trained again instead of reading the stored run")

    monkeypatch.setattr(study, "train_classifier", refuse)
    store = ResumeStore(store.root)  # a new process
    again = study.downstream_study(*args, memo=store.result, **kw)
    assert again == first and store.hits["runs"] == runs
    with pytest.raises(AssertionError, match="trained again"):
        study.downstream_study(*args, memo=store.result, **{**kw, "steps": 4})


def test_report_resumes_after_a_stop(tiny_runs, tmp_path, monkeypatch):
    from jax_mri_ldm.evaluation import report
    from jax_mri_ldm.evaluation.sections import samplers

    out = tmp_path / "out"
    real_compute = samplers.compute

    def stop(ctx):
        raise KeyboardInterrupt  # as Ctrl-C in the sampler table, after the downstream study

    order = report.COMPUTE_ORDER
    stopped = tuple((k, stop if f is real_compute else f) for k, f in order)
    monkeypatch.setattr(report, "COMPUTE_ORDER", stopped)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(str(tiny_runs["ldm_dir"]), str(out), "tiny", verbose=False)
    kept = ResumeStore(str(out / RESUME_SUBDIR)).count()
    assert kept > 0 and not (out / "report.json").exists()
    monkeypatch.setattr(report, "COMPUTE_ORDER", order)
    r = report.write_report(str(tiny_runs["ldm_dir"]), str(out), "tiny", verbose=False)
    assert r["resumed"]["sample_batches"] > 0 and r["resumed"]["runs"] > 0
    assert not (out / RESUME_SUBDIR).exists()
    assert "Resumed from a stopped run" in (out / "report.md").read_text()
