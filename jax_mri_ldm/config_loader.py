"""The one config loader: `get_config(preset)` of a config file (by default `configs/<name>.py`)."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def config_path(name: str) -> str:
    """Path of this repository's `configs/<name>.py` (it may not exist)."""
    return os.path.join(CONFIG_DIR, f"{name}.py")


def load_config_file(path: str, preset: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(preset)` of the config file at `path` (its default preset when None or '').

    Raises:
      FileNotFoundError: no such file (the message names it).
      ValueError: the file's `get_config` refuses the preset (its message lists the valid ones).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"_jax_mri_ldm_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


def load_config(name: str, preset: str | None = None) -> ml_collections.ConfigDict:
    """`configs/<name>.py:get_config(preset)` of this repository."""
    return load_config_file(config_path(name), preset)
