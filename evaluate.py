"""Evaluates a finished diffusion run: `python evaluate.py --workdir=runs/ldm`.

Writes report.md, report.json and figures/ (default: `<workdir>/../report`) with every metric
on the held-out test split; see jax_mri_ldm/evaluation/report.py. `--preset` picks the sizes
(paper: the full report; demo: minutes on a laptop CPU; tiny: tests). Bad flags or a directory
that is not a diffusion run print one message and exit with status 2.
"""

from __future__ import annotations

import shlex
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/ldm", "Diffusion run directory (train.py configs/ldm.py).")
flags.DEFINE_string("out", None, "Output directory (default: <workdir>/../report).")
flags.DEFINE_enum("preset", "paper", ["paper", "demo", "tiny"], "Report sizes.")
flags.DEFINE_integer("num_synthetic_per_class", None, "Main synthetic set size per class (= N).")
flags.DEFINE_integer("seeds", None, "Seeds of the downstream study (paper preset: 5).")
flags.DEFINE_float("guidance_scale", None, "w of the main set (default: chosen by the sweep).")
flags.DEFINE_list("guidance_scales", None, "w values of the guidance sweep, e.g. 0,1,2,3,5,7.")
flags.DEFINE_integer("sweep_per_class", None, "Images per class for each w of the sweep.")
flags.DEFINE_integer("sampler_per_class", None, "Images per class per sampler (not DDPM).")
flags.DEFINE_integer("ddpm_per_class", None, "Images per class for DDPM (T steps each).")
flags.DEFINE_integer("classifier_steps", None, "Training steps of the domain classifier.")
flags.DEFINE_integer("study_steps", None, "Classifier steps per arm and seed in the study.")
flags.DEFINE_integer("batch_size", None, "Images per sampler call.")
flags.DEFINE_integer("seed", None, "Base seed of the synthetic images.")
flags.DEFINE_bool("quiet", False, "No progress lines.")


def main(argv):
    del argv
    from jax_mri_ldm.cli import setup_logging, user_error, user_errors, warn_if_unfinished

    setup_logging()  # orbax INFO lines only with --verbosity=0

    try:
        scales = (
            None
            if FLAGS.guidance_scales is None
            else tuple(float(w) for w in FLAGS.guidance_scales)
        )
    except ValueError:
        sys.exit(user_error(f"--guidance_scales={FLAGS.guidance_scales} must be numbers."))
    overrides = dict(
        num_synthetic_per_class=FLAGS.num_synthetic_per_class,
        study_seeds=FLAGS.seeds,
        guidance_scale=FLAGS.guidance_scale,
        guidance_scales=scales,
        sweep_per_class=FLAGS.sweep_per_class,
        sampler_per_class=FLAGS.sampler_per_class,
        ddpm_per_class=FLAGS.ddpm_per_class,
        classifier_steps=FLAGS.classifier_steps,
        study_steps=FLAGS.study_steps,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
    )
    from jax_mri_ldm.evaluation import report

    try:
        warn_if_unfinished(FLAGS.workdir)
        result = report.write_report(
            FLAGS.workdir,
            FLAGS.out,
            FLAGS.preset,
            command=" ".join(["python evaluate.py", *map(shlex.quote, sys.argv[1:])]),
            verbose=not FLAGS.quiet,
            **overrides,
        )
    except user_errors() as e:
        sys.exit(user_error(str(e)))
    print(f"report: {result['report_md']}")


if __name__ == "__main__":
    from jax_mri_ldm.cli import parse_flags  # bad flags and config fields: one line, exit 2

    app.run(main, flags_parser=parse_flags)
