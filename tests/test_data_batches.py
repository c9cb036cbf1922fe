"""BalancedSampler (balance, purity in (seed, step), resume, multi-host) and eval_batches."""

from __future__ import annotations

import numpy as np
import pytest

from jax_mri_ldm.data.batches import BalancedSampler, eval_batches

LABELS = np.array([0] * 17 + [1] * 23)  # the paper's skew, scaled down


def test_every_batch_is_balanced():
    s = BalancedSampler(LABELS, batch_size=8, seed=0)
    assert s.steps_per_epoch == 5  # ceil(40 / 8)
    for step in range(50):
        idx = s.indices(step)
        assert idx.shape == (8,)
        assert np.bincount(LABELS[idx], minlength=2).tolist() == [4, 4]


def test_class_epochs_cover_each_class_without_repeats():
    labels = np.array([0] * 8 + [1] * 12)
    s = BalancedSampler(labels, batch_size=4, seed=1)  # 2 per class per step
    zeros = np.concatenate([s.indices(t)[labels[s.indices(t)] == 0] for t in range(4)])
    ones = np.concatenate([s.indices(t)[labels[s.indices(t)] == 1] for t in range(6)])
    assert sorted(zeros.tolist()) == list(range(8))  # first class-epoch of class 0
    assert sorted(ones.tolist()) == list(range(8, 20))


def test_pure_function_of_seed_and_step_and_resume():
    a = BalancedSampler(LABELS, 8, seed=7)
    uninterrupted = [a.indices(t) for t in range(30)]
    resumed = BalancedSampler(LABELS, 8, seed=7)  # fresh process resumed at step 12
    for t in range(12, 30):
        np.testing.assert_array_equal(resumed.indices(t), uninterrupted[t])
    np.testing.assert_array_equal(resumed.indices(3), uninterrupted[3])  # order of calls free
    other = BalancedSampler(LABELS, 8, seed=8)
    assert any(not np.array_equal(other.indices(t), uninterrupted[t]) for t in range(5))


def test_multi_host_slices_concatenate_to_global_batch():
    s = BalancedSampler(LABELS, 8, seed=0)
    for step in (0, 9):
        parts = [s.indices(step, process_index=p, process_count=2) for p in range(2)]
        np.testing.assert_array_equal(np.concatenate(parts), s.indices(step))
        for part in parts:  # local batch 4 is a multiple of 2 classes: balanced per host
            assert np.bincount(LABELS[part], minlength=2).tolist() == [2, 2]
    with pytest.raises(ValueError, match="process_count"):
        s.indices(0, process_index=0, process_count=3)


def test_batch_gathers_images_and_labels():
    images = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) * np.ones((1, 2, 2, 1))
    s = BalancedSampler(LABELS, 4, seed=0)
    x, y = s.batch(5, images)
    idx = s.indices(5)
    assert x.shape == (4, 2, 2, 1) and y.dtype == np.int32
    np.testing.assert_array_equal(x[:, 0, 0, 0], idx.astype(np.float32))
    np.testing.assert_array_equal(y, LABELS[idx])


def test_bad_batch_size_and_missing_class():
    with pytest.raises(ValueError, match="must be positive"):
        BalancedSampler(LABELS, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="no training examples"):
        BalancedSampler(np.array([1, 1, 1]), batch_size=2, seed=0)


def test_eval_batches_cover_each_example_once_with_mask():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    labels = np.arange(10) % 2
    seen = []
    shapes = set()
    for x, y, m in eval_batches(images, labels, 4):
        shapes.add((x.shape, y.shape, m.shape))
        seen.extend(x[m, 0, 0, 0].tolist())
        np.testing.assert_array_equal(y[m], labels[x[m, 0, 0, 0].astype(int)])
        assert not np.any(x[~m])
    assert seen == list(range(10))
    assert shapes == {((4, 1, 1, 1), (4,), (4,))}  # one shape -> one compile
