"""Library side of the entry points: flag parsing that names bad config fields, quiet logs,
the one-writer-per-workdir lock, and the error policy.

Error policy: the user errors (`UserError`, `DataError`, `FileNotFoundError` for a path the
user gave, a diverged training) print one `error: ...` line and exit with status 2; anything
else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import difflib
import os
import shutil
import sys
from collections.abc import Sequence

import ml_collections

from jax_mri_ldm import config_loader
from jax_mri_ldm.data.types import DataError
from jax_mri_ldm.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# What the entry points turn into `error: ...` and exit 2 (see `user_errors`).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, DataError, FileNotFoundError)


def user_error(message: str) -> int:
    """Prints `error: message` to stderr and returns the user-error exit status."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS plus a training that diverged (imported lazily: it lives with JAX code)."""
    from jax_mri_ldm.engine.loop import NonFiniteLossError

    return (*USER_ERRORS, NonFiniteLossError)


# ----------------------------------------------------------------------------- logging


def setup_logging() -> None:
    """absl (and orbax, which logs through it) at WARNING unless --verbosity / -v was given."""
    from absl import flags
    from absl import logging as absl_logging

    given = any(name in flags.FLAGS and flags.FLAGS[name].present for name in ("verbosity", "v"))
    if not given:
        absl_logging.set_verbosity(absl_logging.WARNING)


# ----------------------------------------------------------------------------- flags


