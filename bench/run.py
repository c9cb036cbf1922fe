"""One-command performance benchmark: JAX vs PyTorch on this machine, measured in one run.

``python bench/run.py`` measures, in one process and on the same machine:

- ``vae`` / ``unet``: training images/s at the default configs (``configs/vae.py``,
  ``configs/ldm.py``; batch 16, float32) of the engine's real ``train_step``
  (``jax_mri_ldm.engine.loop.train_step``: the stage's training loss, ``make_optimizer``,
  EMA) next to the same network in PyTorch eager and ``torch.compile`` (when it works here;
  otherwise the reason is recorded). The torch step mirrors the JAX one (same loss, Adam
  settings, gradient clipping and EMA); the only piece it leaves out is the VAE's on-device
  augmentation (flip, rotation, contrast), which only the JAX step pays for. Parameter counts
  are asserted equal and the forward passes are compared after copying the weights. The
  ``unet`` part also times a forward-only call (batch 16) in both frameworks.
- ``sampler``: the compiled DDPM sampler (one ``lax.scan``, classifier-free guidance, i.e.
  ``2B`` rows per network call) per batch, next to ``S`` x one guided forward call, and their
  ratio. ``--sampler_steps S`` < 1000 times an ``S``-step scan (the same DDPM step on a cosine
  schedule with ``T = S``) and scales it to 1000 steps; the output says so.
- ``peak``: the machine's matmul peak (float32 and bfloat16 GFLOP/s, best of several n x n
  matmuls) in JAX and PyTorch. With it, each train step's FLOPs from XLA's cost analysis give
  the achieved GFLOP/s and the fraction of the fp32 peak.
- ``bf16``: UNet train images/s with ``dtype=bfloat16`` (parameters stay float32) next to
  float32, and the training loss over ``--bf16_loss_steps`` steps on fixed synthetic data from
  the same initial parameters and seed, for both dtypes, with their difference.

For every jitted function it records lower and compile seconds, XLA's FLOP count and
``memory_analysis()`` (argument/temp/output bytes); the process max RSS is recorded after each
part. Timed blocks of JAX and PyTorch alternate so that load from other processes hits both
alike; numbers are medians with min-max over the repeats, and every
JAX call is synchronised with ``block_until_ready``. JAX's persistent compilation cache is
switched off so compile times are real.

Results: a table on stdout, JSON (``--out``, default ``bench/results.json``) and the generated
block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` of ``--markdown`` (default
``docs/performance.md``); text outside the markers is kept. ``--smoke`` runs tiny sizes in
seconds and writes to a temporary directory unless ``--out``/``--markdown`` are given.

Usage::

  python bench/run.py                        # everything: tens of minutes on 2 CPU cores
  python bench/run.py --only unet,peak       # rerun parts
  python bench/run.py --smoke                # tiny sizes, seconds
  taskset -c 0 python bench/run.py --threads 1 \\
      --xla_flags="--xla_cpu_experimental_xnn_fusion_type=dot --xla_cpu_multi_thread_eigen=false"
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

PARTS: tuple[str, ...] = ("vae", "unet", "sampler", "peak", "bf16")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
MiB = 1024.0**2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--smoke`` shrinks every size)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)",
    )
    p.add_argument("--preset", default="paper", help="preset of configs/vae.py and configs/ldm.py")
    p.add_argument(
        "--batch",
        type=int,
        default=0,
        help="train/forward batch (default: the configs' train.batch_size, 16)",
    )
    p.add_argument("--steps", type=int, default=2, help="train steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per function")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling")
    p.add_argument("--forward_calls", type=int, default=5, help="forward calls per timed block")
    p.add_argument(
        "--sampler_steps",
        type=int,
        default=100,
        help="DDPM steps actually run per sampler call (scaled to 1000 if fewer)",
    )
    p.add_argument("--sampler_repeats", type=int, default=2, help="timed sampler calls")
    p.add_argument(
        "--sampler_calls",
        type=int,
        default=10,
        help="single guided forward calls per timed block (next to each scan)",
    )
    p.add_argument("--guidance_scale", type=float, default=3.0, help="CFG scale of the sampler")
    p.add_argument(
        "--bf16_loss_steps",
        type=int,
        default=30,
        help="train steps of the fp32-vs-bf16 loss comparison",
    )
    p.add_argument("--matmul_size", type=int, default=2048, help="n of the n x n peak matmul")
    p.add_argument("--matmul_repeats", type=int, default=7, help="timed matmuls per framework")
    p.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default 2; smoke: 1)"
    )
    p.add_argument(
        "--torch_compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="time torch.compile too (auto: on, except with --smoke)",
    )
    p.add_argument("--no_torch", action="store_true", help="time JAX only")
    p.add_argument(
        "--xla_flags",
        default="",
        help="XLA_FLAGS added for the JAX side (default: XLA's defaults, what train.py runs)",
    )
    p.add_argument(
        "--jemalloc",
        default="",
        help="path of libjemalloc.so.2: re-run with it preloaded (both frameworks)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and init")
    p.add_argument("--out", default="", help="JSON results (default bench/results.json)")
    p.add_argument(
        "--markdown",
        default="",
        help="markdown file whose bench block is (re)written (default docs/performance.md)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, one repeat; writes to a temp dir unless --out/--markdown",
    )
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.parts if s not in PARTS]
    if bad or not args.parts:
        p.error(f"--only={args.only!r}: unknown part(s) {bad}; choose from {','.join(PARTS)}")
    for name in (
        "steps",
        "repeats",
        "forward_calls",
        "sampler_steps",
        "sampler_repeats",
        "sampler_calls",
        "bf16_loss_steps",
        "matmul_size",
        "matmul_repeats",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.smoke:
        # One torch thread: on a loaded 2-core box two OpenMP threads spin at every barrier of
        # the tiny ops and a smoke step takes seconds instead of milliseconds.
        args.threads = args.threads or 1
        args.preset = "tiny"
        args.steps, args.repeats, args.warmup, args.forward_calls = 1, 1, 1, 1
        args.sampler_steps, args.sampler_repeats, args.sampler_calls = 10, 1, 2
        args.bf16_loss_steps, args.matmul_size, args.matmul_repeats = 3, 256, 2
        args.batch = args.batch or 4
        for given, default in (
            (args.out, BENCH / "results.json"),
            (args.markdown, REPO / "docs" / "performance.md"),
        ):
            if given and Path(given).resolve() == default.resolve():
                p.error(f"--smoke must not overwrite {default}; give another path")
        if not args.out or not args.markdown:
            tmp = Path(tempfile.mkdtemp(prefix="jax_mri_ldm_bench_smoke_"))
            args.out = args.out or str(tmp / "results.json")
            args.markdown = args.markdown or str(tmp / "performance.md")
    args.out = args.out or str(BENCH / "results.json")
    args.markdown = args.markdown or str(REPO / "docs" / "performance.md")
    args.threads = args.threads or 2
    if args.torch_compile == "auto":
        args.torch_compile = "off" if args.smoke else "on"
    return args


# ----------------------------------------------------------------------------- helpers


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the raw values of a list of measurements."""
    v = [float(x) for x in values]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "values": v}


