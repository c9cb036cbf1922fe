"""Evaluation report config: sizes and knobs of `evaluate.py`.

Usage: `python evaluate.py --workdir=runs/ldm --config=configs/report.py[:preset]`, with presets
`paper` (default: the full report; each report's Timings section records its wall time),
`demo` (sized for `make demo`) and `tiny` (tests). Any field can be overridden:
`--config.seeds=10`, `--config.guidance_scales='(1.0, 3.0)'`, `--config.features.steps=100`.
The main sampler's fields left as None take the run's default sampler
(`sampler_settings.default_sampler_spec`, by what the network predicts), as `sample.py` does.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def _features() -> ml_collections.ConfigDict:
    f = ml_collections.ConfigDict()
    # auto (the candidate that ranks the controls best) | contrastive | random | classifier
    f.space = "auto"
    f.widths = (
        16,
        32,
        64,
        128,
    )  # contrastive/random encoder channels per block (features: their sum)
    f.input_size = 128  # side the encoder sees (128 keeps the period-8 grid of 256 px visible)
    f.steps = 300  # self-supervised (SimCLR) training steps on the run's real training slices
    f.batch_size = 32  # images per contrastive step (two augmented views each)
    f.lr = 2e-3  # Adam learning rate of the contrastive encoder
    f.temperature = 0.2  # NT-Xent temperature
    f.prdc_k = 5  # k of the k-NN balls of precision/recall/density/coverage
    f.prdc_reference = "train"  # PRDC's real manifold: train (the run's training split) | test
    f.prdc_input_size = 0  # side the encoder sees for PRDC; 0 = the images' own side
    # recall's own k (balls around the judged images): the largest of these at which recall
    # ranks the controls right (control_study.choose_recall_k); () = prdc_k
    f.recall_ks = (5, 3, 2, 1)
    f.equal_n_subsets = (
        20  # recall/coverage of larger sets: mean of this many held-out-size subsets
    )
    return f


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the report config for preset `arg` ('paper' | 'demo' | 'tiny')."""
    preset = arg or "paper"
    c = ml_collections.ConfigDict()
    c.preset = preset  # name of the preset this config came from
    c.num_synthetic_per_class = 200  # main synthetic set per class (sections 4-8; the study's N)
    c.batch_size = 16  # images per sampler call (every setting compiles for this batch)
    c.seed = 0  # base seed of all synthetic images (batch b: fold_in(PRNGKey(seed), b))
    c.sampler = placeholder(str)  # main sampler; None = the run's default (default_sampler_spec)
    c.steps = placeholder(int)  # main sampler steps; None = the sampler's default
    c.spacing = placeholder(str)  # main timestep spacing; None = the sampler's default
    c.eta = placeholder(float)  # main DDIM eta; None = the run's default
    c.eps_scale = placeholder(float)  # main sampler's epsilon scaling (1 = off); None = the run's
    c.guidance_scale = placeholder(float)  # main w; None = chosen by the guidance sweep
    # (lo, hi): every report sampler guides only where sigma_t is in (lo, hi] (hi None = no
    # bound; SamplerSpec.guidance_interval); None = the run's default (every step)
    c.guidance_interval = placeholder(tuple)
    c.guidance_scales = (0.0, 1.0, 2.0, 3.0, 5.0, 7.0)  # the sweep's w values (empty: no sweep)
    # images per class for each w of the sweep; 0 = num_synthetic_per_class, so the row of the
    # chosen w is the main set itself and w is judged on the images the report scores (the
    # committed reports swept 32; 0 is measured in docs/results.md, "Guidance sweep at the main
    # set's size")
    c.sweep_per_class = 32
    c.fidelity_tolerance = 0.05  # sweep: class fidelity >= real recall - max(this, 1 image)
    # Sampler table rows at the main w: (sampler, steps or None for all T, spacing, eta), and an
    # optional fifth field, epsilon scaling (1 = off; SamplerSpec.eps_scale).
    c.samplers = (
        ("ddpm", None, "uniform", 0.0),
        ("ddim", 50, "uniform", 0.0),
        ("ddim", 50, "uniform", 1.0),
        ("dpmpp_2m", 25, "logSNR", 0.0),
        ("dpmpp_2m", 10, "logSNR", 0.0),
        ("dpmpp_2m", 10, "logSNR", 0.0, 0.99),  # the v-prediction runs' default
    )
    c.sampler_per_class = 32  # images per class per sampler row (except DDPM)
    # images per class for DDPM (about T network calls each): as many as the other rows, so its
    # interval, which the few-step samplers must fall into, is as tight as their estimates
    c.ddpm_per_class = 32
    c.classifier_steps = 600  # training steps of the domain classifier (class fidelity)
    c.classifier_batch_size = 32  # its batch size (also the study's)
    c.classifier_lr = 1e-3  # its Adam learning rate (also the study's)
    c.classifier_input_size = 64  # its working resolution (also the study's)
    c.classifier_widths = (16, 32, 64, 128)  # its channels per block
    c.seeds = 5  # seeds of the downstream study (0..seeds-1)
    # classifier steps per (arm, seed) in the study: where the half-alone arm stops gaining on
    # the validation split when its steps double (docs/results.md, session 39)
    c.study_steps = 600
    # Held-out splits that score the study (never trained on by the VAE/LDM); empty val -> test.
    c.downstream_eval_splits = ("val", "test")
    # Synthetic-amount sweep: half+syn at these multiples of the half real set's per-class size.
    c.downstream_syn_multiples = (1.0, 2.0)
    # The '+syn' arms' recipe (evaluation/synthetic_mix.py; chosen on the validation split,
    # docs/results.md). Share of each class's training draws given to synthetic images, in
    # (0, 1); 0 = no fixed share (uniform over real and synthetic images together).
    c.downstream_syn_share = 0.5
    # Label filter: keep the synthetic images that the same seed's classifier of the arm's real
    # images alone gives P(own label) >= this, in [0, 1); 0 = keep every synthetic image.
    c.downstream_syn_keep_prob = 0.5
    c.diversity_max_pairs = 500  # pairs per class for mean pairwise MS-SSIM
    c.kid_subsets = 100  # KID subsets
    c.kid_subset_size = 1000  # KID subset size (clipped to the set sizes)
    c.memorisation_search_size = 64  # side length of the SSIM nearest-neighbour search
    # Binary built-in set only: fresh slices per class, never trained on, that set the
    # memorisation thresholds with the test split (n held-out images flag 1/(n+1) of honest
    # new images; jax_mri_ldm/data/heldout.py). 0 = the test split alone.
    c.memorisation_calibration_per_class = 200
    c.figure_images = 8  # images in the VAE figure and per class in sample grids
    c.difference_pairs = 4  # synthetic images in the difference-map figure
    c.use_ema = True  # sample with the EMA weights (the paper's choice)
    c.controls = True  # score the control sets (real held-out and its corruptions)
    c.controls_seed = 0  # seed of the noise, shuffles and prior latents of the controls
    c.features = _features()
    # XLA options for the sampler/decoder compiles as (name, value) pairs; tiny turns LLVM
    # optimisation off (faster compiles, unrepresentative seconds per image).
    c.compile_options = ()
    # keep finished sample batches and classifier runs in <out>/partial/ so that rerunning a
    # stopped report (Ctrl-C, crash) resumes; the folder is deleted once report.json is written
    c.resume = True

    if preset == "paper":
        pass
    elif preset == "demo":
        # Demo-sized: fewer images, w values, seeds and steps (each sampler and each w is one
        # more compile; time per stage: docs/report_builtin_demo/report.md, Timings).
        c.num_synthetic_per_class = 32
        c.guidance_scales = (0.0, 1.0, 3.0, 5.0)  # every w is one more sampler compile
        c.sweep_per_class = 8
        c.sampler_per_class = 4
        c.ddpm_per_class = 2
        c.classifier_steps = 150
        c.classifier_batch_size = 16
        c.seeds = 2
        c.study_steps = 60
        c.downstream_syn_multiples = ()  # the demo's main set is smaller than the half real set
        c.diversity_max_pairs = 100
        c.kid_subsets = 50
        c.features.steps = 100
    elif preset == "tiny":
        # Sized for the tiny test run (32 px, 24 images, T=100): tests only.
        c.num_synthetic_per_class = 8
        c.batch_size = 8
        c.guidance_scales = (1.0, 3.0)
        c.sweep_per_class = 0  # the main set's 8: the tests cover the main-set-size path
        c.sampler_per_class = 4
        c.ddpm_per_class = 4
        c.classifier_steps = 30
        c.classifier_batch_size = 8
        c.classifier_lr = 2e-3
        c.classifier_input_size = 32
        c.classifier_widths = (8, 16)
        c.seeds = 2
        c.study_steps = 10
        c.downstream_syn_multiples = (1.0,)
        c.diversity_max_pairs = 20
        c.kid_subsets = 10
        c.memorisation_search_size = 32
        c.memorisation_calibration_per_class = 4
        c.figure_images = 4
        c.difference_pairs = 2
        c.features.widths = (8, 16)
        c.features.input_size = 32
        c.features.steps = 10
        c.features.batch_size = 8
        c.compile_options = (("xla_backend_optimization_level", 0),)
    else:
        raise ValueError(
            f"--config=configs/report.py:{preset}: unknown preset; use paper, demo or tiny."
        )
    return c
