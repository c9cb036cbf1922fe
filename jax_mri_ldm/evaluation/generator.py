"""Synthetic images for the report: one compiled sampler per setting, batches shared by sections.

Image i of a setting has label i % K and comes from batch i // B (noise fold_in(PRNGKey(seed),
batch)); rows of a batch do not depend on each other, so the first n images per class of a
setting are the same whether n or N > n were asked for. The guidance sweep, the main set and the
sampler table therefore share batches instead of regenerating them, and all settings share their
starting noise (common random numbers), which makes w and sampler comparisons paired.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_mri_ldm.batching import batched_apply
from jax_mri_ldm.evaluation.cache import key_of
from jax_mri_ldm.evaluation.resume import ResumeStore, tree_key
from jax_mri_ldm.pipeline import LDMPipeline
from jax_mri_ldm.sampler_settings import SamplerSpec


class SyntheticImages:
    """Generates and caches labelled synthetic images for sampler settings.

    B is `batch_size`, or fewer when fewer images are asked for; images already generated at a
    larger B are reused rather than compiling the setting again for a smaller one.

    Args:
      run: the diffusion run.
      batch_size: images per sampler call.
      seed: base seed.
      progress: optional logging callback.
      compile_options: XLA compiler options for every compile.
      store: keeps every generated batch on disk and reads it back instead of sampling again
        (a stopped report resumes); None = memory only.
    """

    def __init__(
        self,
        run: LDMPipeline,
        batch_size: int,
        seed: int,
        progress: Callable[[str], None] | None = None,
        compile_options: dict[str, Any] | None = None,
        store: ResumeStore | None = None,
    ):
        self.run = run
        self.compile_options = dict(compile_options or {}) or None
        self.num_classes = len(run.class_names)
        self.vae_params = jax.device_put(run.vae.params)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress
        self._decode = run.decode_fn()
        self._decoders: dict[int, Any] = {}
        self._compiled: dict[tuple, Any] = {}
        self._batches: dict[tuple, dict[int, np.ndarray]] = {}
        self.stats: dict[tuple, dict[str, Any]] = {}
        self.store = store
        self._weights_keys: dict[bool, str] = {}

    def _batch_for(self, spec: SamplerSpec, total: int) -> int:
        """A larger batch size whose cached batches already hold `total` images wins over
        compiling this setting again for a smaller batch."""
        for (sp, b), cache in sorted(self._batches.items(), key=lambda kv: -kv[0][1]):
            if sp == spec and all(i in cache for i in range(math.ceil(total / b))):
                return b
        return min(self.batch_size, total)

    def decoder(self, b: int):
        """The VAE decoder compiled for batch b (normalised latents -> images)."""
        if b not in self._decoders:
            z = jax.ShapeDtypeStruct((b, *self.run.latent_shape), jnp.float32)
            self._decoders[b] = self._decode.lower(self.vae_params, z).compile(
                compiler_options=self.compile_options
            )
        return self._decoders[b]

    def _get_compiled(self, spec: SamplerSpec, b: int):
        key = (spec, b)
        if key in self._compiled:
            return self._compiled[key]
        t0 = time.perf_counter()
        params = jax.device_put(self.run.sampler_params(spec))
        fn = self.run.make_sampler(spec)
        lowered = fn.lower(params, jnp.zeros((b,), jnp.int32), jax.random.PRNGKey(0))
        self._compiled[key] = (lowered.compile(compiler_options=self.compile_options), params)
        self.decoder(b)
        self._stats(spec, b)["compile_seconds"] = time.perf_counter() - t0
        return self._compiled[key]

    def _stats(self, spec: SamplerSpec, b: int) -> dict[str, Any]:
        """The timing record of (spec, b); resumed batches count the seconds they were made in."""
        return self.stats.setdefault(
            (spec, b),
            {"compile_seconds": None, "batch_seconds": [], "batch_size": b, "resumed_batches": 0},
        )

    def _store_parts(self, spec: SamplerSpec, b: int, i: int) -> tuple:
        """What batch i of (spec, b) depends on: weights, the run's metadata (schedule, latent
        scale, prediction, ...), decoder equaliser, setting, seed, batch index, compile
        options."""
        if spec.use_ema not in self._weights_keys:
            weights = (self.run.sampler_params(spec), self.vae_params)
            meta = json.dumps(self.run.meta, sort_keys=True, default=str)  # schedule, scale, ...
            key = tree_key(weights) + key_of(meta)
            if self.run.vae.equaliser is not None:  # decoded through it: its gains count too
                key += key_of(np.asarray(self.run.vae.equaliser, np.float64))
            self._weights_keys[spec.use_ema] = key
        options = sorted((self.compile_options or {}).items())
        return (self._weights_keys[spec.use_ema], repr(spec), b, self.seed, i, repr(options))

    def _load(self, spec: SamplerSpec, b: int, cache: dict, i: int) -> bool:
        """Batch i read back from the store into `cache`; False when it is not there."""
        got = self.store.load_batch(self._store_parts(spec, b, i)) if self.store else None
        if got is None:
            return False
        cache[i], timing = got
        stats = self._stats(spec, b)
        stats["batch_seconds"].append(timing["seconds"])
        stats["resumed_batches"] += 1
        if stats["compile_seconds"] is None:
            stats["compile_seconds"] = timing["compile_seconds"]
        return True

    def generate(self, spec: SamplerSpec, n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `n_per_class` images per class of a setting.

        Returns:
          (images (K*n, H, W, 1) in [0, 1], labels (K*n,) int32 = arange % K).
        """
        spec = spec.resolved(self.run.schedule.num_timesteps)
        total = self.num_classes * int(n_per_class)
        b = self._batch_for(spec, total)
        cache = self._batches.setdefault((spec, b), {})
        n_batches = math.ceil(total / b)
        missing = [i for i in range(n_batches) if i not in cache]
        if missing:
            self._fill(spec, b, cache, missing)
        images = np.concatenate([cache[i] for i in range(n_batches)])[:total]
        return images, (np.arange(total) % self.num_classes).astype(np.int32)

    def _fill(self, spec: SamplerSpec, b: int, cache: dict, missing: list[int]) -> None:
        todo = [i for i in missing if not self._load(spec, b, cache, i)]
        stats = self._stats(spec, b)
        if todo:
            compiled, params = self._get_compiled(spec, b)
            decode = self._decoders[b]
            base = jax.random.PRNGKey(self.seed)
        for i in todo:
            labels = jnp.asarray(np.arange(i * b, (i + 1) * b) % self.num_classes, jnp.int32)
            t0 = time.perf_counter()
            z = compiled(params, labels, jax.random.fold_in(base, i))
            cache[i] = np.asarray(decode(self.vae_params, z))  # (b, H, W, 1)
            stats["batch_seconds"].append(time.perf_counter() - t0)
            if self.store:
                parts = self._store_parts(spec, b, i)
                self.store.save_batch(
                    parts, cache[i], stats["batch_seconds"][-1], stats["compile_seconds"]
                )
        if self.progress:
            name = spec.name(self.run.schedule.num_timesteps)
            resumed = len(missing) - len(todo)
            self.progress(
                f"  {name} w={spec.guidance_scale:g}: {len(missing)} batch(es) of {b}"
                + (f" ({resumed} read back from a stopped run)" if resumed else "")
                + f", {np.median(stats['batch_seconds']):.2f} s/batch"
            )

    def clear(self) -> None:
        """Drops the generated images; compiled samplers and timings stay."""
        self._batches.clear()

    def timing(self, spec: SamplerSpec, n_per_class: int) -> dict[str, Any]:
        """Measured compile time and steady-state seconds per image of a generated setting."""
        spec = spec.resolved(self.run.schedule.num_timesteps)
        b = self._batch_for(spec, self.num_classes * int(n_per_class))
        st = self.stats.get((spec, b))
        if not st or not st["batch_seconds"]:
            return {"compile_seconds": None, "seconds_per_image": None, "batch_size": b}
        return {
            "compile_seconds": st["compile_seconds"],
            "seconds_per_image": float(np.median(st["batch_seconds"])) / st["batch_size"],
            "batch_size": st["batch_size"],
            "batches_timed": len(st["batch_seconds"]),
            "resumed_batches": st["resumed_batches"],
        }

    def decode_latents(self, z: np.ndarray) -> np.ndarray:
        """Normalised latents (N, h, w, c) -> images in [0, 1], in batches of `batch_size`."""
        b = min(self.batch_size, len(z))
        dec = self.decoder(b)
        return batched_apply(lambda x: dec(self.vae_params, x), z, batch_size=b)
