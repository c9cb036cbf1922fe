"""A grid of real test slices next to samples, per class, as the report generates them.

Why: every results section shows samples beside real held-out images; the report's own figures
show samples alone or beside their nearest training slice. This draws, per class, a row of real
test slices and a row of samples of the report's main-set sampler at guidance `w`.

Run from the repository root::

  python bench/ablations/real_vs_samples_grid.py --workdir=runs/ldm --guidance=3 --out=grid.png
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from jax_mri_ldm import plots  # noqa: E402


def main(workdir: str, guidance: float, per_class: int, out: str) -> None:
    from report_samples import load_run_data, main_set

    run, ds, split = load_run_data(workdir)
    te = ds.subset(split["test"])
    x, y, name = main_set(run, guidance, per_class)
    rows = []
    for c, cls in enumerate(run.class_names):
        rows += [(f"real test {cls}", te.images[te.labels == c][:per_class])]
        rows += [(f"synthetic {cls}", x[y == c][:per_class])]
    plots.save_rows_figure(
        rows, out, title=f"real test slices and samples ({name}, w={guidance:g})"
    )
    print(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="diffusion run directory")
    p.add_argument("--guidance", type=float, required=True, help="the report's main-set w")
    p.add_argument("--per_class", type=int, default=8, help="images per row")
    p.add_argument("--out", required=True, help="output PNG")
    a = p.parse_args()
    main(a.workdir, a.guidance, a.per_class, a.out)
