"""Latent statistics of sampler settings against the run's training latents.

Why: the deterministic samplers' images sit further from their nearest training image than
DDPM's (docs/results.md, "why the deterministic samplers miss"). This looks at the latents the
samplers return, before decoding, to see in which way they differ: their spread, their
roughness (adjacent-pixel differences; white noise gives 1, a smooth field near 0), the share of
their power above half the latent Nyquist radius, and the distance to the nearest training
latent relative to a training latent's distance to its own nearest neighbour. Same batches,
labels and seeds as the report's generator (batch 16, labels ``arange % K``).

Settings as in `sampler_match.py` (``sampler:steps:spacing:eta[:w[:eps_scale]]``). Run from the
repository root::

  python bench/ablations/latent_stats.py --workdir=runs/ldm --out=runs/latent_stats.json \\
      --settings=ddim:50:uniform:1,dpmpp_2m:10:logSNR:0 --per_class=32
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from sampler_match import parse_setting  # noqa: E402

from jax_mri_ldm import atomic  # noqa: E402

BATCH = 16  # the report's generator batch


def training_latents(run) -> np.ndarray:
    """(N, views, h, w, c) normalised posterior means of the run's training slices (views: the
    slice and, with `latents.flip`, its mirror)."""
    paths = sorted(glob.glob(os.path.join(run.workdir, "latents_*.npz")))
    if not paths:
        raise SystemExit(f"no latents_*.npz in {run.workdir}: is it a finished LDM run?")
    with np.load(paths[-1]) as f:
        mean = f["mean"]  # (N, views, h, w, c)
    return ((mean - run.latent_shift) * run.latent_channel_scale).astype(np.float32)


def sample_latents(run, spec, per_class: int, seed: int) -> tuple[np.ndarray, float]:
    """(K * per_class, h, w, c) latents of a setting and the seconds it took after compiling."""
    import jax
    import jax.numpy as jnp

    k = len(run.class_names)
    total = k * per_class
    fn = run.make_sampler(spec)
    params = run.sampler_params(spec)
    base = jax.random.PRNGKey(seed)
    fn(params, jnp.zeros((BATCH,), jnp.int32), base).block_until_ready()  # compile
    t0, out = time.perf_counter(), []
    for i in range(-(-total // BATCH)):
        labels = jnp.asarray(np.arange(i * BATCH, (i + 1) * BATCH) % k, jnp.int32)
        out.append(np.asarray(fn(params, labels, jax.random.fold_in(base, i))))
    return np.concatenate(out)[:total], time.perf_counter() - t0


def stats(z: np.ndarray, train: np.ndarray) -> dict[str, float]:
    """Spread, roughness, high-band power share and relative nearest-training distance."""
    var = float(z.var())
    dx = np.diff(z, axis=2) ** 2
    dy = np.diff(z, axis=1) ** 2
    rough = float((dx.mean() + dy.mean()) / (4 * var))
    power = np.abs(np.fft.fft2(z - z.mean(axis=(1, 2), keepdims=True), axes=(1, 2))) ** 2
    h, w = z.shape[1:3]
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    high = np.sqrt(fx**2 + fy**2) > 0.25  # above half the Nyquist radius (0.5)
    return {
        "std": float(np.sqrt(var)),
        "channel_std_min": float(z.std(axis=(0, 1, 2)).min()),
        "channel_std_max": float(z.std(axis=(0, 1, 2)).max()),
        "roughness": rough,
        "high_band_share": float(power[:, high].sum() / power.sum()),
        "nn_distance": float(np.median(nearest(z, train))),
    }


def nearest(z: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(N,) RMS distance of each latent to its nearest training latent."""
    a = z.reshape(len(z), -1).astype(np.float64)
    b = train.reshape(len(train), -1).astype(np.float64)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2.min(1), 0.0) / a.shape[1])


