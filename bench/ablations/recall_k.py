"""Recall and coverage of the report's control sets and synthetic main set at several k.

Why: on a small held-out split (26 real validation slices) the report's recall (Kynkaenniemi et
al., k = 5) ranked the blur control above the real slices, so the report marks recall
untrustworthy. This probe asks whether that is recall saturating at small n: it scores every
control set, the real test split and the synthetic main set (whole, and in random subsets of
the held-out size) at k = 1, 2, 3, 5, in the report's 'random' feature space (the untrained
multi-scale CNN; pass a run whose report chose that space) with the training split as the
PRDC reference, building each piece as evaluate.py does (configs/report.py:paper).
Measurement only; nothing here changes the report.

Run from the repository root::

  python bench/ablations/recall_k.py --workdir=runs/ldm --guidance=2 --out=runs/recall_k

Writes ``<out>/results.json`` and ``<out>/features.npz``; ``--no_synthetic`` skips the samples.
``--rule_only`` reads ``<out>/features.npz`` back and applies the report's recall rule
(`control_study.fit_recall`: recall's k chosen on controls made from the test split, recall
and coverage at the held-out size) without embedding anything, writing
``<out>/report_rule.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from configs import report as report_cfg  # noqa: E402
from jax_mri_ldm.evaluation import (  # noqa: E402
    control_study,
    features,
    metrics,
    prdc,
)
from jax_mri_ldm.evaluation import controls as controls_lib  # noqa: E402
from jax_mri_ldm.evaluation import report as report_lib  # noqa: E402
from jax_mri_ldm.evaluation.generator import SyntheticImages  # noqa: E402
from jax_mri_ldm.evaluation.sections import common  # noqa: E402

KS = (1, 2, 3, 5)
SELECT = "test-split control: "  # name prefix of the controls recall's k is chosen on
CONTROL_NAMES = (
    "real",
    *controls_lib.CORRUPTIONS,
    controls_lib.MEMORISED,
    controls_lib.DECODED_TRAIN,
)
NUM_SUBSETS = 20  # random synthetic subsets of the held-out size
T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", flush=True)


def _overall(pref, feats: np.ndarray, labels: np.ndarray) -> dict:
    """`prdc.score`'s overall block from features already embedded by `pref`."""
    r = prdc.prdc_per_class(pref.feats, pref.labels, feats, labels, pref.class_names, pref.k)
    return r["overall"]


