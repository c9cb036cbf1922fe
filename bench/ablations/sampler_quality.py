"""Every report metric of several sampler settings on one checkpoint, the reference built once.

Why: `sampler_match.py` judges settings on the two per-image metrics where deterministic
samplers missed (nearest-train SSIM, grid score); a setting that passes them (e.g. with epsilon
scaling) must also keep class fidelity, the spectrum, FID, precision / recall, memorisation and
diversity. `bench/quality_curve.py` scores all of those but one sampler per call, and its
scoring reference (the nearest-neighbour search among every training image and its mirror image
in particular) costs more than the samples on a large training set. This builds that reference
once (`quality_curve.prepare_real`) and scores each setting's samples with the curve's own
`score_step` (the report's `scoring.score_set`, its ratios), plus within-class MS-SSIM diversity
against the real test split's. Settings are `sampler_match.py`'s
``sampler:steps:spacing:eta[:w[:eps_scale]]``; every setting draws the same seeds. Run from the
repository root::

  python bench/ablations/sampler_quality.py --workdir=runs/ldm --out=runs/sampler_quality.json \\
      --settings=ddim:50:uniform:1,dpmpp_2m:10:logSNR:0,dpmpp_2m:10:logSNR:0::0.99
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE, os.path.join(ROOT, "bench")]

from jax_mri_ldm import atomic  # noqa: E402
from jax_mri_ldm.evaluation import setmetrics  # noqa: E402
from jax_mri_ldm.evaluation.context import Nulls, clean  # noqa: E402


def diversity(images, labels, names, max_pairs: int, nulls: Nulls, path: str) -> float | None:
    """Mean within-class pairwise MS-SSIM (lower = more diverse), as the report's rows."""
    return setmetrics.diversity(nulls, path, images, labels, names, max_pairs)["mean"]


def score_setting(run, real, cfg, text: str, args, nulls: Nulls) -> dict:
    """One setting's samples (seed `args.seed`) scored like a curve row, timed."""
    import quality_curve as qc
    from sampler_match import parse_setting

    spec = parse_setting(text, args.guidance)
    t0 = time.perf_counter()
    x, y = qc.sample_run(run, spec, args.per_class, args.seed, int(cfg.batch_size))
    seconds = time.perf_counter() - t0
    row = qc.score_step(x, y, real, nulls, text)
    names = run.class_names
    row["diversity"] = diversity(x, y, names, int(cfg.diversity_max_pairs), nulls, text)
    T = run.schedule.num_timesteps
    return row | {"name": spec.resolved(T).name(T), "sample_seconds": seconds}


def main(args: argparse.Namespace) -> None:
    import quality_curve as qc

    from configs import report as report_cfg

    cfg = report_cfg.get_config("paper")
    cfg.classifier_steps = args.classifier_steps
    nulls = Nulls()
    run = qc.load_step(args.workdir, args.step)
    real = qc.prepare_real(run, cfg, "random", nulls, print)
    test = real.test
    real_div = diversity(
        test.images, test.labels, run.class_names, int(cfg.diversity_max_pairs), nulls, "real_test"
    )
    out = {"workdir": os.path.abspath(args.workdir), "step": run.step, "seed": args.seed,
           "per_class": args.per_class, "real_recall": real.real_recall,
           "real_test_diversity": real_div, "rows": {}}  # fmt: skip
    for text in args.settings.split(","):
        out["rows"][text] = score_setting(run, real, cfg, text, args, nulls)
        atomic.write_json(args.out, clean(out), indent=1)
        print(text, json.dumps(clean(out["rows"][text]), default=str)[:400])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="a finished LDM run directory")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--settings", required=True, help="comma-separated settings (see above)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--per_class", type=int, default=32, help="images per class per setting")
    p.add_argument("--seed", type=int, default=0, help="base seed of every setting's samples")
    p.add_argument("--guidance", type=float, default=3.0, help="w unless a setting gives one")
    p.add_argument("--classifier_steps", type=int, default=600, help="domain classifier steps")
    main(p.parse_args())
