"""The commands that reproduce a report, the machine it ran on, where it goes by default."""

from __future__ import annotations

import json
import os
import platform
import shlex
from typing import Any

import jax
import ml_collections

from jax_mri_ldm import config_loader
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.sampler_settings import SamplerSpec


def _repo_config(name: str, preset: str) -> ml_collections.ConfigDict | None:
    try:
        return config_loader.load_config(name, preset)
    except Exception:  # noqa: BLE001  (a missing/changed config only loses the override list)
        return None


def flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b.c': leaf} (tuples become lists)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    if isinstance(d, tuple):
        d = list(d)
    return {prefix[:-1]: d}


def _format_override(v: Any) -> str:
    if isinstance(v, list):
        return shlex.quote("(" + ", ".join(repr(x) for x in v) + ("," if len(v) == 1 else "") + ")")
    return shlex.quote(str(v))


def config_overrides(stage: str, config: dict) -> list[str]:
    """`--config.X=...` for every field of `config` that differs from its preset."""
    preset = config.get("preset", "paper")
    base = _repo_config(stage, preset)
    if base is None:
        return []
    want = flat(json.loads(json.dumps(config, default=list)))
    have = flat(json.loads(json.dumps(base.to_dict(), default=list)))
    return [
        f"--config.{k}={_format_override(want[k])}"
        for k in sorted(want)
        if k not in ("preset", "stage") and want[k] != have.get(k, object())
    ]


def train_command(stage: str, config: dict, workdir: str) -> str:
    """The `python train.py ...` command that reproduces a run's config.

    Args:
      stage: 'vae' or 'ldm' (selects configs/<stage>.py).
      config: the run's config as a dict (config.json / checkpoint metadata).
      workdir: the run directory.

    Returns:
      The preset plus one `--config.X=...` per field that differs from the preset.
    """
    preset = config.get("preset", "paper")
    cmd = [f"python train.py --config=configs/{stage}.py:{preset}"]
    cmd += config_overrides(stage, config)
    cmd.append(f"--workdir={shlex.quote(workdir)}")
    return " ".join(cmd)


def evaluate_command(ldm_workdir: str, out_dir: str, cfg: ml_collections.ConfigDict) -> str:
    """The `python evaluate.py ...` command equivalent to a write_report call."""
    cmd = ["python evaluate.py", f"--workdir={shlex.quote(ldm_workdir)}"]
    cmd += [f"--out={shlex.quote(out_dir)}", f"--config=configs/report.py:{cfg.preset}"]
    cmd += config_overrides("report", cfg.to_dict())
    return " ".join(cmd)


def sample_command(ldm_workdir: str, spec: SamplerSpec, num_timesteps: int, n: int) -> str:
    """The `python sample.py ...` command that draws `n` images, every class in turn, with
    `spec`: every field spelled out, so it keeps its meaning if the run's default changes."""
    r = spec.resolved(num_timesteps)
    cmd = [_sample_head(ldm_workdir, n), f"--sampler={r.sampler}"]
    if r.sampler != "ddpm":  # DDPM takes every step of the schedule
        cmd += [f"--steps={r.steps}", f"--spacing={r.spacing}"]
    if r.sampler == "ddim":
        cmd.append(f"--eta={r.eta:g}")
    cmd += [f"--eps_scale={r.eps_scale:g}", f"--guidance_scale={r.guidance_scale:g}"]
    if r.guidance_interval is not None:
        cmd.append("--guidance_interval={:g},{:g}".format(*r.guidance_interval))
    return " ".join(cmd + ([] if r.use_ema else ["--nouse_ema"]))


def report_sample_command(ldm_workdir: str, report_dir: str, n: int) -> str:
    """`sample_command`'s setting read from the report in `report_dir` (`sample.py --report`)."""
    return f"{_sample_head(ldm_workdir, n)} --report={shlex.quote(report_dir)}"


def _sample_head(ldm_workdir: str, n: int) -> str:
    return f"python sample.py --workdir={shlex.quote(ldm_workdir)} --label=all --num_samples={n}"


def default_out_dir(ldm_workdir: str) -> str:
    """`<parent of the LDM workdir>/report` (runs/ldm -> runs/report)."""
    return os.path.join(os.path.dirname(os.path.abspath(ldm_workdir)), "report")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, x86 family / model and widest SIMD set of the first CPU in /proc/cpuinfo text.

    The family tells hosts with the same model name apart ("AMD EPYC": 25 is Zen 4, 26 Zen 5),
    and their train steps differ in speed (docs/performance.md), so timings name it.
    """
    first: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in first:
            first[key.strip()] = value.strip()
    flags = set(first.get("flags", "").split())
    simd = next((f for f in ("avx512f", "avx2", "sse4_2") if f in flags), None)
    family, model = first.get("cpu family"), first.get("model")
    return {
        "cpu": first.get("model name"),
        "cpu_family": int(family) if family and family.isdigit() else None,
        "cpu_model": int(model) if model and model.isdigit() else None,
        "cpu_simd": simd,
    }


def machine_info() -> dict[str, Any]:
    """Describes this machine for the report.

    Returns:
      dict with 'cpu' (model name from /proc/cpuinfo), 'cpu_family', 'cpu_model', 'cpu_simd'
      (`parse_cpuinfo`; None where unknown), 'cpu_count', 'platform', 'backend', 'devices' and
      'versions' (python, jax, jaxlib, flax, optax, orbax, numpy).
    """
    try:
        with open("/proc/cpuinfo") as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        info = parse_cpuinfo("")
    info["cpu"] = info["cpu"] or platform.processor() or "unknown"
    return {
        **info,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "versions": ckpt_lib.package_versions(),
    }
