"""The one config loader: `configs/<name>.py:get_config(preset)` of this repository."""

from __future__ import annotations

import importlib.util
import os

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def config_path(name: str) -> str:
    """Path of `configs/<name>.py` (it may not exist)."""
    return os.path.join(CONFIG_DIR, f"{name}.py")


def load_config(name: str, preset: str | None = None) -> ml_collections.ConfigDict:
    """`configs/<name>.py:get_config(preset)` (the file's default preset when None).

    Raises:
      FileNotFoundError: no such config file (the message names it).
    """
    path = config_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} not found; expected configs/{name}.py")
    spec = importlib.util.spec_from_file_location(f"_jax_mri_ldm_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)
