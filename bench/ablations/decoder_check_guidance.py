"""Does the decoder check's verdict depend on the guidance it samples at?

A finished diffusion run judges its equaliser copy once, on samples of its default sampler at
the run's default guidance w (`jax_mri_ldm/decoder_check.py`). The report's guidance sweep may
then pick another w for its headline. This probe redoes the same check, with the same real
images (the VAE run's training split as the reference, its validation split as the spread),
the same seed and the same number of samples, at each `--guidance` value, and writes every
verdict with its scores. It writes nothing into the run.

Run from the repository root::

  python bench/ablations/decoder_check_guidance.py --workdir=runs/ldm --guidance=1,3,5 \\
      --out=runs/exp/decoder_check_guidance.json
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT]

from jax_mri_ldm import atomic, equaliser  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Finished diffusion run.", required=True)
_GUIDANCE = flags.DEFINE_list("guidance", ["1", "3", "5"], "Guidance w values to judge at.")
_OUT = flags.DEFINE_string("out", None, "Output JSON path.", required=True)


def reals(workdir: str):
    """The decoder check's (reference, spread) real images, as the training run chose them, the
    run, and its equaliser copy's gains."""
    import ml_collections

    from jax_mri_ldm import pipeline, train_ldm

    run = pipeline.load_ldm(workdir)
    real = train_ldm.decoder_check_reals(ml_collections.ConfigDict(run.meta["config"]))
    copy = os.path.join(workdir, equaliser.LDM_FILE_NAME)  # judged even where it was left out
    gains = equaliser.load(copy, run.meta["vae"]["sha256"], run.image_size)
    return real, run, gains


def main(argv) -> None:
    del argv
    from jax_mri_ldm import decoder_check

    real, run, gains = reals(_WORKDIR.value)
    decoder = run.meta["config"].get("decoder", {})
    per_class, seed = int(decoder.get("check_per_class", 32)), int(run.meta["config"]["seed"])
    rows = []
    for w in (float(g) for g in _GUIDANCE.value):
        t0 = time.perf_counter()
        rec = decoder_check.check_run(run, gains, *real, per_class, seed, guidance_scale=w)
        rec["seconds"] = time.perf_counter() - t0
        dev = {k: round(rec[k]["deviation"], 3) for k in ("as_trained", "equalised")}
        print(f"w={w}: equalise={rec['equalise']} deviation {dev}", flush=True)
        rows.append(rec)
    out = {"workdir": _WORKDIR.value, "per_class": per_class, "seed": seed, "rows": rows}
    atomic.write_text(_OUT.value, json.dumps(out, indent=1))


if __name__ == "__main__":
    app.run(main)
