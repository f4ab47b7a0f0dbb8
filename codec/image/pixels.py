"""Pixels in and out of the image pipeline: any input to HxWx3 uint8 RGB, padding to the
model's stride, and back to uint8.

Input policy (documented in README, tested in tests/test_image.py):
- EXIF orientation is applied, then the image is converted to 8-bit RGB:
  grayscale (1, L, I, I;16, F) is replicated to three channels; 16-bit and 32-bit integer
  samples are scaled to 8 bits (x * 255 / 65535, rounded; `I` is clipped to 0..65535);
  float samples (`F`) are clipped to 0..255; palette images are expanded; CMYK, YCbCr and
  LAB are converted by Pillow.
- Transparency is not coded: RGBA/LA/PA and palette transparency are composited onto a
  white background.
- Animated images (more than one frame) are refused.
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from codec.container import DEFAULT_LIMITS, Limits
from codec.errors import NeurocodecError


def load_rgb(image, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Any path / file object / PIL image / HxW(x3) uint8 array -> HxWx3 uint8 RGB array."""
    if isinstance(image, np.ndarray):
        _check_pixels(image.shape[1] if image.ndim > 1 else 1, image.shape[0], limits)
        return _array_to_rgb(image)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, limits)
    try:
        with Image.open(image) as im:
            return _pil_to_rgb(im, limits)
    except FileNotFoundError:
        raise NeurocodecError(f"input not found: {image}") from None
    except UnidentifiedImageError:
        raise NeurocodecError(f"not an image Pillow can read: {image}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise NeurocodecError(f"cannot read image {image}: {e}") from None


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3)):
        raise NeurocodecError(f"image arrays must be uint8 HxW or HxWx3, got {arr.dtype} {arr.shape}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise NeurocodecError(f"empty image {arr.shape}")
    return np.ascontiguousarray(np.broadcast_to(arr, arr.shape[:2] + (3,)))


def _check_pixels(w: int, h: int, limits: Limits) -> None:
    if w * h > limits.max_pixels:
        raise NeurocodecError(f"image is {w}x{h} = {w * h} pixels, above the limit of {limits.max_pixels}")


def _pil_to_rgb(im: Image.Image, limits: Limits) -> np.ndarray:
    _check_pixels(*im.size, limits)  # before any pixel is decoded (Image.open reads the header only)
    if getattr(im, "n_frames", 1) > 1:
        raise NeurocodecError(f"animated image with {im.n_frames} frames: extract one frame first")
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.float64).clip(0, 65535)
        return _array_to_rgb(np.rint(a * 255.0 / 65535.0).astype(np.uint8))
    if mode == "F":
        return _array_to_rgb(np.rint(np.asarray(im, dtype=np.float64).clip(0, 255)).astype(np.uint8))
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def to_tensor(rgb: np.ndarray, stride: int) -> torch.Tensor:
    x = torch.tensor(rgb).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    h, w = rgb.shape[:2]
    ph, pw = -h % stride, -w % stride
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def to_rgb8(x_hat: torch.Tensor, h: int, w: int) -> np.ndarray:
    x = x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def save_image(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()
