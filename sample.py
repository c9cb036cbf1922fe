"""Samples labelled synthetic slices: `python sample.py --label=1` (or --label=tumour / all).

Reads a finished diffusion run (default runs/ldm) and writes `<out>/<class_name>/*.png`, a grid
PNG and manifest.jsonl. Bad flags print one message and exit with status 2.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/ldm", "Diffusion run directory (train.py configs/ldm.py).")
flags.DEFINE_string("label", "1", "Class id or name (0=normal, 1=tumour), or 'all' (balanced).")
flags.DEFINE_integer("num_samples", 16, "Number of images.")
flags.DEFINE_integer("batch_size", 16, "Images per sampler call (rounded up to the devices).")
flags.DEFINE_float("guidance_scale", 3.0, "Classifier-free guidance w (1 = plain conditional).")
flags.DEFINE_enum("sampler", "ddim", ["ddpm", "ddim", "dpmpp_2m"], "Sampler.")
flags.DEFINE_float("eta", 1.0, "DDIM noise: 1 = ancestral (default, robust), 0 = deterministic.")
flags.DEFINE_integer("steps", None, "Sampler steps (default: ddpm all T, ddim 50, dpmpp_2m 25).")
flags.DEFINE_enum(
    "spacing",
    None,
    ["uniform", "leading", "trailing", "quadratic", "logSNR"],
    "Timestep spacing (default: logSNR for dpmpp_2m, uniform otherwise).",
)
flags.DEFINE_integer("seed", 0, "Random seed; same flags and seed give identical images.")
flags.DEFINE_string("out", "samples", "Output directory (refused if non-empty, see --overwrite).")
flags.DEFINE_enum("format", "png", ["png", "npy", "nii"], "Per-image file format.")
flags.DEFINE_bool("use_ema", True, "Sample with the EMA weights (paper) instead of the raw ones.")
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out.")


def main(argv):
    del argv
    from jax_mri_ldm.cli import user_error
    from jax_mri_ldm.generate import SampleRequest, run_sampling

    req = SampleRequest(
        workdir=FLAGS.workdir,
        label=FLAGS.label,
        num_samples=FLAGS.num_samples,
        batch_size=FLAGS.batch_size,
        guidance_scale=FLAGS.guidance_scale,
        sampler=FLAGS.sampler,
        steps=FLAGS.steps,
        spacing=FLAGS.spacing,
        eta=FLAGS.eta,
        seed=FLAGS.seed,
        out=FLAGS.out,
        format=FLAGS.format,
        use_ema=FLAGS.use_ema,
        overwrite=FLAGS.overwrite,
    )
    try:
        summary = run_sampling(req)
    except ValueError as e:
        sys.exit(user_error(str(e)))
    print(f"wrote {summary['num_images']} images to {summary['out']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
