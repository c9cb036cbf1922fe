"""The real-set control studies of `test_eval_real.py`, run as a subprocess at XLA's usual
optimisation level (the suite compiles at level 0; these studies train encoders and classifiers
for hundreds of steps, so run time, not compile time, dominates: docs/performance.md).

    python tests/real_controls_job.py {held_out|prdc} CACHE_DIR OUT.pkl

pickles the `control_study.run_controls` result of that study to OUT.pkl.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from conftest import SHARED_DATA  # this file's folder is first on sys.path


def _splits(image_size: int, cache_dir: str):
    """(RealSplits of the yes/no set at `image_size`, class names)."""
    from jax_mri_ldm import data as data_lib
    from jax_mri_ldm.evaluation import control_study

    cfg = data_lib.get_data_config()
    cfg.path, cfg.image_size, cfg.cache_dir = str(SHARED_DATA), image_size, cache_dir
    ds = data_lib.load_imageset(cfg)
    split = data_lib.split_indices(ds, **cfg.split)
    parts = [ds.subset(split[k]) for k in ("train", "val", "test")]
    return control_study.RealSplits(*[(p.images, p.labels) for p in parts]), ds.class_names


def held_out(cache_dir: str) -> dict:
    """Every candidate space at 128 px, the contrastive encoder trained briefly."""
    from jax_mri_ldm.evaluation import control_study, features

    splits, names = _splits(128, cache_dir)
    ssl = features.SSLSettings(widths=(8, 16, 32, 64), input_size=128, steps=100, batch_size=32)
    return control_study.run_controls(splits, names, ssl, classifier_steps=150, search_size=64)


def prdc(cache_dir: str) -> dict:
    """The report's PRDC rule at the real set's 256 px in the untrained space (no encoder
    training): the training split as the real manifold."""
    from jax_mri_ldm import config_loader
    from jax_mri_ldm.evaluation import control_study, features

    splits, names = _splits(256, cache_dir)
    fc = config_loader.load_config("report", "paper").features
    ssl = features.SSLSettings(widths=tuple(fc.widths), input_size=128, steps=1, batch_size=32)
    return control_study.run_controls(
        splits,
        names,
        ssl,
        space="random",
        classifier_steps=20,
        prdc_split=fc.prdc_reference,
        prdc_k=fc.prdc_k,
        prdc_input_size=fc.prdc_input_size,
    )


STUDIES = {"held_out": held_out, "prdc": prdc}

if __name__ == "__main__":
    study, cache, out = sys.argv[1:]
    Path(out).write_bytes(pickle.dumps(STUDIES[study](cache)))
