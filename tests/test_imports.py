"""Import rules of the package, read from the source (ast): no cycles, nothing inference-side
reaches a trainer, and the default sampler setting is defined only in `sampler_settings`."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "jax_mri_ldm"
TRAINERS = {"jax_mri_ldm.train_vae", "jax_mri_ldm.train_ldm"}
# Modules that load and use trained models: they go through pipeline.py, never a trainer.
INFERENCE_SIDE = ("jax_mri_ldm.pipeline", "jax_mri_ldm.export", "jax_mri_ldm.sampling")
# Config / dataclass names that hold a sampler setting.
SAMPLER_FIELDS = {
    "sampler",
    "steps",
    "eta",
    "spacing",
    "guidance",
    "guidance_scale",
    "eval_sampler",
    "eval_sample_steps",
    "eval_eta",
    "eval_guidance_scale",
}
SAMPLER_WORDS = ("SAMPLER", "STEPS", "SPACING", "GUIDANCE", "ETA")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> set[str]:
    """Every jax_mri_ldm module `module` imports, at any depth of its code (lazy ones too).

    `from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`.
    """
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != module and m.startswith("jax_mri_ldm.")}


GRAPH = {m: _imports(m) for m in MODULES}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_walk_sees_the_known_edges():
    assert "jax_mri_ldm.pipeline" in GRAPH["jax_mri_ldm.train_ldm"]
    assert "jax_mri_ldm.engine.loop" in GRAPH["jax_mri_ldm.train_vae"]
    assert "jax_mri_ldm.data" in GRAPH["jax_mri_ldm.train_vae"]  # `from pkg import data`
    assert "jax_mri_ldm.train_vae" in GRAPH["jax_mri_ldm.cli"]  # lazy imports count


def test_no_import_cycles():
    cycles = sorted(m for m in MODULES if m in _reachable(m))
    assert not cycles, f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize(
    "module",
    sorted(
        m for m in MODULES if m.startswith(INFERENCE_SIDE) or m.startswith("jax_mri_ldm.evaluation")
    ),
)
def test_inference_side_never_reaches_a_trainer(module):
    reached = _reachable(module) & TRAINERS
    assert not reached, f"{module} imports {sorted(reached)} (directly or through others)"


def test_training_modules_are_not_imported_by_the_library_they_use():
    for trainer in TRAINERS:
        importers = sorted(m for m, deps in GRAPH.items() if trainer in deps)
        assert importers == ["jax_mri_ldm.cli"], (trainer, importers)


# ----------------------------------------------------------------------------- sampler defaults


def _literal(node: ast.expr | None) -> bool:
    """A hard-coded value (None means "the default" and is fine)."""
    return isinstance(node, ast.Constant) and node.value is not None


def test_sample_flags_default_to_the_run_default():
    tree = ast.parse((REPO / "sample.py").read_text())
    flag_defaults = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "").startswith("DEFINE_"):
            name = node.args[0].value
            flag_defaults[name] = node.args[1]
    for flag in ("sampler", "steps", "eta", "guidance_scale", "spacing", "eps_scale", "use_ema"):
        default = flag_defaults[flag]  # unset: the run's default (or --report's) fills it in
        assert isinstance(default, ast.Constant) and default.value is None, flag


def _get_config_base_assignments(path: Path) -> list[ast.Assign]:
    """Assignments directly in `get_config`'s body (the base config, before any preset)."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_config")
    return [n for n in fn.body if isinstance(n, ast.Assign)]


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.py")))
def test_configs_read_sampler_defaults_from_sampler_spec(config):
    for node in _get_config_base_assignments(REPO / "configs" / config):
        for target in node.targets:
            if isinstance(target, ast.Attribute) and target.attr in SAMPLER_FIELDS:
                assert not _literal(node.value), (
                    f"configs/{config}:{node.lineno} hard-codes {target.attr}; read "
                    "sampler_settings.SamplerSpec (or leave it None = its default)"
                )


@pytest.mark.parametrize(
    ("preset", "sampler", "eta"), [("paper", "ddim", 1.0), ("recommended", "dpmpp_2m", 0.0)]
)
def test_ldm_grid_settings_equal_the_run_default_sampler(preset, sampler, eta):
    from jax_mri_ldm.config_loader import load_config
    from jax_mri_ldm.sampler_settings import default_sampler_spec, grid_sampler_spec
    from jax_mri_ldm.schedules import schedule_from_config

    cfg = load_config("ldm", preset)
    default = default_sampler_spec(cfg.diffusion.prediction, schedule_from_config(cfg.diffusion))
    assert grid_sampler_spec(cfg).resolved(1000) == default.resolved(1000)
    assert (default.sampler, default.resolved(1000).eta) == (sampler, eta)
    cfg.train.eval_sampler = "ddpm"  # an explicit grid sampler wins; DDPM runs all T
    assert grid_sampler_spec(cfg).resolved(1000).steps == 1000


def _dataclass_fields(tree: ast.Module):
    """Fields of dataclasses that hold a sampler setting (they have a `sampler` field)."""
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        if not any("dataclass" in ast.unparse(d) for d in cls.decorator_list):
            continue
        fields = [
            s for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
        ]
        if any(f.target.id in ("sampler", "eval_sampler") for f in fields):
            yield from ((cls.name, f) for f in fields)


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m != "jax_mri_ldm.sampler_settings"), ids=str
)
def test_no_other_module_defines_sampler_defaults(module):
    tree = ast.parse(MODULES[module].read_text())
    for cls, stmt in _dataclass_fields(tree):
        assert not (stmt.target.id in SAMPLER_FIELDS and _literal(stmt.value)), (
            f"{module}.{cls}.{stmt.target.id} has its own default; use sampler_settings.SamplerSpec"
        )
    for node in tree.body:
        for target in node.targets if isinstance(node, ast.Assign) else []:
            name = getattr(target, "id", "")
            assert not (name.startswith("DEFAULT_") and any(w in name for w in SAMPLER_WORDS)), (
                f"{module} defines {name}; sampler defaults live in sampler_settings.py"
            )


def test_sampler_spec_is_the_one_definition():
    from jax_mri_ldm.sampler_settings import SamplerSpec

    fields = {f.name: f.default for f in dataclasses.fields(SamplerSpec)}
    assert fields["sampler"] == "ddim" and fields["eta"] == 1.0
    assert fields["guidance_scale"] == 3.0 and fields["steps"] is None
