"""Stage 1: train the paper's VAE with the shared engine; `train_and_evaluate(config, workdir)`.

The run directory ends up self-describing:
  config.json, split.json, metrics.jsonl, tb/, figures/ (reconstructions, loss curve),
  checkpoints/<step>/ (state + metadata incl. the latent scale factor) and run.json.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jax_mri_ldm import data as data_lib
from jax_mri_ldm import equaliser, plots
from jax_mri_ldm.batching import batched_apply
from jax_mri_ldm.data.augment import augment_from_config
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.engine import logging as log_lib
from jax_mri_ldm.engine import loop
from jax_mri_ldm.engine.state import TrainState
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.evaluation import metrics as metrics_lib
from jax_mri_ldm.losses import to_model_space, vae_loss
from jax_mri_ldm.models.vae import VAE
from jax_mri_ldm.pipeline import (
    VAE_INFERENCE_PARAMS,
    build_vae,
    make_encode_fn,
    make_reconstruct_fn,
    params_sha256,
)

# The paper's schedule on the built-in set (50 epochs = 1,000 updates) reaches the paper's loss;
# a run with fewer updates (small data sets with epoch-counted presets) ends with a warning.
MIN_UPDATES = 1_000


def prepare_data(config: ml_collections.ConfigDict, workdir: str | None):
    """Loads the dataset, makes (or re-reads) the split and writes it into the workdir.

    Returns:
      (ImageSet of everything, {"train"|"val"|"test": indices}).
    """
    ds = data_lib.load_imageset(config.data)
    split_path = os.path.join(workdir, "split.json") if workdir else None
    # A resumed run keeps its saved split even if the split rules changed since; a new run
    # (no checkpoint yet) makes its split from the current config.
    if split_path:
        loop.check_dataset_unchanged(workdir, ds.fingerprint)  # a refused resume writes nothing
    resuming = split_path is not None and _has_checkpoint(workdir)
    if resuming and not os.path.isfile(split_path):
        raise UserError(
            f"{split_path} is missing: a resumed run must keep the split it trained on. Restore "
            "the file, or start a new run in an empty --workdir."
        )
    split = data_lib.saved_or_new_split(ds, config.data.split, split_path if resuming else None)
    if split_path and jax.process_index() == 0:
        data_lib.save_split(split_path, ds, split)
    return ds, split


def _has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds a checkpoint the engine would resume from."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return False
    checkpointer = ckpt_lib.Checkpointer(workdir)
    try:
        return checkpointer.latest_step() is not None
    finally:
        checkpointer.close()


def reconstruction_metrics(
    reconstruct, params: Any, images: np.ndarray, batch_size: int
) -> tuple[dict[str, float], np.ndarray]:
    """PSNR / SSIM of reconstructions of `images` (N, H, W, 1) in [0, 1].

    Args:
      reconstruct: from `make_reconstruct_fn` (compiled once per run).
      params: VAE parameters.
      images: (N, H, W, 1) in [0, 1].
      batch_size: evaluation batch size.

    Returns:
      ({"psnr", "ssim"} means over the images, reconstructions (N, H, W, 1)).
    """
    recon = batched_apply(lambda x: reconstruct(params, x), images, batch_size=batch_size)
    psnr = np.asarray(metrics_lib.psnr(jnp.asarray(images), jnp.asarray(recon)))
    ssim = np.asarray(metrics_lib.ssim(jnp.asarray(images), jnp.asarray(recon)))
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}, recon


def save_loss_curve(workdir: str) -> str:
    """Per-epoch mean training loss beside the paper's reported values (paper Fig. 4, left)."""
    records = log_lib.read_metrics(workdir, "train")
    if not records:
        return ""
    epochs = [r["epoch"] for r in records]
    losses = [r["loss"] for r in records]
    # The paper's L1 is on [0, 1] pixels; ours is in model space [-1, 1], i.e. twice as large.
    # The extra curve puts ours on the paper's scale: L1 / 2 + (loss - L1), the KL term as is.
    paper_scale = [r["loss"] - r["l1"] / 2 for r in records if "l1" in r]
    extra = (
        {"ours on [0, 1] pixels (L1/2 + beta KL)": (epochs, paper_scale)}
        if len(paper_scale) == len(records)
        else None
    )
    return plots.save_loss_curve(
        epochs,
        losses,
        os.path.join(workdir, "figures", "vae_loss_curve.png"),
        title="VAE training loss (L1 + beta KL)",
        reference={"paper (Fig. 4 left)": tuple(zip(*plots.PAPER_VAE_LOSS, strict=True))},
        extra=extra,
        logy=True,
    )