def ratio_stats(num: Sequence[float], den: Sequence[float]) -> dict[str, Any]:
    """Per-repeat ratios ``num[i] / den[i]`` (robust to slow load drifts), summarised."""
    return summarize([a / b for a, b in zip(num, den, strict=True)])


def cost_flops(cost: Any) -> float | None:
    """The ``'flops'`` entry of an XLA cost analysis (a dict, or a list of dicts per module).

    Args:
      cost: what ``Lowered.cost_analysis()`` / ``Compiled.cost_analysis()`` returned.

    Returns:
      The FLOP count, or None when XLA gives none (or a non-positive one).
    """
    if cost is None:
        return None
    if isinstance(cost, dict):
        cost = [cost]
    total = sum(float(c.get("flops", 0.0)) for c in cost if c)
    return total if total > 0 and math.isfinite(total) else None


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of one call of ``fn(*args)`` counted by XLA's cost analysis of the compiled program.

    Args:
      fn: a jittable function (or an already ``jax.jit``-ed one).
      *args: example arguments (arrays or shape structs).

    Returns:
      The FLOP count (e.g. ``2 * M * N * K`` for an (M, K) x (K, N) matmul).

    Raises:
      ValueError: XLA reported no FLOP count for this program.
    """
    import jax

    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    flops = cost_flops(jitted.lower(*args).compile().cost_analysis())
    if flops is None:
        raise ValueError(f"XLA's cost analysis has no FLOP count for {fn}")
    return flops


def aot_compile(jitted: Any, *args: Any, flops: bool = True) -> tuple[Any, dict[str, Any]]:
    """Lowers and compiles ``jitted`` for ``args``, timing both stages.

    Args:
      jitted: a ``jax.jit``-ed function.
      *args: its arguments.
      flops: record XLA's FLOP count (off for scans: XLA counts a loop body once).

    Returns:
      (compiled executable, record with ``lower_s``, ``compile_s``, ``flops`` and the
      ``memory_analysis()`` byte counts).
    """
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    info: dict[str, Any] = {"lower_s": t1 - t0, "compile_s": t2 - t1}
    if flops:
        try:
            info["flops"] = cost_flops(compiled.cost_analysis())
        except Exception as e:  # the backend may not implement it
            info["flops"] = None
            info["flops_error"] = f"{type(e).__name__}: {e}"
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        mem = None
    if mem is not None:
        info["memory_bytes"] = {
            k: int(getattr(mem, k + "_size_in_bytes"))
            for k in ("argument", "output", "temp", "alias", "generated_code")
            if hasattr(mem, k + "_size_in_bytes")
        }
    return compiled, info


def interleave(
    fns: dict[str, Callable[[], None]], calls: int | dict[str, int], repeats: int
) -> dict[str, list[float]]:
    """Times ``repeats`` blocks of each synchronous fn, alternating the order every repeat.

    Args:
      fns: name -> function doing one synchronous call.
      calls: calls per block (one number, or per name).
      repeats: blocks per fn.

    Returns:
      name -> seconds per call, one value per block.
    """
    n = calls if isinstance(calls, dict) else dict.fromkeys(fns, calls)
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))  # no fixed first mover
        for name in order:
            t0 = time.perf_counter()
            for _ in range(n[name]):
                fns[name]()
            out[name].append((time.perf_counter() - t0) / n[name])
    return out


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ms(s: dict[str, Any], scale: float = 1e3, digits: int = 1) -> str:
    """``median (min–max)`` of a `summarize` dict, times ``scale``."""
    med, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def _g(s: dict[str, Any]) -> str:
    """``median (min–max)`` of a `summarize` dict with 4 significant digits."""
    return f"{s['median']:.4g} ({s['min']:.4g}–{s['max']:.4g})"


def _num(x: Any, digits: int = 2) -> str:
    if isinstance(x, dict):
        return _ms(x, 1.0, digits)
    if isinstance(x, int | float):
        return f"{x:.{digits}f}"
    return str(x)


# ----------------------------------------------------------------------------- the benchmark


class Bench:
    """State shared by the parts: args, configs, torch (or why it is absent), results."""

    def __init__(self, args: argparse.Namespace, torch: Any, torch_status: str) -> None:
        import jax
        import numpy as np

        self.args, self.torch, self.torch_status = args, torch, torch_status
        from jax_mri_ldm.config_loader import load_config

        self.jax, self.np = jax, np
        self.vae_cfg = load_config("vae", args.preset)
        self.ldm_cfg = load_config("ldm", args.preset)
        if args.smoke:
            # (8, 16) widths on a 4x4 latent (32 px / 8): compiles and runs in seconds.
            self.vae_cfg.data.image_size = 32
            self.ldm_cfg.model.channels = (8, 16)
            self.ldm_cfg.model.norm_groups = 8
            self.ldm_cfg.model.num_res_blocks = 1
            self.ldm_cfg.model.num_heads = 2
        self.batch = args.batch or int(self.vae_cfg.train.batch_size)
        self.results: dict[str, Any] = {}
        self.compiles: dict[str, dict[str, Any]] = {}
        self._unet: dict[str, Any] | None = None
        self._unet_steps: dict[str, Any] = {}

    # ------------------------------------------------------------------ torch helpers

    def torch_trainer(
        self, model: Any, optim: Any, ema_decay: float, ema_warmup: bool, loss: Callable
    ) -> Callable[[], None]:
        """One synchronous torch train step: loss, backward, clip, Adam, EMA (as the engine)."""
        torch = self.torch
        opt = torch.optim.Adam(
            model.parameters(),
            lr=float(optim.learning_rate),
            betas=(float(optim.b1), float(optim.b2)),
            eps=float(optim.eps),
        )
        params = [p for p in model.parameters() if p.requires_grad]
        ema = [p.detach().clone() for p in params]
        clip = float(optim.grad_clip_norm or 0.0)
        step = [0]

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            loss(model).backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            s = step[0]
            d = min(ema_decay, (1.0 + s) / (10.0 + s)) if ema_warmup else ema_decay
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1.0 - d)
            step[0] += 1

        return train_step

    def add_torch_steps(
        self, fns: dict[str, Callable[[], None]], model: Any, make_step: Callable, section: dict
    ) -> None:
        """Adds the eager (and, if asked and working, torch.compile) train steps to ``fns``."""
        fns["torch_eager"] = make_step(model)
        if self.args.torch_compile == "off":
            why = "--smoke" if self.args.smoke else "--torch_compile off"
            section["torch_compile"] = f"skipped: {why}"
            return
        cmodel = self.torch.compile(copy.deepcopy(model))
        step = make_step(cmodel)
        try:
            t0 = time.perf_counter()
            step()  # compiles forward and backward
            first = time.perf_counter() - t0
            for _ in range(self.args.warmup + 1):  # a recompile can happen on the 2nd call
                step()
        except Exception as e:  # any failure: not available here
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
            section["torch_compile"] = f"unavailable: {msg[:300]}"
            print(f"  torch.compile unavailable: {msg[:300]}")
            return
        section["torch_compile"] = {"first_call_s": first}
        print(f"  torch.compile: first call (compile + one step) {first:.1f} s")
        fns["torch_compile"] = step

    def time_train(self, name: str, fns: dict[str, Callable[[], None]], section: dict) -> None:
        """Warms up, times interleaved blocks, stores img/s and jax/torch ratios in ``section``."""
        a = self.args
        for key, f in fns.items():
            if key != "torch_compile":  # already warmed up (and compiled) above
                for _ in range(a.warmup):
                    f()
        secs = interleave(fns, a.steps, a.repeats)
        thr = {k: [self.batch / s for s in v] for k, v in secs.items()}
        section["images_per_s"] = {k: summarize(v) for k, v in thr.items()}
        section["ratios"] = {
            f"jax/{k}": ratio_stats(thr["jax"], thr[k]) for k in thr if k.startswith("torch")
        }
        per = ", ".join(f"{k} {_ms(s, 1, 2)}" for k, s in section["images_per_s"].items())
        print(f"{name}: img/s {per}")
        for k, s in section["ratios"].items():
            print(f"  {k} {_ms(s, 1, 2)}")

    def compile_record(self, name: str, info: dict[str, Any]) -> None:
        self.compiles[name] = info
        flops = info.get("flops")
        print(
            f"  compiled {name}: lower {info['lower_s']:.2f} s, compile {info['compile_s']:.2f} s"
            + (f", {flops / 1e9:.2f} GFLOP/call" if flops else "")
        )

    # ------------------------------------------------------------------ VAE

    def run_vae(self) -> None:
        """Engine train step of the VAE (configs/vae.py) vs torch eager / compile."""
        import jax.numpy as jnp

        from jax_mri_ldm.engine import loop
        from jax_mri_ldm.engine.state import TrainState, make_optimizer
        from jax_mri_ldm.pipeline import build_vae
        from jax_mri_ldm.train_vae import make_loss_fn as make_vae_loss_fn

        jax, np, cfg, b = self.jax, self.np, self.vae_cfg, self.batch
        size = int(cfg.data.image_size)
        model = build_vae(cfg.model)
        rng = np.random.default_rng(self.args.seed)
        images = rng.uniform(0, 1, (b, size, size, 1)).astype(np.float32)  # (B, H, W, 1)
        labels = np.arange(b, dtype=np.int32) % 2
        key = jax.random.PRNGKey(self.args.seed)
        params = jax.jit(
            lambda r: model.init({"params": r, "latent": r}, jnp.zeros((1, size, size, 1)))[
                "params"
            ]
        )(key)
        n_params = int(sum(p.size for p in jax.tree.leaves(params)))
        loss_fn = make_vae_loss_fn(model, cfg)  # the training loss itself

        tx = make_optimizer(cfg.optim, 1000)
        step = jax.jit(
            functools.partial(
                loop.train_step,
                loss_fn=loss_fn,
                ema_decay=float(cfg.optim.ema_decay),
                ema_warmup=bool(cfg.optim.ema_warmup),
            ),
            donate_argnums=(0,),
        )
        holder = {"s": TrainState.create(jax.tree.map(jnp.copy, params), tx, key)}
        batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
        run_rng = jax.random.PRNGKey(self.args.seed + 1)
        compiled, info = aot_compile(step, holder["s"], batch, run_rng)
        self.compile_record("vae_train_step", info)

        def jax_step() -> None:
            holder["s"], m = compiled(holder["s"], batch, run_rng)
            jax.block_until_ready((holder["s"], m))

        sec: dict[str, Any] = {
            "config": {
                "preset": cfg.preset,
                "image_size": size,
                "features": list(cfg.model.features),
                "latent_channels": int(cfg.model.latent_channels),
                "dtype": cfg.model.dtype,
            },
            "batch": b,
            "params_jax": n_params,
            "jax_step": "engine.loop.train_step: augmentation + L1 + beta*KL, "
            "make_optimizer(config.optim), EMA",
        }
        fns: dict[str, Callable[[], None]] = {"jax": jax_step}
        if self.torch is not None:
            torch = self.torch
            import torch_mirror as tm

            tvae = tm.TorchVAE(
                features=tuple(cfg.model.features), latent_channels=int(cfg.model.latent_channels)
            )
            tm.load_flax_vae(tvae, params)
            sec["params_torch"] = tm.num_params(tvae)
            assert sec["params_torch"] == n_params, (sec["params_torch"], n_params)
            x = images * 2 - 1
            xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # (B, 1, H, W)
            with torch.no_grad():
                ref = tvae(xt[:2], sample_posterior=False)[0].permute(0, 2, 3, 1).numpy()
            recon = jax.jit(lambda p, v: model.apply({"params": p}, v, sample_posterior=False)[0])
            ours = np.asarray(recon(params, x[:2]))
            sec["forward_max_abs_diff"] = float(np.abs(ours - ref).max())
            beta = float(cfg.loss.beta)

            def vae_loss_t(m: Any) -> Any:
                x_hat, mean, logvar = m(xt)
                kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar)
                kl = kl.mean() if cfg.loss.kl_reduction == "mean" else kl.sum((1, 2, 3)).mean()
                return (x_hat - xt).abs().mean() + beta * kl

            def make(m: Any) -> Callable[[], None]:
                return self.torch_trainer(
                    m, cfg.optim, float(cfg.optim.ema_decay), bool(cfg.optim.ema_warmup), vae_loss_t
                )

            self.add_torch_steps(fns, tvae, make, sec)
        else:
            sec["torch"] = self.torch_status
        self.time_train(f"VAE ({n_params:,} params, batch {b})", fns, sec)
        sec["flops_per_step"] = info.get("flops")
        sec["max_rss_mib"] = max_rss_mib()
        self.results["vae"] = sec

    # ------------------------------------------------------------------ UNet

    def unet_ctx(self) -> dict[str, Any]:
        """The UNet of configs/ldm.py, its params and synthetic latents (built once)."""
        if self._unet is not None:
            return self._unet
        import jax.numpy as jnp

        from jax_mri_ldm import CLASS_NAMES, diffusion
        from jax_mri_ldm.pipeline import build_unet

        jax, np, cfg, b = self.jax, self.np, self.ldm_cfg, self.batch
        h = int(self.vae_cfg.data.image_size) // 8
        latent_shape = (h, h, int(self.vae_cfg.model.latent_channels))  # (h, w, c)
        num_classes = len(CLASS_NAMES)
        unet = build_unet(cfg.model, num_classes)
        key = jax.random.PRNGKey(self.args.seed)
        params = jax.jit(
            lambda r: unet.init(
                {"params": r, "dropout": r},
                jnp.zeros((1, *latent_shape)),
                jnp.zeros((1,), jnp.int32),
                jnp.zeros((1,), jnp.int32),
            )["params"]
        )(key)
        rng = np.random.default_rng(self.args.seed)
        self._unet = {
            "unet": unet,
            "params": params,
            "n_params": int(sum(p.size for p in jax.tree.leaves(params))),
            "latent_shape": latent_shape,
            "num_classes": num_classes,
            "schedule": diffusion.make_schedule(
                cfg.diffusion.schedule, int(cfg.diffusion.num_timesteps)
            ),
            # Posterior mean/log-variance of the original and mirrored view, as cached by
            # train_ldm: (B, 2, h, w, c); unit-scale so the normalisation is the identity.
            "mean": rng.standard_normal((b, 2, *latent_shape)).astype(np.float32),
            "logvar": rng.uniform(-6, -2, (b, 2, *latent_shape)).astype(np.float32),
            "labels": (np.arange(b) % num_classes).astype(np.int32),
        }
        return self._unet

    def unet_step(self, dtype: str) -> tuple[Any, Any]:
        """(compiled engine train step, fresh state) of the UNet at compute ``dtype``."""
        import jax.numpy as jnp

        from jax_mri_ldm.engine import loop
        from jax_mri_ldm.engine.state import TrainState, make_optimizer
        from jax_mri_ldm.pipeline import build_unet
        from jax_mri_ldm.train_ldm import make_loss_fn as make_ldm_loss_fn

        jax, cfg, c = self.jax, self.ldm_cfg, self.unet_ctx()
        key = jax.random.PRNGKey(self.args.seed + 2)
        # One optimiser object for all states: it is static pytree metadata of TrainState, so a
        # compiled step only accepts states built with this very object.
        if "tx" not in c:
            c["tx"] = make_optimizer(cfg.optim, 1000)
        state = TrainState.create(jax.tree.map(jnp.copy, c["params"]), c["tx"], key)
        if dtype in self._unet_steps:
            return self._unet_steps[dtype], state
        mcfg = copy.deepcopy(cfg.model)
        mcfg.dtype = dtype
        unet = build_unet(mcfg, c["num_classes"])
        schedule, null = c["schedule"], c["num_classes"]

        # The training loss itself, with the identity normalisation (synthetic unit latents).
        loss_fn = make_ldm_loss_fn(unet, schedule, cfg, null)

        step = jax.jit(
            functools.partial(
                loop.train_step,
                loss_fn=loss_fn,
                ema_decay=float(cfg.optim.ema_decay),
                ema_warmup=bool(cfg.optim.ema_warmup),
            ),
            donate_argnums=(0,),
        )
        compiled, info = aot_compile(step, state, self.unet_batch(), self.unet_rng())
        self.compile_record(f"unet_train_step_{dtype}", info)
        self._unet_steps[dtype] = compiled
        return compiled, state

    def unet_batch(self) -> dict[str, Any]:
        import jax.numpy as jnp

        c = self.unet_ctx()
        return {k: jnp.asarray(c[k]) for k in ("mean", "logvar")} | {
            "label": jnp.asarray(c["labels"])
        }

    def unet_rng(self) -> Any:
        return self.jax.random.PRNGKey(self.args.seed + 3)

    def jax_unet_stepper(self, dtype: str) -> tuple[Callable[[], None], list[float]]:
        """A synchronous train-step closure over its own state, and the list of its losses."""
        compiled, state = self.unet_step(dtype)
        holder, losses = {"s": state}, []
        batch, r = self.unet_batch(), self.unet_rng()

        def f() -> None:
            holder["s"], m = compiled(holder["s"], batch, r)
            self.jax.block_until_ready((holder["s"], m))
            losses.append(float(m["loss"]))

        return f, losses

    def run_unet(self) -> None:
        """Engine train step and forward latency of the UNet (configs/ldm.py) vs torch."""
        import jax.numpy as jnp

        from jax_mri_ldm.pipeline import make_apply_fn

        jax, np, cfg, b, a = self.jax, self.np, self.ldm_cfg, self.batch, self.args
        c = self.unet_ctx()
        T = int(cfg.diffusion.num_timesteps)
        jax_step, _ = self.jax_unet_stepper("float32")
        sec: dict[str, Any] = {
            "config": {
                "preset": cfg.preset,
                "channels": list(cfg.model.channels),
                "num_res_blocks": int(cfg.model.num_res_blocks),
                "attn_resolutions": list(cfg.model.attn_resolutions),
                "latent_shape": list(c["latent_shape"]),
                "dtype": "float32",
            },
            "batch": b,
            "params_jax": c["n_params"],
            "jax_step": "engine.loop.train_step: posterior sample + random flip view + "
            "eps-MSE with CFG label drop, make_optimizer(config.optim) (clipping), EMA",
        }
        fns: dict[str, Callable[[], None]] = {"jax": jax_step}
        apply_fn = make_apply_fn(c["unet"])
        fwd = jax.jit(apply_fn)
        rng = np.random.default_rng(a.seed + 1)
        x_np = rng.standard_normal((b, *c["latent_shape"])).astype(np.float32)  # (B, h, w, c)
        t_np = rng.integers(0, T, b).astype(np.int32)
        y_np = c["labels"]
        xj, tj, yj = jnp.asarray(x_np), jnp.asarray(t_np), jnp.asarray(y_np)
        fwd_c, fwd_info = aot_compile(fwd, c["params"], xj, tj, yj)
        self.compile_record("unet_forward", fwd_info)

        def jax_fwd() -> None:
            fwd_c(c["params"], xj, tj, yj).block_until_ready()

        fwd_fns: dict[str, Callable[[], None]] = {"jax": jax_fwd}
        if self.torch is not None:
            torch = self.torch
            import torch_mirror as tm

            m = cfg.model
            kw = dict(
                in_channels=c["latent_shape"][-1],
                channels=tuple(m.channels),
                num_res_blocks=int(m.num_res_blocks),
                attn_resolutions=tuple(m.attn_resolutions),
                num_heads=int(m.num_heads),
                num_classes=c["num_classes"],
                dropout=float(m.dropout),
                norm_groups=int(m.norm_groups),
                resolution=c["latent_shape"][0],
            )
            tunet = tm.TorchUNet(**kw)
            sec["params_torch"] = tm.num_params(tunet)
            assert sec["params_torch"] == c["n_params"], (sec["params_torch"], c["n_params"])
            # Check with a non-zero output conv (ours is zero-initialised) so the comparison
            # covers the whole network; the compiled forward takes params as an argument.
            cp = jax.tree.map(jnp.copy, c["params"])
            k = cp["conv_out"]["kernel"]
            cp["conv_out"]["kernel"] = jax.random.normal(jax.random.PRNGKey(5), k.shape) * (
                1.0 / np.sqrt(np.prod(k.shape[:-1]))
            )
            tm.load_flax_unet(tunet, cp)
            with torch.no_grad():
                ref = tunet(
                    torch.from_numpy(x_np).permute(0, 3, 1, 2),
                    torch.from_numpy(t_np).long(),
                    torch.from_numpy(y_np).long(),
                )
            ours = np.asarray(fwd_c(cp, xj, tj, yj))
            sec["forward_max_abs_diff"] = float(
                np.abs(ours - ref.permute(0, 2, 3, 1).numpy()).max()
            )
            tm.load_flax_unet(tunet, c["params"])
            mean_t = torch.from_numpy(c["mean"]).permute(0, 1, 4, 2, 3).contiguous()
            logvar_t = torch.from_numpy(c["logvar"]).permute(0, 1, 4, 2, 3).contiguous()
            y_t = torch.from_numpy(c["labels"]).long()
            sched = c["schedule"]
            sa = torch.tensor(np.asarray(sched.sqrt_alphas_cumprod, np.float32))  # (T,)
            s1a = torch.tensor(np.asarray(sched.sqrt_one_minus_alphas_cumprod, np.float32))
            p_unc, null = float(cfg.diffusion.p_uncond), c["num_classes"]
            ar = torch.arange(b)

            def unet_loss_t(mod: Any) -> Any:  # same maths as the JAX loss above
                view = torch.randint(0, 2, (b,))
                mu, lv = mean_t[ar, view], logvar_t[ar, view]  # (B, C, h, w)
                z = mu + (0.5 * lv).exp() * torch.randn_like(mu)
                t = torch.randint(0, T, (b,))
                eps = torch.randn_like(z)
                x_t = sa[t][:, None, None, None] * z + s1a[t][:, None, None, None] * eps
                y = torch.where(torch.rand(b) < p_unc, torch.full_like(y_t, null), y_t)
                return ((mod(x_t, t, y) - eps) ** 2).mean()

            def make(mod: Any) -> Callable[[], None]:
                return self.torch_trainer(
                    mod,
                    cfg.optim,
                    float(cfg.optim.ema_decay),
                    bool(cfg.optim.ema_warmup),
                    unet_loss_t,
                )

            self.add_torch_steps(fns, tunet, make, sec)
            x_t = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous()
            t_t, y_tt = torch.from_numpy(t_np).long(), torch.from_numpy(y_np).long()
            tunet_eval = copy.deepcopy(tunet).eval()

            def torch_fwd() -> None:
                with torch.no_grad():
                    tunet_eval(x_t, t_t, y_tt)

            fwd_fns["torch_eager"] = torch_fwd
        else:
            sec["torch"] = self.torch_status
        self.time_train(f"UNet ({c['n_params']:,} params, batch {b})", fns, sec)
        sec["flops_per_step"] = self.compiles["unet_train_step_float32"].get("flops")
        for f in fwd_fns.values():
            for _ in range(a.warmup):
                f()
        fsec = interleave(fwd_fns, a.forward_calls, a.repeats)
        sec["forward_s"] = {k: summarize(v) for k, v in fsec.items()}
        sec["forward_flops"] = fwd_info.get("flops")
        if "torch_eager" in fsec:
            # Speed ratio (>1: JAX faster) = torch time / JAX time, per repeat.
            sec["forward_ratio"] = ratio_stats(fsec["torch_eager"], fsec["jax"])
        per = ", ".join(f"{k} {_ms(s)} ms" for k, s in sec["forward_s"].items())
        print(f"UNet forward (batch {b}): {per}")
        sec["max_rss_mib"] = max_rss_mib()
        self.results["unet"] = sec

    # ------------------------------------------------------------------ sampler

    def run_sampler(self) -> None:
        """Compiled guided DDPM scan vs S x one guided forward call."""
        import jax.numpy as jnp

        from jax_mri_ldm import diffusion, sampling
        from jax_mri_ldm.pipeline import SamplerSpec, make_apply_fn, make_latent_sampler

        jax, a, cfg, b = self.jax, self.args, self.ldm_cfg, self.batch
        c = self.unet_ctx()
        T = int(cfg.diffusion.num_timesteps)
        S = min(a.sampler_steps, T)
        schedule = c["schedule"] if S == T else diffusion.make_schedule(cfg.diffusion.schedule, S)
        apply_fn = make_apply_fn(c["unet"])
        w, null = float(a.guidance_scale), c["num_classes"]
        spec = SamplerSpec(sampler="ddpm", guidance_scale=w)
        sample = make_latent_sampler(apply_fn, schedule, c["latent_shape"], spec, null_label=null)
        labels = jnp.asarray(c["labels"])
        key = jax.random.PRNGKey(a.seed + 4)
        scan_c, scan_info = aot_compile(sample, c["params"], labels, key, flops=False)
        self.compile_record(f"ddpm_sampler_{S}_steps", scan_info)

        # One network call of the sampler: the same function its scan body calls per step.
        def guided(p, x, t, y):
            return sampling._guided_output(functools.partial(apply_fn, p), x, t, y, w, null)

        x = jax.random.normal(jax.random.PRNGKey(a.seed + 5), (b, *c["latent_shape"]))
        t = jnp.full((b,), T // 2, jnp.int32)
        call_c, call_info = aot_compile(jax.jit(guided), c["params"], x, t, labels)
        self.compile_record("guided_forward", call_info)
        fns = {
            "scan": lambda: scan_c(c["params"], labels, key).block_until_ready(),
            "call": lambda: call_c(c["params"], x, t, labels).block_until_ready(),
        }
        for f in fns.values():
            for _ in range(a.warmup):
                f()
        secs = interleave(fns, {"scan": 1, "call": a.sampler_calls}, a.sampler_repeats)
        per_call_x_s = [S * v for v in secs["call"]]
        scale = T / S
        sec = {
            "sampler": "ddpm",
            "num_timesteps": T,
            "measured_steps": S,
            "scaled_to_steps": T,
            "scale_factor": scale,
            "note": (
                f"measured a {S}-step DDPM scan (cosine schedule with T={S}, the same step "
                f"as T={T}) and scaled by {scale:g}"
            )
            if S < T
            else f"measured all {T} steps",
            "batch": b,
            "rows_per_call": 2 * b,
            "guidance_scale": w,
            "scan_s_measured": summarize(secs["scan"]),
            "guided_call_s": summarize(secs["call"]),
            "sampler_s_per_batch": summarize([scale * v for v in secs["scan"]]),
            "calls_s_per_batch": summarize([scale * v for v in per_call_x_s]),
            "scan_over_calls": ratio_stats(secs["scan"], per_call_x_s),
            "guided_call_flops": call_info.get("flops"),
            "max_rss_mib": max_rss_mib(),
        }
        print(
            f"sampler: {sec['note']}; per batch of {b}: scan {_g(sec['sampler_s_per_batch'])}"
            f" s vs {T} x call {_g(sec['calls_s_per_batch'])} s, ratio "
            f"{_ms(sec['scan_over_calls'], 1, 3)}"
        )
        self.results["sampler"] = sec

    # ------------------------------------------------------------------ peak

    def run_peak(self) -> None:
        """Best n x n matmul GFLOP/s in float32 and bfloat16, JAX and torch, interleaved."""
        import jax.numpy as jnp

        jax, a, n = self.jax, self.args, self.args.matmul_size
        flops = 2.0 * n**3
        sec: dict[str, Any] = {"n": n, "flops_per_matmul": flops}
        for dt in ("float32", "bfloat16"):
            k1, k2 = jax.random.split(jax.random.PRNGKey(a.seed + 6))
            x = jax.random.normal(k1, (n, n)).astype(dt)
            y = jax.random.normal(k2, (n, n)).astype(dt)
            mm, info = aot_compile(jax.jit(jnp.matmul), x, y)
            self.compile_record(f"matmul_{dt}_{n}", info)
            fns = {"jax": lambda mm=mm, x=x, y=y: mm(x, y).block_until_ready()}
            if self.torch is not None:
                tdt = getattr(self.torch, dt)
                tx_ = self.torch.randn(n, n).to(tdt)
                ty_ = self.torch.randn(n, n).to(tdt)
                fns["torch"] = lambda tx_=tx_, ty_=ty_: self.torch.mm(tx_, ty_)
            for f in fns.values():
                for _ in range(max(1, a.warmup)):
                    f()
            secs = interleave(fns, 1, a.matmul_repeats)
            sec[dt] = {
                k: {
                    "gflops_best": flops / min(v) / 1e9,
                    "gflops_median": flops / statistics.median(v) / 1e9,
                    "seconds": summarize(v),
                }
                for k, v in secs.items()
            }
            if self.torch is None:
                sec[dt]["torch"] = self.torch_status
            print(
                f"peak {dt} {n}^2: "
                + ", ".join(
                    f"{k} {v['gflops_best']:.1f} GFLOP/s"
                    for k, v in sec[dt].items()
                    if isinstance(v, dict)
                )
            )
        sec["max_rss_mib"] = max_rss_mib()
        self.results["peak"] = sec

    # ------------------------------------------------------------------ bf16

    def run_bf16(self) -> None:
        """UNet train img/s and loss after N steps in bfloat16 vs float32 compute."""
        a, b = self.args, self.batch
        curves: dict[str, list[float]] = {}
        steppers: dict[str, Callable[[], None]] = {}
        for dt in ("float32", "bfloat16"):
            f, losses = self.jax_unet_stepper(dt)  # same initial params, same rng stream
            for _ in range(a.bf16_loss_steps):
                f()
            curves[dt] = list(losses)
            steppers[dt] = f
        secs = interleave(steppers, a.steps, a.repeats)  # continues training both; warm already
        thr = {k: [b / s for s in v] for k, v in secs.items()}
        f32, b16 = curves["float32"], curves["bfloat16"]
        last = min(5, len(f32))
        sec = {
            "model": "unet",
            "batch": b,
            "images_per_s": {k: summarize(v) for k, v in thr.items()},
            "bf16_over_fp32_speed": ratio_stats(thr["bfloat16"], thr["float32"]),
            "loss_steps": a.bf16_loss_steps,
            "loss_first": {"float32": f32[0], "bfloat16": b16[0]},
            "loss_final": {"float32": f32[-1], "bfloat16": b16[-1]},
            "loss_final_abs_diff": abs(f32[-1] - b16[-1]),
            f"loss_mean_last_{last}": {
                "float32": statistics.fmean(f32[-last:]),
                "bfloat16": statistics.fmean(b16[-last:]),
            },
            "loss_curve_max_abs_diff": max(abs(x - y) for x, y in zip(f32, b16, strict=True)),
            "loss_curves": curves,
            "flops_per_step": {
                dt: self.compiles[f"unet_train_step_{dt}"].get("flops")
                for dt in ("float32", "bfloat16")
            },
            "max_rss_mib": max_rss_mib(),
        }
        print(
            f"bf16: img/s fp32 {_ms(sec['images_per_s']['float32'], 1, 2)}, bf16 "
            f"{_ms(sec['images_per_s']['bfloat16'], 1, 2)}; loss after {a.bf16_loss_steps} "
            f"steps fp32 {f32[-1]:.5f} bf16 {b16[-1]:.5f} (|diff| "
            f"{sec['loss_final_abs_diff']:.2e})"
        )
        self.results["bf16"] = sec

    # ------------------------------------------------------------------ utilisation


def utilisation(results: dict[str, Any]) -> dict[str, Any]:
    """Achieved GFLOP/s = FLOPs per call x calls/s, and its fraction of the matmul peaks.

    Args:
      results: the sections of a run (``vae``, ``unet``, ``sampler``, ``peak``, ``bf16``).

    Returns:
      program name -> GFLOP per call, achieved GFLOP/s and fractions of the JAX/torch peaks of
      the same dtype (when the ``peak`` section is there).
    """
    peak = results.get("peak")
    rows: dict[str, Any] = {}

    def add(name: str, flops: float | None, calls_per_s: float, peak_dt: str) -> None:
        if not flops:
            return
        row = {
            "gflop_per_call": flops / 1e9,
            "achieved_gflops": flops * calls_per_s / 1e9,
            "peak_dtype": peak_dt,
        }
        if peak:
            for fw in ("jax", "torch"):
                p = peak[peak_dt].get(fw)
                if isinstance(p, dict):
                    row[f"fraction_of_{fw}_{peak_dt}_peak"] = (
                        row["achieved_gflops"] / p["gflops_best"]
                    )
        rows[name] = row

    for net in ("vae", "unet"):
        sec = results.get(net)
        if not sec:
            continue
        for k, s in sec["images_per_s"].items():
            # Torch runs the same maths; XLA's count of our step is used for both.
            add(
                f"{net}_train_{k}",
                sec.get("flops_per_step"),
                s["median"] / sec["batch"],
                "float32",
            )
    u = results.get("unet")
    if u:
        for k, s in u["forward_s"].items():
            add(f"unet_forward_{k}", u.get("forward_flops"), 1.0 / s["median"], "float32")
    s = results.get("sampler")
    if s:
        add(
            "guided_forward_jax",
            s.get("guided_call_flops"),
            1.0 / s["guided_call_s"]["median"],
            "float32",
        )
    bf = results.get("bf16")
    if bf:
        for dt in ("float32", "bfloat16"):
            add(
                f"unet_train_jax_{dt}",
                bf["flops_per_step"][dt],
                bf["images_per_s"][dt]["median"] / bf["batch"],
                dt,
            )
    return rows


# ----------------------------------------------------------------------------- reporting


def _provenance(sec: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """A note for a section kept from an earlier run (see `merge_previous`)."""
    m = sec.get("measured", {})
    if not m or m.get("date") == meta["date"]:
        return []
    return [f"_From an earlier run: {m.get('date')}, `{m.get('command')}`._", ""]


def render_markdown(res: dict[str, Any]) -> str:
    """The generated block (tables of this run's measurements only)."""
    m = res["meta"]
    L = [
        BEGIN,
        "<!-- Generated by bench/run.py; edit text outside these markers only. -->",
        "",
        f"Measured {m['date']} with `{m['command']}`.",
        "",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} logical cores ({m['cpu_affinity']} usable); "
        f"load average {m['loadavg_start']} at start, {m['loadavg_end']} at end",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- XLA_FLAGS=`{m['xla_flags']}`; LD_PRELOAD=`{m['ld_preload']}`; torch threads "
        f"{m['torch_threads']}; torch: {m['torch_status']}",
        f"- timings: median (min–max) over {m['repeats']} interleaved repeats"
        + (" (smoke sizes)" if m["smoke"] else "")
        + f"; JAX persistent compilation cache: {m['jax_compilation_cache']}",
        "",
    ]
    for net, title in (("vae", "VAE"), ("unet", "UNet")):
        s = res.get(net)
        if not s:
            continue
        ips, rat = s["images_per_s"], s.get("ratios", {})
        L += [
            f"### {title} training, batch {s['batch']}, float32",
            "",
            *_provenance(s, res["meta"]),
            f"config: `{json.dumps(s['config'])}`; parameters JAX {s['params_jax']:,}"
            + (
                f", PyTorch {s['params_torch']:,} (equal); forward max |JAX − PyTorch| "
                f"{s['forward_max_abs_diff']:.2e}"
                if "params_torch" in s
                else ""
            ),
            "",
            f"JAX step: {s['jax_step']}.",
            "",
            "| implementation | images/s | JAX / this (speed) |",
            "|---|---|---|",
        ]
        for k, v in ips.items():
            r = rat.get(f"jax/{k}")
            L.append(f"| {k} | {_num(v)} | {_num(r) if r else '—'} |")
        if isinstance(s.get("torch_compile"), str):
            L.append(f"| torch_compile | {s['torch_compile']} | — |")
        if "torch" in s:
            L.append(f"| PyTorch | {s['torch']} | — |")
        if isinstance(s.get("torch_compile"), dict):
            L += [
                "",
                f"torch.compile first call (compile + one step): "
                f"{s['torch_compile']['first_call_s']:.1f} s.",
            ]
        if net == "unet":
            L += [
                "",
                f"Forward only (batch {s['batch']}), ms per call:",
                "",
                "| implementation | ms | JAX / this (speed) |",
                "|---|---|---|",
            ]
            for k, v in s["forward_s"].items():
                r = s.get("forward_ratio") if k != "jax" else None
                L.append(f"| {k} | {_ms(v)} | {_num(r) if r else '—'} |")
        L.append("")
    s = res.get("sampler")
    if s:
        L += [
            f"### Sampler: guided DDPM, batch {s['batch']} ({s['rows_per_call']} rows per "
            f"network call, w = {s['guidance_scale']})",
            "",
            *_provenance(s, res["meta"]),
            s["note"] + ".",
            "",
            "| quantity | seconds |",
            "|---|---|",
            f"| sampler scan, {s['measured_steps']} steps (measured) | "
            f"{_g(s['scan_s_measured'])} |",
            f"| one guided forward call | {_g(s['guided_call_s'])} |",
            f"| sampler per batch, {s['scaled_to_steps']} steps | {_g(s['sampler_s_per_batch'])} |",
            f"| {s['scaled_to_steps']} × one guided call | {_g(s['calls_s_per_batch'])} |",
            f"| ratio scan / calls | {_num(s['scan_over_calls'], 3)} |",
            "",
        ]
    p = res.get("peak")
    if p:
        L += [
            f"### Matmul peak ({p['n']}×{p['n']}, GFLOP/s, best / median)",
            "",
            *_provenance(p, res["meta"]),
            "| dtype | JAX | PyTorch |",
            "|---|---|---|",
        ]
        for dt in ("float32", "bfloat16"):
            cells = []
            for fw in ("jax", "torch"):
                v = p[dt].get(fw)
                cells.append(
                    f"{v['gflops_best']:.1f} / {v['gflops_median']:.1f}"
                    if isinstance(v, dict)
                    else str(v)
                )
            L.append(f"| {dt} | {cells[0]} | {cells[1]} |")
        L.append("")
    u = res.get("utilisation")
    if u:
        L += [
            "### FLOPs (XLA cost analysis of our programs) and fraction of peak",
            "",
            "Torch rows use XLA's count of the same JAX step (same maths).",
            "",
            "| program | GFLOP per call | achieved GFLOP/s | peak dtype | of JAX peak "
            "| of torch peak |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in u.items():
            fr = [v for k, v in r.items() if k.startswith("fraction_of_jax")]
            ft = [v for k, v in r.items() if k.startswith("fraction_of_torch")]
            L.append(
                f"| {name} | {r['gflop_per_call']:.3f} | {r['achieved_gflops']:.2f} | "
                f"{r['peak_dtype']} | {f'{100 * fr[0]:.1f} %' if fr else '—'} | "
                f"{f'{100 * ft[0]:.1f} %' if ft else '—'} |"
            )
        L.append("")
    bf = res.get("bf16")
    if bf:
        last = [k for k in bf if k.startswith("loss_mean_last_")][0]
        L += [
            f"### bfloat16 compute (UNet train step, batch {bf['batch']}; params float32)",
            "",
            *_provenance(bf, res["meta"]),
            "| quantity | float32 | bfloat16 |",
            "|---|---|---|",
            f"| images/s | {_num(bf['images_per_s']['float32'])} | "
            f"{_num(bf['images_per_s']['bfloat16'])} |",
            f"| loss at step 1 | {bf['loss_first']['float32']:.5f} | "
            f"{bf['loss_first']['bfloat16']:.5f} |",
            f"| loss at step {bf['loss_steps']} | {bf['loss_final']['float32']:.5f} | "
            f"{bf['loss_final']['bfloat16']:.5f} |",
            f"| {last.replace('_', ' ')} steps | {bf[last]['float32']:.5f} | "
            f"{bf[last]['bfloat16']:.5f} |",
            "",
            f"bf16/fp32 speed {_num(bf['bf16_over_fp32_speed'])}; |loss difference| at step "
            f"{bf['loss_steps']}: {bf['loss_final_abs_diff']:.2e} (max over the curve "
            f"{bf['loss_curve_max_abs_diff']:.2e}).",
            "",
        ]
    c = res.get("compile")
    if c:
        L += [
            "### Compile time and XLA memory",
            "",
            "| jitted function | lower s | compile s | arguments MiB | temp MiB | output MiB |",
            "|---|---|---|---|---|---|",
        ]
        for name, info in c.items():
            mb = info.get("memory_bytes", {})
            cell = [
                f"{mb[k] / MiB:.1f}" if k in mb else "—" for k in ("argument", "temp", "output")
            ]
            L.append(
                f"| {name} | {info['lower_s']:.2f} | {info['compile_s']:.2f} | "
                + " | ".join(cell)
                + " |"
            )
        L.append("")
        rss = [
            (k, v["max_rss_mib"])
            for k, v in res.items()
            if isinstance(v, dict) and "max_rss_mib" in v
        ]
        L.append(
            "Process max RSS (cumulative high-water mark) after each part: "
            + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss)
            + "."
        )
        L.append("")
    L.append(END)
    return "\n".join(L)


