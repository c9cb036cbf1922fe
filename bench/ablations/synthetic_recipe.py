"""How should a classifier use synthetic slices? Mixing share and label filtering, paired.

The report's downstream study adds the synthetic pool to half the real training images and
draws each class's batch slots uniformly over real and synthetic images together, so 200
synthetic images per class outnumber the half's real ones 2-5 to 1, and every synthetic image
whose content does not match its label is label noise. This probe compares, on one pool and
paired within each seed (same half split, classifier initialisation, evaluation set):

* ``half``: the half alone;
* ``half+syn``: the report's arm (uniform draws over the union);
* ``half+syn share s``: synthetic images get share s of each class's draws (`--shares`);
* ``half+syn filtered``: only synthetic images that the seed's ``half`` classifier (trained on
  the real images this arm has, nothing else) assigns to their own label with probability
  >= `--keep_prob`; and the same with each share (`--filtered_only` skips the unfiltered arms);
* with `--pretrain`, ``syn filtered -> half``: a classifier trained on the filtered synthetic
  images alone for the study's steps, then fine-tuned on the half for as many; and its control
  ``half 2x steps`` (the half alone for twice the steps), so that a gain of pretraining is not
  only the extra updates; `--longer` adds that control alone. `--study_steps` overrides the
  report's classifier steps for every arm; `--shares_only` skips the mixes without a share.

Every run is scored on the validation split and the test split apart and together (the
report's evaluation set), so a recipe can be chosen on validation and confirmed on test.

Run from the repository root::

  python bench/ablations/synthetic_recipe.py --workdir=runs/ldm --guidance=1 --seeds=10 \\
      --out=runs/exp/synthetic_recipe.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench"), os.path.dirname(os.path.abspath(__file__))]

import quality_curve as qc  # noqa: E402
from equaliser_downstream import paired, pool_study_flags  # noqa: E402

from configs import report as report_cfg  # noqa: E402
from jax_mri_ldm import atomic  # noqa: E402
from jax_mri_ldm.evaluation import metrics, study  # noqa: E402
from jax_mri_ldm.evaluation.domain_classifier import (  # noqa: E402
    evaluate_classifier,
    predict_proba,
    train_classifier,
)
from jax_mri_ldm.evaluation.synthetic_mix import (  # noqa: E402
    filter_keep,
    own_label_probability,
    share_weights,
)

METRICS = ("accuracy", "auc")


def pool(run, args, cache: str) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic pool (`--per_class` per class, run's default sampler), cached in `cache`."""
    labels = np.repeat(np.arange(len(run.class_names)), args.per_class).astype(np.int32)
    if os.path.exists(cache):
        x = np.load(cache)["images"]
        if x.shape[0] == labels.size:
            return x, labels
    spec = dataclasses.replace(run.default_spec(), guidance_scale=args.guidance)
    x = run.sample_images(labels, args.seed, spec, 16)
    with atomic.atomic_path(cache) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=x)
    return x, labels


def scores(clf, sets: dict) -> dict:
    return {k: evaluate_classifier(clf, *v) for k, v in sets.items()}


def filter_figure(path: str, test, pool, p_own: np.ndarray, keep_prob: float, n: int = 8) -> None:
    """Per class: real test slices, the synthetic images the filter trusts most, and those it
    rejects (lowest P(own label) first), full resolution."""
    from jax_mri_ldm import CLASS_NAMES, plots

    rows = []
    for c, name in enumerate(CLASS_NAMES):
        idx = np.flatnonzero(pool[1] == c)
        order = idx[np.argsort(-p_own[idx])]
        out = order[p_own[order] < keep_prob][::-1]
        rows += [(f"real {name}", test[0][test[1] == c][:n]),
                 (f"kept {name}", pool[0][order[:n]]),
                 (f"rejected {name}", pool[0][out[:n]])]  # fmt: skip
    plots.save_rows_figure(rows, path, f"label filter P(own label) >= {keep_prob:g}, seed 0")


def one_seed(seed, train, syn, sets, args, kw) -> dict:
    """Every arm of one seed: {arm: {set: metrics}} plus the filter's kept counts."""
    rng = np.random.default_rng(seed)
    half = study.half_sizes(np.bincount(train[1]).tolist(), study.HALF_FRACTION)
    idx = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(train[1] == c), h, replace=False) for c, h in enumerate(half)
    ]))  # fmt: skip
    hx, hy = train[0][idx], train[1][idx]
    clf, _ = train_classifier(hx, hy, seed=seed, **kw)
    out = {"half": scores(clf, sets)}
    p_label = own_label_probability(predict_proba(clf, syn[0]), syn[1])
    keep = filter_keep(p_label, args.keep_prob)
    if args.figure and seed == 0:
        filter_figure(args.figure, args.test_full, args.pool_full, p_label, args.keep_prob)
    out["kept_per_class"] = np.bincount(syn[1][keep], minlength=2).tolist()
    if args.pretrain:
        out.update(pretrain_arms(seed, (hx, hy), (syn[0][keep], syn[1][keep]), sets, kw))
    elif args.longer:
        out["half 2x steps"] = longer_arm(seed, (hx, hy), sets, kw)
    mixes = (("", np.ones_like(keep)), (" filtered", keep))
    for tag, sel in mixes[1:] if args.filtered_only else mixes:
        x = np.concatenate([hx, syn[0][sel]])
        y = np.concatenate([hy, syn[1][sel]])
        is_syn = np.r_[np.zeros(hy.size, bool), np.ones(int(sel.sum()), bool)]
        for share in (*(() if args.shares_only else (None,)), *args.shares):
            name = f"half+syn{tag}" + ("" if share is None else f" share {share:g}")
            w = share_weights(y, is_syn, share)
            clf, _ = train_classifier(x, y, seed=seed, sample_weights=w, **kw)
            out[name] = scores(clf, sets)
            print(f"seed {seed} {name}: " + ", ".join(
                f"{k} acc {v['accuracy']:.3f} auc {v['auc']:.3f}" for k, v in out[name].items()
            ), flush=True)  # fmt: skip
    return out