def latent_statistics(model: VAE, params: Any, images: np.ndarray, batch_size: int, seed: int):
    """Encodes `images`; returns (means, logvars, std of one posterior sample per image)."""
    mean, logvar = batched_apply(make_encode_fn(model, params), images, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    z = mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape).astype(np.float32)
    return mean, logvar, float(np.std(z))


def make_loss_fn(model: VAE, config: ml_collections.ConfigDict):
    """The stage-1 training loss ``loss_fn(params, batch, rng) -> (loss, metrics)``.

    Augments the ``[0, 1]`` images on device (``config.data.augment``), maps them to model space
    ``[-1, 1]``, and returns L1 + beta KL, plus the spectral term when
    ``config.loss.spectral_weight`` > 0 (`jax_mri_ldm.losses.vae_loss`). Shared by training and
    ``bench/run.py`` so the benchmark times exactly this.

    Args:
      model: the VAE.
      config: a configs/vae.py config (``data.augment``, ``loss``).

    Returns:
      ``loss_fn`` for `jax_mri_ldm.engine.loop.train_step`; ``batch["image"]`` is
      ``(B, H, W, 1)`` in ``[0, 1]``.
    """
    aug_cfg = config.data.augment
    beta, kl_reduction = float(config.loss.beta), config.loss.kl_reduction
    spectral_weight = float(config.loss.get("spectral_weight", 0.0))

    def loss_fn(params, batch, rng):
        aug_rng, latent_rng = jax.random.split(rng)
        images = augment_from_config(aug_rng, batch["image"], aug_cfg)
        x = to_model_space(images)  # (B, H, W, 1) in [-1, 1]
        x_hat, mean, logvar = model.apply({"params": params}, x, rngs={"latent": latent_rng})
        return vae_loss(
            x,
            x_hat,
            mean,
            logvar,
            beta=beta,
            kl_reduction=kl_reduction,
            spectral_weight=spectral_weight,
        )

    return loss_fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> loop.RunResult:
    """Trains the VAE on `config.data`, evaluating and checkpointing into `workdir`.

    Args:
      config: a configs/vae.py config.
      workdir: run directory; an existing run there is resumed.

    Returns:
      The engine's RunResult (final metadata holds `latent_scale_factor`).
    """
    loop.ensure_writable_workdir(workdir)
    inference_params_key(config)  # refuse a bad value before loading any data
    config = with_builtin_budget(config)
    ds, split = prepare_data(config, workdir)
    train_set, val_set, test_set = (ds.subset(split[k]) for k in ("train", "val", "test"))
    model = build_vae(config.model)
    size = _checked_image_size(config)
    batch_size = int(config.train.batch_size)
    sampler = data_lib.BalancedSampler(train_set.labels, batch_size, seed=int(config.seed))
    hooks = _Hooks(
        config=config,
        model=model,
        reconstruct=make_reconstruct_fn(model),
        train_set=train_set,
        val_set=val_set,
        test_set=test_set,
        batch_size=batch_size,
        size=size,
        n_fig=min(int(config.train.eval_num_images), len(val_set)),
    )
    task = loop.Task(
        name="vae",
        min_updates=MIN_UPDATES,
        init_params=_init_params_fn(model, size),
        loss_fn=make_loss_fn(model, config),
        get_batch=_batch_fn(sampler, train_set),
        global_batch_size=batch_size,
        steps_per_epoch=sampler.steps_per_epoch,
        evaluate=hooks.evaluate,
        finalize=hooks.finalize,
        metadata={
            "dataset_fingerprint": ds.fingerprint,
            "class_names": list(ds.class_names),
            "num_train": len(train_set),
            "image_size": size,
        },
    )
    result = loop.run(config, workdir, task)
    if not result.interrupted:
        _sync_equaliser(config, hooks, result.state, workdir)
    return result


