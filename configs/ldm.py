"""Stage 2 config: class-conditional latent DDPM (cosine schedule, T=1000, CFG p=0.1, EMA).

Usage: `python train.py --config=configs/ldm.py[:preset] --config.vae_workdir=runs/vae
--workdir=runs/ldm`. Presets: `paper` (default, 100 epochs), `demo`, `recommended`, `tiny`. The
data set, its split and the image size come from the VAE run (its config.json/split.json), so
both stages always see the same training images.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The latent-diffusion config for preset `arg` ('paper' | 'demo' | 'recommended' | 'tiny')."""
    preset = arg or "paper"
    c = ml_collections.ConfigDict()
    c.stage = "ldm"  # which trainer train.py calls
    c.preset = preset  # name of the preset this config came from
    c.seed = 0  # parameter init and the run's RNG stream
    c.vae_workdir = "runs/vae"  # finished stage-1 run whose frozen encoder/decoder we use

    # Another image folder whose slices join the diffusion training set only (never a split or
    # a score; near-copies of main-set images are dropped): more distinct slices, fewer copies.
    c.extra_train = ml_collections.ConfigDict()
    c.extra_train.path = ""  # image folder root, read like config.data.path ('' = none)
    c.extra_train.folders = ""  # comma-separated class folders of it to use ('' = all)
    c.extra_train.class_map = ""  # its folder -> label overrides, as config.data.class_map
    # Leave out extra slices less like the training split than this quantile of the training
    # slices' own nearest-other-slice correlation (other planes or framing; 0 = keep all).
    c.extra_train.domain_quantile = 0.1
    # Per-folder overrides of domain_quantile, "folder=q,..." (e.g. "glioma=0.3"; '' = none).
    c.extra_train.folder_quantiles = ""
    # > 0 on the binary built-in set (moot for a data path): this many new generated slices of
    # each class join the diffusion training set instead, as a second folder would.
    c.extra_train.builtin_per_class = 0

    c.latents = ml_collections.ConfigDict()
    c.latents.flip = True  # also encode mirrored slices: exact random-flip augmentation
    c.latents.sample_posterior = True  # z ~ q(z|x) each step (False: use the posterior mean)
    c.latents.normalize = (
        "channel"  # 'channel': standardise each latent channel; 'global': VAE scale
    )
    c.latents.x0_clip_percentile = 0.5  # samplers clip x0 to [p, 100-p] latent percentiles (<0 off)

    # The VAE run's decoder equaliser (configs/vae.py model.equaliser) matches the mean spectrum
    # of reconstructions; whether it also brings samples nearer real slices is judged on them.
    c.decoder = ml_collections.ConfigDict()
    # auto: at the end of training decode one batch of samples with and without it and keep it
    # only if the samples' spectrum and grid scores land nearer the real validation slices'
    # (decoder_check.py) | on | off. Moot when the VAE run has no equaliser.
    c.decoder.equaliser = "auto"
    c.decoder.check_per_class = 32  # samples of each class the auto check draws

    c.model = ml_collections.ConfigDict()
    # (32, 64, 128) (3.6 M parameters) is sized for a 2-core CPU; (64, 128, 256) (14.4 M) for an
    # accelerator. Training speeds of both: docs/performance.md.
    c.model.channels = (32, 64, 128)  # UNet widths per resolution level (32, 16, 8)
    c.model.num_res_blocks = 2  # residual blocks per level
    c.model.attn_resolutions = ()  # extra self-attention at these feature sizes (+ bottleneck)
    c.model.num_heads = 4  # attention heads
    c.model.dropout = 0.0  # dropout inside residual blocks
    c.model.norm_groups = 32  # GroupNorm groups (must divide every width)
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "cosine"  # cosine (paper, Nichol & Dhariwal) | linear
    c.diffusion.num_timesteps = 1000  # T (paper: 1000)
    c.diffusion.prediction = "eps"  # eps (paper) | v (well posed at every t) | x0
    c.diffusion.p_uncond = 0.1  # label -> null class probability, for CFG (paper: 0.1)
    c.diffusion.loss_weighting = "none"  # none (paper) | min_snr (Hang et al. 2023)
    c.diffusion.min_snr_gamma = 5.0  # gamma of min_snr: weight ~ min(SNR, gamma) (Hang et al.: 5)
    c.diffusion.zero_terminal_snr = False  # rescale so alpha_bar_T = 0 (Lin et al.); needs v/x0

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 3e-4  # Adam learning rate (paper does not state it)
    c.optim.b1 = 0.9  # Adam beta1
    c.optim.b2 = 0.999  # Adam beta2
    c.optim.eps = 1e-8  # Adam epsilon
    c.optim.weight_decay = 0.0  # > 0 switches to AdamW
    c.optim.schedule = "constant"  # constant | cosine | wsd (constant, then a linear decay)
    c.optim.warmup_steps = 100  # linear warmup steps
    c.optim.min_lr_ratio = 0.0  # cosine, wsd: final lr = learning_rate * min_lr_ratio
    c.optim.decay_fraction = 0.1  # wsd: the linear decay spans this last fraction of the run
    c.optim.grad_clip_norm = 1.0  # global-norm gradient clipping (0 = off)
    # 100 epochs x 20 steps = 2000 updates: a 0.995 EMA averages the last ~200 of them.
    c.optim.ema_decay = 0.995  # EMA decay; EMA weights are used for sampling (paper)
    c.optim.ema_warmup = True  # EMA decay min(decay, (1+s)/(10+s))

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 16  # global batch, balanced 8 normal + 8 tumour (paper)
    c.train.num_epochs = 100  # paper: 100
    c.train.num_steps = 0  # > 0 overrides num_epochs
    c.train.eval_every_epochs = 25  # sample grids + loss curve every this many epochs
    c.train.eval_at_end = True  # also evaluate after the last step
    c.train.checkpoint_every_epochs = 10  # periodic checkpoints
    c.train.keep_checkpoints = 3  # newest checkpoints kept on disk
    c.train.log_every_steps = 10  # metrics.jsonl / TensorBoard cadence
    c.train.progress_bar = True  # tqdm bar on stderr
    c.train.tensorboard = True  # TensorBoard event files under <workdir>/tb
    c.train.eval_num_images = 8  # samples per class in the periodic grid
    # The grids' sampler: None = the run's default (by its prediction target, sampler_settings.py).
    c.train.eval_sampler = placeholder(str)  # sampler for periodic grids (ddpm | ddim | dpmpp_2m)
    c.train.eval_sample_steps = placeholder(int)  # its number of steps (ddpm: always all T)
    c.train.eval_eta = placeholder(float)  # DDIM noise: 1 = ancestral, 0 = deterministic
    c.train.eval_guidance_scale = placeholder(float)  # guidance w (1 = plain conditional)

    if preset == "paper":
        pass
    elif preset == "demo":
        # 8x16x16 latents of the 128 px demo VAE; 1000 updates (timed in docs/results.md).
        c.model.channels = (64, 128, 128)
        c.model.attn_resolutions = ()
        c.train.num_epochs = 50
        c.train.eval_every_epochs = 25
        c.train.checkpoint_every_epochs = 10
    elif preset == "recommended":
        # For the 128 px `configs/vae.py:recommended` VAE. v-prediction is well posed at every
        # noise level, so no sampler needs the x0 clip and the deterministic few-step samplers
        # stay finite (its runs sample with DPM-Solver++ 10 eps/0.99 by default,
        # sampler_settings.py); Min-SNR-5 balances the timesteps. The budget counts updates,
        # not epochs.
        c.model.channels = (64, 128, 128)
        c.diffusion.prediction = "v"
        c.diffusion.loss_weighting = "min_snr"
        c.latents.x0_clip_percentile = -1.0
        # On the 320 built-in training slices 6,000 updates return partial copies of some
        # (docs/results.md, "Memorisation rules"); new generated slices keep them distinct.
        c.extra_train.builtin_per_class = 600
        c.train.num_steps = 6000
        c.train.eval_every_epochs = 100
        c.train.checkpoint_every_epochs = 50
    elif preset == "tiny":
        c.model.channels = (16, 32)
        c.model.num_res_blocks = 1
        c.model.attn_resolutions = ()
        c.model.num_heads = 2
        c.model.norm_groups = 8
        c.diffusion.num_timesteps = 100
        c.train.batch_size = 4
        c.train.num_epochs = 4
        c.train.eval_every_epochs = 2
        c.train.checkpoint_every_epochs = 2
        c.train.log_every_steps = 2
        c.train.eval_num_images = 2
        c.train.eval_sample_steps = 5
        c.optim.warmup_steps = 0
        c.decoder.check_per_class = 4
    else:
        raise ValueError(
            f"unknown preset {preset!r} for configs/ldm.py; use recommended, paper, demo or tiny."
        )
    return c
