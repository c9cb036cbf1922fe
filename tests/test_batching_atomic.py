"""The one pad-to-batch helper and the one atomic-write helper."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_mri_ldm import atomic
from jax_mri_ldm.batching import batched_apply


def test_batched_apply_matches_one_call_and_compiles_one_shape():
    shapes = []

    @jax.jit
    def fn(x, y):
        shapes.append(x.shape)  # runs once per traced shape
        return x * 2 + y[:, None], jnp.sum(x, axis=1)

    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    y = np.arange(7, dtype=np.float32)
    doubled, sums = batched_apply(fn, x, y, batch_size=3)  # batches of 3, 3, 1 (+2 padding)
    np.testing.assert_array_equal(doubled, x * 2 + y[:, None])
    np.testing.assert_array_equal(sums, x.sum(1))
    assert shapes == [(3, 3)]


def test_batched_apply_single_output_small_and_empty_inputs():
    x = np.ones((2, 4), np.float32)
    out = batched_apply(lambda a: a + 1, x, batch_size=64)  # one call of 2 rows, not 64
    assert isinstance(out, np.ndarray) and out.shape == (2, 4)
    empty = batched_apply(jax.jit(lambda a: (a[:, :2], a.sum(1))), np.zeros((0, 4)), batch_size=8)
    assert [e.shape for e in empty] == [(0, 2), (0,)]
    with pytest.raises(ValueError, match="batch_size"):
        batched_apply(lambda a: a, x, batch_size=0)
    with pytest.raises(ValueError, match="same number of rows"):
        batched_apply(lambda a, b: a, x, np.ones(3), batch_size=2)


def test_atomic_write_replaces_only_when_complete(tmp_path):
    path = tmp_path / "sub" / "run.json"
    atomic.write_json(str(path), {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    with pytest.raises(RuntimeError), atomic.atomic_path(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}  # untouched
    assert os.listdir(path.parent) == ["run.json"]  # no temporary file left
    with atomic.atomic_path(str(tmp_path / "latents.npz")) as tmp:
        assert tmp.endswith(".npz")  # np.savez / savefig / PIL read the extension
        np.savez(tmp, a=np.arange(3))
    with np.load(tmp_path / "latents.npz") as f:
        np.testing.assert_array_equal(f["a"], np.arange(3))


def test_atomic_directory(tmp_path):
    out = tmp_path / "samples"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_directory(str(out)) as tmp:
        open(os.path.join(tmp, "new.txt"), "w").close()
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    with atomic.atomic_directory(str(out)) as tmp:
        atomic.write_text(os.path.join(tmp, "new.txt"), "new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]  # no temporary left
