"""evaluation/cache.py: entries keyed by everything they depend on, written atomically, and
the training images' nearest-neighbour self-search read back unchanged."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jax_mri_ldm.evaluation import cache, scoring


def _counting(value: np.ndarray):
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return value

    return compute, calls


def test_an_entry_is_computed_once_and_read_back_equal(tmp_path) -> None:
    value = np.random.default_rng(0).standard_normal(7)
    compute, calls = _counting(value)
    first = cache.cached_array(str(tmp_path), "x", (np.arange(3), 4), compute)
    second = cache.cached_array(str(tmp_path), "x", (np.arange(3), 4), compute)
    assert len(calls) == 1 and np.array_equal(first, value) and np.array_equal(second, value)
    assert [n for n in os.listdir(tmp_path) if n.startswith("x_")] == os.listdir(tmp_path)


@pytest.mark.parametrize("parts", [(np.arange(3) + 1, 4), (np.arange(3), 5), (np.arange(4), 4)])
def test_a_changed_input_or_setting_misses(tmp_path, parts) -> None:
    compute, calls = _counting(np.zeros(2))
    cache.cached_array(str(tmp_path), "x", (np.arange(3), 4), compute)
    cache.cached_array(str(tmp_path), "x", parts, compute)
    assert len(calls) == 2 and len(os.listdir(tmp_path)) == 2


def test_dtype_and_shape_are_part_of_the_key() -> None:
    a = np.zeros(4, np.float32)
    assert cache.key_of(a) != cache.key_of(a.astype(np.float64))
    assert cache.key_of(a) != cache.key_of(a.reshape(2, 2))


def test_no_cache_dir_writes_nothing(tmp_path) -> None:
    compute, calls = _counting(np.ones(3))
    for _ in range(2):
        cache.cached_array(None, "x", (1,), compute)
    assert len(calls) == 2 and not os.listdir(tmp_path)


def test_an_unreadable_entry_is_recomputed_with_a_warning(tmp_path) -> None:
    compute, calls = _counting(np.ones(3))
    cache.cached_array(str(tmp_path), "x", (1,), compute)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not an npy file")
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        got = cache.cached_array(str(tmp_path), "x", (1,), compute)
    assert len(calls) == 2 and np.array_equal(got, np.ones(3))
    assert np.array_equal(np.load(path), np.ones(3))  # repaired


def test_an_unwritable_cache_still_returns_the_value(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot write"):
        got = cache.cached_array(str(blocker / "sub"), "x", (1,), lambda: np.arange(2))
    assert np.array_equal(got, np.arange(2))


def test_train_own_scores_cached_equal_the_fresh_search(tmp_path) -> None:
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(6, 16, 16, 1)).astype(np.float32)
    fresh = scoring.train_own_scores(train, 16)
    first = scoring.train_own_scores(train, 16, str(tmp_path))
    again = scoring.train_own_scores(train, 16, str(tmp_path))
    assert fresh.shape == (12,) and np.array_equal(first, fresh) and np.array_equal(again, fresh)
    assert len(os.listdir(tmp_path)) == 1
    other = scoring.train_own_scores(train[::-1].copy(), 16, str(tmp_path))
    assert len(os.listdir(tmp_path)) == 2 and other.shape == (12,)
