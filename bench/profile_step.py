"""Where the time of one train step goes: a per-op profile of the engine's jitted step.

``python bench/profile_step.py --model unet`` builds the same compiled train step as
``bench/run.py`` (default configs, batch 16, float32, synthetic data), records a
``jax.profiler`` trace of a few steps and XLA's optimised HLO, and joins them: every
XLA:CPU thunk in the trace is an HLO instruction, so each op's time gets its shape and the
JAX source op (``op_name`` metadata) it came from. It prints and writes (``--out``, default
``bench/profile_<model>/``):

- ``profile.md`` / ``profile.json``: step wall time, the sum of op times (equal to the wall
  time when ops run one after another), time per op category (library matmuls and convs,
  i.e. YNNPACK / XNNPACK / oneDNN fusions and plain ``dot`` / ``convolution``; concatenates;
  other loop fusions by name), and the top ops with shape and source;
- ``trace/``: the raw trace (open it in Perfetto or TensorBoard's profile plugin);
- ``hlo/``: the optimised HLO text of the step.

This is the evidence behind the hand-written reading in ``docs/performance.md``.

Usage::

  python bench/profile_step.py --model unet
  python bench/profile_step.py --model vae --steps 2 --top 40
  python bench/profile_step.py --smoke --out /tmp/p     # tiny sizes, seconds (tests)
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

# Control-flow containers: their trace events span the ops of their bodies, counted already.
_CONTAINERS = ("while", "conditional", "call")
_LIBRARY = ("ynn_fusion", "xnn_fusion", "onednn", "dot", "convolution", "custom-call")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=["unet", "vae"], default="unet")
    p.add_argument("--steps", type=int, default=3, help="traced train steps (after 2 warm-up)")
    p.add_argument("--top", type=int, default=25, help="ops listed individually")
    p.add_argument("--out", default="", help="output directory (default bench/profile_<model>)")
    p.add_argument("--xla_flags", default="", help="extra XLA_FLAGS for the profiled run")
    p.add_argument("--preset", default="paper", help="preset of configs/vae.py, configs/ldm.py")
    p.add_argument("--smoke", action="store_true", help="bench/run.py's tiny sizes (tests)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        p.error("--steps and --top must be >= 1")
    args.out = args.out or str(BENCH / f"profile_{args.model}")
    return args


def hlo_index(text: str) -> dict[str, dict[str, str]]:
    """Maps HLO instruction name -> {shape, source op, library op kind} from HLO text."""
    comps: dict[str, str] = {}
    for m in re.finditer(r"^%([\w.\-]+) \(.*?^\}", text, re.S | re.M):
        comps[m.group(1)] = m.group(0)
    index: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\([^\n]*", text, re.M):
        name, shape, line = m.group(1), m.group(2), m.group(0)
        src = re.search(r'op_name="([^"]*)"', line)
        kind = m.group(3)
        called = re.search(r"calls=%([\w.\-]+)", line)
        if called and called.group(1) in comps:
            root = re.search(r"ROOT %\S+ = \S+ ([\w\-]+)\(", comps[called.group(1)])
            kind = f"{m.group(3)}:{root.group(1)}" if root else kind
        index.setdefault(
            name,
            {
                "shape": shape,
                "kind": kind,
                "source": src.group(1).replace("jit(train_step)/", "") if src else "",
            },
        )
    return index


def category(name: str, kind: str) -> str:
    """Coarse op category: library matmul/conv by root op, else the fusion's name stem."""
    stem = re.sub(r"\.\d+$", "", name)
    if stem.startswith(_LIBRARY):
        root = kind.split(":")[-1]
        if root in ("convolution", "dot"):
            return f"library {root}"
        return f"library {root} ({stem})"
    return stem


