"""Image pipeline: pixels <-> model <-> entropy streams <-> .ncf container.

Input policy (documented in README, tested in tests/test_image.py):
- EXIF orientation is applied, then the image is converted to 8-bit RGB:
  grayscale (1, L, I, I;16, F) is replicated to three channels; 16-bit and 32-bit integer
  samples are scaled to 8 bits (x * 255 / 65535, rounded; `I` is clipped to 0..65535);
  float samples (`F`) are clipped to 0..255; palette images are expanded; CMYK, YCbCr and
  LAB are converted by Pillow.
- Transparency is not coded: RGBA/LA/PA and palette transparency are composited onto a
  white background.
- Animated images (more than one frame) are refused.
The model sees the image padded (edge replication) to a multiple of its stride; the
decoder crops back to the original size, so any size from 1x1 up round-trips.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from codec import entropy
from codec.container import (DEFAULT_LIMITS, Header, Limits, MediaKind, Section, read_container,
                             sections_by_name, write_container)
from codec.errors import NeurocodecError, WeightsError
from codec.zoo import DEFAULT_IMAGE_MODEL, get_preset, load_model

COLOR_FORMAT = "rgb8"
CODER_VERSION = 1
Y_STREAMS = 4  # independent rANS streams for y (channel groups), decoded in parallel


def load_rgb(image, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Any path / file object / PIL image / HxW(x3) uint8 array -> HxWx3 uint8 RGB array."""
    if isinstance(image, np.ndarray):
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


def _pil_to_rgb(im: Image.Image, limits: Limits) -> np.ndarray:
    w, h = im.size
    if w * h > limits.max_pixels:
        raise NeurocodecError(f"image is {w}x{h} = {w * h} pixels, above the limit of {limits.max_pixels}")
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


@dataclass
class _Latents:
    z_symbols: np.ndarray
    y_symbols: np.ndarray
    y_codes: dict
    y_hat: torch.Tensor


def _to_tensor(rgb: np.ndarray, stride: int) -> torch.Tensor:
    x = torch.tensor(rgb).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    h, w = rgb.shape[:2]
    ph, pw = -h % stride, -w % stride
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def _z_tables(model) -> tuple:
    eb = model.entropy_bottleneck
    return (eb._quantized_cdf.numpy().astype(np.int32), eb._cdf_length.numpy().astype(np.int32),
            eb._offset.numpy().astype(np.int32))


def _z_medians_and_indexes(model, shape) -> tuple[torch.Tensor, np.ndarray]:
    medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach().view(1, -1, 1, 1)
    indexes = np.broadcast_to(np.arange(shape[1], dtype=np.int32)[None, :, None, None], shape)
    return medians, np.ascontiguousarray(indexes)


def _y_params(model, z_hat: torch.Tensor) -> tuple[dict, np.ndarray]:
    """Gaussian parameters of y snapped to the coder's grid, and the exact means they stand for."""
    means, scales = model.hyper_synthesis(z_hat)
    codes = entropy.quantize_params("gaussian", mean=means.numpy(), scale=scales.numpy())
    snapped_means = entropy.dequantize_params("gaussian", codes)["mean"]
    # y is coded as round(y - mean) under a zero-mean Gaussian, so the coder gets mean 0.
    codes = {"mean": np.zeros_like(codes["mean"]), "scale": codes["scale"]}
    return codes, snapped_means


