"""Samples labelled synthetic slices: `python sample.py --label=1` (or --label=tumour / all).

Reads a finished diffusion run (default runs/ldm) and writes `<out>/<class_name>/*.png`, a grid
PNG and manifest.jsonl. `--report=<an evaluate.py report of the run>` samples with the setting
that report measured (its sampler and chosen guidance w). Bad flags print one message and exit
with status 2.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from jax_mri_ldm.sampler_settings import (
    DEFAULT_SPACING,
    DEFAULT_STEPS,
    FAST_DETERMINISTIC,
    SamplerSpec,
)
from jax_mri_ldm.sampling import SAMPLERS, SPACINGS

DEFAULT = SamplerSpec()  # --use_ema's help reads it; sampler flags default to the run's own
FAST = SamplerSpec(**FAST_DETERMINISTIC)  # the v-prediction runs' default
RUN_DEFAULT = "default: the run's own (sampler_settings.default_sampler_spec)"

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/ldm", "Diffusion run directory (train.py configs/ldm.py).")
flags.DEFINE_string("label", "1", "Class id or name (0=normal, 1=tumour), or 'all' (balanced).")
flags.DEFINE_integer("num_samples", 16, "Number of images.")
flags.DEFINE_integer("batch_size", 16, "Images per sampler call (rounded up to the devices).")
flags.DEFINE_float(
    "guidance_scale", None, f"Classifier-free guidance w (1 = plain conditional; {RUN_DEFAULT})."
)
flags.DEFINE_enum(
    "sampler",
    None,
    list(SAMPLERS),
    f"Sampler ({RUN_DEFAULT}: v-prediction runs {FAST.sampler} {FAST.steps} steps with "
    f"eps_scale {FAST.eps_scale:g}, deterministic; other runs {DEFAULT.sampler} "
    f"{DEFAULT_STEPS[DEFAULT.sampler]} steps, eta {DEFAULT.eta:g}).",
)
flags.DEFINE_float(
    "eta",
    None,
    f"DDIM noise: 1 = ancestral, 0 = deterministic ({RUN_DEFAULT}; DDIM {DEFAULT.eta:g}).",
)
flags.DEFINE_integer(
    "steps",
    None,
    "Sampler steps (default: the run's; with another --sampler: "
    + ", ".join(f"{k} {v or 'all T'}" for k, v in DEFAULT_STEPS.items())
    + ").",
)
flags.DEFINE_enum(
    "spacing",
    None,
    list(SPACINGS),
    "Timestep spacing (default: "
    + ", ".join(f"{k} {v}" for k, v in DEFAULT_SPACING.items())
    + ").",
)
flags.DEFINE_float(
    "eps_scale",
    None,
    "Epsilon scaling (Ning et al. 2024): every step uses eps / eps_scale, 1 = off; values a "
    f"little below 1 tighten deterministic samplers' spread ({RUN_DEFAULT}: "
    f"{FAST.eps_scale:g} for v-prediction runs, else 1; another --sampler, --steps or "
    "--spacing turns it off unless given).",
)
flags.DEFINE_list(
    "guidance_interval",
    None,
    "lo,hi: guide with --guidance_scale only at steps whose noise level sigma_t = "
    "sqrt(1 - abar) / sqrt(abar) lies in (lo, hi] (hi may be inf), plain conditional elsewhere "
    "(Kynkäänniemi et al. 2024); empty = every step (default: the run's, every step).",
)
flags.DEFINE_integer("seed", 0, "Random seed; same flags and seed give identical images.")
flags.DEFINE_string("out", "samples", "Output directory (refused if non-empty, see --overwrite).")
flags.DEFINE_enum("format", "png", ["png", "npy", "nii"], "Per-image file format.")
flags.DEFINE_bool(
    "use_ema",
    None,
    f"Sample with the EMA weights (paper), not the raw ({RUN_DEFAULT}: {DEFAULT.use_ema}).",
)
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out.")
flags.DEFINE_string(
    "report",
    "",
    "An evaluate.py report of this --workdir's checkpoint (its report.json or folder): sample "
    "with the setting its main synthetic set was measured with (sampler, steps, spacing, eta, "
    "eps_scale, guidance interval, the guidance w its sweep chose, EMA); sampler flags given "
    "beside it override it.",
)
flags.DEFINE_bool(
    "equalise",
    True,
    "Decode through the run's decoder equaliser when it has one (jax_mri_ldm/equaliser.py); "
    "--noequalise decodes with the decoder as trained.",
)


def main(argv):
    del argv
    from jax_mri_ldm.cli import setup_logging, user_error, user_errors
    from jax_mri_ldm.export import SampleRequest, run_sampling

    setup_logging()  # orbax INFO lines only with --verbosity=0

    names = ("sampler", "steps", "eta", "guidance_scale", "spacing", "use_ema", "eps_scale")
    names += ("guidance_interval",)
    req = SampleRequest(
        workdir=FLAGS.workdir,
        label=FLAGS.label,
        num_samples=FLAGS.num_samples,
        batch_size=FLAGS.batch_size,
        overrides={k: FLAGS[k].value for k in names},
        seed=FLAGS.seed,
        out=FLAGS.out,
        format=FLAGS.format,
        overwrite=FLAGS.overwrite,
        equalise=FLAGS.equalise,
        report=FLAGS.report,
    )
    try:
        summary = run_sampling(req)
    except user_errors() as e:
        sys.exit(user_error(str(e)))
    print(f"wrote {summary['num_images']} images to {summary['out']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    from jax_mri_ldm.cli import parse_flags  # bad flags and config fields: one line, exit 2

    app.run(main, flags_parser=parse_flags)