def summarize(events: list[dict[str, Any]], index: dict[str, dict[str, str]], steps: int,
              wall_s: float, top: int) -> dict[str, Any]:  # fmt: skip
    """Per-step op times by category and the top ops, from trace events.

    Only events named like an HLO instruction of the step count: host-side events (Python
    frames, the executor, argument handling, thread-pool waits) and control-flow containers
    are left out.
    """
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        op = index.get(e.get("name", ""))
        if e.get("ph") == "X" and op is not None and op["kind"] not in _CONTAINERS:
            per_op[e["name"]] += e.get("dur", 0) / 1e3 / steps  # ms per step
    cats: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter[str] = collections.Counter()
    for name, ms in per_op.items():
        c = category(name, index[name]["kind"])
        cats[c] += ms
        counts[c] += 1
    total = sum(per_op.values())
    return {
        "wall_ms_per_step": 1e3 * wall_s / steps,
        "op_ms_per_step": total,
        "categories": [
            {"category": c, "ms": ms, "percent": 100 * ms / total, "ops": counts[c]}
            for c, ms in sorted(cats.items(), key=lambda kv: -kv[1])
        ],
        "top_ops": [
            {"op": n, "ms": ms, **index[n]}
            for n, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
        ],
    }


def render(res: dict[str, Any]) -> str:
    """Markdown tables of :func:`summarize`'s result."""
    lines = [
        f"# Profile of the {res['model']} train step ({res['meta']})",
        "",
        f"Step wall time {res['wall_ms_per_step']:.1f} ms (traced); sum of op times "
        f"{res['op_ms_per_step']:.1f} ms per step.",
        "",
        "| category | ms / step | % of op time | ops |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['category']} | {c['ms']:.1f} | {c['percent']:.1f} | {c['ops']} |"
        for c in res["categories"][:20]
    ]
    lines += ["", "| op | ms / step | kind | shape | source |", "|---|---|---|---|---|"]
    lines += [
        f"| {o['op']} | {o['ms']:.1f} | {o.get('kind', '')} | `{o.get('shape', '')}` | "
        f"{o.get('source', '')[:90]} |"
        for o in res["top_ops"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Profiles the chosen train step; returns a process exit code."""
    args = parse_args(argv)
    out = Path(args.out)
    # Clear only what this tool writes: --out may be a directory holding other files.
    for sub in ("hlo", "trace"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "hlo").mkdir(parents=True)
    # XLA reads its flags when the backend starts: set them before JAX is imported.
    os.environ["XLA_FLAGS"] = " ".join(
        f
        for f in (
            os.environ.get("XLA_FLAGS", ""),
            args.xla_flags,
            f"--xla_dump_to={out / 'hlo'} --xla_dump_hlo_as_text",
            "--xla_dump_hlo_module_re=.*train_step.*",
        )
        if f
    )
    import run as bench_run

    bargs = bench_run.parse_args(
        ["--no_torch", "--preset", args.preset, "--out", str(out / "unused.json"),
         "--markdown", str(out / "unused.md")] + (["--smoke"] if args.smoke else [])
    )  # fmt: skip
    b = bench_run.Bench(bargs, None, "skipped: profile")
    jax = b.jax
    if args.model == "unet":
        step, _ = b.jax_unet_stepper("float32")
    else:
        captured: dict[str, Any] = {}
        b.time_train = lambda name, fns, sec: captured.update(fns)  # build, do not time
        b.run_vae()
        step = captured["jax"]
    step()
    step()  # warm-up: compiled, buffers allocated
    trace_dir = out / "trace"
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = time.perf_counter() - t0
    traces = sorted(trace_dir.rglob("*.trace.json.gz"))
    hlos = sorted((out / "hlo").glob("*train_step*after_optimizations.txt"))
    if not traces or not hlos:
        print(f"profile: no trace ({traces}) or HLO dump ({hlos}) under {out}", file=sys.stderr)
        return 1
    with gzip.open(traces[-1]) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    res = summarize(events, hlo_index(hlos[-1].read_text()), args.steps, wall, args.top)
    res["model"] = args.model
    res["meta"] = (
        f"batch {b.batch}, float32, jax {jax.__version__}, "
        f"XLA_FLAGS extra: '{args.xla_flags}', {args.steps} traced steps"
    )
    (out / "profile.json").write_text(json.dumps(res, indent=1) + "\n")
    md = render(res)
    (out / "profile.md").write_text(md)
    print(md)
    print(f"wrote {out / 'profile.md'}, {out / 'profile.json'}, trace/ and hlo/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