def _equaliser_current(path: str, params: Any, size: int) -> bool:
    """Whether `path` holds an equaliser this code reads, fitted for `params`."""
    try:
        return equaliser.load(path, params_sha256(params), size) is not None
    except UserError:  # another version or other weights: refit it
        return False


def _sync_equaliser(config, hooks: _Hooks, state: TrainState, workdir: str) -> None:
    """Makes the finished run's equaliser file follow `config.model.equaliser`: fits it for a
    run that finished without one, removes it when the option is off (`equaliser.py`)."""
    path = os.path.join(workdir, equaliser.FILE_NAME)
    wanted = bool(config.model.get("equaliser", False))
    params = hooks.inference_params(state) if wanted else None  # one host copy for both
    if wanted and not _equaliser_current(path, params, hooks.size):
        scores = hooks.fit_equaliser(params, workdir)
        print(f"vae: fitted the decoder equaliser ({path}); equalised test scores {scores}.")
    elif not wanted and os.path.exists(path) and jax.process_index() == 0:
        os.remove(path)
        print(f"vae: model.equaliser is off; removed {path} (the run decodes as trained).")


def with_builtin_budget(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with `train.num_steps` raised to `train.builtin_min_steps` on the built-in set.

    The phantoms need more VAE updates than the real sets for the same test SSIM
    (docs/results.md, "Built-in VAE: what more updates buy"); other data keeps `num_steps`, and
    a budget counted in epochs (`num_steps` = 0) is left as it is. The saved config.json
    holds the resolved budget.
    """
    floor = int(config.train.get("builtin_min_steps", 0))
    steps = int(config.train.num_steps)
    if floor <= steps or steps <= 0 or data_lib.resolve_source(config.data) != "builtin":
        return config
    config = copy.deepcopy(config)
    config.train.num_steps = floor
    print(
        f"vae: the built-in set trains at least {floor} updates (num_steps {steps} -> {floor}; "
        "--config.train.builtin_min_steps=0 keeps num_steps).",
        file=sys.stderr,
    )
    return config


def inference_params_key(config: ml_collections.ConfigDict) -> str:
    """`config.model.inference_params` ('params' for configs written before the field existed)."""
    key = str(config.model.get("inference_params", VAE_INFERENCE_PARAMS[0]))
    if key not in VAE_INFERENCE_PARAMS:
        raise UserError(
            f"config.model.inference_params={key!r} is not one of {VAE_INFERENCE_PARAMS}: 'params' "
            "uses the trained weights, 'ema_params' their exponential moving average."
        )
    return key


def _checked_image_size(config: ml_collections.ConfigDict) -> int:
    """config.data.image_size, refused unless the VAE's three downsamplings divide it."""
    size = int(config.data.image_size)
    if size % 8:
        raise UserError(
            f"config.data.image_size={size} must be a multiple of 8 (three 2x downsamplings)."
        )
    return size


def _init_params_fn(model: VAE, size: int) -> Callable[[jax.Array], Any]:
    """rng -> VAE parameters, initialised on one (1, size, size, 1) image."""

    def init_params(rng):
        x = jnp.zeros((1, size, size, 1), jnp.float32)
        return model.init({"params": rng, "latent": rng}, x)["params"]

    return init_params


def _batch_fn(
    sampler: data_lib.BalancedSampler, train_set: data_lib.ImageSet
) -> Callable[[int, int, int], dict[str, np.ndarray]]:
    """The engine's get_batch: this process's share of the class-balanced batch of a step."""

    def get_batch(step, process_index, process_count):
        idx = sampler.indices(step, process_index, process_count)
        return {"image": train_set.images[idx], "label": train_set.labels[idx]}

    return get_batch


@dataclasses.dataclass(frozen=True)
class _Hooks:
    """The engine's evaluation and finalisation hooks of a VAE run."""

    config: ml_collections.ConfigDict
    model: VAE
    reconstruct: Callable[..., Any]  # from make_reconstruct_fn, compiled once per run
    train_set: data_lib.ImageSet
    val_set: data_lib.ImageSet
    test_set: data_lib.ImageSet
    batch_size: int
    size: int  # image side
    n_fig: int  # images per reconstruction figure

    def evaluate(self, state: TrainState, workdir: str) -> dict[str, Any]:
        """Validation PSNR / SSIM, a reconstruction figure and the loss curve."""
        step = int(jax.device_get(state.step))
        scores, recon = reconstruction_metrics(
            self.reconstruct, self.inference_params(state), self.val_set.images, self.batch_size
        )
        if jax.process_index() == 0:
            plots.save_reconstruction_figure(
                self.val_set.images[: self.n_fig],
                recon[: self.n_fig],
                os.path.join(workdir, "figures", f"vae_recon_step{step:06d}.png"),
                title=f"validation, step {step}: PSNR {scores['psnr']:.2f} dB, "
                f"SSIM {scores['ssim']:.3f}",
            )
            save_loss_curve(workdir)
        return scores

    def inference_params(self, state: TrainState) -> Any:
        """The weights named by `config.model.inference_params`, on the host."""
        return loop.unreplicate_to_host(getattr(state, inference_params_key(self.config)))

    def finalize(self, state: TrainState, workdir: str) -> dict[str, Any]:
        """The latent scale factor and the test-split scores, for the final checkpoint."""
        params = self.inference_params(state)
        _, _, z_std = latent_statistics(
            self.model, params, self.train_set.images, self.batch_size, seed=int(self.config.seed)
        )
        test_scores, recon = reconstruction_metrics(
            self.reconstruct, params, self.test_set.images, self.batch_size
        )
        if jax.process_index() == 0:
            self._save_test_results(state, workdir, test_scores, recon)
        size = self.size
        out = {
            "latent_scale_factor": 1.0 / max(z_std, 1e-8),
            "latent_std": z_std,
            "latent_shape": [size // 8, size // 8, int(self.config.model.latent_channels)],
            "inference_params": inference_params_key(self.config),
            "test_metrics": test_scores,
        }
        if self.config.model.get("equaliser", False):
            scores = self.fit_equaliser(params, workdir)
            print(f"vae: fitted the decoder equaliser; equalised test scores {scores}.")
        return out

    def fit_equaliser(self, params: Any, workdir: str) -> dict[str, float]:
        """Fits the decoder equaliser on the training split, writes it into the run, and
        returns the test-split PSNR / SSIM of the equalised reconstructions."""
        train = self.train_set.images
        recon = batched_apply(
            lambda x: self.reconstruct(params, x), train, batch_size=self.batch_size
        )
        gains = equaliser.fit_gains(train, recon)
        if jax.process_index() == 0:
            rec = equaliser.record(gains, params_sha256(params), len(train))
            equaliser.save(os.path.join(workdir, equaliser.FILE_NAME), rec)
        scores, _ = reconstruction_metrics(
            make_reconstruct_fn(self.model, gains), params, self.test_set.images, self.batch_size
        )
        return scores

    def _save_test_results(
        self, state: TrainState, workdir: str, scores: dict[str, float], recon: np.ndarray
    ) -> None:
        """The test-split reconstruction figure and its "test" metrics record."""
        plots.save_reconstruction_figure(
            self.test_set.images[: self.n_fig],
            recon[: self.n_fig],
            os.path.join(workdir, "figures", "vae_recon_test.png"),
            title=f"test split: PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f}",
        )
        log_lib.MetricWriter(workdir, tensorboard=False).write(
            int(jax.device_get(state.step)), "test", scores
        )
