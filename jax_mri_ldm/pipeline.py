"""The inference surface: load a finished run, encode / decode / reconstruct, build samplers.

Everything that uses a trained model goes through here: `sample.py` (via `export.py`), the
evaluation report, the training grids and the benchmark. The trainers import this module; this
module never imports a trainer.

* Sampler settings (`SamplerSpec`, a run's default sampler) live in `sampler_settings.py`;
  `LDMPipeline.default_spec()` is the loaded run's.
* `load_vae(workdir)` -> `VAEPipeline` (encode, decode, reconstruct a stage-1 run). A run with a
  decoder equaliser (`equaliser.py`, its file in the run directory) decodes through it
  everywhere; `VAEPipeline.without_equaliser()` decodes as the decoder was trained.
* `load_ldm(workdir)` -> `LDMPipeline` (its UNet, schedule, latent normalisation and frozen VAE;
  `make_sampler(spec)` and `image_sampler(spec)` turn it into latents or images).

Latent spaces. The VAE encodes images to raw latents ``z``; the diffusion model works on
normalised latents ``z_n = (z - latent_shift) * latent_channel_scale`` (per channel, computed by
`train_ldm.latent_normalization`). ``latent_scale_factor`` is the VAE run's single global
factor (1 / std of its latents), kept for the ``global`` normalisation mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jax_mri_ldm import CLASS_NAMES, diffusion, equaliser, sampling
from jax_mri_ldm.batching import batched_apply
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.losses import from_model_space, to_model_space
from jax_mri_ldm.models.unet import UNet
from jax_mri_ldm.models.vae import VAE
from jax_mri_ldm.sampler_settings import SamplerSpec, default_sampler_spec

PyTree = Any
SampleFn = Callable[[PyTree, jax.Array, jax.Array], jax.Array]

# The weight sets a finished VAE can infer with (its run's `inference_params`; absent: "params").
VAE_INFERENCE_PARAMS: tuple[str, ...] = ("params", "ema_params")


# ----------------------------------------------------------------------------- networks


def build_vae(model_cfg: ml_collections.ConfigDict) -> VAE:
    """The VAE described by a configs/vae.py `config.model`."""
    return VAE(
        features=tuple(model_cfg.features),
        latent_channels=int(model_cfg.latent_channels),
        upsample=str(model_cfg.get("upsample", "transpose")),  # absent: runs before the option
        dtype=jnp.dtype(model_cfg.dtype),
    )


def build_unet(model_cfg: ml_collections.ConfigDict, num_classes: int) -> UNet:
    """The UNet described by a configs/ldm.py `config.model` (null class id = num_classes)."""
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


def make_apply_fn(unet: UNet) -> Callable[[PyTree, jax.Array, jax.Array, jax.Array], jax.Array]:
    """(params, x, t, y) -> model output, the form the samplers take (no dropout)."""

    def apply_fn(params, x, t, y):
        return unet.apply({"params": params}, x, t, y, train=False)

    return apply_fn


def make_encode_fn(vae: VAE, params: PyTree) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
    """Jitted images01 (B, H, W, 1) -> posterior (mean, logvar), each (B, h, w, c)."""

    @jax.jit
    def encode(params, images01):
        return vae.apply({"params": params}, to_model_space(images01), method=VAE.encode)

    return lambda images01: encode(params, images01)  # params stay an argument, not a constant


def params_sha256(params: PyTree) -> str:
    """SHA-256 of the msgpack serialisation of a parameter pytree (host copy)."""
    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), params)
    return hashlib.sha256(flax.serialization.msgpack_serialize(host)).hexdigest()


def _equalised(x01: jax.Array, gains: np.ndarray | None) -> jax.Array:
    """Decoded images (B, H, W, 1) in [0, 1], through the decoder equaliser when there is one."""
    return x01 if gains is None else equaliser.apply(x01, gains)


def make_reconstruct_fn(
    vae: VAE, gains: np.ndarray | None = None
) -> Callable[[PyTree, jax.Array], jax.Array]:
    """Jitted (params, images01) -> posterior-mean reconstructions in [0, 1] (equalised by
    `gains`, the decoder equaliser's, when given)."""

    @jax.jit
    def reconstruct(params, images01):
        mean, _ = vae.apply({"params": params}, to_model_space(images01), method=VAE.encode)
        x = from_model_space(vae.apply({"params": params}, mean, method=VAE.decode))
        return _equalised(x, gains)

    return reconstruct


def make_decode_fn(vae: VAE, shift: Any = 0.0, scale: Any = 1.0, gains: np.ndarray | None = None):
    """Jitted (vae_params, normalised latents) -> images (B, H, W, 1) in [0, 1].

    Args:
      vae: the VAE module.
      shift: ``(C,)`` (or scalar) latent shift; 0 for raw latents.
      scale: ``(C,)`` (or scalar) latent scale; 1 for raw latents.
      gains: the decoder equaliser's radial gains (`equaliser.py`); None decodes without.

    Returns:
      ``decode(vae_params, z)`` with ``z: (B, h, w, C)`` in the diffusion model's space.
    """
    shift = jnp.asarray(shift, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)

    @jax.jit
    def decode(vae_params, z):
        x = vae.apply({"params": vae_params}, z / scale + shift, method=VAE.decode)
        return _equalised(from_model_space(x), gains)

    return decode


def make_latent_sampler(
    apply_fn: Callable,
    schedule: diffusion.Schedule,
    latent_shape: tuple[int, ...],
    spec: SamplerSpec,
    *,
    null_label: int,
    prediction: str = "eps",
    clip_x0: Any = None,
) -> SampleFn:
    """The one wiring of a sampler setting to `sampling.make_sample_fn`.

    Args:
      apply_fn: ``(params, x, t, y) -> output`` (`make_apply_fn`).
      schedule: the training schedule.
      latent_shape: ``(h, w, c)`` of one latent.
      spec: the setting (defaults are filled in here).
      null_label: the unconditional class id.
      prediction: what the network predicts (``config.diffusion.prediction``).
      clip_x0: the run's x0 clip bounds (see `sampling.normalize_clip`).

    Returns:
      Jitted ``fn(params, labels (B,), rng) -> (B, h, w, c)`` normalised latents.

    Raises:
      UserError: an epsilon scaling that these steps would amplify (`sampling.eps_scale_jump`).
    """
    T = schedule.num_timesteps
    r = spec.resolved(T)
    ts = sampling.timesteps_for(r.sampler, r.steps, T, r.spacing, schedule=schedule)
    try:
        sampling.check_eps_scale(schedule, ts, r.eps_scale)
    except ValueError as e:
        raise UserError(
            f"{r.name(T)}: {e} (the setting's eps_scale and spacing: sample.py --eps_scale, "
            "--spacing; evaluate.py --config.eps_scale, --config.spacing or config.samplers)."
        ) from e
    return sampling.make_sample_fn(
        apply_fn,
        schedule,
        latent_shape,
        sampler=r.sampler,
        steps=r.steps,
        guidance_scale=r.guidance_scale,
        null_label=null_label,
        spacing=r.spacing,
        eta=r.eta,
        prediction=prediction,
        clip_x0=clip_x0,
        eps_scale=r.eps_scale,
        guidance_interval=r.guidance_interval,
    )


def local_data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh named `data` over this process's devices (sampling runs per process)."""
    n = jax.local_device_count()
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def config_fingerprint(config: dict[str, Any]) -> str:
    """Short SHA-256 of a run's config (sorted JSON), recorded with every sample."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- stage 1


@dataclasses.dataclass
class VAEPipeline:
    """A trained VAE ready for inference.

    Attributes:
      module: the VAE network.
      params: its parameters (host arrays).
      meta: the run's final metadata (config, latent_scale_factor, latent_shape, ...); for the
        VAE inside a diffusion run, that run's ``vae`` metadata section.
      equaliser: the decoder equaliser's (R + 1,) radial gains, applied after every decode
        (`equaliser.py`); None when the run has none.
    """

    module: VAE
    params: PyTree
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    equaliser: np.ndarray | None = None

    def without_equaliser(self) -> VAEPipeline:
        """The same VAE decoding without the equaliser (the decoder as trained)."""
        return dataclasses.replace(self, equaliser=None)

    @property
    def latent_scale_factor(self) -> float:
        """1 / std of the training latents (stage-1 runs)."""
        return float(self.meta["latent_scale_factor"])

    def encode(self, images01: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 1) in [0, 1] -> posterior (mean, logvar), each (N, h, w, c)."""
        return batched_apply(
            make_encode_fn(self.module, self.params), images01, batch_size=batch_size
        )

    def decode(self, latents: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Raw latents (N, h, w, c) -> images (N, H, W, 1) in [0, 1]."""
        decode = make_decode_fn(self.module, gains=self.equaliser)
        return batched_apply(lambda z: decode(self.params, z), latents, batch_size=batch_size)

    def reconstruct(self, images01: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """(N, H, W, 1) in [0, 1] -> posterior-mean reconstructions, same shape."""
        reconstruct = make_reconstruct_fn(self.module, self.equaliser)
        return batched_apply(lambda x: reconstruct(self.params, x), images01, batch_size=batch_size)


def load_vae(workdir: str) -> VAEPipeline:
    """Loads a finished VAE run.

    Args:
      workdir: a stage-1 run directory.

    Returns:
      The VAE with its inference parameters and final metadata.

    Raises:
      ValueError: no finished VAE run in `workdir` (the message says what to run).
    """
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(
            f"no VAE run in {workdir!r} (no checkpoints/ there); train one first with "
            f"`python train.py --config=configs/vae.py --workdir={workdir}`."
        )
    checkpointer = ckpt_lib.Checkpointer(workdir)
    try:
        if checkpointer.latest_step() is None:
            raise UserError(f"{workdir!r} holds no checkpoint yet; finish the VAE training first.")
        meta = checkpointer.restore_meta()
        if meta.get("stage") != "vae":
            raise UserError(
                f"{workdir!r} holds a {meta.get('stage')!r} run, not a VAE; point "
                "--config.vae_workdir at the stage-1 run directory."
            )
        if not meta.get("final"):
            raise UserError(
                f"the VAE run in {workdir!r} is not finished (latest step "
                f"{checkpointer.latest_step()}); rerun its train.py command to complete it."
            )
        items, meta = checkpointer.restore_raw()
    finally:
        checkpointer.close()
    which = meta.get("inference_params", VAE_INFERENCE_PARAMS[0])
    module = build_vae(ml_collections.ConfigDict(meta["config"]["model"]))
    params = items[which]
    path, gains = os.path.join(workdir, equaliser.FILE_NAME), None
    if os.path.exists(path):  # hashing the weights costs time only where there is a file
        size = int(meta.get("image_size", meta["config"]["data"]["image_size"]))
        gains = equaliser.load(path, params_sha256(params), size)
    return VAEPipeline(module=module, params=params, meta=meta, equaliser=gains)


# ----------------------------------------------------------------------------- stage 2


@dataclasses.dataclass
class LDMPipeline:
    """A trained latent diffusion run: everything needed to sample labelled images.

    Attributes:
      workdir: the run directory.
      meta: the checkpoint's metadata.
      step: the checkpoint's step.
      config: the run's config.
      class_names: label id -> name.
      null_label: the unconditional class id (guidance).
      latent_shape: ``(h, w, c)``.
      latent_scale_factor: the VAE run's global scale factor (1 / std of its latents).
      latent_shift: ``(c,)`` per-channel shift of the normalisation (module docstring).
      latent_channel_scale: ``(c,)`` per-channel scale of the normalisation.
      x0_clip: the samplers' x0 clip bounds (hashable, see `sampling.normalize_clip`).
      image_size: side of the decoded images.
      schedule: the noise schedule.
      unet: the network.
      params: raw UNet parameters.
      ema_params: EMA UNet parameters.
      vae: the frozen VAE (its ``meta`` is this run's ``vae`` metadata section).
      final: whether the checkpoint is the finished run's.
      config_fingerprint: short hash of the config.
    """

    workdir: str
    meta: dict[str, Any]
    step: int
    config: ml_collections.ConfigDict
    class_names: tuple[str, ...]
    null_label: int
    latent_shape: tuple[int, ...]
    latent_scale_factor: float
    latent_shift: np.ndarray
    latent_channel_scale: np.ndarray
    x0_clip: Any
    image_size: int
    schedule: diffusion.Schedule
    unet: UNet
    params: PyTree
    ema_params: PyTree
    vae: VAEPipeline
    final: bool
    config_fingerprint: str

    def apply_fn(self) -> Callable:
        """(params, x, t, y) -> UNet output (`make_apply_fn`)."""
        return make_apply_fn(self.unet)

    def decode_fn(self):
        """Jitted (vae_params, normalised latents) -> images in [0, 1] (`make_decode_fn`)."""
        return make_decode_fn(
            self.vae.module, self.latent_shift, self.latent_channel_scale, self.vae.equaliser
        )

    def decode(self, z: jax.Array) -> np.ndarray:
        """Normalised latents (B, h, w, c) -> images (B, H, W, 1) in [0, 1]."""
        return np.asarray(self.decode_fn()(self.vae.params, z))

    def default_spec(self) -> SamplerSpec:
        """This run's default sampler (`default_sampler_spec` of its prediction target and
        schedule)."""
        prediction = str(self.config.diffusion.get("prediction", "eps"))
        return default_sampler_spec(prediction, self.schedule)

    def sampler_params(self, spec: SamplerSpec) -> PyTree:
        """The UNet parameters a setting samples with (EMA unless `spec.use_ema` is off)."""
        return self.ema_params if spec.use_ema else self.params

    def make_sampler(self, spec: SamplerSpec) -> SampleFn:
        """Jitted ``fn(params, labels (B,), rng) -> (B, h, w, c)`` normalised latents."""
        return make_latent_sampler(
            self.apply_fn(),
            self.schedule,
            self.latent_shape,
            spec,
            null_label=self.null_label,
            prediction=self.config.diffusion.prediction,
            clip_x0=self.x0_clip,
        )

    def image_sampler(
        self, spec: SamplerSpec, batch_size: int, mesh: jax.sharding.Mesh | None = None
    ) -> ImageSampler:
        """Labels -> decoded images for one setting, sharded over `mesh` (default: local)."""
        return ImageSampler(self, spec, batch_size, mesh)

    def sample_images(
        self, labels: np.ndarray, seed: int, spec: SamplerSpec | None = None, batch_size: int = 16
    ) -> np.ndarray:
        """Images (N, H, W, 1) in [0, 1] for labels (N,); see `ImageSampler.batches`."""
        sampler = self.image_sampler(spec or self.default_spec(), batch_size)
        parts = [images for _, _, images in sampler.batches(labels, seed)]
        return (
            np.concatenate(parts) if parts else np.zeros((0, self.image_size, self.image_size, 1))
        )


class ImageSampler:
    """One compiled sampler + decoder for a setting; labels in, images out, batch by batch.

    The batch size is rounded up to a multiple of the mesh's devices; parameters are replicated
    and each batch of labels is sharded over the mesh's `data` axis.
    """

    def __init__(
        self,
        run: LDMPipeline,
        spec: SamplerSpec,
        batch_size: int,
        mesh: jax.sharding.Mesh | None = None,
    ):
        mesh = mesh if mesh is not None else local_data_mesh()
        self.spec = spec.resolved(run.schedule.num_timesteps)
        self.batch_size = int(np.ceil(batch_size / mesh.size) * mesh.size)
        replicated = NamedSharding(mesh, P())
        self._params = jax.device_put(run.sampler_params(spec), replicated)
        self._vae_params = jax.device_put(run.vae.params, replicated)
        self._labels = NamedSharding(mesh, P("data"))
        sample_batch = run.make_sampler(spec)
        # Each image is sampled as a batch of one with its own key (vmapped over the batch),
        # so its noise, and hence its pixels, do not depend on the images it is batched with.
        self._sample = jax.jit(
            jax.vmap(lambda p, y, k: sample_batch(p, y[None], k)[0], in_axes=(None, 0, 0))
        )
        self._decode = run.decode_fn()

    def __call__(self, labels: np.ndarray, keys: jax.Array) -> np.ndarray:
        """Labels (B,) int and one PRNG key per image (B, 2), B = `batch_size` -> images
        (B, H, W, 1) in [0, 1]."""
        y = jax.device_put(jnp.asarray(labels), self._labels)
        keys = jax.device_put(keys, self._labels)
        z = self._sample(self._params, y, keys)  # (B, h, w, c)
        return np.asarray(self._decode(self._vae_params, z))

    def batches(
        self, labels: np.ndarray, seed: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Samples `labels` (N,) in batches; image i uses the key fold_in(PRNGKey(seed), i).

        The last batch is padded with label 0 (one compile for every batch) and cut back.

        Yields:
          (index of the batch's first image, its labels (n,), its images (n, H, W, 1)).
        """
        base = jax.random.PRNGKey(seed)
        b_size = self.batch_size
        for b in range(int(np.ceil(len(labels) / b_size))):
            chunk = np.asarray(labels[b * b_size : (b + 1) * b_size], np.int32)
            padded = np.concatenate([chunk, np.zeros(b_size - len(chunk), np.int32)])
            index = np.arange(b * b_size, (b + 1) * b_size, dtype=np.uint32)  # (B,) image ids
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, index)  # (B, 2)
            yield b * b_size, chunk, self(padded, keys)[: len(chunk)]


def _read_vae_copy(workdir: str, vae_meta: dict[str, Any]) -> PyTree:
    """The diffusion run's frozen VAE parameters, checked against their stored SHA-256."""
    path = os.path.join(workdir, vae_meta["file"])
    if not os.path.exists(path):
        raise UserError(f"{path} is missing; the run directory is incomplete.")
    with open(path, "rb") as f:
        blob = f.read()
    if hashlib.sha256(blob).hexdigest() != vae_meta["sha256"]:
        raise UserError(
            f"{path} does not match the checksum stored in the checkpoint; the VAE copy "
            "was modified. Restore it or retrain."
        )
    return flax.serialization.msgpack_restore(blob)


def _schedule_of(meta: dict[str, Any], config: ml_collections.ConfigDict) -> diffusion.Schedule:
    if meta.get("schedule"):
        return diffusion.schedule_from_dict(meta["schedule"])
    return diffusion.schedule_from_config(config.diffusion)


def load_ldm(workdir: str, step: int | None = None) -> LDMPipeline:
    """Loads a diffusion run (its latest checkpoint, or `step`).

    Raises:
      ValueError: `workdir` is missing, not a run, not a diffusion run, or its VAE copy is
        missing or altered (the message names it and says what to do).
    """
    meta = ckpt_lib.read_run_meta(workdir, step)
    if meta.get("stage") != "ldm":
        raise UserError(
            f"--workdir={workdir} is a {meta.get('stage')!r} run, not a diffusion run; "
            "sample from the workdir of `train.py --config=configs/ldm.py`."
        )
    checkpointer = ckpt_lib.Checkpointer(workdir)
    try:
        items, meta = checkpointer.restore_raw(step)
    finally:
        checkpointer.close()
    config = ml_collections.ConfigDict(meta["config"])
    class_names = tuple(meta.get("class_names", CLASS_NAMES))
    factor = float(meta["latent_scale_factor"])
    # Older runs stored the per-channel scale as "latent_scale"; the oldest, one global factor.
    channel_scale = meta.get("latent_channel_scale", meta.get("latent_scale", factor))
    vae = VAEPipeline(
        module=build_vae(ml_collections.ConfigDict(meta["vae"]["model"])),
        params=_read_vae_copy(workdir, meta["vae"]),
        meta=meta["vae"],
        equaliser=equaliser.chosen_gains(  # the copy, unless the decoder check left it out
            workdir,
            equaliser.load(
                os.path.join(workdir, equaliser.LDM_FILE_NAME),
                meta["vae"]["sha256"],
                int(meta["image_size"]),
            ),
        ),
    )
    return LDMPipeline(
        workdir=workdir,
        meta=meta,
        step=int(np.asarray(items["step"])),
        config=config,
        class_names=class_names,
        null_label=int(meta["null_label"]),
        latent_shape=tuple(int(d) for d in meta["latent_shape"]),
        latent_scale_factor=factor,
        latent_shift=np.asarray(meta.get("latent_shift", 0.0), np.float32),
        latent_channel_scale=np.asarray(channel_scale, np.float32),
        x0_clip=sampling.normalize_clip(meta.get("x0_clip")),
        image_size=int(meta["image_size"]),
        schedule=_schedule_of(meta, config),
        unet=build_unet(config.model, len(class_names)),
        params=items["params"],
        ema_params=items["ema_params"],
        vae=vae,
        final=bool(meta.get("final")),
        config_fingerprint=config_fingerprint(meta["config"]),
    )
