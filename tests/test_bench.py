"""bench/run.py: the smoke run writes every section with finite positive numbers; FLOP helper."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, env_for_subprocess

RUN = REPO / "bench" / "run.py"
PROFILE = REPO / "bench" / "profile_step.py"


def _load_run_module():
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _numbers(tree, path=""):
    """(path, number) for every int/float leaf of a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield path, tree


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_xla_flops_of_a_matmul_is_2mnk():
    run = _load_run_module()
    m, k, n = 24, 40, 56
    a = np.ones((m, k), np.float32)
    b = np.ones((k, n), np.float32)
    flops = run.xla_flops(lambda x, y: x @ y, a, b)
    assert flops == 2 * m * n * k


def test_cost_flops_accepts_dict_and_list_forms():
    run = _load_run_module()
    assert run.cost_flops({"flops": 12.0, "bytes accessed": 3.0}) == 12.0
    assert run.cost_flops([{"flops": 5.0}, {"flops": 7.0}]) == 12.0
    assert run.cost_flops(None) is None
    assert run.cost_flops({"bytes accessed": 3.0}) is None


def test_write_markdown_keeps_text_outside_markers(tmp_path):
    run = _load_run_module()
    md = tmp_path / "perf.md"
    md.write_text(f"# Title\n\nhand-written intro\n\n{run.BEGIN}\nold\n{run.END}\n\nhand outro\n")
    run.write_markdown(md, f"{run.BEGIN}\nnew table\n{run.END}")
    text = md.read_text()
    assert "hand-written intro" in text and "hand outro" in text
    assert "new table" in text and "old" not in text
    assert text.count(run.BEGIN) == 1 and text.count(run.END) == 1


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path):
    out, md = tmp_path / "results.json", tmp_path / "performance.md"
    md.write_text("# Perf\n\nkept above\n\n<!-- bench:begin -->\nstale\n<!-- bench:end -->\nkept\n")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out), "--markdown", str(md)],
        cwd=REPO,
        env=env_for_subprocess(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for path, x in _numbers(res):
        assert math.isfinite(x), path
    have_torch = importlib.util.find_spec("torch") is not None

    for net in ("vae", "unet"):
        sec = res[net]
        assert sec["params_jax"] > 0
        assert _positive(sec["flops_per_step"])
        assert _positive(sec["images_per_s"]["jax"]["median"])
        if have_torch:
            assert sec["params_torch"] == sec["params_jax"]
            assert sec["forward_max_abs_diff"] < 1e-3
            assert _positive(sec["images_per_s"]["torch_eager"]["median"])
            assert _positive(sec["ratios"]["jax/torch_eager"]["median"])
            assert sec["torch_compile"] == "skipped: --smoke"
        else:
            assert sec["torch"] == "torch not installed"
    assert _positive(res["unet"]["forward_s"]["jax"]["median"])

    s = res["sampler"]
    assert s["measured_steps"] == 10 and s["scaled_to_steps"] == s["num_timesteps"]
    assert s["rows_per_call"] == 2 * s["batch"]
    for key in ("scan_s_measured", "guided_call_s", "sampler_s_per_batch", "scan_over_calls"):
        assert _positive(s[key]["median"]), key
    np.testing.assert_allclose(
        s["sampler_s_per_batch"]["median"], s["scan_s_measured"]["median"] * s["scale_factor"]
    )

    for dt in ("float32", "bfloat16"):
        assert _positive(res["peak"][dt]["jax"]["gflops_best"])
        if have_torch:
            assert _positive(res["peak"][dt]["torch"]["gflops_best"])

    bf = res["bf16"]
    assert len(bf["loss_curves"]["float32"]) == len(bf["loss_curves"]["bfloat16"]) == 3
    for dt in ("float32", "bfloat16"):
        assert _positive(bf["images_per_s"][dt]["median"])
        assert _positive(bf["loss_final"][dt])
    # Same init, data and seed: bf16 compute changes the loss only by rounding.
    assert bf["loss_final_abs_diff"] < 0.05 * bf["loss_final"]["float32"]

    for name, row in res["utilisation"].items():
        assert _positive(row["achieved_gflops"]), name
        assert _positive(row["fraction_of_jax_" + row["peak_dtype"] + "_peak"]), name
    for name, info in res["compile"].items():
        assert _positive(info["compile_s"]) and info["lower_s"] >= 0, name
        assert info["memory_bytes"]["argument"] > 0, name
    assert _positive(res["max_rss_mib"])
    assert res["meta"]["cpu_count"] >= 1 and res["meta"]["versions"]["jax"]
    assert res["meta"]["smoke"] is True

    text = md.read_text()
    assert "kept above" in text and text.rstrip().endswith("kept") and "stale" not in text
    block = text[text.index("<!-- bench:begin -->") : text.index("<!-- bench:end -->")]
    for heading in ("VAE training", "UNet training", "Sampler", "Matmul peak", "bfloat16"):
        assert heading in block, heading
    assert res["meta"]["command"] in block


_HLO = """HloModule jit_train_step

%fused_computation.7 (p0: f32[4,8], p1: f32[8,2]) -> f32[4,2] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (a: f32[4,8], b: f32[8,2]) -> f32[4,2] {
  %a = f32[4,8]{1,0} parameter(0)
  %b = f32[8,2]{1,0} parameter(1)
  %ynn_fusion.3 = f32[4,2]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.7, {META}
  ROOT %concatenate.2 = f32[4,4]{1,0} concatenate(%ynn_fusion.3, %ynn_fusion.3), dimensions={1}
}
""".replace("{META}", 'metadata={op_name="jit(train_step)/jvp(UNet)/Conv_0/dot_general"}')


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    return module


def test_profile_joins_trace_events_with_hlo():
    prof = _load(PROFILE, "bench_profile")
    index = prof.hlo_index(_HLO)
    assert index["ynn_fusion.3"] == {
        "shape": "f32[4,2]{1,0}",
        "kind": "fusion:dot",
        "source": "jvp(UNet)/Conv_0/dot_general",
    }
    events = [  # two traced steps; host-side events are not ops
        {"ph": "X", "name": "ynn_fusion.3", "dur": 3000},
        {"ph": "X", "name": "ynn_fusion.3", "dur": 5000},
        {"ph": "X", "name": "concatenate.2", "dur": 2000},
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 10000},
        {"ph": "X", "name": "$api.py:100 f", "dur": 10000},
        {"ph": "i", "name": "concatenate.2"},
    ]
    res = prof.summarize(events, index, steps=2, wall_s=0.012, top=5)
    assert res["wall_ms_per_step"] == pytest.approx(6.0)
    assert res["op_ms_per_step"] == pytest.approx(5.0)
    cats = {c["category"]: c for c in res["categories"]}
    assert set(cats) == {"library dot", "concatenate"}
    assert cats["library dot"]["ms"] == pytest.approx(4.0)
    assert cats["library dot"]["percent"] == pytest.approx(80.0)
    assert [o["op"] for o in res["top_ops"]] == ["ynn_fusion.3", "concatenate.2"]
    assert "| library dot | 4.0 | 80.0 | 1 |" in prof.render({**res, "model": "unet", "meta": "x"})


@pytest.mark.slow
def test_profile_smoke_run_finds_the_library_ops(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(PROFILE), "--smoke", "--model", "unet", "--steps", "1",
         "--out", str(tmp_path)],
        cwd=REPO, env=env_for_subprocess(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "profile.json").read_text())
    assert res["op_ms_per_step"] > 0 and res["wall_ms_per_step"] > 0
    # The UNet's convs and dense layers run as library (or plain dot/conv) ops with shapes.
    assert any(c["category"].startswith("library") for c in res["categories"])
    assert all(o["shape"] for o in res["top_ops"][:5])
    assert (tmp_path / "profile.md").read_text().startswith("# Profile of the unet train step")
