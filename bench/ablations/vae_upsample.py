"""Short VAE training, old vs new decoder upsampler: grid score and PSNR of reconstructions.

Run from the repository root: python bench/ablations/vae_upsample.py 64 1000 nearest_conv,transpose
"""

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from configs import vae as vae_cfg
from jax_mri_ldm import data as data_lib
from jax_mri_ldm.evaluation.spectrum import grid_score
from jax_mri_ldm.losses import to_model_space, vae_loss
from jax_mri_ldm.models.vae import VAE

size, steps = int(sys.argv[1]), int(sys.argv[2])
ups = sys.argv[3].split(",")
cfg = vae_cfg.get_config("demo")
cfg.data.path = "../shared/data/brain_tumor_yes_no"
cfg.data.image_size = size
ds = data_lib.load_imageset(cfg.data)
split = data_lib.split_indices(
    ds, train=cfg.data.split.train, val=cfg.data.split.val, seed=cfg.data.split.seed
)
train = ds.images[split["train"]]
test = np.concatenate([ds.images[split["val"]], ds.images[split["test"]]])
print("train", train.shape, "eval", test.shape, flush=True)
real_grid = grid_score(test)


def psnr(a, b):
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


out = {"size": size, "steps": steps, "real_grid_median": float(np.median(real_grid))}
for up in ups:
    model = VAE(upsample=up)
    x0 = to_model_space(jnp.asarray(train[:2]))
    params = model.init({"params": jax.random.key(0), "latent": jax.random.key(1)}, x0)["params"]
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, rng):
        def loss_fn(p):
            xh, m, lv = model.apply({"params": p}, x, rngs={"latent": rng})
            return vae_loss(x, xh, m, lv)[0]

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    enc = jax.jit(lambda p, x: model.apply({"params": p}, x, method=VAE.encode))
    dec = jax.jit(lambda p, z: model.apply({"params": p}, z, method=VAE.decode))
    rs = np.random.default_rng(0)
    t0 = time.time()
    for i in range(steps):
        idx = rs.integers(0, len(train), 16)
        xb = train[idx]
        flip = rs.random(16) < 0.5
        xb = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
        params, opt, loss = step(params, opt, to_model_space(jnp.asarray(xb)), jax.random.key(i))
        if i % 100 == 0:
            print(up, i, float(loss), f"{time.time() - t0:.0f}s", flush=True)
    res = {"train_s": time.time() - t0, "final_loss": float(loss)}
    m, _ = enc(params, to_model_space(jnp.asarray(test)))
    sd = np.asarray(m).std(axis=(0, 1, 2))  # (C,)
    for sig in (0.0, 0.05, 0.1, 0.2):
        z = m + sig * jnp.asarray(sd) * jax.random.normal(jax.random.key(99), m.shape)
        rec = np.clip((np.asarray(dec(params, z)) + 1) / 2, 0, 1)
        g = grid_score(rec)
        res[f"sigma{sig}"] = {
            "grid_ratio": float(np.median(g) / np.median(real_grid)),
            "psnr": psnr(rec, test),
            "max": float(rec.max()),
        }
    print(up, json.dumps(res), flush=True)
    out[up] = res
__import__("os").makedirs("/tmp/vaegrid", exist_ok=True)
json.dump(out, open(f"/tmp/vaegrid/res_{size}_{steps}_{'_'.join(ups)}.json", "w"), indent=1)