def _channel_groups(channels: int) -> list[slice]:
    bounds = np.linspace(0, channels, Y_STREAMS + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _split(arr: np.ndarray, groups) -> list[np.ndarray]:
    return [np.ascontiguousarray(arr[:, g]) for g in groups]


def _split_codes(codes: dict, groups) -> list[dict]:
    parts = {k: _split(v, groups) for k, v in codes.items()}
    return [{k: parts[k][i] for k in codes} for i in range(len(groups))]


@torch.no_grad()
def _analyse(model, x: torch.Tensor, quality: float) -> _Latents:
    q = torch.tensor([quality])
    y = model.analysis(x, q)
    z = model.hyper_analysis(y)
    medians, _ = _z_medians_and_indexes(model, z.shape)
    z_symbols = torch.round(z - medians)
    codes, snapped_means = _y_params(model, z_symbols + medians)
    y_symbols = np.rint(y.double().numpy() - snapped_means).clip(-2**30, 2**30)
    y_hat = torch.from_numpy(y_symbols + snapped_means).float()
    return _Latents(z_symbols.numpy().astype(np.int32), y_symbols.astype(np.int32), codes, y_hat)


def encode_image(image, model: str | None = None, quality: float = 4.0,
                 limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Compress an image (path, file object, PIL image or uint8 array) to .ncf bytes.

    `quality` is continuous in [1, L] (L = the model's number of trained rate points,
    8 for the shipped models): 1 gives the smallest files, fractions interpolate.
    """
    name = model or DEFAULT_IMAGE_MODEL
    preset = get_preset(name)
    if preset.kind != "image":
        raise NeurocodecError(f"model {name!r} is a {preset.kind} model, not an image model")
    net, sha = load_model(name)
    if not 1.0 <= float(quality) <= net.levels:
        raise NeurocodecError(f"quality must be in [1, {net.levels}], got {quality}")
    quality = float(np.float32(quality))  # the header stores float32; decode must see the same value
    rgb = load_rgb(image, limits)
    h, w = rgb.shape[:2]
    x = _to_tensor(rgb, net.stride)
    lat = _analyse(net, x, quality)
    _, z_indexes = _z_medians_and_indexes(net, lat.z_symbols.shape)
    z_stream = entropy.encode_table(lat.z_symbols.ravel(), z_indexes.ravel(), *_z_tables(net))
    groups = _channel_groups(lat.y_symbols.shape[1])
    y_streams = entropy.encode_streams(
        "gaussian", _split(lat.y_symbols, groups),
        _split_codes(lat.y_codes, groups))
    header = Header(media=MediaKind.IMAGE, model=name, weights_hash=bytes.fromhex(sha[:16]),
                    width=w, height=h, pad_width=x.shape[3], pad_height=x.shape[2],
                    color=COLOR_FORMAT, quality=quality,
                    coder={"version": CODER_VERSION, "precision": entropy.PRECISION,
                           "y_streams": len(groups)})
    sections = [Section("z", z_stream)] + [Section(f"y{i}", s) for i, s in enumerate(y_streams)]
    return write_container(header, sections)


@torch.no_grad()
def reconstruct(image, model: str | None = None, quality: float = 4.0) -> np.ndarray:
    """The model's own quantized reconstruction, without entropy coding (what decode must equal)."""
    net, _ = load_model(model or DEFAULT_IMAGE_MODEL)
    quality = float(np.float32(quality))
    rgb = load_rgb(image)
    lat = _analyse(net, _to_tensor(rgb, net.stride), quality)
    return _to_rgb8(net.synthesis(lat.y_hat, torch.tensor([quality])), *rgb.shape[:2])


def _to_rgb8(x_hat: torch.Tensor, h: int, w: int) -> np.ndarray:
    x = x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def check_header(header: Header) -> tuple[torch.nn.Module, dict]:
    """Load the model a file names and refuse if its weights differ from those it was made with."""
    if header.media != MediaKind.IMAGE:
        raise NeurocodecError("this file holds a video, not an image")
    net, sha = load_model(header.model)
    if bytes.fromhex(sha[:16]) != header.weights_hash:
        raise WeightsError(f"file was made with model {header.model!r} weights {header.weights_hash.hex()}, "
                           f"but the installed weights are {sha[:16]}: install the matching weights")
    if header.pad_width % net.stride or header.pad_height % net.stride or \
            header.pad_width - header.width >= net.stride or header.pad_height - header.height >= net.stride:
        raise NeurocodecError(f"inconsistent padding {header.pad_width}x{header.pad_height} for "
                              f"{header.width}x{header.height} at stride {net.stride}")
    if header.color != COLOR_FORMAT or header.coder.get("version") != CODER_VERSION \
            or header.coder.get("precision") != entropy.PRECISION:
        raise NeurocodecError(f"unsupported colour format or coder settings: {header.color} {header.coder}")
    if not 1.0 <= header.quality <= net.levels:
        raise NeurocodecError(f"quality {header.quality} out of the model's range [1, {net.levels}]")
    return net, header.coder


@torch.no_grad()
def decode_image(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode .ncf bytes to an HxWx3 uint8 RGB array (bit-exact with the encoder's reconstruction)."""
    header, sections = read_container(data, limits)
    net, coder = check_header(header)
    streams = sections_by_name(sections)
    groups = _channel_groups(net.M)
    expected = {"z"} | {f"y{i}" for i in range(len(groups))}
    if coder.get("y_streams") != len(groups) or set(streams) != expected:
        raise NeurocodecError(f"file has sections {sorted(streams)}, expected {sorted(expected)}")
    zh, zw = header.pad_height // net.stride, header.pad_width // net.stride
    z_shape = (1, net.N, zh, zw)
    medians, z_indexes = _z_medians_and_indexes(net, z_shape)
    z_symbols = entropy.decode_table(streams["z"], z_indexes.ravel(), *_z_tables(net)).reshape(z_shape)
    z_hat = torch.from_numpy(z_symbols).float() + medians
    codes, snapped_means = _y_params(net, z_hat)
    y_streams = entropy.decode_streams(
        "gaussian", [streams[f"y{i}"] for i in range(len(groups))],
        _split_codes(codes, groups))
    y_symbols = np.concatenate(y_streams, axis=1)
    y_hat = torch.from_numpy(y_symbols + snapped_means).float()
    x_hat = net.synthesis(y_hat, torch.tensor([header.quality]))
    return _to_rgb8(x_hat, header.height, header.width)


def save_image(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()
