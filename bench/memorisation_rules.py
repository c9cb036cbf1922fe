"""Which memorisation rule flags copies and not smooth new slices? Controls for two rules.

The report flags a synthetic image as a memorisation candidate when it is closer to a training
image (SSIM at 64 px, mirror images included) than every held-out image is (the "fixed"
rule; held out: the real test split, plus fresh slices on the binary built-in set). On a
homogeneous set a smooth, typical slice can pass that single threshold without copying
anyone. The "relative" rule (`neighbours.relative_distance`, after Alaa et al. 2022)
measures each nearest distance in units of that training image's own nearest-neighbour
distance, so it asks: is the image closer to training slice j than any other training slice
is to j? Both rules are calibrated on the held-out images the report uses (the real test
split, plus fresh built-in slices on the built-in set; the most extreme one sets the
threshold) and scored here on sets whose answer is known:

* must not be flagged (new slices): real validation slices; the same blurred by 1 and 2 px;
  the VAE's reconstructions of the validation slices (as smooth as a decoded sample, but of
  unseen patients);
* must be flagged (copies): mirrored training slices; the VAE's reconstructions of training
  slices (what a generator that memorised its training latents would decode);
* reported, no verdict: training slices rotated by 5 degrees with a little noise (near copies),
  and the run's synthetic main set (the report's default sampler, batch and seed at the
  `--guidance` the report chose, so the same images as section 7 of a `report.py:paper` report).

Run from the repository root on a finished LDM run::

  python bench/memorisation_rules.py --workdir=runs/ldm --report=runs/report/report.json \
      --out=runs/mem_rules.json

(`--report` takes the guidance its sweep chose and its fresh held-out slices per class; without
it give the report's w as `--guidance`, and the paper preset's held-out slices are used.)

Prints a markdown table (fraction flagged per set and rule) and writes it with the per-set
summaries to ``--out`` (JSON) if given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import quality_curve as qc  # noqa: E402  (bench/quality_curve.py: the run's splits)

from configs import report as report_cfg  # noqa: E402
from jax_mri_ldm import atomic  # noqa: E402
from jax_mri_ldm.evaluation import controls, neighbours, scoring  # noqa: E402
from jax_mri_ldm.evaluation.cache import run_cache_dir  # noqa: E402
from jax_mri_ldm.evaluation.markdown import f, table  # noqa: E402

NEW = ("real validation", "blur 1 px", "blur 2 px", "VAE recon. of validation")
COPIES = ("mirrored train", "VAE recon. of train")
"""Control sets that must not / must be flagged."""


def near_copies(images: np.ndarray, degrees: float = 5.0, sigma: float = 0.02) -> np.ndarray:
    """Training slices rotated by `degrees` (bilinear) plus Gaussian noise, clipped to [0, 1]."""
    rot = ndimage.rotate(images, degrees, axes=(1, 2), reshape=False, order=1, mode="nearest")
    noisy = rot + sigma * np.random.default_rng(0).standard_normal(rot.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def control_sets(run, train, val) -> dict[str, np.ndarray]:
    """Every control set, keyed by name (see the module docstring)."""
    blur = lambda s: ndimage.gaussian_filter(val.images, (0, s, s, 0))  # noqa: E731
    return {
        "real validation": val.images,
        "blur 1 px": blur(1.0),
        "blur 2 px": blur(2.0),
        "VAE recon. of validation": run.vae.reconstruct(val.images),
        "mirrored train": controls.mirrored(train.images),
        "VAE recon. of train": run.vae.reconstruct(train.images),
        "near copies of train": near_copies(train.images),
    }


def synthetic_set(run, guidance: float, per_class: int | None = None) -> np.ndarray:
    """The report's main synthetic set (same sampler, batch, seed; size unless per_class)."""
    from jax_mri_ldm.evaluation.generator import SyntheticImages

    cfg = report_cfg.get_config("paper")
    gen = SyntheticImages(run, cfg.batch_size, cfg.seed)
    spec = dataclasses.replace(run.default_spec(), guidance_scale=float(guidance))
    return gen.generate(spec, per_class or cfg.num_synthetic_per_class)[0]


