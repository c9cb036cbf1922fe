"""Library side of `sample.py`: load a diffusion run, sample labelled slices, export them.

Output is written into a temporary sibling directory and renamed onto `--out` only when every
image and the manifest are complete, so an error or Ctrl-C never leaves a half-written `--out`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jax_mri_ldm import export, plots, sampling

# Steps per sampler when --steps is not given: the paper's full chain for DDPM, the usual
# few-step settings for the fast samplers.
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpmpp_2m": 25}
# Timestep spacing per sampler: DPM-Solver++ needs steps uniform in log-SNR at few steps (with
# time-uniform steps on the cosine schedule its last jump overshoots; see sampling.py).
DEFAULT_SPACING = {"ddpm": "uniform", "ddim": "uniform", "dpmpp_2m": "logSNR"}
# Guidance scale w when --guidance_scale is not given (w = 1 is plain conditional sampling).
DEFAULT_GUIDANCE = 3.0


# Default sampler: DDIM-50 with eta = 1 (ancestral noise at every step). Measured on the demo
# run, the deterministic few-step samplers (DDIM eta = 0, DPM-Solver++) inflate the latent std
# to 1.3-2.5x the data's because every ε error they make at the noisiest steps stays in the
# sample, while the fresh noise of eta = 1 washes it out: std 0.96-1.09 (data 0.80-1.00),
# like DDPM-1000 at 1/20 of the cost. See docs/results.md.
DEFAULT_SAMPLER = "ddim"
DEFAULT_ETA = 1.0


@dataclasses.dataclass
class SampleRequest:
    """What to sample (the flags of sample.py)."""

    workdir: str = "runs/ldm"
    label: str = "1"
    num_samples: int = 16
    batch_size: int = 16
    guidance_scale: float = DEFAULT_GUIDANCE
    sampler: str = DEFAULT_SAMPLER
    steps: int | None = None
    spacing: str | None = None
    eta: float = DEFAULT_ETA
    seed: int = 0
    out: str = "samples"
    format: str = "png"
    use_ema: bool = True
    overwrite: bool = False
    progress: bool = True


def resolve_labels(label: str, class_names: tuple[str, ...], num_samples: int) -> np.ndarray:
    """Maps --label (id, name, or 'all' for a balanced mix) to `num_samples` label ids."""
    valid = ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
    text = str(label).strip().lower()
    if text == "all":
        return np.arange(num_samples, dtype=np.int32) % len(class_names)
    names = [n.lower() for n in class_names]
    aliases = {"tumor": "tumour", "yes": "tumour", "no": "normal", "healthy": "normal"}
    if text in names:
        idx = names.index(text)
    elif aliases.get(text) in names:
        idx = names.index(aliases[text])
    elif text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
        idx = int(text)
    else:
        raise ValueError(f"--label={label} is not a class of this model; valid: {valid}, or 'all'.")
    return np.full((num_samples,), idx, np.int32)


def _check_out(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out={out} exists and is not a directory; choose another --out.")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(
            f"--out={out} exists and is not empty; pass --overwrite to replace it or choose "
            "another --out."
        )
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".probe", delete=True)
        probe.close()
    except OSError as e:
        raise ValueError(
            f"--out={out} is not writable ({e.strerror}); choose another --out."
        ) from e


def run_sampling(req: SampleRequest) -> dict[str, Any]:
    """Samples `req.num_samples` images and writes them under `req.out`.

    Returns:
      Summary dict: out, num_images, seconds, seconds_per_batch, compile_seconds, peak_rss_mb.

    Raises:
      ValueError: any bad request (message names the flag and what to do).
    """
    from jax_mri_ldm.train_ldm import LoadedLDM  # heavy import after cheap checks

    if req.num_samples <= 0:
        raise ValueError(f"--num_samples={req.num_samples} must be positive.")
    if req.batch_size <= 0:
        raise ValueError(f"--batch_size={req.batch_size} must be positive.")
    if req.sampler not in sampling.SAMPLERS:
        raise ValueError(f"--sampler={req.sampler} is not one of {', '.join(sampling.SAMPLERS)}.")
    if req.format not in export.FORMATS:
        raise ValueError(f"--format={req.format} is not one of {', '.join(export.FORMATS)}.")
    if req.eta < 0:
        raise ValueError(f"--eta={req.eta} must be >= 0 (0: deterministic DDIM, 1: ancestral).")
    if req.steps is not None and req.steps <= 0:
        raise ValueError(f"--steps={req.steps} must be positive.")
    _check_out(req.out, req.overwrite)
    run = LoadedLDM(req.workdir)
    labels = resolve_labels(req.label, run.class_names, req.num_samples)
    steps = req.steps if req.steps is not None else DEFAULT_STEPS[req.sampler]
    if req.sampler == "ddpm" and steps is None:
        steps = run.schedule.num_timesteps

    n_dev = jax.local_device_count()
    batch_size = int(np.ceil(req.batch_size / n_dev) * n_dev)  # whole batches per device
    mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    params = run.ema_params if req.use_ema else run.params
    params = jax.device_put(params, NamedSharding(mesh, P()))
    vae_params = jax.device_put(run.vae_params, NamedSharding(mesh, P()))
    sample_fn = sampling.make_sample_fn(
        run.apply_fn(),
        run.schedule,
        run.latent_shape,
        sampler=req.sampler,
        steps=steps,
        guidance_scale=float(req.guidance_scale),
        null_label=run.null_label,
        spacing=req.spacing or DEFAULT_SPACING[req.sampler],
        eta=float(req.eta) if req.sampler == "ddim" else 0.0,
        prediction=run.config.diffusion.prediction,
        clip_x0=run.x0_clip,
    )
    decode = run.decode_fn()
    label_sharding = NamedSharding(mesh, P("data"))

    out = os.path.abspath(req.out)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp", dir=os.path.dirname(out))
    record = {
        "seed": req.seed,
        "sampler": req.sampler,
        "steps": int(steps),
        "spacing": req.spacing or DEFAULT_SPACING[req.sampler],
        "eta": float(req.eta) if req.sampler == "ddim" else None,
        "guidance": float(req.guidance_scale),
        "use_ema": bool(req.use_ema),
        "checkpoint_step": run.step,
        "config_fingerprint": run.config_fingerprint,
        "workdir": os.path.abspath(req.workdir),
        "batch_size": batch_size,
    }
    num_batches = int(np.ceil(req.num_samples / batch_size))
    base = jax.random.PRNGKey(req.seed)
    times, compile_s, grid_images = [], 0.0, []
    t_start = time.perf_counter()
    try:
        bar = tqdm.tqdm(
            range(num_batches),
            desc="sampling",
            unit="batch",
            disable=not req.progress,
            file=sys.stderr,
        )
        for b in bar:
            chunk = labels[b * batch_size : (b + 1) * batch_size]
            n = len(chunk)
            padded = np.concatenate([chunk, np.zeros(batch_size - n, np.int32)])  # pad last
            t0 = time.perf_counter()
            y = jax.device_put(jnp.asarray(padded), label_sharding)
            z = sample_fn(params, y, jax.random.fold_in(base, b))
            images = np.asarray(decode(vae_params, z))[:n]  # (n, H, W, 1) in [0, 1]
            dt = time.perf_counter() - t0
            if b == 0:
                compile_s = dt
            times.append(dt)
            rows = export.write_batch(
                tmp,
                images,
                chunk,
                run.class_names,
                b * batch_size,
                req.format,
                {**record, "batch": b, "time": time.time(), "batch_seconds": round(dt, 4)},
            )
            export.append_manifest(tmp, rows)
            if len(grid_images) < 64:
                grid_images.extend(images[: 64 - len(grid_images)])
        plots.save_grid_png(np.stack(grid_images), os.path.join(tmp, "grid.png"))
        if os.path.isdir(out):
            shutil.rmtree(out)  # only reached with --overwrite (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = time.perf_counter() - t_start
    steady = times[1:] if len(times) > 1 else times
    return {
        "out": out,
        "num_images": int(req.num_samples),
        "seconds": total,
        "first_batch_seconds_incl_compile": compile_s,
        "seconds_per_batch": float(np.median(steady)),
        "batch_size": batch_size,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