def write_markdown(path: str | Path, block: str) -> None:
    """Writes ``block`` into ``path``: replaces the marked block, else appends (or creates).

    Args:
      path: markdown file.
      block: text starting with `BEGIN` and ending with `END`.
    """
    path = Path(path)
    if path.exists():
        text = path.read_text()
        i, j = text.find(BEGIN), text.find(END)
        if i >= 0 and j > i:
            text = text[:i] + block + text[j + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = "# Performance\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def merge_previous(res: dict[str, Any], out: str | Path) -> list[str]:
    """Adds the sections of an earlier run in ``out`` that this run did not measure.

    So ``--only unet`` refreshes one part and the tables still show the others (each keeps its
    own ``measured`` date and command, shown in the markdown). Nothing is merged from a run on
    another CPU model, or between smoke and full runs.

    Args:
      res: this run's results (modified in place).
      out: path of the JSON results file.

    Returns:
      The names of the sections taken over.
    """
    path = Path(out)
    if not path.is_file():
        return []
    try:
        prev = json.loads(path.read_text())
        pm = prev["meta"]
    except (ValueError, KeyError, TypeError):
        return []
    m = res["meta"]
    if pm.get("cpu_model") != m["cpu_model"] or bool(pm.get("smoke")) != m["smoke"]:
        return []
    kept = []
    for part in PARTS:
        if part not in res and isinstance(prev.get(part), dict):
            res[part] = prev[part]
            res[part].setdefault("measured", {"date": pm.get("date"), "command": pm.get("command")})
            kept.append(part)
    if kept:
        res["compile"] = {**prev.get("compile", {}), **res["compile"]}
        m["kept_from_earlier_runs"] = {p: res[p]["measured"] for p in kept}
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the selected parts; returns a process exit code."""
    args = parse_args(argv)
    if args.jemalloc and args.jemalloc not in os.environ.get("LD_PRELOAD", ""):
        if not Path(args.jemalloc).is_file():
            raise ValueError(f"--jemalloc: {args.jemalloc} not found; apt-get install libjemalloc2")
        env = dict(
            os.environ,
            LD_PRELOAD=args.jemalloc,
            MALLOC_CONF="retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1",
        )
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    # XLA reads its flags once, when the backend starts: set them before importing JAX.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    loadavg_start = os.getloadavg()

    import jax

    # Real compile times: no persistent compilation cache, except in smoke runs (tests), where
    # compile times mean nothing and a cache named by JAX_COMPILATION_CACHE_DIR saves minutes.
    use_cache = bool(args.smoke and os.environ.get("JAX_COMPILATION_CACHE_DIR"))
    jax.config.update("jax_enable_compilation_cache", use_cache)
    sys.path.insert(0, str(REPO))
    import flax
    import jaxlib
    import numpy as np
    import optax

    torch, torch_status = None, "skipped: --no_torch"
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
            torch.manual_seed(args.seed)
            torch_status = f"torch {torch.__version__}"
        except ImportError:
            torch, torch_status = None, "torch not installed"
            print("torch not installed: PyTorch parts skipped (bench/requirements.txt)")

    versions = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else "not used",
    }
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, XLA_FLAGS="
        f"{os.environ['XLA_FLAGS']!r}; {torch_status}; parts {','.join(args.parts)}"
    )
    bench = Bench(args, torch, torch_status)
    t_start = time.perf_counter()
    part_wall_s = {}
    for part in PARTS:
        if part in args.parts:
            print(f"\n== {part}")
            t0 = time.perf_counter()
            getattr(bench, f"run_{part}")()
            part_wall_s[part] = time.perf_counter() - t0
            print(f"   ({part}: {part_wall_s[part]:.1f} s)")
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    command = "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv])
    for sec in bench.results.values():
        sec["measured"] = {"date": date, "command": command}
    res: dict[str, Any] = {
        "meta": {
            "date": date,
            "command": command,
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in loadavg_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "versions": versions,
            "jax_backend": jax.devices()[0].platform,
            "xla_flags": os.environ["XLA_FLAGS"],
            "ld_preload": os.environ.get("LD_PRELOAD", ""),
            "torch_threads": torch.get_num_threads() if torch is not None else "—",
            "torch_status": torch_status,
            "torch_compile": args.torch_compile,
            "jax_compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR")
            if use_cache
            else "off",
            "parts": args.parts,
            "smoke": bool(args.smoke),
            "repeats": args.repeats,
            "args": vars(args),
            "wall_s": time.perf_counter() - t_start,
            "part_wall_s": part_wall_s,
        },
        **bench.results,
    }
    res["compile"] = bench.compiles
    res["max_rss_mib"] = max_rss_mib()
    kept = merge_previous(res, args.out)
    if kept:
        print(f"kept sections {','.join(kept)} of the earlier run in {args.out}")
    util = utilisation(res)
    if util:
        res["utilisation"] = util
    order = ["meta", *PARTS, "utilisation", "compile", "max_rss_mib"]
    res = {k: res[k] for k in order if k in res}
    block = render_markdown(res)
    print("\n" + block)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, allow_nan=False) + "\n")
    write_markdown(args.markdown, block)
    print(f"\nwrote {args.out} and {args.markdown} ({res['meta']['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
