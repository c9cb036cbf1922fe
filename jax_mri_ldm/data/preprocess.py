"""The paper's preprocessing: grayscale -> bilinear resize -> per-image min-max to [0, 1].

Every source (image folders, NIfTI slices, the TFDS builder) goes through `preprocess_array`,
so a slice looks the same whichever reader produced it.

Choices, in the order they are applied:

1. Grayscale (`pil_to_float`). Decoding keeps the full bit depth and works in float32:
   - `L`/`1`: as is. `I;16*`/`I`/`F` (16-bit PNG/TIFF, float TIFF): raw values as float, never
     clipped to 8 bits (min-max below maps them to [0, 1]).
   - `RGB` (most files in the Kaggle set are grayscale stored as RGB): ITU-R 601-2 luma
     `0.299 R + 0.587 G + 0.114 B` on float, i.e. `convert('L')` without its rounding to uint8;
     for grayscale-as-RGB this is exactly the stored gray value.
   - `RGBA`/`LA`: composited on black (colour times alpha / 255). Black is the MRI background,
     so transparent pixels become background instead of whatever colour they hide.
   - `P` (palette): expanded through the palette to RGBA (keeps palette transparency), then as
     RGBA. Other modes (CMYK, YCbCr, ...) go through `convert('RGB')`.
2. Resize (`resize_bilinear`) to `size x size` with Pillow's BILINEAR filter on a 32-bit float
   ('F' mode) image. That is what torchvision's `transforms.Resize((256, 256))` does on a PIL
   image, as in the paper's listing: triangle filter whose support widens when downsampling
   (anti-aliased), so large scans are averaged rather than point-sampled. Non-square inputs are
   stretched to square, as in the paper.
3. Min-max per image (`minmax_normalize`): `(x - min) / (max - min)`, float32, exactly 0 and 1
   at the extremes. A constant image has no range; it is rejected ('constant image').

Images smaller than `MIN_SIDE` pixels on a side are rejected ('too small'): upsampling a
thumbnail to 256 x 256 gives a blur, not an MRI slice.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Bump when anything here changes the output: it is part of every cache fingerprint.
PREPROCESS_VERSION = 1

MIN_SIDE = 16
"""Images with width or height below this are skipped (reason 'too small')."""

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as PIL's convert('L')


class RejectedImage(Exception):
    """An input that cannot become a training slice; the message is the reason it was skipped."""


def pil_to_float(img: Image.Image) -> np.ndarray:
    """Converts a decoded PIL image of any mode to one grayscale float32 channel.

    Args:
      img: a PIL image (already loaded); see the module docstring for the per-mode rules.

    Returns:
      (H, W) float32 array in the image's own intensity units (0..255 for 8-bit, 0..65535
      for 16-bit, ...), not yet normalised.
    """
    mode = img.mode
    if mode in ("L", "1"):
        return np.asarray(img.convert("L"), dtype=np.float32)
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I (32-bit int), F
        arr = np.asarray(img)
        return arr.astype(np.float32)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "LA":
        arr = np.asarray(img, dtype=np.float32)  # (H, W, 2)
        return arr[..., 0] * (arr[..., 1] / 255.0)
    if mode in ("RGBA", "RGBa", "PA"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32)  # (H, W, 4)
        return _luma(arr[..., :3]) * (arr[..., 3] / 255.0)
    if mode != "RGB":
        img = img.convert("RGB")
    return _luma(np.asarray(img, dtype=np.float32))  # (H, W, 3) -> (H, W)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float -> (H, W) ITU-R 601-2 luma; grayscale stored as RGB is returned exactly."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].copy()  # the weights sum to 1 only up to float rounding
    return rgb @ _LUMA


def resize_bilinear(arr: np.ndarray, size: int) -> np.ndarray:
    """Resizes a 2D float image to (size, size) with Pillow's BILINEAR filter in float32.

    Args:
      arr: (H, W) array.
      size: output side.

    Returns:
      (size, size) float32 array.
    """
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape == (size, size):
        return arr.copy()
    out = Image.fromarray(arr, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


def minmax_normalize(arr: np.ndarray) -> np.ndarray:
    """Maps an image linearly to [0, 1] (min -> 0, max -> 1).

    Args:
      arr: image array of any shape.

    Returns:
      float32 array of the same shape.

    Raises:
      RejectedImage: the image is constant (or not finite), so it has no range to normalise.
    """
    arr = np.asarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise RejectedImage("non-finite values (NaN/inf)")
    lo, hi = float(arr.min()), float(arr.max())
    # Tolerance: a constant image that went through the resize filter may carry float noise.
    if hi - lo <= 1e-6 * max(1.0, abs(hi), abs(lo)):
        raise RejectedImage("constant image (min = max)")
    out = (arr - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def preprocess_array(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize + min-max for one 2D grayscale float image (any intensity units).

    Args:
      arr: (H, W) array, e.g. from `pil_to_float` or one NIfTI slice.
      size: output side (config.data.image_size).

    Returns:
      (size, size, 1) float32 in [0, 1].

    Raises:
      RejectedImage: too small, constant, or non-finite; the message says which.
    """
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise RejectedImage(f"expected a 2D image, got shape {arr.shape}")
    h, w = arr.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise RejectedImage(f"too small ({w}x{h} < {MIN_SIDE}x{MIN_SIDE})")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise RejectedImage("non-finite values (NaN/inf)")
    if float(arr.max()) == float(arr.min()):
        raise RejectedImage("constant image (min = max)")
    out = minmax_normalize(resize_bilinear(arr, size))
    return out[..., None]  # (S, S, 1)


def preprocess_pil(img: Image.Image, size: int) -> np.ndarray:
    """Grayscale + resize + min-max for a decoded PIL image.

    Args:
      img: a loaded PIL image of any mode.
      size: output side.

    Returns:
      (size, size, 1) float32 in [0, 1].

    Raises:
      RejectedImage: see `preprocess_array`.
    """
    w, h = img.size
    if h < MIN_SIDE or w < MIN_SIDE:  # before the (possibly costly) mode conversion
        raise RejectedImage(f"too small ({w}x{h} < {MIN_SIDE}x{MIN_SIDE})")
    return preprocess_array(pil_to_float(img), size)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] float images -> uint8 (round to nearest), e.g. for the TFDS builder or PNG export.

    Args:
      images: float array in [0, 1].

    Returns:
      uint8 array of the same shape.
    """
    return np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
