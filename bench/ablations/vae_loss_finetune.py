"""Extra VAE loss terms, compared by fine-tuning one finished VAE run on its own split.

Each arm copies the run (latest checkpoint, split.json), trains STEPS more updates with the
run's own config (same data order, optimiser state and EMA) and the loss L1 + beta KL +
weight * term, then scores raw and EMA weights on the run's test split: PSNR, SSIM, median
spectrum distance and grid score (as the report computes them), and the mean log10
high-band (radii above a quarter of the image) power difference to the real test images.
Arms: control (no term), grad (L1 of image gradients), ffl (focal frequency loss, Jiang et
al. 2021), spec (`losses.spectral_loss`, what config.loss.spectral_weight weighs).

Run from the repository root:
  python bench/ablations/vae_loss_finetune.py RUN OUT STEPS control:0 grad:1 ffl:10 spec:0.1
Writes OUT/<arm>_<weight>/ (a resumable run) and appends one JSON line per arm and weights to
OUT/results.jsonl; `--figure` afterwards draws OUT/vae_loss_finetune.png (zoomed test crops).
"""

import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from jax_mri_ldm import data as data_lib
from jax_mri_ldm import train_vae
from jax_mri_ldm.data.augment import augment_from_config
from jax_mri_ldm.engine import checkpoint as ckpt_lib
from jax_mri_ldm.evaluation.spectrum import grid_score, radial_spectrum, spectrum_distance
from jax_mri_ldm.losses import spectral_loss, to_model_space, vae_loss
from jax_mri_ldm.pipeline import build_vae, make_reconstruct_fn


def grad_l1(x, x_hat):
    """Mean |d x_hat - d x| over vertical and horizontal finite differences."""
    dy = lambda a: a[:, 1:] - a[:, :-1]  # noqa: E731
    dx = lambda a: a[:, :, 1:] - a[:, :, :-1]  # noqa: E731
    return 0.5 * (jnp.mean(jnp.abs(dy(x_hat) - dy(x))) + jnp.mean(jnp.abs(dx(x_hat) - dx(x))))


def focal_frequency(x, x_hat, alpha=1.0):
    """Focal frequency loss: spectrum-weighted squared FFT error (weights from the error)."""
    d = jnp.abs(jnp.fft.fft2(x_hat[..., 0], norm="ortho") - jnp.fft.fft2(x[..., 0], norm="ortho"))
    w = jax.lax.stop_gradient(d**alpha)
    w = w / jnp.maximum(w.max(axis=(1, 2), keepdims=True), 1e-12)
    return jnp.mean(w * d**2)


TERMS = {"control": lambda x, x_hat: 0.0, "grad": grad_l1, "ffl": focal_frequency}
TERMS["spec"] = spectral_loss


def make_loss_fn(term, weight):
    """A train_vae.make_loss_fn twin whose loss adds weight * term(x, x_hat)."""

    def factory(model, config):
        aug_cfg = config.data.augment
        beta, kl_reduction = float(config.loss.beta), config.loss.kl_reduction

        def loss_fn(params, batch, rng):
            aug_rng, latent_rng = jax.random.split(rng)
            x = to_model_space(augment_from_config(aug_rng, batch["image"], aug_cfg))
            x_hat, mean, logvar = model.apply({"params": params}, x, rngs={"latent": latent_rng})
            loss, m = vae_loss(x, x_hat, mean, logvar, beta=beta, kl_reduction=kl_reduction)
            extra = jnp.asarray(term(x, x_hat), jnp.float32)
            return loss + weight * extra, {**m, "extra": extra}

        return loss_fn

    return factory


def fine_tune(run, dst, steps, term, weight):
    """Copies `run` (latest checkpoint only) to `dst` and trains `steps` more updates."""
    latest = max(int(n) for n in os.listdir(f"{run}/checkpoints") if n.isdigit())
    if not os.path.exists(dst):
        shutil.copytree(run, dst, ignore=lambda d, names: [n for n in names if _skip(d, n, latest)])
    cfg = ml_collections.ConfigDict(json.load(open(f"{dst}/run.json"))["config"])
    cfg.train.num_steps = latest + steps
    train_vae.make_loss_fn = make_loss_fn(term, weight)
    train_vae.train_and_evaluate(cfg, dst)


def _skip(directory, name, latest):
    in_ckpt = os.path.basename(directory) == "checkpoints" and name.isdigit()
    return (in_ckpt and int(name) != latest) or name in ("tb", "figures")


def score(run_dir):
    """Test-split scores of a run's raw and EMA weights; also returns the reconstructions."""
    cfg = ml_collections.ConfigDict(json.load(open(f"{run_dir}/config.json")))
    ds = data_lib.load_imageset(cfg.data)
    test = ds.subset(data_lib.load_split(f"{run_dir}/split.json", ds)["test"]).images
    ckpt = ckpt_lib.Checkpointer(run_dir)
    items, meta = ckpt.restore_raw()
    ckpt.close()
    rec = make_reconstruct_fn(build_vae(ml_collections.ConfigDict(meta["config"]["model"])))
    real = radial_spectrum(test).mean(0)
    out, recons = {"step": int(items["step"])}, {}
    for which in ("params", "ema_params"):
        s, r = train_vae.reconstruction_metrics(rec, items[which], test, 16)
        hi = radial_spectrum(r).mean(0)[len(real) // 2 :] - real[len(real) // 2 :]
        out[which] = {
            **{k: float(v) for k, v in s.items()},
            "spectrum_median": float(np.median(spectrum_distance(r, test))),
            "grid_median": float(np.median(grid_score(r))),
            "high_band_log10": float(hi.mean()),
        }
        recons[which] = r
    return out, test, recons


def figure(out_dir, arms, n=4, crop=48):
    """Zoomed centre crops of test images: real, then each arm's EMA reconstruction."""
    import matplotlib.pyplot as plt

    rows = []
    for arm in arms:
        _, test, recons = score(os.path.join(out_dir, arm))
        rows.append((arm, recons["ema_params"]))
    rows.insert(0, ("real test", test))
    h = test.shape[1]
    lo = (h - crop) // 2
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 2.2 * len(rows)))
    for i, (name, imgs) in enumerate(rows):
        for j in range(n):
            k = j * (len(test) // n)
            axes[i, j].imshow(
                imgs[k, lo : lo + crop, lo : lo + crop, 0], cmap="gray", vmin=0, vmax=1
            )
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "vae_loss_finetune.png"), dpi=90)


def main(argv):
    if argv[1] == "--figure":
        return figure(argv[2], argv[3:])
    run, out_dir, steps = argv[1], argv[2], int(argv[3])
    for spec in argv[4:]:
        arm, weight = spec.split(":")
        dst = os.path.join(out_dir, f"{arm}_{weight}")
        fine_tune(run, dst, steps, TERMS[arm], float(weight))
        scores, _, _ = score(dst)
        with open(os.path.join(out_dir, "results.jsonl"), "a") as f:
            f.write(json.dumps({"arm": arm, "weight": float(weight), **scores}) + "\n")


if __name__ == "__main__":
    main(sys.argv)
