"""Trains one stage: `python train.py --config=configs/vae.py --workdir=runs/vae`.

The config's `stage` field picks the trainer (configs/vae.py -> VAE, configs/ldm.py -> latent
diffusion). Rerunning the same command on the same --workdir resumes from its last checkpoint.
Errors in user input print one message and exit with status 2.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/vae.py", "Stage config file[:preset].")
flags.DEFINE_string("workdir", None, "Run directory (default runs/<stage>).")
flags.DEFINE_string(
    "coordinator_address", "", "Multi-host: host:port of process 0, or 'auto' (TPU/SLURM)."
)
flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")


def main(argv):
    del argv
    from jax_mri_ldm.cli import run_training  # import after flag parsing: keeps --help fast

    sys.exit(
        run_training(
            FLAGS.config,
            FLAGS.workdir,
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    )


if __name__ == "__main__":
    from jax_mri_ldm.cli import parse_flags  # bad flags and config fields: one line, exit 2

    app.run(main, flags_parser=parse_flags)
