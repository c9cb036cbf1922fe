"""Intensity diversity (`jax_mri_ldm/evaluation/intensity.py`) of a run without the full report.

Why: the report's section 6 measures it on its main set; this scores an existing run with one
sampler compile and the held-out n per class instead of a full report, e.g. runs reported
before the section existed. Samples come from the report's main-set sampler at guidance `w`.

Run from the repository root::

  python bench/ablations/intensity_spread.py --workdir=runs/ldm --guidance=3 --out=spread.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from jax_mri_ldm.evaluation import intensity  # noqa: E402


def main(workdir: str, guidance: float, seed: int, out: str) -> None:
    from report_samples import load_run_data, main_set

    run, ds, split = load_run_data(workdir)
    tr, ho = ds.subset(split["train"]), ds.subset(np.concatenate([split["val"], split["test"]]))
    n_max = int(max(np.sum(ho.labels == c) for c in range(len(run.class_names))))
    x, y, _ = main_set(run, guidance, n_max)
    sets = ((tr.images, tr.labels), (ho.images, ho.labels), (x, y))
    per_class = intensity.score_classes(*sets, run.class_names, seed)
    result = {"workdir": workdir, "guidance": guidance, "per_class": per_class}
    print(render(per_class))
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)


def render(per_class: dict) -> str:
    """A markdown table per class: one row per set, distance and spread ratios, then the
    synthetic set's bootstrap intervals."""
    lines = []
    for cls, r in per_class.items():
        if isinstance(r, str):  # the reason it has no score
            lines += [f"{cls}: {r}", ""]
            continue
        head = f"{cls} (n = {r['n']}, trusted: {r['trusted']})"
        lines += [
            f"| {head} | distance | brightness spread | contrast spread |",
            "|---|---|---|---|",
        ]
        for name, s in r["rows"].items():
            cells = (s["distance"], s["brightness_spread_ratio"], s["contrast_spread_ratio"])
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
        ci = r["synthetic_intervals"]
        keys = ("distance_gap", "brightness_spread_ratio", "contrast_spread_ratio")
        cells = [f"[{ci[k][0]:+.3f}, {ci[k][1]:+.3f}]" for k in keys]
        lines += [f"| synthetic 95 % (gap to real) | {' | '.join(cells)} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="diffusion run directory")
    p.add_argument("--guidance", type=float, required=True, help="the report's main-set w")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and shuffle controls")
    p.add_argument("--out", required=True, help="output JSON")
    a = p.parse_args()
    main(a.workdir, a.guidance, a.seed, a.out)
