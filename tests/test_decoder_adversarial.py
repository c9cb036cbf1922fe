"""bench/ablations/decoder_adversarial.py: only the decoder learns; the encoder stays frozen."""

from __future__ import annotations

import types

import jax
import numpy as np

from conftest import REPO, load_script

SCRIPT = REPO / "bench" / "ablations" / "decoder_adversarial.py"


def test_fine_tune_changes_the_decoder_only_and_keeps_the_ldm_runnable(tiny_runs) -> None:
    from jax_mri_ldm import pipeline

    da = load_script(SCRIPT, "bench_decoder_adversarial")
    run = pipeline.load_ldm(str(tiny_runs["ldm_dir"]))
    train = np.random.default_rng(0).random((20, run.image_size, run.image_size, 1), np.float32)
    flags = types.SimpleNamespace(seed=0, lr=1e-3, adv_weight=0.5, spectral_weight=0.1, steps=3)
    dec, log = da.fine_tune(run, train, flags)
    assert [r["step"] for r in log] == [0, 2] and all(np.isfinite(r["rec"]) for r in log)
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
        dec,
        run.vae.params["decoder"],
    )
    assert max(jax.tree.leaves(moved)) > 0  # the decoder learnt
    tuned = da.with_decoder(run, dec)
    assert tuned.vae.params["encoder"] is run.vae.params["encoder"]  # frozen, shared
    images = tuned.sample_images(np.array([0, 1], np.int32), 0, run.default_spec(), 2)
    assert images.shape == (2, run.image_size, run.image_size, 1) and np.isfinite(images).all()