def score(
    sets: dict,
    train: np.ndarray,
    test: np.ndarray,
    size: int,
    cal: np.ndarray | None = None,
    cache_dir: str | None = None,
) -> dict:
    """Fraction flagged by each rule, per set, plus nearest-SSIM and relative summaries.

    The search runs over `train` and its mirror images, as section 7 of the report does. `cal`:
    the report's fresh held-out slices, which join `test` in setting the thresholds;
    `cache_dir`: the run's evaluation cache, shared with the report (None: not cached).
    """
    refs, groups = scoring.with_mirrors(train)  # (2T, H, W, 1)
    own = scoring.train_own_scores(train, size, cache_dir)
    cal_nn = None if cal is None else neighbours.nearest_neighbours(cal, refs, search_size=size)
    out = {}
    for name, x in sets.items():
        m = neighbours.memorisation_report(
            x, refs, test, search_size=size, top_k=1, train_groups=groups, train_own=own,
            calibration=cal, calibration_nn=cal_nn,
        )  # fmt: skip
        ratio = np.asarray(m["relative"]["synthetic"]["ratio"])
        fixed = np.isin(np.arange(len(x)), m["flagged"])
        out[name] = {
            "n": int(len(x)),
            "fixed": m["fraction_flagged"],
            "relative": m["relative"]["fraction_flagged"],
            "fixed_and_ratio_below_1": float(np.mean(fixed & (ratio < 1.0))),
            "nn_ssim": m["synthetic_to_train"]["score"],
            "ratio": ratio.tolist(),
            "nn_ssim_median": m["synthetic_to_train"]["summary"]["median"],
            "ratio_median": m["relative"]["synthetic"]["summary"]["median"],
            "fixed_threshold": m["threshold"],
            "relative_threshold": m["relative"]["threshold"],
            "threshold_images": m["threshold_images"],
        }
        brief = {k: v for k, v in out[name].items() if k not in ("nn_ssim", "ratio")}
        print(f"[rules] {name}: {brief}", flush=True)
    return out


def render(res: dict) -> str:
    """Markdown table: one row per set."""
    rows = []
    for name, r in res["sets"].items():
        want = "no" if name in NEW else "yes" if name in COPIES else "-"
        rows.append(
            [name, r["n"], want, f(r["nn_ssim_median"]), f(r["ratio_median"])]
            + [f"{100 * r[k]:.1f} %" for k in ("fixed", "relative", "fixed_and_ratio_below_1")]
        )
    any_r = next(iter(res["sets"].values()))
    L = [
        f"# Memorisation rules: `{res['workdir']}`",
        "",
        f"Fixed threshold (nearest SSIM): {f(any_r['fixed_threshold'])}; relative threshold "
        f"(distance / the training image's own nearest distance): "
        f"{f(any_r['relative_threshold'])}; set by {any_r.get('threshold_images', '?')} "
        "held-out images.",
        "",
    ]
    head = ["set", "n", "should flag", "nearest SSIM (median)", "relative (median)"]
    head += ["flagged: fixed", "flagged: relative", "flagged: fixed and ratio < 1"]
    L += table(head, rows)
    return "\n".join(L)


def probe(
    workdir: str,
    guidance: float,
    synthetic: bool,
    per_class: int | None = None,
    calibration_per_class: int | None = None,
) -> dict:
    """Both rules on every control set (and the synthetic main set) of the run in `workdir`
    (`calibration_per_class`: fresh held-out slices per class; None = configs/report.py's)."""
    from jax_mri_ldm import pipeline  # heavy

    run = pipeline.load_ldm(workdir)
    train, val, test = qc.load_splits(run)
    seen = qc.generator_train(run, train)
    cfg = report_cfg.get_config("paper")
    if calibration_per_class is not None:
        cfg.memorisation_calibration_per_class = int(calibration_per_class)
    size = min(int(cfg.memorisation_search_size), run.image_size)
    cal = qc.calibration(run, cfg, seen)
    sets = control_sets(run, train, val)
    if synthetic:
        sets["synthetic main set"] = synthetic_set(run, guidance, per_class)
    res = {"workdir": workdir, "guidance": guidance}
    res["sets"] = score(sets, seen.images, test.images, size, cal, run_cache_dir(workdir))
    return res


def report_settings(path: str) -> tuple[float, int]:
    """(the guidance w a report's sweep chose, its fresh held-out slices per class): so the
    bench scores the same images against the same thresholds as the report."""
    with open(path) as fh:
        r = json.load(fh)
    per_class = int(r["settings"].get("memorisation_calibration_per_class", 0))
    return float(r["main_set"]["guidance"]), per_class


def main(argv: list[str]) -> None:
    del argv
    from absl import flags

    F = flags.FLAGS
    guidance, cal = report_settings(F.report) if F.report else (F.guidance, None)
    res = probe(F.workdir, guidance, F.synthetic, F.per_class, cal)
    print(render(res))
    if F.out:
        atomic.write_text(F.out, json.dumps(res, indent=1))
        atomic.write_text(os.path.splitext(F.out)[0] + ".md", render(res) + "\n")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "finished LDM run directory")
    flags.DEFINE_float("guidance", 2.0, "guidance of the synthetic set (report's w)")
    flags.DEFINE_string("report", None, "report.json whose w and held-out slices are used")
    flags.DEFINE_string("out", None, "optional JSON output path")
    flags.DEFINE_bool("synthetic", True, "also score the run's synthetic main set")
    flags.DEFINE_integer("per_class", None, "synthetic images per class (None: report's)")
    flags.mark_flag_as_required("workdir")
    app.run(main)
