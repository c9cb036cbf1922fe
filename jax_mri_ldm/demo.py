"""The README's first command: the whole paper pipeline on the built-in dataset, demo-sized.

`python -m jax_mri_ldm.demo --workdir=runs/demo` (what `make demo` runs):
  1. builds the built-in phantom set, prints its summary and writes a preview grid;
  2. trains the VAE (configs/vae.py:demo) into <workdir>/vae;
  3. trains the latent diffusion model (configs/ldm.py:demo) into <workdir>/ldm;
  4. samples both classes into <workdir>/samples;
  5. writes the evaluation report into <workdir>/report.
Every stage resumes or skips when its output is already complete, so rerunning is cheap.
"""

from __future__ import annotations

import json
import os
import sys
import time

import ml_collections
import numpy as np
from absl import app, flags

from jax_mri_ldm.config_loader import load_config

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes everything.")
flags.DEFINE_list(
    "stages", ["data", "vae", "ldm", "sample", "report"], "Stages to run, in pipeline order."
)
flags.DEFINE_string("preset", "demo", "Config preset for both stages (demo | tiny | paper).")
flags.DEFINE_string("data_path", "", "Optional real data (image folder) instead of built-in.")


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def stage_data(workdir: str, data_cfg: ml_collections.ConfigDict) -> None:
    from jax_mri_ldm import data as data_lib
    from jax_mri_ldm import plots

    t0 = time.perf_counter()
    ds = data_lib.load_imageset(data_cfg)
    dt = time.perf_counter() - t0
    counts = ds.counts()
    print(
        f"dataset: {len(ds)} images {counts}, {ds.images.shape[1]}x{ds.images.shape[2]}, "
        f"loaded in {dt:.1f} s, fingerprint {ds.fingerprint[:12]}"
    )
    rng = np.random.default_rng(0)
    picks = np.concatenate(
        [rng.choice(np.flatnonzero(ds.labels == c), 8, replace=False) for c in range(2)]
    )
    path = plots.save_labelled_grid(
        ds.images[picks],
        ds.labels[picks],
        ds.class_names,
        os.path.join(workdir, "preview.png"),
        per_class=8,
    )
    print(f"preview grid: {path}")
    print(json.dumps({"num_images": len(ds), "classes": counts, "seconds": round(dt, 2)}))


def main(argv):
    del argv
    from jax_mri_ldm.cli import run_training, user_error, user_errors

    workdir = FLAGS.workdir
    os.makedirs(workdir, exist_ok=True)
    vae_cfg = load_config("vae", FLAGS.preset)
    ldm_cfg = load_config("ldm", FLAGS.preset)
    if FLAGS.data_path:
        vae_cfg.data.path = FLAGS.data_path
    vae_dir, ldm_dir = os.path.join(workdir, "vae"), os.path.join(workdir, "ldm")
    ldm_cfg.vae_workdir = vae_dir
    t_start = time.perf_counter()
    stages = list(FLAGS.stages)
    if "data" in stages:
        _banner("1/5 data: built-in phantom set" if not FLAGS.data_path else "1/5 data")
        try:
            stage_data(workdir, vae_cfg.data)
        except user_errors() as e:
            sys.exit(user_error(str(e)))
    if "vae" in stages:
        _banner("2/5 stage 1: VAE")
        rc = run_training(vae_cfg, vae_dir)
        if rc:
            sys.exit(rc)
    if "ldm" in stages:
        _banner("3/5 stage 2: latent diffusion")
        rc = run_training(ldm_cfg, ldm_dir)
        if rc:
            sys.exit(rc)
    if "sample" in stages:
        _banner("4/5 sampling both classes")
        from jax_mri_ldm.export import SampleRequest, run_sampling

        summary = run_sampling(
            SampleRequest(
                workdir=ldm_dir,
                label="all",
                num_samples=32,
                batch_size=16,
                out=os.path.join(workdir, "samples"),
                overwrite=True,
            )
        )
        print(json.dumps(summary))
    if "report" in stages:
        _banner("5/5 evaluation report")
        try:
            from jax_mri_ldm.evaluation import report
        except ImportError:
            print("evaluation report not available in this version; skipping")
        else:
            report.write_report(ldm_dir, os.path.join(workdir, "report"), preset=FLAGS.preset)
    minutes = (time.perf_counter() - t_start) / 60
    print(f"\nDemo finished in {minutes:.1f} min. Results under {os.path.abspath(workdir)}:")
    for name in ("preview.png", "vae/figures", "ldm/figures", "samples", "report/report.md"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            print(f"  {path}")


if __name__ == "__main__":
    app.run(main)
