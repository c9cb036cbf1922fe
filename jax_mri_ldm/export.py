"""Writes synthetic slices as `<out>/<class_name>/<file>` plus `manifest.jsonl` and a grid PNG.

The layout is the image-folder layout the data readers take (class directory names `normal` and
`tumour` map to labels 0 and 1), so `--config.data.path=<out>` trains on the synthetic set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image

FORMATS = ("png", "npy", "nii")


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
        raise ValueError(f"--format={fmt!r} is not one of {FORMATS}")


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
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        write_image(os.path.join(out_dir, rel), image, fmt)
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
