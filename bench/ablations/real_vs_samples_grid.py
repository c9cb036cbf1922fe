"""A grid of real test slices next to samples, per class, as the report generates them.

Why: every results section shows samples beside real held-out images; the report's own figures
show samples alone or beside their nearest training slice. This draws, per class, a row of real
test slices and a row of samples of the report's main-set sampler at guidance `w`, or, with
`--settings` (`sampler_match.py`'s ``sampler:steps:spacing:eta[:w[:eps_scale]]``), one row per
setting, all from the same starting noise (the report's seeding), so the rows compare samplers.

Run from the repository root::

  python bench/ablations/real_vs_samples_grid.py --workdir=runs/ldm --guidance=3 --out=grid.png
  python bench/ablations/real_vs_samples_grid.py --workdir=runs/ldm --guidance=3 --out=g.png \\
      --settings=ddim:50:uniform:1,dpmpp_2m:10:logSNR:0,dpmpp_2m:10:logSNR:0::0.99
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from jax_mri_ldm import plots  # noqa: E402


def setting_sets(run, texts: list[str], guidance: float, per_class: int) -> list[tuple]:
    """[(images, labels, name)] of each setting, drawn as the report draws (seed, batch size)."""
    from report_samples import report_generator
    from sampler_match import parse_setting

    _, gen = report_generator(run)
    T, out = run.schedule.num_timesteps, []
    for text in texts:
        spec = parse_setting(text, guidance)
        x, y = gen.generate(spec, per_class)
        out.append((np.asarray(x), np.asarray(y), spec.resolved(T).name(T)))
    return out


def main(workdir: str, guidance: float, per_class: int, out: str, settings: str = "") -> None:
    from report_samples import load_run_data, main_set

    run, ds, split = load_run_data(workdir)
    te = ds.subset(split["test"])
    texts = [t for t in settings.split(",") if t]
    sets = (
        setting_sets(run, texts, guidance, per_class)
        if texts
        else [main_set(run, guidance, per_class)]
    )
    rows = []
    for c, cls in enumerate(run.class_names):
        rows += [(f"real test {cls}", te.images[te.labels == c][:per_class])]
        rows += [(f"{name}\n{cls}", x[y == c][:per_class]) for x, y, name in sets]
    names = ", ".join(name for _, _, name in sets)
    plots.save_rows_figure(
        rows, out, title=f"real test slices and samples ({names}, w={guidance:g})"
    )
    print(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="diffusion run directory")
    p.add_argument("--guidance", type=float, required=True, help="the report's main-set w")
    p.add_argument("--per_class", type=int, default=8, help="images per row")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--settings", default="", help="comma-separated sampler settings (see above)")
    a = p.parse_args()
    main(a.workdir, a.guidance, a.per_class, a.out, a.settings)
