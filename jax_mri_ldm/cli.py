"""Library side of the entry points: dispatch a config to its trainer, turn user errors into
one clear message and exit status 2 (no traceback)."""

from __future__ import annotations

import sys

import ml_collections

from jax_mri_ldm.data.types import DataError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def user_error(message: str) -> int:
    """Prints `error: message` to stderr and returns the user-error exit status."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def run_training(
    config: ml_collections.ConfigDict,
    workdir: str | None,
    *,
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
) -> int:
    """Trains the stage named by `config.stage` into `workdir`.

    Returns:
      Process exit status: 0 done, 2 bad input, 130 interrupted (checkpoint saved).
    """
    from absl import logging as absl_logging

    from jax_mri_ldm.engine import loop

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO

    stage = config.get("stage", None)
    workdir = workdir or f"runs/{stage}"
    try:
        loop.initialize_distributed(coordinator_address, num_processes, process_id)
        if stage == "vae":
            from jax_mri_ldm import train_vae as trainer
        elif stage == "ldm":
            from jax_mri_ldm import train_ldm as trainer
        else:
            return user_error(
                f"config.stage={stage!r} is not known; use configs/vae.py or configs/ldm.py."
            )
        result = trainer.train_and_evaluate(config, workdir)
    except (DataError, ValueError, FileNotFoundError) as e:
        return user_error(str(e))
    except loop.NonFiniteLossError as e:
        return user_error(str(e))
    if result.interrupted:
        return EXIT_INTERRUPTED
    print(f"{stage}: done. Run directory: {workdir}", flush=True)
    return 0
