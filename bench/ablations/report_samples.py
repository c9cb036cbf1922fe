"""Shared by the ablation scripts: a finished run, its data and main-set samples as the report
makes them (same split loading, sampler and seeds as evaluate.py), without a full report."""

from __future__ import annotations

import types
from typing import Any

import numpy as np


def load_run_data(workdir: str) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """(run, dataset, split) of the diffusion run in `workdir`, loaded as evaluate.py does."""
    from jax_mri_ldm import pipeline
    from jax_mri_ldm.evaluation import report as report_lib

    run = pipeline.load_ldm(workdir)
    ds, split = report_lib._load_data(run)
    return run, ds, split


def report_generator(run: Any) -> tuple[Any, Any]:
    """(paper report config, `SyntheticImages` with its batch size, seed and compile options)."""
    from configs import report as report_cfg
    from jax_mri_ldm.evaluation.generator import SyntheticImages

    cfg = report_cfg.get_config("paper")
    opts = dict(cfg.compile_options)
    return cfg, SyntheticImages(run, cfg.batch_size, cfg.seed, compile_options=opts)


def main_set(run: Any, guidance: float, per_class: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, sampler name): `per_class` samples per class of the paper report's
    main-set sampler at guidance `guidance`."""
    from jax_mri_ldm.evaluation.sections import common

    cfg, gen = report_generator(run)
    spec = common.main_spec(types.SimpleNamespace(cfg=cfg, run=run), guidance)
    x, y = gen.generate(spec, per_class)
    T = run.schedule.num_timesteps
    return np.asarray(x), np.asarray(y), spec.resolved(T).name(T)
