"""Does an adversarial patch loss on the decoder close the spectrum gap? (encoder frozen)

The samples' per-image spectrum distance sits outside the real images' IQR because the VAE
decoder loses high-band power (docs/results.md, "Spectrum gap: the VAE decoder is the
reference"); L1 + KL + a spectral term cannot add texture the latent does not encode. The usual
remedy is an adversarial patch loss on the decoder (Esser et al. 2021, VQGAN; the Stable
Diffusion autoencoder). This probe fine-tunes only the decoder of a diffusion run's frozen VAE
with L1 + spectral term + a hinge PatchGAN loss, its weight set adaptively (Esser et al.: the
ratio of the reconstruction and adversarial gradient norms at the decoder's last layer, times
`--adv_weight`). The encoder is frozen, so the latents, and the trained LDM, stay valid: the
same sampled latents are decoded by the old and the new decoder.

Scores (spectrum_probe.py's `score`, against the real test split's mean curve): real
validation and test images, reconstructions of validation by each decoder, DPM-Solver++(2M) 10
samples (w = `--guidance`, `--per_class` per class, identical latents) by each decoder, plus
PSNR / SSIM of the test reconstructions.

Run from the repository root::

  python bench/ablations/decoder_adversarial.py --workdir=runs/exp/ldm_q --steps=600 \\
      --out=runs/exp/dec_adv

Writes ``<out>/decoder_adversarial.json``, ``.md``, ``.png`` and the decoder parameters
(``decoder_params.msgpack``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import quality_curve as qc  # noqa: E402
import spectrum_probe as sp  # noqa: E402

from jax_mri_ldm import atomic  # noqa: E402
from jax_mri_ldm.data.augment import augment_from_config  # noqa: E402
from jax_mri_ldm.evaluation.markdown import f, table  # noqa: E402
from jax_mri_ldm.losses import spectral_loss, to_model_space  # noqa: E402
from jax_mri_ldm.models.vae import VAE  # noqa: E402
from jax_mri_ldm.sampler_settings import SamplerSpec  # noqa: E402
from jax_mri_ldm.train_vae import reconstruction_metrics  # noqa: E402

BATCH = 16  # fine-tuning batch (the recommended VAE's)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): one real/fake logit per overlapping patch."""

    features: tuple[int, ...] = (32, 64, 128)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # (B, H, W, 1) in [-1, 1]
        for i, ch in enumerate(self.features):
            x = nn.Conv(ch, (4, 4), strides=(2, 2))(x)
            if i:
                x = nn.GroupNorm(num_groups=8)(x)
            x = nn.leaky_relu(x, 0.2)
        return nn.Conv(1, (3, 3))(x)  # (B, H/8, W/8, 1) logits


def last_layer(tree: Any) -> jax.Array:
    """The decoder's output-layer kernel (models/vae.py names that layer `out`)."""
    return tree["out"]["kernel"]


def make_step(vae, disc, aug_cfg, spectral_weight: float, adv_weight: float, tx_g, tx_d):
    """One jitted update of decoder (L1 + spectral + adaptive hinge-G) and discriminator."""

    def recon(dec, enc, x, rng):
        mean, logvar = vae.apply({"params": {"encoder": enc}}, x, method=VAE.encode)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        return vae.apply({"params": {"decoder": dec}}, z, method=VAE.decode)

    def rec_loss(dec, enc, x, rng):
        x_hat = recon(dec, enc, x, rng)
        return jnp.mean(jnp.abs(x - x_hat)) + spectral_weight * spectral_loss(x, x_hat), x_hat

    def g_loss(dec, enc, d_params, x, rng):
        return -jnp.mean(disc.apply({"params": d_params}, recon(dec, enc, x, rng)))

    def d_loss(d_params, x, x_hat):
        real = disc.apply({"params": d_params}, x)
        fake = disc.apply({"params": d_params}, x_hat)
        return jnp.mean(nn.relu(1 - real)) + jnp.mean(nn.relu(1 + fake))

    @jax.jit
    def step(state, images, rng):
        dec, enc, d_params, opt_g, opt_d = state
        a_rng, z_rng = jax.random.split(rng)
        x = to_model_space(augment_from_config(a_rng, images, aug_cfg))  # (B, H, W, 1)
        (lr, x_hat), g_rec = jax.value_and_grad(rec_loss, has_aux=True)(dec, enc, x, z_rng)
        lg, g_adv = jax.value_and_grad(g_loss)(dec, enc, d_params, x, z_rng)
        lam = jnp.linalg.norm(last_layer(g_rec)) / (jnp.linalg.norm(last_layer(g_adv)) + 1e-4)
        lam = jax.lax.stop_gradient(jnp.clip(lam, 0.0, 1e4)) * adv_weight
        grads = jax.tree.map(lambda a, b: a + lam * b, g_rec, g_adv)
        upd, opt_g = tx_g.update(grads, opt_g, dec)
        dec = optax.apply_updates(dec, upd)
        ld, g_d = jax.value_and_grad(d_loss)(d_params, x, jax.lax.stop_gradient(x_hat))
        upd, opt_d = tx_d.update(g_d, opt_d, d_params)
        d_params = optax.apply_updates(d_params, upd)
        metrics = {"rec": lr, "g": lg, "d": ld, "lambda": lam}
        return (dec, enc, d_params, opt_g, opt_d), metrics

    return step


