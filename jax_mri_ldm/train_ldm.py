"""Stage 2: class-conditional latent diffusion on frozen-VAE latents; `train_and_evaluate`.

Latents. The training split (from the VAE run's split.json) is encoded once by the frozen
encoder; the posterior mean and log-variance are cached in the workdir under a key made of the
VAE checkpoint's parameter hash and the dataset fingerprint. Each step draws z ~ q(z|x) from the
cached posterior and normalises it, `(z - shift) * scale` (`latent_normalization`): by default
each latent channel is standardised to zero mean and unit variance over the training latents
(`config.latents.normalize='channel'`; 'global' is the VAE run's single scale factor of Rombach
et al.), so the diffusion model sees unit-variance data.

Augmentation. A horizontal flip of the image is not a flip of the latent in general (the encoder
is not exactly equivariant), so with `config.latents.flip` the mirrored slices are encoded too and
each step picks the original or mirrored posterior per example with p = 0.5: an exact random-flip
augmentation at the cost of encoding twice, once. Rotations and contrast jitter are not applied in
this stage (they would need an encoder pass per step, which costs more than the UNet step).

Self-describing run. The VAE's parameters are copied into `<workdir>/vae_params.msgpack` (with
their SHA-256 in the checkpoint metadata, checked on load), its decoder equaliser (if the VAE
run has one) into `<workdir>/vae_equaliser.json`, and the final checkpoint stores the config,
schedule, class names, latent shape and normalisation, so sampling needs only this workdir
(`pipeline.load_ldm`). A finished run with an equaliser copy then judges it on its own samples
(`decoder_check.py`, `config.decoder`) and records the verdict beside the copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jax_mri_ldm import atomic, decoder_check, diffusion, equaliser, plots
from jax_mri_ldm import data as data_lib
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.engine import loop
from jax_mri_ldm.engine.state import TrainState
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.models.unet import UNet
from jax_mri_ldm.pipeline import (
    VAEPipeline,
    build_unet,
    load_vae,
    make_apply_fn,
    make_decode_fn,
    make_latent_sampler,
    params_sha256,
)
from jax_mri_ldm.sampler_settings import grid_sampler_spec

VAE_PARAMS_FILE = "vae_params.msgpack"
# The smallest published 2D latent-diffusion recipes train for 9k-25k updates (MONAI
# GenerativeModels' MedNIST LDM tutorials) on thousands of images. A small set needs fewer
# before the model stops improving, and more lowers novelty (docs/results.md, "Quality against
# updates"), so the floor below which a run ends with a warning scales with the training set.
MIN_UPDATES = 9_000
MIN_UPDATES_PER_IMAGE = 8


def min_updates_for(num_train_images: int) -> int:
    """Updates below which an LDM run on `num_train_images` is called far from converged."""
    return min(MIN_UPDATES, MIN_UPDATES_PER_IMAGE * int(num_train_images))


def _to_numpy(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _encode_posteriors(vae: VAEPipeline, images: np.ndarray, flip: bool, batch_size: int):
    """Posterior (mean, logvar) of every image (and its mirror): (N, V, h, w, c) each, V=1|2."""
    views = [images] + ([images[:, :, ::-1, :]] if flip else [])
    posteriors = [vae.encode(np.ascontiguousarray(v), batch_size) for v in views]
    mean = np.stack([m for m, _ in posteriors], axis=1)
    logvar = np.stack([lv for _, lv in posteriors], axis=1)
    return mean, logvar


def cached_latents(
    workdir: str, vae: VAEPipeline, train_set, flip: bool, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Loads or computes the training posteriors; cache keyed by VAE params + data fingerprint."""
    key = hashlib.sha256(
        json.dumps(
            [params_sha256(vae.params), vae.meta.get("dataset_fingerprint"), train_set.ids, flip]
        ).encode()
    ).hexdigest()[:16]
    path = os.path.join(workdir, f"latents_{key}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return f["mean"], f["logvar"]
    mean, logvar = _encode_posteriors(vae, train_set.images, flip, batch_size)
    if jax.process_index() == 0:
        with atomic.atomic_path(path) as tmp:
            np.savez(tmp, mean=mean, logvar=logvar)
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
            atomic.write_bytes(path, blob)
    return digest


def _write_equaliser_copy(workdir: str, vae_workdir: str) -> None:
    """Copies the VAE run's decoder equaliser beside the VAE copy, or removes the copy when the
    VAE run has none, so that the diffusion run decodes as its VAE does (`equaliser.py`)."""
    src = os.path.join(vae_workdir, equaliser.FILE_NAME)
    dst = os.path.join(workdir, equaliser.LDM_FILE_NAME)
    if jax.process_index() != 0:
        return
    if os.path.exists(src):
        with open(src) as f:
            atomic.write_text(dst, f.read())
    elif os.path.exists(dst):
        os.remove(dst)


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
        reference={"paper (Fig. 4 right)": tuple(zip(*plots.PAPER_LDM_LOSS, strict=True))},
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
    offsets of several standard deviations, which a single scale keeps, so a symmetric x0 clip
    around 0 would be loose for some channels and cut others.

    Also returns per-channel bounds (the ``[p, 100 - p]`` percentiles of the normalised
    training latents) that the samplers clip their x0 estimate to. Why clip at all: with the
    cosine schedule ``sqrt(alpha_bar)`` at the noisiest index is tiny, so a small eps error
    there becomes a huge x0 error that the first few-step update carries into the sample
    (pixel-space DDPMs clip to [-1, 1] for the same reason). Percentiles rather than the
    min/max, because the few extreme latent values leave the bounds too loose for the
    few-step samplers. docs/results.md ("Sample quality") has the measurements.

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
        raise UserError(
            f"unknown --config.latents.normalize={mode!r}; choose one of {LATENT_NORMALIZATIONS}"
        )
    if clip_percentile < 0:
        return shift, scale, None
    if clip_percentile >= 50:
        raise UserError(
            f"--config.latents.x0_clip_percentile={clip_percentile} must be < 50 (or < 0: off)"
        )
    z = (m - shift) * scale  # (M, C) normalised posterior means
    lo = np.percentile(z, clip_percentile, axis=0)
    hi = np.percentile(z, 100.0 - clip_percentile, axis=0)
    return shift, scale, ([float(v) for v in lo], [float(v) for v in hi])


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
    loss_options = diffusion.loss_options(config.diffusion)

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
            null_label=null_label,
            **loss_options,
        )
        return loss, {"drop_frac": aux["drop_frac"]}

    return loss_fn


