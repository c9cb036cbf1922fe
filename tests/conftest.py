"""Shared fixtures: tiny end-to-end runs (built once per test module that asks for them)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from jax_mri_ldm.config_loader import load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "brain_tumor_yes_no"


def load_script(path: Path, name: str) -> ModuleType:
    """A bench script (not a package module) imported as `name`; registered in sys.modules
    because dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Tests compile the same tiny programs many times (each run, each resume, each CLI
# subprocess); a persistent compilation cache shared by all of them saves most of that time.
JAX_CACHE = REPO / ".pytest_cache" / "jax_compilation_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Most tests compile a program and run it a few times, so compiling, not running, is where their
# time goes; XLA:CPU compiles faster with LLVM's backend optimisation off (docs/performance.md,
# "Test programs compiled without LLVM optimisation"). The semantics are the same; a test whose
# own loop runs many steps asks for the usual level on its jit (`OPTIMISED`). An
# optimisation level already in XLA_FLAGS is kept.
OPT_LEVEL_FLAG = "--xla_backend_optimization_level"
OPTIMISED = {"xla_backend_optimization_level": 2}  # XLA:CPU's default, per jit
if OPT_LEVEL_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {OPT_LEVEL_FLAG}=0".strip()


# The slowest test modules, slowest first (worker seconds of a fresh-clone `make test`, listed
# in docs/performance.md). `make test` hands whole modules to its two workers in collection
# order (--dist=loadfile --no-loadscope-reorder); starting with the longest lets both workers
# finish together. Only the order depends on this list: a stale entry costs time, not a result.
SLOWEST_MODULES_FIRST = (
    "test_report.py",
    "test_eval_real.py",
    "test_robustness.py",
    "test_sample.py",
    "test_phantom.py",
    "test_latent_stats.py",
    "test_train_vae.py",
    "test_bench.py",
    "test_multihost.py",
    "test_scale.py",
    "test_kclass.py",
    "test_equaliser.py",
    "test_decoder_check.py",
    "test_sampling.py",
    "test_resume.py",
    "test_models.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs the modules of SLOWEST_MODULES_FIRST first, in that order; each module's tests stay
    together and in file order (a stable sort), so module-scoped fixtures are built once."""
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def tiny_vae_config(tmp: Path):
    c = load_config("vae", "tiny")
    c.data.cache_dir = str(tmp / "cache")
    c.train.progress_bar = False
    return c


def tiny_ldm_config(vae_dir: Path):
    c = load_config("ldm", "tiny")
    c.vae_workdir = str(vae_dir)
    c.train.progress_bar = False
    return c


@pytest.fixture(scope="session")
def _tiny_runs_built(tmp_path_factory):
    """A finished tiny VAE run and a finished tiny LDM run on the built-in data, trained once
    per worker; tests get copies (`tiny_runs`), never these directories."""
    from jax_mri_ldm import train_ldm, train_vae

    root = tmp_path_factory.mktemp("tiny_runs_built")
    vae_cfg = tiny_vae_config(root)
    vae_result = train_vae.train_and_evaluate(vae_cfg, str(root / "vae"))
    ldm_cfg = tiny_ldm_config(root / "vae")
    ldm_result = train_ldm.train_and_evaluate(ldm_cfg, str(root / "ldm"))
    return root, vae_result, ldm_result


def _relocate_json(path: Path, old: str, new: str) -> None:
    """Rewrites every string of the JSON file `path` that starts with `old` to start with `new`
    (the runs record their own and their VAE's absolute directories), written as the runs write
    it."""
    import json

    from jax_mri_ldm import atomic

    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return new + v[len(old) :] if isinstance(v, str) and v.startswith(old) else v

    atomic.write_json(str(path), fix(json.loads(path.read_text())))


@pytest.fixture(scope="module")
def tiny_runs(_tiny_runs_built, tmp_path_factory):
    """A module's own copy of the tiny runs (a module may resume, report into or re-run them),
    with every recorded path moved to the copy."""
    import copy
    import shutil

    built, vae_result, ldm_result = _tiny_runs_built
    root = tmp_path_factory.mktemp("tiny_runs") / "runs"
    shutil.copytree(built, root, symlinks=True)
    for run in ("vae", "ldm"):
        for name in ("run.json", "config.json"):
            _relocate_json(root / run / name, str(built), str(root))
    return {
        "root": root,
        "vae_dir": root / "vae",
        "ldm_dir": root / "ldm",
        "vae_cfg": tiny_vae_config(root),
        "ldm_cfg": tiny_ldm_config(root / "vae"),
        "vae_result": copy.deepcopy(vae_result),
        "ldm_result": copy.deepcopy(ldm_result),
    }


def env_for_subprocess(**extra) -> dict[str, str]:
    """Environment for CLI subprocesses (repo importable, quiet progress).

    An `XLA_FLAGS` in `extra` is added to this process's flags, replacing those it names.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    if "XLA_FLAGS" in extra:
        env["XLA_FLAGS"] = merge_xla_flags(os.environ.get("XLA_FLAGS", ""), extra["XLA_FLAGS"])
    return env


def merge_xla_flags(base: str, added: str) -> str:
    """`base` XLA flags with `added` ones, a flag in both taking its value from `added`."""
    names = {flag.split("=", 1)[0] for flag in added.split()}
    kept = [flag for flag in base.split() if flag.split("=", 1)[0] not in names]
    return " ".join(kept + added.split())


def blobs(n: int, size: int, seed: int) -> np.ndarray:
    """Images of a few random Gaussian blobs: structured, so SSIM between them is meaningful."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        for _ in range(4):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(size / 16, size / 5)
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            out[i, ..., 0] += rng.uniform(0.3, 1.0) * np.exp(-d2 / r**2)
    return np.clip(out, 0.0, 1.0)


def textured(n: int, size: int, seed: int) -> np.ndarray:
    """Blobs with fine grain, so that the high band carries power a blur removes."""
    rng = np.random.default_rng(seed)
    x = blobs(n, size, seed) * 0.8 + 0.1 + 0.05 * rng.standard_normal((n, size, size, 1))
    return np.clip(x, 0, 1).astype(np.float32)


def fourier_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass in the Fourier domain: a decoder that loses the high band."""
    f = np.fft.fftfreq(images.shape[1])
    g = np.exp(-0.5 * (np.hypot(f[:, None], f[None, :]) / sigma) ** 2)
    x = np.real(np.fft.ifft2(np.fft.fft2(images[..., 0]) * g))
    return np.clip(x, 0, 1)[..., None].astype(np.float32)


def equalised_copies(tiny_runs: dict, root: Path):
    """Copies of the tiny VAE and LDM runs under `root`, the VAE refitted with an equaliser (no
    training); returns (vae_dir, ldm_dir, an LDM config pointing at the VAE copy)."""
    import shutil

    from jax_mri_ldm import train_vae

    vae_dir, ldm_dir = root / "vae", root / "ldm"
    shutil.copytree(tiny_runs["vae_dir"], vae_dir)
    shutil.copytree(tiny_runs["ldm_dir"], ldm_dir)
    cfg = tiny_runs["vae_cfg"].copy_and_resolve_references()
    cfg.model.equaliser = True
    train_vae.train_and_evaluate(cfg, str(vae_dir))
    ldm_cfg = tiny_runs["ldm_cfg"].copy_and_resolve_references()
    ldm_cfg.vae_workdir = str(vae_dir)
    return vae_dir, ldm_dir, ldm_cfg