def fine_tune(run, train: np.ndarray, flags) -> tuple[Any, list[dict]]:
    """`flags.steps` decoder updates on `train` (N, H, W, 1); returns decoder params, log."""
    vae, params = run.vae.module, run.vae.params
    disc = PatchDiscriminator()
    rng = jax.random.PRNGKey(flags.seed)
    d_params = disc.init(rng, jnp.zeros((1, *train.shape[1:])))["params"]
    tx_g, tx_d = optax.adam(flags.lr, b1=0.5, b2=0.9), optax.adam(flags.lr, b1=0.5, b2=0.9)
    aug_cfg = ml_collections.ConfigDict(
        run.meta["vae"]["data"]["augment"]
    )  # the VAE's training augmentation
    step = make_step(vae, disc, aug_cfg, flags.spectral_weight, flags.adv_weight, tx_g, tx_d)
    dec, enc = params["decoder"], params["encoder"]
    state = (dec, enc, d_params, tx_g.init(dec), tx_d.init(d_params))
    order = np.random.default_rng(flags.seed)
    log, t0 = [], time.time()
    for i in range(flags.steps):
        idx = order.choice(len(train), BATCH, replace=False)
        state, m = step(state, jnp.asarray(train[idx]), jax.random.fold_in(rng, i))
        if i % 50 == 0 or i == flags.steps - 1:
            log.append(
                {"step": i, "seconds": time.time() - t0, **{k: float(v) for k, v in m.items()}}
            )
            print(f"[dec_adv] {log[-1]}", flush=True)
    return state[0], log


def with_decoder(run, dec):
    """The run with its VAE's decoder parameters replaced (encoder, LDM unchanged); without
    the equaliser, which was fitted for the old decoder."""
    vae = dataclasses.replace(run.vae, params={**run.vae.params, "decoder": dec}, equaliser=None)
    return dataclasses.replace(run, vae=vae)


def probe(flags) -> dict:
    """Fine-tunes, then scores both decoders on real reconstructions and the same samples."""
    from jax_mri_ldm import pipeline  # heavy

    run = pipeline.load_ldm(flags.workdir)
    run = dataclasses.replace(run, vae=run.vae.without_equaliser())  # both decoders as trained
    train, val, test = qc.load_splits(run)
    ref, period = qc.generator_train(run, train).images, qc.latent_period(run)
    dec, log = fine_tune(run, train.images, flags)
    tuned = with_decoder(run, dec)
    labels = np.repeat(np.arange(len(run.class_names)), flags.per_class).astype(np.int32)
    spec = SamplerSpec("dpmpp_2m", 10, 0.0, flags.guidance)
    out = {"workdir": flags.workdir, "steps": flags.steps, "adv_weight": flags.adv_weight}
    out.update(lr=flags.lr, log=log, rows={}, recon={}, images={})
    sets = {"real validation": val.images, "real test": test.images}
    for tag, r in (("before", run), ("adversarial", tuned)):
        sets[f"reconstructions of validation, {tag}"] = r.vae.reconstruct(val.images)
        sets[f"DPM-Solver++ 10 samples, {tag}"] = r.sample_images(labels, 0, spec, 16)
        rec = pipeline.make_reconstruct_fn(r.vae.module)
        out["recon"][tag], out["images"][tag] = reconstruction_metrics(
            rec, r.vae.params, test.images, 16
        )
    for name, images in sets.items():
        out["rows"][name] = sp.score(images, test.images, ref, period)
    out["images"]["samples"] = {k: v for k, v in sets.items() if "samples" in k}
    out["images"]["test"] = test.images
    atomic.write_bytes(
        os.path.join(flags.out, "decoder_params.msgpack"), serialization.to_bytes(dec)
    )
    return out


