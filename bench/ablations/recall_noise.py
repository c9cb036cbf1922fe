"""Is recall's ranking of real images over their corruptions beyond sampling noise, per k?

Why: the report trusts recall only if, on the validation split's controls, it ranks the real
held-out images above every corruption of them, at a k chosen on the test split's controls
(`control_study.fit_recall`). On a small held-out split that choice and that check can
disagree (docs/results.md, "Recall on the real set: no k separates ..."). This asks whether any
k ranks them apart by more than the noise of a few-dozen-image set, two ways, on the features
`recall_k.py` saved:

- point level: on the training features both sets are judged against, the training images
  covered by one set and not the other (b: only the real set, c: only the corruption), with a
  one-sided exact sign test of b > c (paired by training image). Neighbouring training images
  are covered together, so this overstates the evidence;
- image level: a delete-one jackknife over the held-out images (the sampling unit), paired by
  index: noise, blur, patch shuffle and grid are made from the same images in the same order;
  the VAE-prior control is not made from them, so its pairing is arbitrary (the two sets are
  independent, so the estimate stays roughly valid). z = (recall of real - recall of
  corruption) / its jackknife standard error. Recall is not a smooth statistic: one image whose
  ball covers much of the reference can dominate the standard error, so the largest
  single-image change is reported beside it.

Run from the repository root, after ``recall_k.py --out=DIR``::

  python bench/ablations/recall_noise.py --out=DIR

Writes ``<out>/recall_noise.json`` and prints one line per split and k.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from configs import report as report_cfg  # noqa: E402
from jax_mri_ldm.evaluation import prdc  # noqa: E402
from jax_mri_ldm.evaluation.controls import CORRUPTIONS  # noqa: E402

KS = tuple(int(k) for k in report_cfg.get_config("paper").features.recall_ks)  # the report's
SPLITS = {"validation": "", "test": "test-split control: "}  # split -> feature-name prefix


def sign_test_p(b: int, c: int) -> float:
    """One-sided exact sign test: P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    n = b + c
    return sum(math.comb(n, i) for i in range(b, n + 1)) / 2**n if n else 1.0


def jackknife_z(ref: np.ndarray, real: np.ndarray, bad: np.ndarray, k: int) -> dict:
    """Paired delete-one jackknife of recall(real) - recall(bad) over the held-out images.

    Returns:
      {'diff', 'se', 'z' (None when se is 0), 'max_influence': the largest change of the
      difference from deleting one image}.
    """

    def covered(keep: np.ndarray) -> int:  # integer counts: equal differences stay equal
        return int(prdc.recall_covered(ref, real[keep], k).sum()) - int(
            prdc.recall_covered(ref, bad[keep], k).sum()
        )

    n, m = len(real), len(ref)
    full = covered(np.arange(n))
    loo = np.array([covered(np.delete(np.arange(n), i)) for i in range(n)], np.float64)
    se = math.sqrt((n - 1) / n * float(np.sum((loo - loo.mean()) ** 2))) / m
    return {"diff": full / m, "se": se, "z": full / m / se if se > 0 else None,
            "max_influence": float(np.max(np.abs(loo - full))) / m}  # fmt: skip


def compare(ref: np.ndarray, real: np.ndarray, bad: np.ndarray, k: int) -> dict:
    """Both tests for one corruption at one k."""
    r, c = prdc.recall_covered(ref, real, k), prdc.recall_covered(ref, bad, k)
    b_only, c_only = int(np.sum(r & ~c)), int(np.sum(~r & c))
    jk = jackknife_z(ref, real, bad, k)
    return {
        "recall_real": float(r.mean()), "recall_control": float(c.mean()),
        "only_real": b_only, "only_control": c_only, "sign_p": sign_test_p(b_only, c_only),
        **{f"jackknife_{key}": v for key, v in jk.items()},
    }  # fmt: skip


def split_table(z: np.lib.npyio.NpzFile, prefix: str) -> dict:
    """{k: {corruption: compare(...)}} for one split's controls."""
    ref = z["reference"]
    real = z[f"feats__{prefix}real"]
    return {
        str(k): {
            c: compare(ref, real, z[f"feats__{prefix}{c}"], k)
            for c in CORRUPTIONS
            if f"feats__{prefix}{c}" in z.files
        }
        for k in KS
    }


def _line(split: str, k: str, rows: dict) -> str:
    """One printed line: the real set's recall, then per corruption b/c, p and z."""
    if not rows:
        return f"{split} k={k}: no corruption features"
    cells = []
    for c, v in rows.items():
        z = float("nan") if v["jackknife_z"] is None else v["jackknife_z"]
        cells.append(f"{c} {v['recall_control']:.3f} b{v['only_real']}/c{v['only_control']} "
                     f"p={v['sign_p']:.3f} z={z:.1f} max1={v['jackknife_max_influence']:.2f}")  # fmt: skip
    real = next(iter(rows.values()))["recall_real"]
    return f"{split} k={k} real {real:.3f} | " + " | ".join(cells)


def main(out: str) -> dict:
    """Both tests for every split, k and corruption; writes and prints them."""
    z = np.load(os.path.join(out, "features.npz"))
    res = {split: split_table(z, prefix) for split, prefix in SPLITS.items()}
    with open(os.path.join(out, "recall_noise.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    for split, by_k in res.items():
        for k, rows in by_k.items():
            print(_line(split, k, rows))
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="recall_k.py's output folder (features.npz)")
    main(p.parse_args().out)