@dataclasses.dataclass(frozen=True)
class _Latents:
    """The cached training posteriors, their labels, and how the diffusion model sees them."""

    mean: np.ndarray  # (N, V, h, w, c) posterior means (V views: original, mirrored)
    logvar: np.ndarray  # (N, V, h, w, c) posterior log-variances
    labels: np.ndarray  # (N,) int32 class ids
    shape: tuple[int, ...]  # (h, w, c)
    shift: np.ndarray  # (C,) see latent_normalization
    scale: np.ndarray  # (C,)
    x0_clip: tuple[list[float], list[float]] | None  # per-channel sampler clip bounds


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> loop.RunResult:
    """Trains the conditional latent diffusion model of the paper on the VAE run's data.

    Args:
      config: a configs/ldm.py config.
      workdir: run directory; an existing run there is resumed.

    Returns:
      The engine's RunResult.
    """
    loop.ensure_writable_workdir(workdir)
    vae = load_vae(config.vae_workdir)
    vae_config = ml_collections.ConfigDict(vae.meta["config"])
    ds, split = _vae_training_split(config, vae, vae_config, workdir)
    train_set = ds.subset(split["train"])
    real = _decoder_check_reals(ds, split)  # before the extra slices join
    extra, extra_summary = data_lib.load_extra_train(
        config.get("extra_train"), vae_config.data, ds, train_set
    )
    train_set = data_lib.join_extra(train_set, extra)  # the generator's training images
    class_names = tuple(ds.class_names)
    null_label = len(class_names)
    batch_size = int(config.train.batch_size)
    vae_sha = _write_vae_copy(workdir, vae.params)
    _write_equaliser_copy(workdir, config.vae_workdir)
    lat = _prepare_latents(config, workdir, vae, train_set, batch_size)
    schedule = diffusion.schedule_from_config(config.diffusion)
    unet = build_unet(config.model, len(class_names))
    sampler = data_lib.BalancedSampler(lat.labels, batch_size, seed=int(config.seed))
    task = loop.Task(
        name="ldm",
        min_updates=min_updates_for(len(train_set)),
        init_params=_init_params_fn(unet, lat.shape),
        loss_fn=make_loss_fn(unet, schedule, config, null_label, lat.shift, lat.scale),
        get_batch=_batch_fn(sampler, lat),
        global_batch_size=batch_size,
        steps_per_epoch=sampler.steps_per_epoch,
        evaluate=_make_evaluate(
            config, vae, unet, schedule, lat, class_names, sampler.steps_per_epoch
        ),
        finalize=lambda state, workdir: {"schedule": diffusion.schedule_to_dict(schedule)},
        metadata={
            **_run_metadata(config, vae, vae_config, ds, len(train_set), lat, vae_sha),
            "extra_train": extra_summary,
        },
    )
    result = loop.run(config, workdir, task)
    if not result.interrupted and jax.process_index() == 0:
        _sync_decoder_check(config, workdir, vae, int(jax.device_get(result.state.step)), real)
    return result


