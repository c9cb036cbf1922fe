"""Stage 2: class-conditional latent diffusion on frozen-VAE latents; `train_and_evaluate`.

Latents. The training split (from the VAE run's split.json) is encoded once by the frozen
encoder; the posterior mean and log-variance are cached in the workdir under a key made of the
VAE checkpoint's parameter hash and the dataset fingerprint. Each step draws z ~ q(z|x) from the
cached posterior and multiplies it by the VAE run's latent scale factor (1 / std of training
latents), so the diffusion model sees roughly unit-variance data.

Augmentation. A horizontal flip of the image is not a flip of the latent in general (the encoder
is not exactly equivariant), so with `config.latents.flip` the mirrored slices are encoded too and
each step picks the original or mirrored posterior per example with p = 0.5: an exact random-flip
augmentation at the cost of encoding twice, once. Rotations and contrast jitter are not applied in
this stage (they would need an encoder pass per step, which costs more than the UNet step).

Self-describing run. The VAE's parameters are copied into `<workdir>/vae_params.msgpack` (with
their SHA-256 in the checkpoint metadata, checked on load), and the final checkpoint stores the
config, schedule, class names, latent shape and scale factor, so sampling needs only this workdir.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jax_mri_ldm import CLASS_NAMES, diffusion, plots, sampling
from jax_mri_ldm import data as data_lib
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.engine import loop
from jax_mri_ldm.engine.state import TrainState
from jax_mri_ldm.generate import DEFAULT_SPACING
from jax_mri_ldm.losses import from_model_space
from jax_mri_ldm.models.unet import UNet
from jax_mri_ldm.models.vae import VAE
from jax_mri_ldm.train_vae import batched_apply, load_vae, make_encode_fn
from jax_mri_ldm.train_vae import build_model as build_vae

# The paper's diffusion loss curve (Sec. VI-B): epoch -> loss.
PAPER_LDM_LOSS = ((1, 1.0), (7, 0.6), (20, 0.5), (60, 0.46), (100, 0.46))
VAE_PARAMS_FILE = "vae_params.msgpack"


def build_model(model_cfg: ml_collections.ConfigDict, num_classes: int) -> UNet:
    """The UNet described by `config.model` (null class id = num_classes)."""
    return UNet(
        channels=tuple(model_cfg.channels),
        num_res_blocks=int(model_cfg.num_res_blocks),
        attn_resolutions=tuple(model_cfg.attn_resolutions),
        num_heads=int(model_cfg.num_heads),
        num_classes=num_classes,
        dropout=float(model_cfg.dropout),
        norm_groups=int(model_cfg.get("norm_groups", 32)),
        dtype=jnp.dtype(model_cfg.dtype),
    )


def params_sha256(params: Any) -> str:
    """SHA-256 of the msgpack serialisation of a parameter pytree."""
    return hashlib.sha256(flax.serialization.msgpack_serialize(_to_numpy(params))).hexdigest()


def _to_numpy(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _encode_posteriors(vae: VAE, vae_params: Any, images: np.ndarray, flip: bool, batch_size: int):
    """Posterior (mean, logvar) of every image (and its mirror): (N, V, h, w, c) each, V=1|2."""
    encode = make_encode_fn(vae, vae_params)
    views = [images] + ([images[:, :, ::-1, :]] if flip else [])
    posteriors = [batched_apply(encode, np.ascontiguousarray(v), batch_size) for v in views]
    mean = np.stack([m for m, _ in posteriors], axis=1)
    logvar = np.stack([lv for _, lv in posteriors], axis=1)
    return mean, logvar


def cached_latents(
    workdir: str, vae: VAE, vae_params: Any, vae_meta: dict, train_set, flip: bool, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Loads or computes the training posteriors; cache keyed by VAE params + data fingerprint."""
    key = hashlib.sha256(
        json.dumps(
            [params_sha256(vae_params), vae_meta.get("dataset_fingerprint"), train_set.ids, flip]
        ).encode()
    ).hexdigest()[:16]
    path = os.path.join(workdir, f"latents_{key}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return f["mean"], f["logvar"]
    mean, logvar = _encode_posteriors(vae, vae_params, train_set.images, flip, batch_size)
    if jax.process_index() == 0:
        tmp = f"{path}.tmp{os.getpid()}.npz"
        np.savez(tmp, mean=mean, logvar=logvar)
        os.replace(tmp, path)
    return mean, logvar


def _write_vae_copy(workdir: str, vae_params: Any) -> str:
    """Copies the frozen VAE parameters into the LDM workdir; returns their SHA-256."""
    blob = flax.serialization.msgpack_serialize(_to_numpy(vae_params))
    digest = hashlib.sha256(blob).hexdigest()
    path = os.path.join(workdir, VAE_PARAMS_FILE)
    if jax.process_index() == 0:
        existing = None
        if os.path.exists(path):
            with open(path, "rb") as f:
                existing = hashlib.sha256(f.read()).hexdigest()
        if existing != digest:
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
    return digest


def save_loss_curve(workdir: str) -> str:
    """Per-log-window ε-MSE beside the paper's reported values (paper Fig. 4, right)."""
    records = log_lib.read_metrics(workdir, "train")
    if not records:
        return ""
    return plots.save_loss_curve(
        [r["epoch"] for r in records],
        [r["loss"] for r in records],
        os.path.join(workdir, "figures", "ldm_loss_curve.png"),
        title="Latent diffusion training loss (ε-MSE)",
        reference={"paper (Fig. 4 right)": tuple(zip(*PAPER_LDM_LOSS, strict=True))},
        logy=True,
    )


LATENT_NORMALIZATIONS = ("channel", "global")


def latent_normalization(
    mean: np.ndarray,
    logvar: np.ndarray,
    mode: str,
    vae_scale: float,
    sample_posterior: bool,
    clip_percentile: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, tuple[list[float], list[float]] | None]:
    """Per-channel ``(shift, scale)`` that map VAE latents to the diffusion model's space.

    The model sees ``z_n = (z - shift) * scale``. ``'global'`` is Rombach et al.'s single scale
    factor (``shift = 0``, ``scale = 1 / std`` over all latent values, computed by the VAE
    stage). ``'channel'`` (default) standardises each channel: the VAE's channels carry
    offsets of up to ~3 standard deviations (measured on the demo VAE: channel means from
    -2.35 to 0.18, stds 0.31 to 1.07), which a single scale keeps, so a symmetric x0 clip
    around 0 would be loose for some channels and cut others.

    Also returns per-channel bounds (the ``[p, 100 - p]`` percentiles of the normalised
    training latents) that the samplers clip their x0 estimate to. Why clip at all: with the
    cosine schedule ``sqrt(alpha_bar)`` at the noisiest index is 5e-5, so an eps-prediction
    error of 0.1 there (the demo UNet's is 0.13 rms) is an x0 error of ~2500, and the first
    DDIM-50 update multiplies x0 by ``sqrt(alpha_bar_next)`` (0.03). Pixel-space DDPMs clip to
    [-1, 1] for the same reason. Measured on the demo run (data std 1 per channel): DDIM-50
    latents had std ~2500 unclipped; with per-channel bounds DDPM-1000 gives std 0.96-1.21,
    DDIM-50 1.25-2.55 with min/max bounds and 0.95-1.39 with the 0.5/99.5 percentiles (so the
    percentiles are the default: the tails they cut are 1 % of latent values).

    Args:
      mean: ``(N, V, h, w, C)`` posterior means of the training latents (all views).
      logvar: same shape, posterior log-variances.
      mode: ``'channel'`` or ``'global'``.
      vae_scale: the VAE run's global scale factor (1 / std of its latents).
      sample_posterior: whether training draws ``z ~ q(z|x)`` (its spread then counts too).
      clip_percentile: ``p`` of the clip bounds; 0 = the full range, < 0 = no clipping.

    Returns:
      ``(shift, scale, bounds)``: ``(C,)`` float64 arrays and per-channel clip bounds
      ``(lo, hi)`` (None when ``clip_percentile < 0``).

    Raises:
      ValueError: unknown ``mode``.
    """
    c = mean.shape[-1]
    m = mean.reshape(-1, c).astype(np.float64)  # (M, C)
    post_var = (
        np.exp(logvar.reshape(-1, c).astype(np.float64)).mean(0) if sample_posterior else 0.0
    )  # (C,) average posterior variance: part of what the model sees when z is sampled
    if mode == "channel":
        shift = m.mean(0)
        scale = 1.0 / np.sqrt(np.maximum(m.var(0) + post_var, 1e-12))
    elif mode == "global":
        shift = np.zeros(c)
        scale = np.full(c, float(vae_scale))
    else:
        raise ValueError(
            f"unknown --config.latents.normalize={mode!r}; choose one of {LATENT_NORMALIZATIONS}"
        )
    if clip_percentile < 0:
        return shift, scale, None
    if clip_percentile >= 50:
        raise ValueError(
            f"--config.latents.x0_clip_percentile={clip_percentile} must be < 50 (or < 0: off)"
        )
    z = (m - shift) * scale  # (M, C) normalised posterior means
    lo = np.percentile(z, clip_percentile, axis=0)
    hi = np.percentile(z, 100.0 - clip_percentile, axis=0)
    return shift, scale, ([float(v) for v in lo], [float(v) for v in hi])


def make_decode_fn(vae: VAE, shift: Any, scale: Any):
    """Jitted (vae_params, normalised latents) -> images (B, H, W, 1) in [0, 1].

    Args:
      vae: the VAE module.
      shift: ``(C,)`` (or scalar) latent shift, see `latent_normalization`.
      scale: ``(C,)`` (or scalar) latent scale.

    Returns:
      ``decode(vae_params, z)`` with ``z: (B, h, w, C)`` in the diffusion model's space.
    """
    shift = jnp.asarray(shift, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)

    @jax.jit
    def decode(vae_params, z):
        x = vae.apply({"params": vae_params}, z / scale + shift, method=VAE.decode)
        return from_model_space(x)

    return decode


def make_apply_fn(unet: UNet):
    """(params, x, t, y) -> model output, the form the samplers take."""

    def apply_fn(params, x, t, y):
        return unet.apply({"params": params}, x, t, y, train=False)

    return apply_fn


def make_loss_fn(
    unet: UNet,
    schedule: diffusion.Schedule,
    config: ml_collections.ConfigDict,
    null_label: int,
    shift: Any = 0.0,
    scale: Any = 1.0,
):
    """The stage-2 training loss ``loss_fn(params, batch, rng) -> (loss, metrics)``.

    Per example: picks a random cached view (original or mirrored slice), draws
    ``z ~ q(z|x)`` (or takes the mean, ``config.latents.sample_posterior``), normalises it with
    ``(z - shift) * scale`` and returns the diffusion loss of `jax_mri_ldm.diffusion` with
    classifier-free label dropout. Shared by training and ``bench/run.py``.

    Args:
      unet: the UNet.
      schedule: the noise schedule.
      config: a configs/ldm.py config (``latents``, ``model.dropout``, ``diffusion``).
      null_label: the unconditional class id.
      shift: ``(C,)`` or scalar latent shift (see `latent_normalization`).
      scale: ``(C,)`` or scalar latent scale.

    Returns:
      ``loss_fn`` for `jax_mri_ldm.engine.loop.train_step`; ``batch`` has ``"mean"`` and
      ``"logvar"`` ``(B, V, h, w, c)`` and ``"label"`` ``(B,)``.
    """
    shift = jnp.asarray(shift, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    sample_posterior = bool(config.latents.sample_posterior)
    dropout = float(config.model.dropout) > 0

    def loss_fn(params, batch, rng):
        view_rng, z_rng, drop_rng, loss_rng = jax.random.split(rng, 4)
        m, lv = batch["mean"], batch["logvar"]  # (B, V, h, w, c)
        view = jax.random.randint(view_rng, (m.shape[0],), 0, m.shape[1])  # random flip
        m = jnp.take_along_axis(m, view[:, None, None, None, None], axis=1)[:, 0]
        lv = jnp.take_along_axis(lv, view[:, None, None, None, None], axis=1)[:, 0]
        z = m
        if sample_posterior:
            z = m + jnp.exp(0.5 * lv) * jax.random.normal(z_rng, m.shape)
        z = (z - shift) * scale  # (B, h, w, c), ~zero mean, unit variance

        def model_fn(x_t, t, y):
            return unet.apply(
                {"params": params}, x_t, t, y, train=dropout, rngs={"dropout": drop_rng}
            )

        loss, aux = diffusion.diffusion_loss(
            model_fn,
            schedule,
            z,
            batch["label"],
            loss_rng,
            prediction=config.diffusion.prediction,
            p_uncond=float(config.diffusion.p_uncond),
            null_label=null_label,
            loss_weighting=config.diffusion.loss_weighting,
        )
        return loss, {"drop_frac": aux["drop_frac"]}

    return loss_fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> loop.RunResult:
    """Trains the conditional latent diffusion model of the paper on the VAE run's data.

    Args:
      config: a configs/ldm.py config.
      workdir: run directory; an existing run there is resumed.

    Returns:
      The engine's RunResult.
    """
    loop.ensure_writable_workdir(workdir)
    vae, vae_params, vae_meta = load_vae(config.vae_workdir)
    vae_config = ml_collections.ConfigDict(vae_meta["config"])
    ds = data_lib.load_imageset(vae_config.data)
    if ds.fingerprint != vae_meta.get("dataset_fingerprint"):
        raise ValueError(
            f"the data the VAE in {config.vae_workdir!r} was trained on changed since "
            "(dataset fingerprint differs); retrain the VAE or restore the data."
        )
    split = data_lib.split_indices(
        ds,
        train=vae_config.data.split.train,
        val=vae_config.data.split.val,
        seed=vae_config.data.split.seed,
    )
    if jax.process_index() == 0:
        data_lib.save_split(os.path.join(workdir, "split.json"), ds, split)
    train_set = ds.subset(split["train"])
    class_names = tuple(ds.class_names)
    num_classes = len(class_names)
    null_label = num_classes
    batch_size = int(config.train.batch_size)
    latent_scale = float(vae_meta["latent_scale_factor"])
    latent_shape = tuple(int(d) for d in vae_meta["latent_shape"])  # (h, w, c)

    vae_sha = _write_vae_copy(workdir, vae_params)
    mean, logvar = cached_latents(
        workdir, vae, vae_params, vae_meta, train_set, bool(config.latents.flip), batch_size
    )  # (N, V, h, w, c)
    labels = train_set.labels.astype(np.int32)
    shift, scale, x0_clip = latent_normalization(
        mean,
        logvar,
        config.latents.normalize,
        latent_scale,
        bool(config.latents.sample_posterior),
        float(config.latents.get("x0_clip_percentile", 0.5)),
    )  # (C,), (C,), per-channel clip bounds (see latent_normalization for why)
    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.num_timesteps)
    unet = build_model(config.model, num_classes)
    sampler = data_lib.BalancedSampler(labels, batch_size, seed=int(config.seed))

    def init_params(rng):
        x = jnp.zeros((1,) + latent_shape, jnp.float32)
        t = jnp.zeros((1,), jnp.int32)
        y = jnp.zeros((1,), jnp.int32)
        return unet.init({"params": rng, "dropout": rng}, x, t, y, train=False)["params"]

    loss_fn = make_loss_fn(unet, schedule, config, null_label, shift, scale)

    def get_batch(step, process_index, process_count):
        idx = sampler.indices(step, process_index, process_count)
        return {"mean": mean[idx], "logvar": logvar[idx], "label": labels[idx]}

    n_per_class = int(config.train.eval_num_images)
    eval_labels = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), n_per_class)
    decode = make_decode_fn(vae, shift, scale)
    sample_fn = sampling.make_sample_fn(
        make_apply_fn(unet),
        schedule,
        latent_shape,
        sampler=config.train.eval_sampler,
        steps=None if config.train.eval_sampler == "ddpm" else int(config.train.eval_sample_steps),
        spacing=DEFAULT_SPACING[config.train.eval_sampler],
        eta=float(config.train.get("eval_eta", 0.0))
        if config.train.eval_sampler == "ddim"
        else 0.0,
        guidance_scale=float(config.train.eval_guidance_scale),
        null_label=null_label,
        prediction=config.diffusion.prediction,
        clip_x0=x0_clip,
    )
    steps_per_epoch = sampler.steps_per_epoch

    def evaluate(state: TrainState, workdir: str) -> dict[str, Any]:
        step = int(jax.device_get(state.step))
        epoch = step // steps_per_epoch
        z = sample_fn(
            loop.unreplicate_to_host(state.ema_params),
            eval_labels,
            jax.random.PRNGKey(int(config.seed) + 1),
        )
        images = np.asarray(decode(vae_params, z))
        if jax.process_index() == 0:
            plots.save_labelled_grid(
                images,
                np.asarray(eval_labels),
                class_names,
                os.path.join(workdir, "figures", f"ldm_samples_epoch{epoch:03d}.png"),
                per_class=n_per_class,
            )
            save_loss_curve(workdir)
        z = np.asarray(z)
        return {"sample_latent_std": float(z.std()), "sample_latent_mean": float(z.mean())}

    def finalize(state: TrainState, workdir: str) -> dict[str, Any]:
        return {"schedule": diffusion.schedule_to_dict(schedule)}

    task = loop.Task(
        name="ldm",
        init_params=init_params,
        loss_fn=loss_fn,
        get_batch=get_batch,
        global_batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        evaluate=evaluate,
        finalize=finalize,
        metadata={
            "dataset_fingerprint": ds.fingerprint,
            "class_names": list(class_names),
            "null_label": null_label,
            "num_train": len(train_set),
            "latent_shape": list(latent_shape),
            "latent_scale_factor": latent_scale,
            "latent_normalize": str(config.latents.normalize),
            "latent_shift": [float(v) for v in shift],
            "latent_scale": [float(v) for v in scale],
            "x0_clip": x0_clip,
            "image_size": int(vae_config.data.image_size),
            "vae": {
                "file": VAE_PARAMS_FILE,
                "sha256": vae_sha,
                "model": vae_meta["config"]["model"],
                "source_workdir": os.path.abspath(config.vae_workdir),
                "data": vae_meta["config"]["data"],
            },
        },
    )
    return loop.run(config, workdir, task)


