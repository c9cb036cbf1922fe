"""Is recall's ranking of real images over their corruptions beyond sampling noise, per k?

Why: the report trusts recall only if, on the validation split's controls, it ranks the real
held-out images above every corruption of them, at a k chosen on the test split's controls
(`control_study.fit_recall`). On the real yes/no set that choice and that check disagree: at
k = 5 the test-split real images cover one training slice more than their grid copies, and on
the validation split the blurred copies cover more than the originals. This asks whether any k
ranks them apart by more than the noise of a few-dozen-image set, two ways, on the features
`recall_k.py` saved (paired: each corruption is made from the same images, in the same order):

- point level: on the training features both sets are judged against, the training images
  covered by one set and not the other (b: only the real set, c: only the corruption), with a
  one-sided exact sign test of b > c. Neighbouring training images are covered together, so
  this overstates the evidence;
- image level: a paired delete-one jackknife over the held-out images (the sampling unit),
  z = (recall of real - recall of corruption) / its jackknife standard error. Recall is not a
  smooth statistic, so this standard error is rough.

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

from jax_mri_ldm.evaluation import prdc  # noqa: E402
from jax_mri_ldm.evaluation.controls import CORRUPTIONS  # noqa: E402

KS = (5, 3, 2, 1)
SPLITS = {"validation": "", "test": "test-split control: "}  # split -> feature-name prefix


def sign_test_p(b: int, c: int) -> float:
    """One-sided exact sign test: P(X >= b) for X ~ Binomial(b + c, 1/2)."""
    n = b + c
    return sum(math.comb(n, i) for i in range(b, n + 1)) / 2**n if n else 1.0


def jackknife_z(ref: np.ndarray, real: np.ndarray, bad: np.ndarray, k: int) -> tuple[float, float]:
    """(recall difference real - bad, its paired delete-one jackknife standard error)."""

    def diff(keep: np.ndarray) -> float:
        return float(
            prdc.recall_covered(ref, real[keep], k).mean()
            - prdc.recall_covered(ref, bad[keep], k).mean()
        )

    n = len(real)
    full = diff(np.arange(n))
    loo = np.array([diff(np.delete(np.arange(n), i)) for i in range(n)])
    return full, math.sqrt((n - 1) / n * float(np.sum((loo - loo.mean()) ** 2)))


def compare(ref: np.ndarray, real: np.ndarray, bad: np.ndarray, k: int) -> dict:
    """Both tests for one corruption at one k."""
    r, c = prdc.recall_covered(ref, real, k), prdc.recall_covered(ref, bad, k)
    b_only, c_only = int(np.sum(r & ~c)), int(np.sum(~r & c))
    d, se = jackknife_z(ref, real, bad, k)
    return {
        "recall_real": float(r.mean()), "recall_control": float(c.mean()),
        "only_real": b_only, "only_control": c_only, "sign_p": sign_test_p(b_only, c_only),
        "jackknife_diff": d, "jackknife_se": se, "jackknife_z": d / se if se > 0 else None,
    }  # fmt: skip


def split_table(z, prefix: str) -> dict:
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


def main(out: str) -> dict:
    z = np.load(os.path.join(out, "features.npz"))
    res = {split: split_table(z, prefix) for split, prefix in SPLITS.items()}
    with open(os.path.join(out, "recall_noise.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    for split, by_k in res.items():
        for k, rows in by_k.items():
            cells = [
                f"{c} {v['recall_control']:.3f} b{v['only_real']}/c{v['only_control']} "
                f"p={v['sign_p']:.3f} z={v['jackknife_z'] or float('nan'):.1f}"
                for c, v in rows.items()
            ]
            real = next(iter(rows.values()))["recall_real"]
            print(f"{split} k={k} real {real:.3f} | " + " | ".join(cells))
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="recall_k.py's output folder (features.npz)")
    main(p.parse_args().out)