def tables(res: dict, recon_head: list[str]) -> list[str]:
    """Markdown lines: the spectrum rows (`spectrum_probe.score`), then test PSNR / SSIM."""
    head = ["set", "n", "spectrum median [IQR]", "high band", "grid", "NN-SSIM"]
    rows = [
        [n, r["n"], f"{f(r['median'])} [{f(r['iqr'][0])}, {f(r['iqr'][1])}]"]
        + [f(r["bands"]["high"], 2), f(r["grid"]), f(r["nn_ssim"])]
        for n, r in res["rows"].items()
    ]
    rec = [[k, f(v["psnr"], 2), f(v["ssim"])] for k, v in res["recon"].items()]
    return [*table(head, rows), "", *table(recon_head, rec)]


def render(res: dict) -> str:
    """decoder_adversarial.md: the spectrum rows and the test PSNR / SSIM per decoder."""
    title = (
        f"# Adversarial decoder fine-tune: `{res['workdir']}`, {res['steps']} updates, "
        f"adv_weight {res['adv_weight']:g}, lr {res['lr']:g}"
    )
    return "\n".join([title, "", *tables(res, ["decoder", "test PSNR", "test SSIM"]), ""])


def figure(res: dict, path: str, n: int = 4, crop: int = 64) -> None:
    """Full images and 2x centre crops: real test, samples before / after (same latents)."""
    import matplotlib.pyplot as plt

    rows = [("real test", res["images"]["test"])] + list(res["images"]["samples"].items())
    h = rows[0][1].shape[1]
    lo = (h - crop) // 2
    fig, axes = plt.subplots(2 * len(rows), n, figsize=(2.0 * n, 4.0 * len(rows)))
    for i, (name, imgs) in enumerate(rows):
        for j in range(n):
            k = j * (len(imgs) // n)
            axes[2 * i, j].imshow(imgs[k, ..., 0], cmap="gray", vmin=0, vmax=1)
            axes[2 * i + 1, j].imshow(
                imgs[k, lo : lo + crop, lo : lo + crop, 0], cmap="gray", vmin=0, vmax=1
            )
        axes[2 * i, 0].set_ylabel(name, fontsize=7)
        axes[2 * i + 1, 0].set_ylabel("2x crop", fontsize=7)
    for a in axes.flat:
        a.set_xticks([]), a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(_argv) -> None:
    flags = FLAGS
    os.makedirs(flags.out, exist_ok=True)
    res = probe(flags)
    figure(res, os.path.join(flags.out, "decoder_adversarial.png"))
    res.pop("images")
    atomic.write_text(
        os.path.join(flags.out, "decoder_adversarial.json"), json.dumps(res, indent=1)
    )
    atomic.write_text(os.path.join(flags.out, "decoder_adversarial.md"), render(res))
    print(render(res))


if __name__ == "__main__":
    from absl import app
    from absl import flags as absl_flags

    absl_flags.DEFINE_string("workdir", "runs/exp/ldm_q", "finished diffusion run")
    absl_flags.DEFINE_string("out", "runs/exp/dec_adv", "output folder")
    absl_flags.DEFINE_integer("steps", 600, "decoder updates")
    absl_flags.DEFINE_float("adv_weight", 0.5, "adversarial weight (times the adaptive ratio)")
    absl_flags.DEFINE_float("spectral_weight", 0.1, "spectral term (configs/vae.py:recommended's)")
    absl_flags.DEFINE_float("lr", 1e-4, "Adam learning rate of decoder and discriminator")
    absl_flags.DEFINE_float("guidance", 2.0, "classifier-free guidance of the samples")
    absl_flags.DEFINE_integer("per_class", 32, "samples per class")
    absl_flags.DEFINE_integer("seed", 0, "discriminator init and batch order")
    FLAGS = absl_flags.FLAGS
    app.run(main)
