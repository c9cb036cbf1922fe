"""Same budget, eps (today's default, x0 clip) vs v + Min-SNR-5 (no clip): latent samples from
DDPM-1000, DDIM-50 eta=0, DPM++(2M) 25/10 logSNR; std ratio, NN-distance ratio, decoded grid score.

A variant is prediction:weighting[:ztsnr] (ztsnr: the zero-terminal-SNR rescale of the schedule).
Variants run in order from one random stream, so compare rows of the same invocation.

Run from the repository root:
  python bench/ablations/ldm_parameterisation.py 300 1500 v:min_snr,eps:none [out_dir]
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
from jax_mri_ldm import diffusion as D
from jax_mri_ldm import sampling as S
from jax_mri_ldm.evaluation.spectrum import grid_score
from jax_mri_ldm.losses import to_model_space, vae_loss
from jax_mri_ldm.models.unet import UNet
from jax_mri_ldm.models.vae import VAE

vae_steps, ldm_steps = int(sys.argv[1]), int(sys.argv[2])
variants = sys.argv[3].split(",")  # e.g. eps:none,v:min_snr
cfg = vae_cfg.get_config("demo")
cfg.data.path = "../shared/data/brain_tumor_yes_no"
cfg.data.image_size = 64
ds = data_lib.load_imageset(cfg.data)
split = data_lib.split_indices(
    ds, train=cfg.data.split.train, val=cfg.data.split.val, seed=cfg.data.split.seed
)
tr, ho = split["train"], np.concatenate([split["val"], split["test"]])
train, ytr, held = ds.images[tr], ds.labels[tr], ds.images[ho]

vae = VAE()
params = vae.init(
    {"params": jax.random.key(0), "latent": jax.random.key(1)},
    to_model_space(jnp.asarray(train[:2])),
)["params"]
tx = optax.adam(1e-3)
opt = tx.init(params)


@jax.jit
def vstep(p, o, x, r):
    l, g = jax.value_and_grad(
        lambda p: vae_loss(x, *vae.apply({"params": p}, x, rngs={"latent": r}))[0]
    )(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, l


rs = np.random.default_rng(0)
t0 = time.time()
for i in range(vae_steps):
    xb = train[rs.integers(0, len(train), 16)]
    params, opt, l = vstep(params, opt, to_model_space(jnp.asarray(xb)), jax.random.key(i))
print("vae", float(l), f"{time.time() - t0:.0f}s", flush=True)
enc = jax.jit(lambda x: vae.apply({"params": params}, x, method=VAE.encode)[0])
dec = jax.jit(lambda z: vae.apply({"params": params}, z, method=VAE.decode))
ztr = np.concatenate(
    [
        np.asarray(enc(to_model_space(jnp.asarray(train)))),
        np.asarray(enc(to_model_space(jnp.asarray(train[:, :, ::-1])))),
    ]
)
ylat = np.concatenate([ytr, ytr]).astype(np.int32)
shift, scale = ztr.mean((0, 1, 2)), 1 / ztr.std((0, 1, 2))
zn = (ztr - shift) * scale
zho = (np.asarray(enc(to_model_space(jnp.asarray(held)))) - shift) * scale
lo, hi = np.percentile(zn.reshape(-1, 8), 0.5, 0), np.percentile(zn.reshape(-1, 8), 99.5, 0)
real_grid = np.median(grid_score(held))


def nn_dist(a, b):  # mean over a of min L2 to rows of b
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return float(np.sqrt(np.maximum(d.min(1), 0)).mean())


real_nn = nn_dist(zho, zn)

unet = UNet(channels=(32, 64), num_res_blocks=2, norm_groups=8, num_classes=2)
out = {
    "vae_steps": vae_steps,
    "ldm_steps": ldm_steps,
    "real_nn": real_nn,
    "real_grid": float(real_grid),
}
for var in variants:
    pred, weighting, *opts = var.split(":")
    sch = D.make_schedule("cosine", 1000, zero_terminal_snr="ztsnr" in opts)
    up = unet.init(
        jax.random.key(0),
        jnp.asarray(zn[:2]),
        jnp.zeros((2,), jnp.int32),
        jnp.zeros((2,), jnp.int32),
    )["params"]
    sched = optax.join_schedules(
        [optax.linear_schedule(0, 3e-4, 100), optax.constant_schedule(3e-4)], [100]
    )
    utx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))
    uo = utx.init(up)
    ema = up

    @jax.jit
    def ustep(p, o, ema, z, y, r):
        def lf(p):
            mf = lambda x, t, yy: unet.apply({"params": p}, x, t, yy)
            return D.diffusion_loss(
                mf, sch, z, y, r, prediction=pred, null_label=2, loss_weighting=weighting
            )[0]

        l, g = jax.value_and_grad(lf)(p)
        u, o = utx.update(g, o, p)
        p = optax.apply_updates(p, u)
        ema = jax.tree.map(lambda e, q: 0.995 * e + 0.005 * q, ema, p)
        return p, o, ema, l

    t0 = time.time()
    losses = []
    for i in range(ldm_steps):
        idx = rs.integers(0, len(zn), 32)
        up, uo, ema, l = ustep(
            up, uo, ema, jnp.asarray(zn[idx]), jnp.asarray(ylat[idx]), jax.random.key(1000 + i)
        )
        losses.append(float(l))
    res = {"train_s": time.time() - t0, "loss_last200": float(np.mean(losses[-200:]))}
    print(var, res, flush=True)
    apply_fn = lambda p, x, t, y: unet.apply({"params": p}, x, t, y)
    labels = jnp.asarray([0, 1] * 32, jnp.int32)
    for clip, (name, kw) in [
        (c, nk)
        for c in (("clip", "noclip") if pred == "eps" else ("noclip", "clip"))
        for nk in [
            ("ddpm1000", dict(sampler="ddpm")),
            ("ddim50_eta0", dict(sampler="ddim", steps=50, eta=0.0)),
            ("dpmpp25", dict(sampler="dpmpp_2m", steps=25, spacing="logSNR")),
            ("dpmpp10", dict(sampler="dpmpp_2m", steps=10, spacing="logSNR")),
        ]
    ]:
        name = f"{name}_{clip}"
        fn = S.make_sample_fn(
            apply_fn,
            sch,
            zn.shape[1:],
            guidance_scale=3.0,
            null_label=2,
            prediction=pred,
            clip_x0=(tuple(lo), tuple(hi)) if clip == "clip" else None,
            **kw,
        )
        t1 = time.time()
        z = np.asarray(fn(ema, labels, jax.random.key(7)))
        img = np.clip((np.asarray(dec(jnp.asarray(z / scale + shift))) + 1) / 2, 0, 1)
        res[name] = {
            "finite": bool(np.isfinite(z).all()),
            "std_ratio": float(np.median(z.std((0, 1, 2)))),
            "nn_ratio": nn_dist(z, zn) / real_nn,
            "grid_ratio": float(np.median(grid_score(img)) / real_grid),
            "sec": round(time.time() - t1, 1),
        }
        print(var, name, res[name], flush=True)
    out[var] = res
out_dir = sys.argv[4] if len(sys.argv) > 4 else "/tmp/ldmcmp"
__import__("os").makedirs(out_dir, exist_ok=True)
json.dump(out, open(f"{out_dir}/res_{vae_steps}_{ldm_steps}.json", "w"), indent=1)