class LoadedLDM:
    """Everything needed to sample from a finished (or in-progress) LDM run."""

    def __init__(self, workdir: str, step: int | None = None):
        """Loads `<workdir>`; raises ValueError with a clear message if it is not an LDM run."""
        meta = ckpt_lib.read_run_meta(workdir, step)
        if meta.get("stage") != "ldm":
            raise ValueError(
                f"--workdir={workdir} is a {meta.get('stage')!r} run, not a diffusion run; "
                "sample from the workdir of `train.py --config=configs/ldm.py`."
            )
        checkpointer = ckpt_lib.Checkpointer(workdir)
        try:
            items, meta = checkpointer.restore_raw(step)
        finally:
            checkpointer.close()
        self.workdir = workdir
        self.meta = meta
        self.step = int(np.asarray(items["step"]))
        self.config = ml_collections.ConfigDict(meta["config"])
        self.class_names = tuple(meta.get("class_names", CLASS_NAMES))
        self.null_label = int(meta["null_label"])
        self.latent_shape = tuple(meta["latent_shape"])
        self.latent_scale = float(meta["latent_scale_factor"])
        # Runs written before per-channel normalisation stored one scale and no shift.
        self.latent_shift = np.asarray(meta.get("latent_shift", 0.0), np.float32)
        self.latent_channel_scale = np.asarray(
            meta.get("latent_scale", self.latent_scale), np.float32
        )
        self.x0_clip = sampling.normalize_clip(meta.get("x0_clip"))
        self.image_size = int(meta["image_size"])
        sched = meta.get("schedule")
        self.schedule = (
            diffusion.schedule_from_dict(sched)
            if sched
            else diffusion.make_schedule(
                self.config.diffusion.schedule, self.config.diffusion.num_timesteps
            )
        )
        self.unet = build_model(self.config.model, len(self.class_names))
        self.params = items["params"]
        self.ema_params = items["ema_params"]
        vae_path = os.path.join(workdir, meta["vae"]["file"])
        if not os.path.exists(vae_path):
            raise ValueError(f"{vae_path} is missing; the run directory is incomplete.")
        with open(vae_path, "rb") as f:
            blob = f.read()
        if hashlib.sha256(blob).hexdigest() != meta["vae"]["sha256"]:
            raise ValueError(
                f"{vae_path} does not match the checksum stored in the checkpoint; the VAE copy "
                "was modified. Restore it or retrain."
            )
        self.vae = build_vae(ml_collections.ConfigDict(meta["vae"]["model"]))
        self.vae_params = flax.serialization.msgpack_restore(blob)
        self.final = bool(meta.get("final"))
        self.config_fingerprint = hashlib.sha256(
            json.dumps(meta["config"], sort_keys=True).encode()
        ).hexdigest()[:12]

    def apply_fn(self):
        return make_apply_fn(self.unet)

    def decode_fn(self):
        return make_decode_fn(self.vae, self.latent_shift, self.latent_channel_scale)
