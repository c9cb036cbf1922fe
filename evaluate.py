"""Evaluates a finished diffusion run: `python evaluate.py --workdir=runs/ldm`.

Writes report.md, report.json and figures/ (default: `<workdir>/../report`) with every metric
on the held-out test split; see jax_mri_ldm/evaluation/report.py. `--config` picks the report
settings, `configs/report.py[:paper|demo|tiny]` (paper: the full report; demo: sized for
`make demo`; tiny: tests), and any field can be overridden: `--config.seeds=10`. Bad flags or a
directory that is not a diffusion run print one message and exit with status 2.
"""

from __future__ import annotations

import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/ldm", "Diffusion run directory (train.py configs/ldm.py).")
flags.DEFINE_string("out", None, "Output directory (default: <workdir>/../report).")
config_flags.DEFINE_config_file("config", "configs/report.py", "Report config file[:preset].")
flags.DEFINE_bool("quiet", False, "No progress lines.")


def main(argv):
    del argv
    from jax_mri_ldm.cli import setup_logging, user_error, user_errors, warn_if_unfinished

    setup_logging()  # orbax INFO lines only with --verbosity=0
    from jax_mri_ldm.evaluation import report

    try:
        warn_if_unfinished(FLAGS.workdir)
        result = report.write_report(
            FLAGS.workdir,
            FLAGS.out,
            config=FLAGS.config,
            command=" ".join(["python evaluate.py", *map(shlex.quote, sys.argv[1:])]),
            verbose=not FLAGS.quiet,
        )
    except user_errors() as e:
        sys.exit(user_error(str(e)))
    print(f"report: {result['report_md']}")


if __name__ == "__main__":
    from jax_mri_ldm.cli import parse_flags  # bad flags and config fields: one line, exit 2

    app.run(main, flags_parser=parse_flags)
