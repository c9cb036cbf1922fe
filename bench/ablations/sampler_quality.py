"""Every report metric of several sampler settings on one checkpoint, the reference built once.

Why: `sampler_match.py` judges settings on the two per-image metrics where deterministic
samplers missed (nearest-train SSIM, grid score); a setting that passes them (e.g. with epsilon
scaling) must also keep class fidelity, the spectrum, FID, precision / recall, memorisation and
diversity. `bench/quality_curve.py` scores all of those but one sampler per call, and its
scoring reference (the nearest-neighbour search among every training image and its mirror image
in particular) costs more than the samples on a large training set. This builds that reference
once (`quality_curve.prepare_real`) and scores each setting's samples with the curve's own
`score_step` (the report's `scoring.score_set`, its ratios), plus within-class MS-SSIM diversity
against the real test split's. With a DDPM setting among them, every other setting is also
judged against DDPM's 95 % intervals by the report's sampler-table rule (`ddpm_match`), and the
per-image values are saved beside the JSON (`*_per_image.npz`). Settings are `sampler_match.py`'s
``sampler:steps:spacing:eta[:w[:eps_scale]]``; every setting draws the same seeds.
``--reference=OLD.json`` reuses the DDPM row of an earlier call on the same checkpoint, seed,
size, guidance and domain classifier (its samples would be the same; DDPM-1000 costs most of a
call). Run from the repository root::

  python bench/ablations/sampler_quality.py --workdir=runs/ldm --out=runs/sampler_quality.json \\
      --settings=ddim:50:uniform:1,dpmpp_2m:10:logSNR:0,dpmpp_2m:10:logSNR:0::0.99,ddpm
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

import numpy as np  # noqa: E402

from jax_mri_ldm import atomic  # noqa: E402
from jax_mri_ldm.evaluation import scoring, setmetrics  # noqa: E402
from jax_mri_ldm.evaluation.context import Nulls, clean  # noqa: E402
from jax_mri_ldm.evaluation.sections import samplers  # noqa: E402

PER_IMAGE_KEYS = tuple(key for key, *_ in samplers.PER_IMAGE.values())


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
    scored, per = scoring.score_set(real.ref, x, y, nulls, text)
    row = qc.step_numbers(scored, per, x, y, real, nulls, text)
    names = run.class_names
    row["diversity"] = diversity(x, y, names, int(cfg.diversity_max_pairs), nulls, text)
    T = run.schedule.num_timesteps
    r = spec.resolved(T)
    row |= {"name": r.name(T), "sampler": r.sampler, "sample_seconds": seconds}
    row |= {"guidance_scale": r.guidance_scale, "eps_scale": r.eps_scale}
    return row, {k: per[k] for k in PER_IMAGE_KEYS if k in per}


def ddpm_checks(pers: dict[str, dict], rows: dict[str, dict], real) -> dict | None:
    """Each setting against the first DDPM setting's 95 % intervals, by the report's rule
    (`samplers.check_metric` on every per-image metric; no controls here, so all of them)."""
    ddpm = next((t for t, r in rows.items() if r["sampler"] == "ddpm"), None)
    if ddpm is None:
        return None
    targets, out = samplers.real_medians(real.ref.test_nn, real.test_grid), {}
    for text, per in pers.items():
        if text == ddpm:
            continue
        checks = {
            m: samplers.check_metric(m, pers[ddpm][key], per[key], targets.get(m))
            for m, (key, *_) in samplers.PER_IMAGE.items()
            if key in per and key in pers[ddpm]
        }
        verdicts = {"passes": all(c["passes"] for c in checks.values())}
        verdicts["within"] = all(c["within"] for c in checks.values())
        out[text] = {"checks": checks, **verdicts}
    return {"reference": ddpm, "settings": out}


# What an earlier call must share with this one for its DDPM samples to be this call's.
REFERENCE_KEYS = ("workdir", "step", "seed", "per_class", "guidance", "classifier_steps")
REFERENCE_KEYS += ("real_recall",)  # the domain classifier's, a check that it is the same one


def load_reference(path: str, out: dict) -> tuple[str, dict, dict]:
    """(setting, row, per-image values) of the DDPM setting of an earlier call's JSON `path`,
    checked to be of the same checkpoint, seed, size, guidance and domain classifier; a file
    without one of these fields (written before it was recorded) is refused too."""
    with open(path) as f:
        prev = json.load(f)
    for key in REFERENCE_KEYS:
        if key not in prev or prev[key] != out[key]:
            sys.exit(f"--reference={path}: its {key} is {prev.get(key, 'not recorded')!r}, this "
                     f"call's {out[key]!r}; give a reference written with the same {key}.")  # fmt: skip
    text = next((t for t, r in prev["rows"].items() if r["sampler"] == "ddpm"), None)
    if text is None:
        sys.exit(f"--reference={path} has no DDPM setting; run it with `ddpm` in --settings.")
    row = prev["rows"][text]
    plain = {"guidance_scale": out["guidance"], "eps_scale": 1.0}
    if any(row.get(k) != v for k, v in plain.items()):
        sys.exit(f"--reference={path}: its DDPM setting {text!r} is not plain DDPM at w = "
                 f"{out['guidance']:g} ({ {k: row.get(k) for k in plain} }).")  # fmt: skip
    with np.load(os.path.splitext(path)[0] + "_per_image.npz") as z:
        per = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(text + "/")}
    return text, row | {"reused_from": os.path.abspath(path)}, per


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
           "guidance": args.guidance, "classifier_steps": args.classifier_steps,
           "real_test_diversity": real_div, "rows": {}}  # fmt: skip
    pers = {}
    if args.reference:
        text, row, per = load_reference(args.reference, clean(out))
        out["rows"][text], pers[text] = row, per
        print(f"{text}: reused from {args.reference}")
    for text in args.settings.split(","):
        out["rows"][text], pers[text] = score_setting(run, real, cfg, text, args, nulls)
        out["ddpm_match"] = ddpm_checks(pers, out["rows"], real)
        atomic.write_json(args.out, clean(out), indent=1)
        with atomic.atomic_path(os.path.splitext(args.out)[0] + "_per_image.npz") as tmp:
            np.savez(tmp, **flat(pers))
        print(text, json.dumps(clean(out["rows"][text]), default=str)[:400])
    print("ddpm_match", json.dumps(clean(out["ddpm_match"]), default=str))


def flat(pers: dict[str, dict]) -> dict[str, np.ndarray]:
    """{setting: {metric: (N,)}} -> {"setting/metric": (N,)} for np.savez."""
    return {f"{t}/{k}": v for t, per in pers.items() for k, v in per.items()}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="a finished LDM run directory")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--settings", required=True, help="comma-separated settings (see above)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--per_class", type=int, default=32, help="images per class per setting")
    p.add_argument("--seed", type=int, default=0, help="base seed of every setting's samples")
    p.add_argument("--guidance", type=float, default=3.0, help="w unless a setting gives one")
    p.add_argument("--reference", default=None, help="earlier output JSON whose DDPM row to reuse")
    p.add_argument("--classifier_steps", type=int, default=600, help="domain classifier steps")
    main(p.parse_args())