def _flag_values(argv: Sequence[str], name: str) -> list[str]:
    """Values of `--name=V` / `--name V` in argv, in order."""
    values = []
    for i, arg in enumerate(argv):
        for prefix in (f"--{name}=", f"-{name}="):
            if arg.startswith(prefix):
                values.append(arg[len(prefix) :])
        if arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def config_overrides(argv: Sequence[str], name: str = "config") -> list[str]:
    """Dotted fields overridden on the command line: `--config.model.width=8` -> model.width."""
    fields = []
    for arg in argv:
        if arg == "--":
            break
        text = arg.lstrip("-").split("=", 1)[0]
        if text.startswith(f"no{name}."):  # boolean form --noconfig.x
            text = text[2:]
        if text.startswith(f"{name}.") and arg.startswith("-"):
            fields.append(text[len(name) + 1 :])
    return fields


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path[:preset]` -> `get_config(preset)` of that file, as config_flags loads it.

    Raises:
      UserError: the file is missing or its `get_config` refuses the preset.
    """
    path, _, preset = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"--config={spec}: no such file {path}; e.g. configs/vae.py:tiny.")
    try:
        return config_loader.load_config_file(path, preset)
    except (ValueError, KeyError) as e:  # the config files' message lists the valid presets
        raise UserError(f"--config={spec}: {str(e).strip(chr(39))}") from e


def check_config_fields(config: ml_collections.ConfigDict, fields: Sequence[str]) -> None:
    """Raises UserError naming the first `--config.<field>` that the config does not have."""
    for field in fields:
        node, walked = config, "config"
        for part in field.split("."):
            if "[" in part:  # indexing into a sequence: left to config_flags
                break
            if not isinstance(node, ml_collections.ConfigDict):
                raise UserError(f"--config.{field}: {walked} is a value, not a section.")
            if part not in node:
                valid = sorted(node.keys())
                close = difflib.get_close_matches(part, valid, n=1)
                hint = f" Did you mean {walked}.{close[0]}?" if close else ""
                raise UserError(
                    f"--config.{field}: {walked} has no field {part!r}; valid fields of "
                    f"{walked}: {', '.join(valid)}.{hint}"
                )
            node, walked = node[part], f"{walked}.{part}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser for the entry points (`app.run(main, flags_parser=cli.parse_flags)`).

    Checks `--config=file:preset` and every `--config.<field>` before absl parses them (whose
    own errors are tracebacks that never name the flag), and turns any flag error into
    `error: ...` with exit status 2.
    """
    from absl import flags

    try:
        if "config" in flags.FLAGS:
            specs = _flag_values(argv[1:], "config") or [flags.FLAGS["config"].default_unparsed]
            overrides = config_overrides(argv[1:])
            if isinstance(specs[-1], str):
                check_config_fields(load_config_file(specs[-1]), overrides)
        return flags.FLAGS(argv)
    except UserError as e:
        sys.exit(user_error(str(e)))
    except flags.Error as e:
        sys.exit(user_error(f"{e}\n(pass --helpshort to list the flags)"))


# ----------------------------------------------------------------------------- training


def _choice(config: ml_collections.ConfigDict, field: str, valid: Sequence[str]) -> None:
    section, _, name = field.partition(".")
    if section in config and name in config[section] and config[section][name] not in valid:
        raise UserError(
            f"--config.{field}={config[section][name]!r} is not one of {', '.join(valid)}."
        )


def check_config_values(config: ml_collections.ConfigDict) -> None:
    """Builds what the config alone decides (optimiser, diffusion schedule) and checks its
    choices, so that a bad value is a UserError naming the field before anything is written
    (inside the training these would only surface while compiling the first step)."""
    from jax_mri_ldm import diffusion, equaliser
    from jax_mri_ldm.engine.state import make_optimizer

    _choice(config, "diffusion.schedule", diffusion.SCHEDULES)
    _choice(config, "diffusion.prediction", diffusion.PREDICTIONS)
    _choice(config, "diffusion.loss_weighting", diffusion.LOSS_WEIGHTINGS)
    _choice(config, "loss.kl_reduction", ("mean", "sum"))
    _choice(config, "decoder.equaliser", equaliser.CHOICE_MODES)
    builds = [("optim", lambda: make_optimizer(config.optim, 1_000_000))]
    if "diffusion" in config:
        builds.append(("diffusion", lambda: diffusion.schedule_from_config(config.diffusion)))
    for section, build in builds:
        try:
            build()
        except (ValueError, KeyError) as e:
            raise UserError(f"--config.{section}: {str(e).strip(chr(39))}") from e


def _remove_unused_workdir(workdir: str) -> None:
    """Removes a workdir this run created if nothing worth keeping was written into it."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    has_ckpt = os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))
    if not has_ckpt and not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        shutil.rmtree(workdir, ignore_errors=True)


def check_resume(config: ml_collections.ConfigDict, workdir: str, stage: str) -> None:
    """Refuses, before anything is written, to resume a run of another stage or config."""
    from jax_mri_ldm.engine import checkpoint as ckpt_lib
    from jax_mri_ldm.engine import loop

    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return
    checkpointer = ckpt_lib.Checkpointer(workdir)
    try:
        latest = checkpointer.latest_step()
        saved = checkpointer.restore_meta(latest) if latest is not None else None
    finally:
        checkpointer.close()
    if saved is None:
        return
    if saved.get("stage") != stage:
        raise UserError(
            f"--workdir={workdir} holds a {saved.get('stage')!r} run, not {stage!r}; "
            "use another --workdir."
        )
    loop.check_resume_compatible(saved["config"], config, workdir)


def _train_locked(config: ml_collections.ConfigDict, workdir: str, stage: str):
    import jax

    from jax_mri_ldm.engine.lock import WorkdirLock

    if stage == "vae":
        from jax_mri_ldm import train_vae as trainer
    else:
        from jax_mri_ldm import train_ldm as trainer
    if jax.process_index() != 0:  # process 0 holds the lock for the whole job
        return trainer.train_and_evaluate(config, workdir)
    with WorkdirLock(workdir):
        check_resume(config, workdir, stage)
        return trainer.train_and_evaluate(config, workdir)


def run_training(
    config: ml_collections.ConfigDict,
    workdir: str | None,
    *,
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
) -> int:
    """Trains the stage named by `config.stage` into `workdir`, holding its lock.

    Returns:
      Process exit status: 0 done, 2 bad input, 130 interrupted (checkpoint saved).
    """
    from jax_mri_ldm.engine import logging as log_lib
    from jax_mri_ldm.engine import loop

    setup_logging()
    stage = config.get("stage", None)
    if stage not in ("vae", "ldm"):
        return user_error(
            f"config.stage={stage!r} is not known; use configs/vae.py or configs/ldm.py."
        )
    workdir = workdir or f"runs/{stage}"
    created = not os.path.exists(workdir)
    log_lib.start_session(workdir)  # this call's training time starts here (pipeline minutes)
    try:
        check_config_values(config)
        loop.initialize_distributed(coordinator_address, num_processes, process_id)
        result = _train_locked(config, workdir, stage)
    except user_errors() as e:
        if created:
            _remove_unused_workdir(workdir)
        return user_error(str(e))
    except BaseException:
        if created:
            _remove_unused_workdir(workdir)
        raise
    if result.interrupted:
        return EXIT_INTERRUPTED
    print(f"{stage}: done. Run directory: {workdir}", flush=True)
    return 0


# ----------------------------------------------------------------------------- evaluation


def warn_if_unfinished(workdir: str) -> None:
    """Warns on stderr when `workdir`'s latest checkpoint is not its final one."""
    from jax_mri_ldm.engine.checkpoint import read_run_meta

    meta = read_run_meta(workdir)
    if not meta.get("final"):
        print(
            f"warning: {workdir} is an unfinished run (its latest checkpoint is not the final "
            "one); the report describes a partly trained model. Finish it by rerunning its "
            "train.py command.",
            file=sys.stderr,
            flush=True,
        )