def pretrain_arms(seed, half, syn, sets, kw) -> dict:
    """``syn filtered -> half`` (pretrain on the synthetic images, fine-tune on the half) and
    its control ``half 2x steps``: {arm: {set: metrics}}."""
    pre, _ = train_classifier(*syn, seed=seed, **kw)
    tuned, _ = train_classifier(*half, seed=seed, init_params=pre.params, **kw)
    out = {
        "syn filtered -> half": scores(tuned, sets),
        "half 2x steps": longer_arm(seed, half, sets, kw),
    }
    for name, r in out.items():
        print(f"seed {seed} {name}: " + ", ".join(
            f"{k} acc {v['accuracy']:.3f} auc {v['auc']:.3f}" for k, v in r.items()
        ), flush=True)  # fmt: skip
    return out


def longer_arm(seed, half, sets, kw) -> dict:
    """The control ``half 2x steps``: the half alone for twice the steps, {set: metrics}."""
    longer, _ = train_classifier(*half, seed=seed, **{**kw, "steps": 2 * kw["steps"]})
    return scores(longer, sets)


def summarise(per_seed: list[dict]) -> dict:
    """Paired gains over 'half' of every arm, per evaluation set and metric."""
    arms = [a for a in per_seed[0] if a not in ("half", "kept_per_class")]
    out = {}
    for a in arms:
        out[a] = {s: {m: paired([r[a][s] for r in per_seed], [r["half"][s] for r in per_seed], m)
                      for m in METRICS} for s in per_seed[0]["half"]}  # fmt: skip
    return out


def main(args: argparse.Namespace) -> None:
    from jax_mri_ldm import pipeline  # heavy

    cfg = report_cfg.get_config("paper")
    run = pipeline.load_ldm(args.workdir)
    train, val, test = qc.load_splits(run)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    t0 = time.time()
    syn = pool(run, args, args.out + f".pool_w{args.guidance:g}.npz")
    args.test_full, args.pool_full = (test.images, test.labels), syn
    size = cfg.classifier_input_size
    sets = {"val": (val.images, val.labels), "test": (test.images, test.labels)}
    sets["val+test"] = tuple(np.concatenate([sets["val"][i], sets["test"][i]]) for i in (0, 1))
    sets = {k: (metrics.resize_images(x, size), y) for k, (x, y) in sets.items()}
    train_r = (metrics.resize_images(train.images, size), train.labels)
    syn_r = (metrics.resize_images(syn[0], size), syn[1])
    kw = dict(steps=args.study_steps or cfg.study_steps, batch_size=cfg.classifier_batch_size, lr=cfg.classifier_lr,
              input_size=size, widths=tuple(cfg.classifier_widths))  # fmt: skip
    per_seed = []
    for seed in range(args.seeds):
        per_seed.append(one_seed(seed, train_r, syn_r, sets, args, kw))
        res = {"args": {k: v for k, v in vars(args).items() if not k.endswith("_full")},
               "seconds": time.time() - t0, "per_seed": per_seed,
               "gain_over_half": summarise(per_seed) if len(per_seed) > 1 else None}  # fmt: skip
        atomic.write_json(args.out, res, indent=1)
    for arm, g in (res["gain_over_half"] or {}).items():
        print(arm, {s: {m: f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"
                        for m, v in d.items()} for s, d in g.items()})  # fmt: skip


if __name__ == "__main__":
    p = pool_study_flags("a finished LDM run", "output JSON (the pool is cached beside it)")
    p.description = __doc__.splitlines()[0]
    p.add_argument("--shares", type=float, nargs="*", default=[0.25], help="synthetic shares")
    p.add_argument("--keep_prob", type=float, default=0.5, help="filter: min P(own label)")
    p.add_argument("--figure", default="", help="PNG: seed 0's kept and rejected images")
    p.add_argument("--pretrain", action="store_true", help="add the pretrain/fine-tune arms")
    p.add_argument("--filtered_only", action="store_true", help="skip the unfiltered mixes")
    p.add_argument("--shares_only", action="store_true", help="skip the mixes without a share")
    p.add_argument("--longer", action="store_true", help="add the 'half 2x steps' control")
    p.add_argument("--study_steps", type=int, default=0, help="classifier steps; 0 = report's")
    main(p.parse_args())
