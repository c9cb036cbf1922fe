"""Feature spaces for FID / KID / precision-recall that need no download and know MRI.

There is no Inception network for 1-channel brain slices here, so the report builds its own
candidates and keeps the one that ranks the controls best (`choose_space`):

* ``contrastive``: a small CNN trained self-supervised (SimCLR, NT-Xent loss) on every real
  training slice of the run, with augmentations an MRI slice can plausibly undergo: crops and
  zoom, small rotations, left-right flips, gamma / contrast / brightness jitter and mild noise.
  No blur augmentation: an encoder taught to ignore blur could not see the blur control.
  Its trained weights are cached per run (keyed by the data and the settings).
* ``random``: the same network with random weights (random conv features are a known, strong
  baseline for distribution distances).
* ``classifier``: the domain classifier's penultimate features (the report's old space).

Every encoder concatenates the pooled activations of all of its blocks, so the features see
fine texture (noise, grids) as well as anatomy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_mri_ldm import atomic
from jax_mri_ldm.evaluation import metrics


@dataclasses.dataclass(frozen=True)
class SSLSettings:
    """Self-supervised encoder settings; the report fills them from `config.features`
    (configs/report.py holds the defaults).

    Attributes:
      widths: channels per stride-2 block; the feature dimension is their sum.
      input_size: side the images are resized to before the encoder.
      steps: contrastive training steps.
      batch_size: images per step (2 views each).
      lr: Adam learning rate.
      temperature: NT-Xent temperature.
      seed: initialisation and augmentation seed.
    """

    widths: tuple[int, ...]
    input_size: int
    steps: int
    batch_size: int
    lr: float = 2e-3
    temperature: float = 0.2
    seed: int = 0

    @classmethod
    def from_config(cls, fc) -> SSLSettings:
        """The settings of a report config's `features` block (configs/report.py)."""
        return cls(
            widths=tuple(fc.widths),
            input_size=int(fc.input_size),
            steps=int(fc.steps),
            batch_size=int(fc.batch_size),
            lr=float(fc.lr),
            temperature=float(fc.temperature),
        )


class MultiScaleEncoder(nn.Module):
    """CNN whose features are the mean-pooled activations of every block, concatenated.

    Attributes:
      widths: channels per stride-2 block.
      proj_dim: size of the projection head used only by the contrastive loss.
    """

    widths: tuple[int, ...]
    proj_dim: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, project: bool = False):
        """(B, S, S, 1) in [0, 1] -> features (B, sum(widths)) [, projection (B, proj_dim)]."""
        h = nn.relu(nn.Conv(self.widths[0], (3, 3))(2.0 * x - 1.0))
        pooled = []
        for w in self.widths:
            h = nn.Conv(w, (3, 3), strides=(2, 2))(h)
            h = nn.relu(nn.GroupNorm(num_groups=math.gcd(8, w))(h))
            h = nn.relu(nn.Conv(w, (3, 3))(h))
            pooled.append(jnp.mean(h, axis=(1, 2)))  # (B, w)
        feats = jnp.concatenate(pooled, axis=-1)  # (B, D)
        if not project:
            return feats
        h = nn.Dense(feats.shape[-1])(batch_standardise(feats))
        z = nn.Dense(self.proj_dim)(nn.relu(batch_standardise(h)))  # (B, proj_dim)
        return feats, z