def main(workdir: str, out: str, guidance: float, synthetic: bool) -> None:
    from jax_mri_ldm import pipeline

    cfg = report_cfg.get_config("paper")
    run = pipeline.load_ldm(workdir)
    os.makedirs(out, exist_ok=True)
    ds, split = report_lib._load_data(run)  # same split loading as evaluate.py
    tr, va, te = (ds.subset(split[k]) for k in ("train", "val", "test"))
    log(f"splits train/val/test = {len(tr)}/{len(va)}/{len(te)}; classes {run.class_names}")
    gen = SyntheticImages(
        run, cfg.batch_size, cfg.seed, progress=log, compile_options=dict(cfg.compile_options)
    )
    # sections/controls.py:_control_sets
    sets = controls_lib.make_controls(
        va.images,
        va.labels,
        tr.images,
        tr.labels,
        seed=cfg.controls_seed,
        decode=gen.decode_latents,
        latent_shape=run.latent_shape,
        reconstruct=run.vae.reconstruct,
    )
    sets["real_test (extra)"] = (te.images, te.labels)
    # the report's second control set, made from the test split, on which recall's k is chosen
    selection = controls_lib.make_controls(
        te.images,
        te.labels,
        tr.images,
        tr.labels,
        seed=cfg.controls_seed + 1,
        decode=gen.decode_latents,
        latent_shape=run.latent_shape,
        reconstruct=run.vae.reconstruct,
    )
    sets.update({f"{SELECT}{n}": v for n, v in selection.items()})
    log(f"control sets built: {list(sets)}")
    # the space the committed report chose ('random'), as sections/controls.py:_choose builds it
    s = features.SSLSettings.from_config(cfg.features)
    space = control_study.random_space(s)
    fc = cfg.features
    pref = control_study.prdc_reference(
        space,
        (tr.images, tr.labels),
        (te.images, te.labels),
        run.class_names,
        split=str(fc.prdc_reference),
        k=int(fc.prdc_k),
        input_size=int(fc.prdc_input_size),
    )
    log(f"PRDC reference: {pref.describe()}")
    test_feats_fid = space.embed(te.images)  # FID space (128 px input), as scoring.Reference

    feats, labels, check = {}, {}, {}
    for name, (x, y) in sets.items():
        feats[name], labels[name] = pref.embed(x), np.asarray(y)
        full = _overall(pref, feats[name], labels[name])  # k = 5, whole set (the old rule)
        check[name] = {k: full[k] for k in prdc.KEYS}
        check[name]["fid"] = float(metrics.fid(space.embed(x), test_feats_fid))
    log("control features done")

    syn = None
    if synthetic:
        ctx = types.SimpleNamespace(cfg=cfg, run=run)
        w = guidance  # the report's main_set.guidance (chosen by its sweep)
        spec = common.main_spec(ctx, w)
        x, y = gen.generate(spec, cfg.num_synthetic_per_class)
        log(
            f"synthetic main set: {len(x)} images, {spec.resolved(run.schedule.num_timesteps).name(run.schedule.num_timesteps)} w={w}"
        )
        feats["synthetic"], labels["synthetic"] = pref.embed(x), np.asarray(y)
        full = _overall(pref, feats["synthetic"], labels["synthetic"])
        check["synthetic"] = {k: full[k] for k in prdc.KEYS}
        syn = x

    np.savez(
        os.path.join(out, "features.npz"),
        reference=pref.feats,
        reference_labels=pref.labels,
        **{f"feats__{n}": v for n, v in feats.items()},
        **{f"labels__{n}": v for n, v in labels.items()},
    )

    table = {}
    for name, f in feats.items():
        table[name] = {}
        for k in KS:
            r = prdc.prdc(pref.feats, f, k)
            table[name][k] = {
                "recall": r["recall"],
                "coverage": r["coverage"],
                "precision": r["precision"],
                "density": r["density"],
                "k_used": r["k"],
                "n": r["n_fake"],
            }

    sub = {}
    if syn is not None:
        f, y = feats["synthetic"], labels["synthetic"]
        n_val = len(va)
        per_val = [int(np.sum(va.labels == c)) for c in range(len(run.class_names))]
        rng = np.random.default_rng(0)
        draws = {
            "uniform": [rng.choice(len(f), n_val, replace=False) for _ in range(NUM_SUBSETS)],
            "stratified_like_val": [
                np.concatenate(
                    [
                        rng.choice(np.flatnonzero(y == c), m, replace=False)
                        for c, m in enumerate(per_val)
                    ]
                )
                for _ in range(NUM_SUBSETS)
            ],
        }
        for kind, idxs in draws.items():
            sub[kind] = {}
            for k in KS:
                rs = [prdc.prdc(pref.feats, f[i], k) for i in idxs]
                stats = {}
                for m in ("recall", "coverage"):
                    v = np.array([r[m] for r in rs])
                    stats[m] = {
                        "mean": float(v.mean()),
                        "sd": float(v.std(ddof=1)),
                        "min": float(v.min()),
                        "max": float(v.max()),
                    }
                sub[kind][k] = stats

    res = {
        "workdir": workdir,
        "guidance": guidance,
        "space": space.info,
        "prdc_reference": pref.describe(),
        "check_k5_full_rows": check,
        "table": table,
        "synthetic_subsets_n26": sub,
        "val_per_class": [int(np.sum(va.labels == c)) for c in range(len(run.class_names))],
        "wall_seconds": time.perf_counter() - T0,
    }
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    log("wrote results.json")
    print(json.dumps(check, indent=1))


def report_rule(out: str) -> dict:
    """The report's recall rule applied to the saved features (`--rule_only`)."""
    cfg = report_cfg.get_config("paper").features
    z = np.load(os.path.join(out, "features.npz"))
    names = [k[len("feats__") :] for k in z.files if k.startswith("feats__")]
    with open(os.path.join(out, "results.json")) as fh:  # class order of the reference
        classes = tuple(json.load(fh)["prdc_reference"]["n_per_class"])
    pref = prdc.Reference("train", lambda f: f, z["reference"], z["reference_labels"], classes,
                          int(cfg.prdc_k), None)  # fmt: skip
    scored = {n: (z[f"feats__{n}"], z[f"labels__{n}"]) for n in names}
    controls = {n: v for n, v in scored.items() if n in CONTROL_NAMES}
    selection = {n[len(SELECT) :]: v for n, v in scored.items() if n.startswith(SELECT)}
    ks, n_sub = tuple(int(k) for k in cfg.recall_ks), int(cfg.equal_n_subsets)
    pref, choice = control_study.fit_recall(pref, controls, selection, ks, n_sub)
    rows = {}
    for n, (f, y) in scored.items():
        r = prdc.score_features(pref, f, y)
        rows[n] = {**{k: r["overall"][k] for k in prdc.KEYS}, "equal_n": r.get("equal_n")}
        rows[n]["recall_per_class"] = {
            c: (b or {}).get("recall") for c, b in r["per_class"].items()
        }
    res = {"prdc_reference": pref.describe(), "recall_k": choice, "sets": rows}
    with open(os.path.join(out, "report_rule.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="diffusion run directory")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--guidance", type=float, required=True, help="the report's main-set w")
    p.add_argument("--no_synthetic", action="store_true", help="controls only, no samples")
    p.add_argument("--rule_only", action="store_true", help="apply the report's recall rule "
                   "to <out>/features.npz, nothing else")  # fmt: skip
    a = p.parse_args()
    if a.rule_only:
        print(json.dumps(report_rule(a.out), indent=1))
    else:
        main(a.workdir, a.out, a.guidance, not a.no_synthetic)
