"""Samples a diffusion run and writes `<out>/<class_name>/<file>`, `manifest.jsonl`, a grid PNG.

`run_sampling(SampleRequest)` is the library side of `sample.py`. The layout is the image-folder
layout the data readers take (class directory names `normal` and `tumour` map to labels 0 and
1), so `--config.data.path=<out>` trains on the synthetic set. Output is written into a
temporary sibling directory that replaces `--out` only when every image and the manifest are
complete, so an error or Ctrl-C never leaves a half-written `--out`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import tqdm
from PIL import Image

from jax_mri_ldm import plots
from jax_mri_ldm.atomic import atomic_directory
from jax_mri_ldm.data.classes import canonical_class_name
from jax_mri_ldm.engine import lock as lock_lib
from jax_mri_ldm.engine.checkpoint import check_finite_samples
from jax_mri_ldm.errors import UserError, resolve_inside
from jax_mri_ldm.pipeline import load_ldm
from jax_mri_ldm.sampler_settings import SamplerSpec, spec_with

FORMATS = ("png", "npy", "nii")
_GRID_IMAGES = 64  # images in grid.png


@dataclasses.dataclass
class SampleRequest:
    """What to sample (the flags of sample.py).

    The sampler setting is `spec`, or the setting of the report at `report` (`report_spec`;
    give one of the two), or else the run's default (`LDMPipeline.default_spec`), with the
    fields of `overrides` that are not None (the sampler flags a user gave).
    """

    workdir: str = "runs/ldm"
    label: str = "1"
    num_samples: int = 16
    batch_size: int = 16
    spec: SamplerSpec | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    out: str = "samples"
    format: str = "png"
    overwrite: bool = False
    progress: bool = True
    equalise: bool = True  # decode through the run's decoder equaliser when it has one
    report: str = ""  # an evaluate.py report.json (or its folder) of this run: its setting


def to_uint8(image01: np.ndarray) -> np.ndarray:
    """(H, W[, 1]) float in [0, 1] -> (H, W) uint8, rounded."""
    image = np.asarray(image01, np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def write_image(path: str, image01: np.ndarray, fmt: str) -> None:
    """Writes one (H, W, 1) image in [0, 1] as 8-bit PNG, float32 .npy or float32 NIfTI."""
    if fmt == "png":
        Image.fromarray(to_uint8(image01), mode="L").save(path)
    elif fmt == "npy":
        np.save(path, np.asarray(image01, np.float32))
    elif fmt == "nii":
        import nibabel as nib  # local: only needed for this format

        arr = np.asarray(image01, np.float32)[..., 0][:, :, None]  # (H, W, 1) volume
        nib.save(nib.Nifti1Image(arr, affine=np.eye(4)), path)
    else:
        raise UserError(f"--format={fmt!r} is not one of {FORMATS}")


def extension(fmt: str) -> str:
    return {"png": ".png", "npy": ".npy", "nii": ".nii.gz"}[fmt]


def write_batch(
    out_dir: str,
    images01: np.ndarray,
    labels: Iterable[int],
    class_names: tuple[str, ...],
    start_index: int,
    fmt: str,
    record: dict[str, Any],
) -> list[dict[str, Any]]:
    """Writes a batch of images and returns their manifest records.

    Args:
      out_dir: output root (class sub-directories are created).
      images01: (B, H, W, 1) in [0, 1].
      labels: B label ids.
      class_names: id -> name.
      start_index: running index of the first image (file names are zero-padded indices).
      fmt: one of FORMATS.
      record: fields shared by every manifest line (seed, sampler, steps, ...).

    Returns:
      One dict per image (file path relative to `out_dir`, index, label, label_name, + record).
    """
    rows = []
    for i, (image, label) in enumerate(zip(images01, labels, strict=True)):
        name = class_names[int(label)]
        index = start_index + i
        rel = os.path.join(name, f"{name}_{index:05d}{extension(fmt)}")
        path = resolve_inside(out_dir, rel)  # a crafted class name cannot leave out_dir
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_image(path, image, fmt)
        rows.append(
            {"file": rel, "index": index, "label": int(label), "label_name": name, **record}
        )
    return rows


def append_manifest(out_dir: str, rows: list[dict[str, Any]]) -> None:
    """Appends JSON lines to `<out_dir>/manifest.jsonl`."""
    with open(os.path.join(out_dir, "manifest.jsonl"), "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_manifest(out_dir: str) -> list[dict[str, Any]]:
    """Reads `<out_dir>/manifest.jsonl`."""
    with open(os.path.join(out_dir, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def resolve_labels(label: str, class_names: tuple[str, ...], num_samples: int) -> np.ndarray:
    """Maps --label (id, name, or 'all' for a balanced mix) to `num_samples` label ids."""
    valid = ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
    text = str(label).strip().lower()
    if text == "all":
        return np.arange(num_samples, dtype=np.int32) % len(class_names)
    names = [n.lower() for n in class_names]
    if text in names:
        idx = names.index(text)
    elif canonical_class_name(text) in names:  # synonyms: no/notumor/healthy, yes/tumor
        idx = names.index(canonical_class_name(text))
    elif text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
        idx = int(text)
    else:
        raise UserError(f"--label={label} is not a class of this model; valid: {valid}, or 'all'.")
    return np.full((num_samples,), idx, np.int32)


def _interval_json(interval: tuple[float, float] | None) -> list | None:
    """A guidance interval as JSON: [lo, hi], an unbounded hi as null."""
    if interval is None:
        return None
    lo, hi = interval
    return [lo, hi if math.isfinite(hi) else None]


def read_report_spec(path: str) -> tuple[SamplerSpec, tuple[Any, Any]]:
    """The setting a report's main synthetic set was sampled with (`main_set.spec` of an
    `evaluate.py` report.json, or of the report.json in the folder `path`) and the
    (checkpoint step, config fingerprint) of the run it was made on."""
    file = os.path.join(path, "report.json") if os.path.isdir(path) else path
    try:
        with open(file) as fh:
            r = json.load(fh)
        spec = (r.get("main_set") or {}).get("spec")
        run = r.get("run") or {}
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(
            f"--report={path}: {file} is not a readable report.json ({e}); pass the report.json "
            "that evaluate.py wrote, or its folder."
        ) from e
    if not isinstance(spec, dict):
        raise UserError(
            f"--report={path}: {file} records no sampler setting (main_set.spec; older reports "
            "lack it). Regenerate the report with evaluate.py, or pass the flags of its "
            "commands.sample instead of --report."
        )
    try:
        setting = SamplerSpec(**spec)
    except TypeError as e:  # fields this version does not know
        raise UserError(
            f"--report={path}: main_set.spec of {file} is not a sampler setting of this version "
            f"({e}); regenerate the report with this version's evaluate.py."
        ) from e
    return setting.validate(), (run.get("checkpoint_step"), run.get("config_fingerprint"))


def report_spec(path: str, step: int, fingerprint: str) -> SamplerSpec:
    """`read_report_spec`'s setting, refused unless the report was made on checkpoint `step`
    of a run whose config fingerprint is `fingerprint`: a report's choice of sampler and w
    holds for the checkpoint it measured."""
    spec, made_on = read_report_spec(path)
    if made_on != (step, fingerprint):
        raise UserError(
            f"--report={path} is a report of checkpoint step {made_on[0]} of the run with config "
            f"{made_on[1]}, but --workdir is at step {step} with config {fingerprint}. Pass "
            "the report of this run (evaluate.py --workdir=<this run>), or drop --report."
        )
    return spec


def _check_request(req: SampleRequest) -> None:
    """Raises ValueError naming the bad flag; cheap checks before loading the run."""
    if req.num_samples <= 0:
        raise UserError(f"--num_samples={req.num_samples} must be positive.")
    if req.batch_size <= 0:
        raise UserError(f"--batch_size={req.batch_size} must be positive.")
    if req.format not in FORMATS:
        raise UserError(f"--format={req.format} is not one of {', '.join(FORMATS)}.")
    if req.report and req.spec is not None:
        raise UserError("SampleRequest: give spec or report, not both.")
    base = read_report_spec(req.report)[0] if req.report else req.spec
    spec_with(base or SamplerSpec(), req.overrides)  # bad flags or report fail before loading
    _check_out(req.out, req.overwrite)


def _check_out(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out={out} exists and is not a directory; choose another --out.")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise UserError(
            f"--out={out} exists and is not empty; pass --overwrite to replace it or choose "
            "another --out."
        )
    parent = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(parent, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".probe", delete=True)
        probe.close()
    except OSError as e:
        raise UserError(f"--out={out} is not writable ({e.strerror}); choose another --out.") from e


def run_sampling(req: SampleRequest) -> dict[str, Any]:
    """Samples `req.num_samples` images and writes them under `req.out`.

    Returns:
      Summary dict: out, num_images, seconds, first_batch_seconds_incl_compile,
      seconds_per_batch, batch_size, peak_rss_mb.

    Raises:
      ValueError: any bad request (message names the flag and what to do).
    """
    _check_request(req)
    run = load_ldm(req.workdir)
    if not req.equalise:
        run = dataclasses.replace(run, vae=run.vae.without_equaliser())
    labels = resolve_labels(req.label, run.class_names, req.num_samples)
    base = req.spec or run.default_spec()
    if req.report:
        base = report_spec(req.report, run.step, run.config_fingerprint)
    try:
        sampler = run.image_sampler(spec_with(base, req.overrides), req.batch_size)
    except ValueError as e:  # a setting the flags allow but this run does not (--steps > T)
        raise UserError(f"the sampler settings do not fit {req.workdir}: {e}") from e
    spec = sampler.spec  # every default filled in
    record = {
        "seed": req.seed,
        "sampler": spec.sampler,
        "steps": int(spec.steps),
        "spacing": spec.spacing,
        "eta": spec.eta if spec.sampler == "ddim" else None,
        "guidance": spec.guidance_scale,
        "use_ema": bool(spec.use_ema),
        "eps_scale": spec.eps_scale,
        # (lo, hi] of guided noise levels, hi null = no bound (JSON has no inf); null = every step
        "guidance_interval": _interval_json(spec.guidance_interval),
        "equalised": run.vae.equaliser is not None,
        "checkpoint_step": run.step,
        "config_fingerprint": run.config_fingerprint,
        "workdir": os.path.abspath(req.workdir),
        "batch_size": sampler.batch_size,
        "report": os.path.abspath(req.report) if req.report else None,
    }
    num_batches = int(np.ceil(req.num_samples / sampler.batch_size))
    bar = tqdm.tqdm(
        total=num_batches, desc="sampling", unit="batch", disable=not req.progress, file=sys.stderr
    )
    times, grid_images = [], []
    t_start = time.perf_counter()
    lock_lib.clean_stale_temp_dirs(req.out)  # partial output of killed runs
    with atomic_directory(req.out) as tmp:  # replaces --out (checked above) only when complete
        lock_lib.mark_owner(tmp)  # a later run removes this folder only if this process died
        t0 = time.perf_counter()
        for b, (start, chunk, images) in enumerate(sampler.batches(labels, req.seed)):
            dt = time.perf_counter() - t0
            times.append(dt)
            batch_record = {
                **record,
                "batch": b,
                "time": time.time(),
                "batch_seconds": round(dt, 4),
            }
            check_finite_samples(images, req.workdir, run.step)  # NaN weights: error, no files
            rows = write_batch(tmp, images, chunk, run.class_names, start, req.format, batch_record)
            append_manifest(tmp, rows)
            grid_images.extend(images[: _GRID_IMAGES - len(grid_images)])
            bar.update(1)
            t0 = time.perf_counter()
        bar.close()
        plots.save_grid_png(np.stack(grid_images), os.path.join(tmp, "grid.png"))
        os.remove(os.path.join(tmp, lock_lib.OWNER_FILE))
    steady = times[1:] if len(times) > 1 else times
    return {
        "out": os.path.abspath(req.out),
        "num_images": int(req.num_samples),
        "seconds": time.perf_counter() - t_start,
        "first_batch_seconds_incl_compile": times[0],
        "seconds_per_batch": float(np.median(steady)),
        "batch_size": sampler.batch_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
