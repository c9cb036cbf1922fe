"""Does the decoder equaliser change what synthetic images do for a classifier? (paired)

The report's downstream study compares "half real + synthetic" with "half real" over a few
seeds; two reports of one run, one decoded with the equaliser and one without, differ in their
synthetic images but also in everything drawn from them, and their intervals are wide. This
probe samples one pool of latents (the run's default sampler, `--per_class` per class, guidance
`--guidance`), decodes it both ways, and runs the report's study (its classifier settings and
evaluation set, `configs/report.py:paper`) on arms half and half+syn for `--seeds` seeds with
each pool. Within a seed both studies share the classifier initialisation, the half split and
the synthetic draw (the pools have the same size and order), so the per-seed difference of
their half+syn arms is paired: it isolates the equaliser.

Run from the repository root::

  python bench/ablations/equaliser_downstream.py --workdir=runs/ldm --guidance=1 --seeds=10 \\
      --out=runs/exp/equaliser_downstream.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

import quality_curve as qc  # noqa: E402

from configs import report as report_cfg  # noqa: E402
from jax_mri_ldm import atomic, equaliser  # noqa: E402
from jax_mri_ldm.evaluation import study  # noqa: E402

METRICS = ("accuracy", "auc")


def paired(a: list[dict], b: list[dict], metric: str) -> dict:
    """Mean and 95 % Student-t interval of the per-seed differences a - b of `metric`."""
    from scipy import stats

    d = np.array([x[metric] - y[metric] for x, y in zip(a, b, strict=True)])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {"mean": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half),
            "per_seed": [float(v) for v in d]}  # fmt: skip


def main(args: argparse.Namespace) -> None:
    from jax_mri_ldm import pipeline  # heavy

    cfg = report_cfg.get_config("paper")
    run = pipeline.load_ldm(args.workdir)
    if run.vae.equaliser is None:
        sys.exit(f"{args.workdir} has no decoder equaliser (bench/ablations/decoder_equaliser.py).")
    raw = dataclasses.replace(run, vae=run.vae.without_equaliser())
    train, val, test = qc.load_splits(run)
    labels = np.repeat(np.arange(len(run.class_names)), args.per_class).astype(np.int32)
    spec = dataclasses.replace(run.default_spec(), guidance_scale=args.guidance)
    t0 = time.time()
    x = raw.sample_images(labels, args.seed, spec, 16)
    pools = {"as trained": x, "equalised": np.asarray(equaliser.apply(x, run.vae.equaliser))}
    parts = {"val": (val.images, val.labels), "test": (test.images, test.labels)}
    (ev, _, _) = study.evaluation_set(parts, tuple(cfg.downstream_eval_splits))
    out = {"workdir": args.workdir, "guidance": args.guidance, "per_class": args.per_class,
           "seeds": args.seeds, "sample_seconds": time.time() - t0, "studies": {}}  # fmt: skip
    for tag, pool in pools.items():
        out["studies"][tag] = study.downstream_study(
            (train.images, train.labels), ev, (pool, labels), n_per_class=args.per_class,
            seeds=tuple(range(args.seeds)), arms=("half", "half+syn"), steps=cfg.study_steps,
            batch_size=cfg.classifier_batch_size, lr=cfg.classifier_lr,
            input_size=cfg.classifier_input_size, widths=tuple(cfg.classifier_widths),
            class_names=run.class_names, progress=lambda line, t=tag: print(f"[{t}] {line}"),
        )  # fmt: skip
    runs = {t: s["arms"]["half+syn"]["per_seed"] for t, s in out["studies"].items()}
    half = out["studies"]["as trained"]["arms"]["half"]["per_seed"]
    out["equalised_minus_as_trained"] = {
        m: paired(runs["equalised"], runs["as trained"], m) for m in METRICS
    }
    out["gain_over_half"] = {t: {m: paired(r, half, m) for m in METRICS} for t, r in runs.items()}
    atomic.write_json(args.out, out, indent=1)
    for key in ("equalised_minus_as_trained", "gain_over_half"):
        print(key, {k: v for k, v in out[key].items()})


def pool_study_flags(workdir_help: str, out_help: str) -> argparse.ArgumentParser:
    """The flags of a paired study on one synthetic pool (this probe, synthetic_recipe.py)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help=workdir_help)
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance w")
    p.add_argument("--per_class", type=int, default=200, help="synthetic pool per class")
    p.add_argument("--seeds", type=int, default=10, help="study seeds (0..seeds-1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the pool")
    return p


if __name__ == "__main__":
    main(pool_study_flags("a finished LDM run with an equaliser", "output JSON").parse_args())