def trajectory_norms(run, spec, per_class: int, seed: int) -> tuple[dict, np.ndarray]:
    """(per timestep index: [RMS of the states x_t, RMS of the unconditional eps prediction]
    along a setting's trajectories (the null-class half of each guided call), the latents
    they end in: `sample_latents`' batches, seeds and values)."""
    import jax
    import jax.numpy as jnp

    from jax_mri_ldm import diffusion
    from jax_mri_ldm.pipeline import make_latent_sampler

    apply, sch, rec = run.apply_fn(), run.schedule, {}
    prediction = run.config.diffusion.prediction

    def record(t, x_rms, e_rms):
        rec.setdefault(int(t), []).append((float(x_rms), float(e_rms)))

    def wrapped(params, x, t, y):
        out = apply(params, x, t, y)
        b = x.shape[0] // 2  # guided: conditional half, then the null half
        _, eps = diffusion.x0_eps_from_output(sch, x[b:], t[b:], out[b:], prediction)
        jax.debug.callback(record, t[0], jnp.sqrt(jnp.mean(x**2)), jnp.sqrt(jnp.mean(eps**2)))
        return out

    fn = make_latent_sampler(wrapped, sch, run.latent_shape, spec, null_label=run.null_label,
                             prediction=prediction, clip_x0=run.x0_clip)  # fmt: skip
    params, base, k = run.sampler_params(spec), jax.random.PRNGKey(seed), len(run.class_names)
    z = []
    for i in range(-(-k * per_class // BATCH)):
        labels = jnp.asarray(np.arange(i * BATCH, (i + 1) * BATCH) % k, jnp.int32)
        z.append(np.asarray(fn(params, labels, jax.random.fold_in(base, i))))
    norms = {t: np.mean(v, axis=0).tolist() for t, v in rec.items()}
    return norms, np.concatenate(z)[: k * per_class]


def training_norms(run, spec, z0: np.ndarray, timesteps: list[int]) -> dict[int, list[float]]:
    """The same two RMS values with x_t drawn from the forward process on training latents."""
    import jax
    import jax.numpy as jnp

    from jax_mri_ldm import diffusion

    apply, sch, out = jax.jit(run.apply_fn()), run.schedule, {}
    params = run.sampler_params(spec)
    null = jnp.full((len(z0),), run.null_label, jnp.int32)
    for t in timesteps:
        tv = jnp.full((len(z0),), t, jnp.int32)
        noise = jax.random.normal(jax.random.PRNGKey(t), z0.shape)
        x = diffusion.q_sample(sch, jnp.asarray(z0), tv, noise)
        _, eps = diffusion.x0_eps_from_output(
            sch, x, tv, apply(params, x, tv, null), run.config.diffusion.prediction
        )
        out[t] = [float(jnp.sqrt(jnp.mean(x**2))), float(jnp.sqrt(jnp.mean(eps**2)))]
    return out


def norm_table(run, spec, per_class: int, seed: int, train: np.ndarray) -> tuple[dict, np.ndarray]:
    """Exposure-bias check (Ning et al. 2024): state and eps RMS, sampled vs forward-noised;
    and the sampled latents (one pass: the statistics need no second, timed one)."""
    sampled, z = trajectory_norms(run, spec, per_class, seed)
    z0 = train[:: max(1, len(train) // 64), 0][:64]
    trained = training_norms(run, spec, z0, sorted(sampled, reverse=True))
    return {str(t): {"sampled": sampled[t], "training": trained[t]} for t in trained}, z


def main(args: argparse.Namespace) -> None:
    from jax_mri_ldm.pipeline import load_ldm

    run = load_ldm(args.workdir)
    train = training_latents(run)  # (N, views, h, w, c)
    # Reference: every 8th training slice (first view) against the other slices' views.
    held = train[::8, 0]
    pool = np.delete(train, np.s_[::8], axis=0).reshape((-1, *train.shape[2:]))
    rows = {"training (1/8 vs the rest)": stats(held, pool)}
    print(f"{'training':34s}", json.dumps(rows["training (1/8 vs the rest)"]), flush=True)
    for text in args.settings.split(","):
        spec = parse_setting(text, args.guidance).resolved(run.schedule.num_timesteps)
        if args.norms and spec.sampler != "ddpm":  # the recording pass is not timed
            table, z = norm_table(run, spec, args.per_class, args.seed, train)
            rows[text] = stats(z, pool) | {"seconds_per_image": None}
        else:
            z, seconds = sample_latents(run, spec, args.per_class, args.seed)
            rows[text], table = stats(z, pool) | {"seconds_per_image": seconds / len(z)}, None
        print(f"{text:34s}", json.dumps(rows[text]), flush=True)
        if table is not None:
            rows[text]["norms"] = table
            for t, v in table.items():
                print(f"  t={t:>4s} x_rms {v['sampled'][0]:.3f} vs {v['training'][0]:.3f}; "
                      f"eps_rms {v['sampled'][1]:.3f} vs {v['training'][1]:.3f}")  # fmt: skip
    out = {"workdir": args.workdir, "seed": args.seed, "rows": rows}
    atomic.write_json(args.out, out, indent=1, sort_keys=False)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="a finished LDM run directory")
    p.add_argument("--out", required=True, help="JSON file for the table")
    p.add_argument("--settings", required=True, help="comma-separated settings (see above)")
    p.add_argument("--per_class", type=int, default=32, help="latents per class per setting")
    p.add_argument("--seed", type=int, default=0, help="the generator's base seed")
    p.add_argument("--guidance", type=float, default=3.0, help="w unless a setting gives one")
    p.add_argument(
        "--norms", action="store_true",
        help="also the exposure-bias norm table (those settings sample once, untimed)",
    )  # fmt: skip
    main(p.parse_args())