def _decoder_check_reals(
    ds: data_lib.ImageSet, split: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(reference, spread) real images of the decoder check: the training split and the
    validation split (the training split again where it is too small); never the test split."""
    train = ds.subset(split["train"]).images
    val = ds.subset(split["val"]).images if len(split.get("val", ())) >= 8 else train
    return train, val  # (N, H, W, 1), (M, H, W, 1)


def decoder_check_reals(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """The real images the decoder check of a diffusion run with `config` judges against
    (`_decoder_check_reals`), rebuilt from the VAE run; writes nothing (for probes)."""
    vae = load_vae(config.vae_workdir)
    vae_config = ml_collections.ConfigDict(vae.meta["config"])
    with tempfile.TemporaryDirectory() as scratch:  # the split is saved there, not in a run
        ds, split = _vae_training_split(config, vae, vae_config, scratch)
    return _decoder_check_reals(ds, split)


def _sync_decoder_check(config, workdir: str, vae: VAEPipeline, step: int, real) -> None:
    """Judges the copied equaliser on the finished run's samples (`decoder_check.sync`)."""
    decoder = config.get("decoder", {})
    rec = decoder_check.sync(
        workdir,
        str(decoder.get("equaliser", "on")),  # configs older than the check: decode as they did
        vae.equaliser,
        step,
        real,
        int(decoder.get("check_per_class", 32)),
        seed=int(config.seed),
    )
    if rec is not None and "as_trained" in rec:
        dev = {k: round(rec[k]["deviation"], 3) for k in ("as_trained", "equalised")}
        keep = "keeps" if rec["equalise"] else "leaves out"
        print(f"ldm: decoder check {keep} the equaliser (deviation from real {dev}).")


def _vae_training_split(
    config: ml_collections.ConfigDict,
    vae: VAEPipeline,
    vae_config: ml_collections.ConfigDict,
    workdir: str,
) -> tuple[data_lib.ImageSet, dict[str, Any]]:
    """The VAE run's data set (refused if it changed since) and its split (index arrays).

    The split is the VAE run's, written to `<workdir>/split.json` too.
    """
    ds = data_lib.load_imageset(vae_config.data)
    if ds.fingerprint != vae.meta.get("dataset_fingerprint"):
        raise UserError(
            f"the data the VAE in {config.vae_workdir!r} was trained on changed since "
            "(dataset fingerprint differs); retrain the VAE or restore the data."
        )
    # The VAE run's saved split, as saved (its rules may predate the current ones).
    vae_split = os.path.join(config.vae_workdir, "split.json")
    if not os.path.isfile(vae_split):
        raise UserError(
            f"{vae_split} is missing: the diffusion stage trains on the VAE run's own training "
            "split. Restore the file, or retrain the VAE."
        )
    split = data_lib.load_split(
        vae_split,
        ds,
        near_duplicate_threshold=vae_config.data.split.get("near_duplicate_threshold"),
    )
    if jax.process_index() == 0:
        data_lib.save_split(os.path.join(workdir, "split.json"), ds, split)
    return ds, split


def _prepare_latents(
    config: ml_collections.ConfigDict,
    workdir: str,
    vae: VAEPipeline,
    train_set: data_lib.ImageSet,
    batch_size: int,
) -> _Latents:
    """Encodes (or loads the cached) training posteriors and their normalisation."""
    mean, logvar = cached_latents(
        workdir, vae, train_set, bool(config.latents.flip), batch_size
    )  # (N, V, h, w, c)
    labels = train_set.labels.astype(np.int32)
    shift, scale, x0_clip = latent_normalization(
        mean,
        logvar,
        config.latents.normalize,
        vae.latent_scale_factor,
        bool(config.latents.sample_posterior),
        float(config.latents.x0_clip_percentile),
    )  # (C,), (C,), per-channel clip bounds (see latent_normalization for why)
    shape = tuple(int(d) for d in vae.meta["latent_shape"])  # (h, w, c)
    return _Latents(mean, logvar, labels, shape, shift, scale, x0_clip)


def _init_params_fn(unet: UNet, latent_shape: tuple[int, ...]) -> Callable[[jax.Array], Any]:
    """rng -> UNet parameters, initialised on one latent of `latent_shape`."""

    def init_params(rng):
        x = jnp.zeros((1,) + latent_shape, jnp.float32)
        t = jnp.zeros((1,), jnp.int32)
        y = jnp.zeros((1,), jnp.int32)
        return unet.init({"params": rng, "dropout": rng}, x, t, y, train=False)["params"]

    return init_params


def _batch_fn(
    sampler: data_lib.BalancedSampler, lat: _Latents
) -> Callable[[int, int, int], dict[str, np.ndarray]]:
    """The engine's get_batch: this process's share of the class-balanced batch of a step."""

    def get_batch(step, process_index, process_count):
        idx = sampler.indices(step, process_index, process_count)
        return {"mean": lat.mean[idx], "logvar": lat.logvar[idx], "label": lat.labels[idx]}

    return get_batch


def _make_evaluate(
    config: ml_collections.ConfigDict,
    vae: VAEPipeline,
    unet: UNet,
    schedule: diffusion.Schedule,
    lat: _Latents,
    class_names: tuple[str, ...],
    steps_per_epoch: int,
) -> Callable[[TrainState, str], dict[str, Any]]:
    """The evaluation hook: a labelled grid of EMA samples per class, and the loss curve."""
    n_per_class = int(config.train.eval_num_images)
    eval_labels = jnp.repeat(jnp.arange(len(class_names), dtype=jnp.int32), n_per_class)
    decode = make_decode_fn(vae.module, lat.shift, lat.scale, vae.equaliser)
    sample_fn = make_latent_sampler(
        make_apply_fn(unet),
        schedule,
        lat.shape,
        grid_sampler_spec(config),
        null_label=len(class_names),
        prediction=config.diffusion.prediction,
        clip_x0=lat.x0_clip,
    )

    def evaluate(state: TrainState, workdir: str) -> dict[str, Any]:
        epoch = int(jax.device_get(state.step)) // steps_per_epoch
        z = sample_fn(
            loop.unreplicate_to_host(state.ema_params),
            eval_labels,
            jax.random.PRNGKey(int(config.seed) + 1),
        )
        images = np.asarray(decode(vae.params, z))
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

    return evaluate


def _run_metadata(
    config: ml_collections.ConfigDict,
    vae: VAEPipeline,
    vae_config: ml_collections.ConfigDict,
    ds: data_lib.ImageSet,
    num_train: int,
    lat: _Latents,
    vae_sha: str,
) -> dict[str, Any]:
    """What every LDM checkpoint records so that sampling needs only the workdir."""
    return {
        "dataset_fingerprint": ds.fingerprint,
        "class_names": list(ds.class_names),
        "null_label": len(ds.class_names),
        "num_train": num_train,
        "latent_shape": list(lat.shape),
        "latent_scale_factor": vae.latent_scale_factor,
        "latent_normalize": str(config.latents.normalize),
        "latent_shift": [float(v) for v in lat.shift],
        "latent_channel_scale": [float(v) for v in lat.scale],
        "x0_clip": lat.x0_clip,
        "image_size": int(vae_config.data.image_size),
        "vae": {
            "file": VAE_PARAMS_FILE,
            "sha256": vae_sha,
            "model": vae.meta["config"]["model"],
            "source_workdir": os.path.abspath(config.vae_workdir),
            "data": vae.meta["config"]["data"],
        },
    }