def batch_standardise(h: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
    """Zero mean, unit variance per feature over the batch (SimCLR's head BatchNorm, no state).

    Pooled ReLU activations share a large common component, so without centring every
    projection points the same way, NT-Xent sits at log(2B - 1) and its gradient vanishes
    (the head collapses). Used only by the training-time projection head.
    """
    mean = jnp.mean(h, axis=0, keepdims=True)
    var = jnp.var(h, axis=0, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + eps)  # (B, D)


# --------------------------------------------------------------------------------------------
# MRI-plausible augmentation (jitted)
# --------------------------------------------------------------------------------------------


def _warp_one(img: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """Random zoom (0.7-1), shift, rotation (+-10 deg) and flip of one (S, S) image."""
    ks, kr, kt, kf = jax.random.split(key, 4)
    s = img.shape[0]
    scale = jax.random.uniform(ks, (), minval=0.7, maxval=1.0)
    theta = jnp.deg2rad(jax.random.uniform(kr, (), minval=-10.0, maxval=10.0))
    shift = jax.random.uniform(kt, (2,), minval=-1.0, maxval=1.0) * (1.0 - scale) * s / 2
    flip = jnp.where(jax.random.bernoulli(kf), -1.0, 1.0)
    c = (s - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(s) - c, jnp.arange(s) - c, indexing="ij")
    xx = xx * flip
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    src_y = scale * (cos * yy - sin * xx) + c + shift[0]
    src_x = scale * (sin * yy + cos * xx) + c + shift[1]
    return jax.scipy.ndimage.map_coordinates(img, [src_y, src_x], order=1, mode="constant")


def augment(x: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """One random MRI-plausible view of each image. (B, S, S, 1) in [0, 1] -> same."""
    kw, kg, kc, kb, kn, ka = jax.random.split(key, 6)
    b = x.shape[0]
    x = jax.vmap(_warp_one)(x[..., 0], jax.random.split(kw, b))[..., None]
    gamma = jnp.exp(jax.random.uniform(kg, (b, 1, 1, 1), minval=-0.35, maxval=0.35))
    contrast = jax.random.uniform(kc, (b, 1, 1, 1), minval=0.8, maxval=1.2)
    bright = jax.random.uniform(kb, (b, 1, 1, 1), minval=-0.08, maxval=0.08)
    x = contrast * jnp.clip(x, 1e-6, 1.0) ** gamma + bright
    sigma = jax.random.uniform(ka, (b, 1, 1, 1), maxval=0.02)
    return jnp.clip(x + sigma * jax.random.normal(kn, x.shape), 0.0, 1.0)


def nt_xent(z1: jnp.ndarray, z2: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """SimCLR's normalised-temperature cross-entropy of two (B, P) views."""
    z = jnp.concatenate([z1, z2])  # (2B, P)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-8)
    sim = z @ z.T / temperature  # (2B, 2B)
    n = z1.shape[0]
    sim = jnp.where(jnp.eye(2 * n, dtype=bool), -1e9, sim)
    target = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
    return optax.softmax_cross_entropy_with_integer_labels(sim, target).mean()


# --------------------------------------------------------------------------------------------
# Training, caching, embedding
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _train_step(model: MultiScaleEncoder, lr: float, temperature: float):
    tx = optax.adam(lr)

    def step(params, opt_state, x, key):
        k1, k2 = jax.random.split(key)
        v1, v2 = augment(x, k1), augment(x, k2)  # (B, S, S, 1) each

        def loss_fn(p):
            _, z1 = model.apply({"params": p}, v1, project=True)
            _, z2 = model.apply({"params": p}, v2, project=True)
            return nt_xent(z1, z2, temperature)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step), tx


def train_contrastive(
    images: np.ndarray, s: SSLSettings, log: Callable[[str], None] | None = None
) -> tuple[dict, list[float]]:
    """Trains the encoder with SimCLR on `images`.

    Args:
      images: (N, H, W, 1) real training slices in [0, 1].
      s: settings.
      log: optional progress callback.

    Returns:
      (params, per-step losses).
    """
    x = metrics.resize_images(np.asarray(images, np.float32), s.input_size)  # (N, S, S, 1)
    model = MultiScaleEncoder(tuple(s.widths))
    key = jax.random.PRNGKey(s.seed)
    params = model.init(key, jnp.asarray(x[:1]), project=True)["params"]
    step_fn, tx = _train_step(model, float(s.lr), float(s.temperature))
    opt_state = tx.init(params)
    rng = np.random.default_rng(s.seed)
    b = min(int(s.batch_size), len(x))
    losses = []
    for i in range(int(s.steps)):
        idx = rng.choice(len(x), b, replace=False)
        params, opt_state, loss = step_fn(
            params, opt_state, jnp.asarray(x[idx]), jax.random.fold_in(key, i)
        )
        losses.append(float(loss))
        if log and (i + 1) % max(1, s.steps // 4) == 0:
            log(
                f"  contrastive encoder step {i + 1}/{s.steps}: NT-Xent {np.mean(losses[-10:]):.3f}"
            )
    return params, losses


# Bumped whenever the encoder or its training changes, so a cached encoder of an older
# recipe is retrained rather than reused (2: batch-standardised projection head).
ENCODER_VERSION = 2


def cache_key(s: SSLSettings, fingerprint: str, train_ids: Sequence[str]) -> str:
    """Hex key of the settings, the encoder version, the data fingerprint and the ids."""
    blob = [dataclasses.asdict(s), ENCODER_VERSION, fingerprint, list(train_ids)]
    blob = json.dumps(blob, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_train(
    images: np.ndarray,
    s: SSLSettings,
    cache_dir: str | None,
    key: str,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """The trained encoder params from `cache_dir/contrastive_<key>.msgpack`, or trains them.

    Returns:
      (params, info) with info {'cached': bool, 'first_loss', 'final_loss', 'chance_loss',
      'collapsed' (final loss at chance: the encoder learnt nothing), 'path'}.
    """
    path = os.path.join(cache_dir, f"contrastive_{key}.msgpack") if cache_dir else None
    model = MultiScaleEncoder(tuple(s.widths))
    template = model.init(
        jax.random.PRNGKey(0), jnp.zeros((1, s.input_size, s.input_size, 1)), project=True
    )["params"]
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            blob = flax.serialization.msgpack_restore(f.read())
        params = flax.serialization.from_state_dict(template, blob["params"])
        return params, {**blob["info"], "cached": True, "path": path}
    params, losses = train_contrastive(images, s, log)
    info = {"first_loss": float(np.mean(losses[:10])), "final_loss": float(np.mean(losses[-10:]))}
    info["chance_loss"] = chance_loss(min(int(s.batch_size), len(images)))
    info["collapsed"] = bool(info["final_loss"] >= COLLAPSE_FRACTION * info["chance_loss"])
    if path:
        state = {"params": flax.serialization.to_state_dict(params), "info": info}
        atomic.write_bytes(path, flax.serialization.msgpack_serialize(jax.device_get(state)))
    return params, {**info, "cached": False, "path": path}


# A final NT-Xent at or above this fraction of chance means the projections collapsed.
COLLAPSE_FRACTION = 0.97


def chance_loss(batch_size: int) -> float:
    """NT-Xent when every projection is the same: uniform over the 2B - 1 other views."""
    return math.log(2 * batch_size - 1)


@functools.lru_cache(maxsize=8)
def _embed_fn(model: MultiScaleEncoder):
    return jax.jit(lambda p, x: model.apply({"params": p}, x))


def encoder_embed(
    params: dict, widths: Sequence[int], input_size: int, batch_size: int = 64
) -> Callable[[np.ndarray], np.ndarray]:
    """images (N, H, W, 1) -> (N, sum(widths)) features of a MultiScaleEncoder."""
    fn = _embed_fn(MultiScaleEncoder(tuple(widths)))

    def embed(images: np.ndarray) -> np.ndarray:
        x = metrics.resize_images(np.asarray(images, np.float32), input_size)
        out = []
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            m = len(chunk)
            if m < batch_size:  # one compiled shape for every call
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - m, 0)])
            out.append(np.asarray(fn(params, jnp.asarray(chunk)))[:m])
        return np.concatenate(out) if out else np.zeros((0, sum(widths)), np.float32)

    return embed


def random_encoder_embed(s: SSLSettings) -> Callable[[np.ndarray], np.ndarray]:
    """The untrained encoder (seeded) as a feature map."""
    model = MultiScaleEncoder(tuple(s.widths))
    shape = (1, s.input_size, s.input_size, 1)
    params = model.init(jax.random.PRNGKey(s.seed + 1), jnp.zeros(shape), project=True)["params"]
    return encoder_embed(params, s.widths, s.input_size)


# --------------------------------------------------------------------------------------------
# Choosing the space by the controls
# --------------------------------------------------------------------------------------------


def control_ranking(
    embed: Callable[[np.ndarray], np.ndarray],
    controls: Mapping[str, tuple[np.ndarray, np.ndarray]],
    reference: np.ndarray,
    corruptions: Sequence[str],
) -> dict:
    """How well one feature space ranks the controls by FID to the reference images.

    Args:
      embed: images -> features.
      controls: name -> (images, labels); needs 'real' (held-out images).
      reference: real test images (the FID reference).
      corruptions: controls that must score worse than 'real'.

    Returns:
      {'fid': {control: FID}, 'detected': [..], 'missed': [..], 'min_log_ratio': worst margin
       log(FID_corruption / FID_real) over the corruptions (higher = safer)}.
    """
    ref = embed(reference)
    fids = {name: float(metrics.fid(embed(x), ref)) for name, (x, _) in controls.items()}
    real = max(fids["real"], 1e-12)
    present = [c for c in corruptions if c in fids]
    ratios = {c: math.log(max(fids[c], 1e-12) / real) for c in present}
    return {
        "fid": fids,
        "detected": [c for c in present if ratios[c] > 0],
        "missed": [c for c in present if ratios[c] <= 0],
        "min_log_ratio": min(ratios.values()) if ratios else None,
    }


def choose_space(rankings: Mapping[str, dict]) -> str:
    """The candidate that detects the most corruptions, then has the widest worst margin."""
    return max(
        rankings,
        key=lambda k: (len(rankings[k]["detected"]), rankings[k]["min_log_ratio"] or -math.inf),
    )
