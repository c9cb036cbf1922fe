"""Train-step throughput of the JAX networks vs their PyTorch mirrors on this CPU.

For each network (VAE: L1 + 1e-3 * KL, Adam 1e-3; UNet: epsilon-MSE with random timesteps,
cosine schedule and random labels incl. the null class, Adam 2e-4) it

1. copies the flax parameters into the torch mirror and checks both compute the same
   function (max abs difference of the forward pass),
2. warms up (compilation for JAX),
3. times ``--repeats`` blocks of ``--steps`` train steps, *alternating* JAX and torch blocks
   so that load from other processes on the shared CPU hits both alike,
4. prints img/s (median, min-max) for both and the JAX/torch ratio (median of the per-repeat
   ratios, which is robust to slow drifts in load).

The JAX step is ``jax.jit``-ed with ``donate_argnums`` and timed to ``block_until_ready``;
torch runs eager with ``torch.set_num_threads(--threads)``. XLA flags must be set before JAX
starts, so this script adds ``--xla_flags`` to ``XLA_FLAGS`` before importing JAX.

Large XLA:CPU temporaries are mmap-ed and page-faulted afresh on every step with glibc malloc
(~20% of the VAE step); ``--jemalloc /usr/lib/x86_64-linux-gnu/libjemalloc.so.2`` re-runs
the script with jemalloc preloaded and page decay off, for both frameworks alike.

On a shared, loaded machine PyTorch's two OpenMP threads can collapse (measured: UNet 1.5
img/s with 2 threads vs 9.1 with 1 thread under the same load), which flatters JAX. For an
apples-to-apples number pin both to one core:
``taskset -c 0 python bench/compare.py --threads 1
--xla_flags="--xla_cpu_experimental_xnn_fusion_type=dot --xla_cpu_multi_thread_eigen=false"``.

Usage::

  python bench/compare.py                   # both networks, batch 16, fp32
  python bench/compare.py --model unet --unet_channels 32,64,128
  python bench/compare.py --smoke           # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# XLA's defaults, i.e. what train.py runs: in jaxlib 0.10.2 XLA:CPU already sends dots and
# 3x3 convs to YNNPACK. Measured on the 2-core dev box (UNet train step, quiet CPU, img/s):
# defaults 23.4-24.4; xnn_graph_fusion_mode=GREEDY 23.8, onednn_custom_call + GREEDY +
# prefer_vector_width=512 22.9: none faster beyond run-to-run noise; ynn_fusion_type=dot 10.5
# (it drops the conv fusions). See docs/performance.md. Pass --xla_flags to try others.
DEFAULT_XLA_FLAGS = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=["vae", "unet", "both"], default="both")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="train steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per framework")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per framework")
    p.add_argument("--image_size", type=int, default=256, help="VAE input size")
    p.add_argument("--latent_size", type=int, default=32, help="UNet input size")
    p.add_argument("--unet_channels", default="64,128,256")
    p.add_argument("--unet_res_blocks", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="JAX compute dtype (torch always runs float32)")  # fmt: skip
    p.add_argument("--xla_flags", default=DEFAULT_XLA_FLAGS,
                   help="XLA_FLAGS for the JAX side ('' for XLA's defaults)")  # fmt: skip
    p.add_argument("--jemalloc", default="",
                   help="path of libjemalloc.so.2: re-run this script with it preloaded "
                   "(both frameworks; removes ~20%% page-fault time on XLA:CPU)")  # fmt: skip
    p.add_argument("--no_torch", action="store_true", help="time JAX only")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.steps, args.repeats, args.warmup = 2, 1, 1, 1
        args.image_size, args.latent_size = 32, 8
        args.unet_channels, args.unet_res_blocks = "32,64", 1
    return args


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} img/s (min {min(values):.2f}, max {max(values):.2f})"


def interleaved(
    fns: dict[str, Callable[[], None]], steps: int, repeats: int, batch: int
) -> dict[str, list[float]]:
    """Times ``repeats`` blocks of ``steps`` calls of each fn, alternating between fns.

    Args:
      fns: name -> function running one synchronous train step.
      steps: steps per block.
      repeats: blocks per fn.
      batch: images per step.

    Returns:
      name -> list of img/s, one per block.
    """
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))  # no fixed first mover
        for name in order:
            t0 = time.perf_counter()
            for _ in range(steps):
                fns[name]()
            out[name].append(steps * batch / (time.perf_counter() - t0))
    return out


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison; returns a process exit code."""
    args = parse_args(argv)
    if args.jemalloc and args.jemalloc not in os.environ.get("LD_PRELOAD", ""):
        if not Path(args.jemalloc).is_file():
            raise ValueError(f"--jemalloc: {args.jemalloc} not found; apt-get install libjemalloc2")
        env = dict(os.environ, LD_PRELOAD=args.jemalloc,
                   MALLOC_CONF="retain:true,dirty_decay_ms:-1,muzzy_decay_ms:-1")  # fmt: skip
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jax_mri_ldm.models import VAE, UNet

    torch = None
    if not args.no_torch:
        import torch

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import torch_mirror as tm

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    b = args.batch
    rng = np.random.default_rng(0)
    print(f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, XLA_FLAGS="
          f"{os.environ['XLA_FLAGS']!r}, dtype {args.dtype}, batch {b}")  # fmt: skip
    if torch is not None:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    def report(name: str, n_params: int, res: dict[str, list[float]]) -> None:
        print(f"\n{name}: {n_params:,} parameters, {args.repeats} x {args.steps} steps")
        for k, v in res.items():
            print(f"  {k:6s} {_summary(v)}")
        if "torch" in res:
            ratios = [j / t for j, t in zip(res["jax"], res["torch"], strict=True)]
            print(f"  jax/torch ratio: median {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f})")  # fmt: skip

    # ------------------------------------------------------------------ VAE
    if args.model in ("vae", "both"):
        s = args.image_size
        x_np = rng.uniform(-1, 1, (b, s, s, 1)).astype(np.float32)
        vae = VAE(dtype=dtype)
        init_rngs = {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}
        params = jax.jit(vae.init)(init_rngs, x_np[:1])
        n_params = sum(p.size for p in jax.tree.leaves(params))
        tx = optax.adam(1e-3)

        def vae_loss(p, x, key):
            x_hat, mean, logvar = vae.apply(p, x, rngs={"latent": key})
            kl = -0.5 * jnp.sum(1 + logvar - mean**2 - jnp.exp(logvar), axis=(1, 2, 3))
            return jnp.mean(jnp.abs(x_hat - x)) + 1e-3 * jnp.mean(kl)

        @jax.jit(donate_argnums=(0, 1))
        def vae_step(p, opt, x, key):
            loss, g = jax.value_and_grad(vae_loss)(p, x, key)
            upd, opt = tx.update(g, opt, p)
            return optax.apply_updates(p, upd), opt, loss

        state = {"p": params, "o": tx.init(params), "k": jax.random.PRNGKey(2)}
        x = jnp.asarray(x_np)

        def jax_vae() -> None:
            state["k"], k = jax.random.split(state["k"])
            state["p"], state["o"], loss = vae_step(state["p"], state["o"], x, k)
            loss.block_until_ready()

        fns = {"jax": jax_vae}
        if torch is not None:
            tvae = tm.load_flax_vae(tm.TorchVAE(), params)
            assert tm.num_params(tvae) == n_params, (tm.num_params(tvae), n_params)
            xt = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous()
            with torch.no_grad():
                ref = tvae(xt, sample_posterior=False)[0].permute(0, 2, 3, 1).numpy()
            ours = np.asarray(vae.apply(params, x_np, sample_posterior=False)[0])
            print(f"VAE forward |jax - torch| max = {np.abs(ours - ref).max():.2e}")
            topt = torch.optim.Adam(tvae.parameters(), lr=1e-3)

            def torch_vae() -> None:
                x_hat, mean, logvar = tvae(xt)
                kl = -0.5 * torch.sum(1 + logvar - mean**2 - logvar.exp(), dim=(1, 2, 3))
                loss = (x_hat - xt).abs().mean() + 1e-3 * kl.mean()
                topt.zero_grad(set_to_none=True)
                loss.backward()
                topt.step()

            fns["torch"] = torch_vae
        for f in fns.values():
            for _ in range(args.warmup):
                f()
        report("VAE", n_params, interleaved(fns, args.steps, args.repeats, b))

    # ------------------------------------------------------------------ UNet
    if args.model in ("unet", "both"):
        s = args.latent_size
        channels = tuple(int(c) for c in args.unet_channels.split(","))
        cfg = dict(channels=channels, num_res_blocks=args.unet_res_blocks)
        unet = UNet(dtype=dtype, **cfg)
        z_np = rng.standard_normal((b, s, s, 8)).astype(np.float32)
        params = jax.jit(unet.init)(
            jax.random.PRNGKey(0), z_np[:1], np.zeros(1), np.zeros(1, np.int32)
        )
        n_params = sum(p.size for p in jax.tree.leaves(params))
        tx = optax.adam(2e-4)
        steps_t = 1000
        # Cosine schedule (Nichol & Dhariwal), alpha_bar(t) for t = 0..999.
        f = np.cos(((np.arange(steps_t + 1) / steps_t) + 0.008) / 1.008 * np.pi / 2) ** 2
        alpha_bar_np = np.clip(f[1:] / f[0], 1e-5, 1.0).astype(np.float32)
        alpha_bar = jnp.asarray(alpha_bar_np)

        def unet_loss(p, z0, key):
            kt, kn, ky = jax.random.split(key, 3)
            t = jax.random.randint(kt, (z0.shape[0],), 0, steps_t)
            y = jax.random.randint(ky, (z0.shape[0],), 0, 3)
            eps = jax.random.normal(kn, z0.shape)
            ab = alpha_bar[t][:, None, None, None]
            zt = jnp.sqrt(ab) * z0 + jnp.sqrt(1 - ab) * eps
            return jnp.mean((unet.apply(p, zt, t, y) - eps) ** 2)

        @jax.jit(donate_argnums=(0, 1))
        def unet_step(p, opt, z0, key):
            loss, g = jax.value_and_grad(unet_loss)(p, z0, key)
            upd, opt = tx.update(g, opt, p)
            return optax.apply_updates(p, upd), opt, loss

        state = {"p": params, "o": tx.init(params), "k": jax.random.PRNGKey(2)}
        z0 = jnp.asarray(z_np)

        def jax_unet() -> None:
            state["k"], k = jax.random.split(state["k"])
            state["p"], state["o"], loss = unet_step(state["p"], state["o"], z0, k)
            loss.block_until_ready()

        fns = {"jax": jax_unet}
        if torch is not None:
            tunet = tm.TorchUNet(resolution=s, **cfg)
            assert tm.num_params(tunet) == n_params, (tm.num_params(tunet), n_params)
            # Compare with a non-zero output conv so the check covers the whole network.
            check = UNet(zero_init_out=False, **cfg)
            cp = jax.jit(check.init)(
                jax.random.PRNGKey(5), z_np[:1], np.zeros(1), np.zeros(1, np.int32)
            )
            tm.load_flax_unet(tunet, cp)
            t_np = rng.integers(0, steps_t, b)
            y_np = rng.integers(0, 3, b)
            with torch.no_grad():
                ref = tunet(torch.from_numpy(z_np).permute(0, 3, 1, 2),
                            torch.from_numpy(t_np), torch.from_numpy(y_np))  # fmt: skip
            ours = np.asarray(check.apply(cp, z_np, t_np, y_np))
            diff = np.abs(ours - ref.permute(0, 2, 3, 1).numpy()).max()
            print(f"UNet forward |jax - torch| max = {diff:.2e}")
            tm.load_flax_unet(tunet, params)
            topt = torch.optim.Adam(tunet.parameters(), lr=2e-4)
            zt0 = torch.from_numpy(z_np).permute(0, 3, 1, 2).contiguous()
            ab_t = torch.from_numpy(alpha_bar_np)

            def torch_unet() -> None:
                t = torch.randint(0, steps_t, (b,))
                y = torch.randint(0, 3, (b,))
                eps = torch.randn_like(zt0)
                ab = ab_t[t][:, None, None, None]
                zt = ab.sqrt() * zt0 + (1 - ab).sqrt() * eps
                loss = ((tunet(zt, t, y) - eps) ** 2).mean()
                topt.zero_grad(set_to_none=True)
                loss.backward()
                topt.step()

            fns["torch"] = torch_unet
        for f_ in fns.values():
            for _ in range(args.warmup):
                f_()
        report(f"UNet {channels} x{args.unet_res_blocks}", n_params,
               interleaved(fns, args.steps, args.repeats, b))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
