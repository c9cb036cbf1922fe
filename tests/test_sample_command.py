"""The report's `sample.py` command draws with the setting it names, whatever the run's default."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from jax_mri_ldm.evaluation import runinfo
from jax_mri_ldm.sampler_settings import FAST_DETERMINISTIC, SamplerSpec, spec_with

T = 1000
TYPES = {"steps": int, "eta": float, "eps_scale": float, "guidance_scale": float}
RUN_DEFAULTS = (SamplerSpec(), SamplerSpec(**FAST_DETERMINISTIC))  # DDIM η=1; DPM++ 10 ε/0.99


def overrides(command: str) -> dict:
    """The sampler flags of a `python sample.py ...` command, typed as sample.py's flags are."""
    out = {}
    for token in shlex.split(command)[2:]:
        if token == "--nouse_ema":
            out["use_ema"] = False
            continue
        key, value = token[2:].split("=", 1)
        if key in ("sampler", "spacing", *TYPES):
            out[key] = TYPES.get(key, str)(value)
        elif key == "guidance_interval":  # a list flag
            out[key] = value.split(",")
    return out


@pytest.mark.parametrize(
    "spec",
    [
        SamplerSpec(**FAST_DETERMINISTIC, guidance_scale=1.0),
        SamplerSpec("ddim", 50, 1.0, 3.0),
        SamplerSpec("ddim", 50, 0.0, 2.0, use_ema=False),
        SamplerSpec("dpmpp_2m", 25, guidance_scale=5.0),
        SamplerSpec("ddpm", None, guidance_scale=7.0),
        SamplerSpec(**FAST_DETERMINISTIC, guidance_scale=2.0, guidance_interval=(0.5, 30.0)),
        SamplerSpec("ddpm", None, guidance_scale=3.0, guidance_interval=(0.0, float("inf"))),
    ],
)
def test_the_command_reproduces_its_setting_from_any_run_default(spec):
    cmd = runinfo.sample_command("runs/my ldm", spec, T, 400)
    assert cmd.startswith("python sample.py --workdir='runs/my ldm' --label=all --num_samples=400")
    for default in RUN_DEFAULTS:
        got = spec_with(dataclasses.replace(default, use_ema=True), overrides(cmd))
        assert got.resolved(T) == spec.resolved(T), (cmd, default)
