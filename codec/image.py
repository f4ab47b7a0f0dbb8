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

Streams: "z" (the hyper-latent, table-coded with the model's factorized prior), then y:
- mean-scale hyperprior: "y0".."y3", Gaussian streams over 4 channel groups;
- MLIC (`coding_steps`): one stream per coding step, named after it, in coding order
  ("s0/anchor", "s0/nonanchor", "s1/anchor", ...; mvgmm: "s0/anchor/j0", "s0/anchor/j1",
  ...). Gaussian and GG steps code round(y - snapped mean) under the zero-mean law, GMM and
  multivariate-GMM steps code round(y) under the snapped mixture; values outside the coder's
  support are escaped, never clamped.
The header's coder settings give the number of y streams per tile. Coder versions 3 and 4 store a
tile's streams, z first, then y in coding order, in one section "streams"
(`codec.container.pack_streams`), as the parts of one rANS chain (`entropy.ChainEncoder`:
only the first carries the coder's state); versions 1 and 2 stored each stream, with its own
state, in a section of its name.

Tiling bounds memory: an image wider or taller than `TILE` pixels is coded as independent
TILE x TILE tiles (raster order, edge tiles smaller, each padded on its own), every section
name prefixed with its tile ("t0/streams", "t1/streams", ...; before version 3 "t0/z",
"t0/y0", ..., "t1/z", ...) and the tile side stored as
coder setting "tile". A 1024x1024 tile needs about 0.6 GB of activations, whatever the image
size. Files without "tile" are one tile; decoders refuse tiles above MAX_TILE^2 pixels.
"""
from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from codec import entropy, exact
from codec.container import (DEFAULT_LIMITS, Header, Limits, MediaKind, NcfError, Section, pack_streams,
                             read_container, sections_by_name, unpack_streams, write_container)
from codec.errors import NeurocodecError
from codec.refine import refine_latents
from codec.zoo import DEFAULT_IMAGE_MODEL, get_preset, load_model, split_release

COLOR_FORMAT = "rgb8"
CODER_VERSION = 4
# The precision of the hyper and context networks that compute the coder's parameters, per
# coder version. Version 1 computed them in float32, whose rounding differs between PyTorch's
# AVX2, AVX512 and scalar kernels by more than the parameter grid, so its files decode only
# on CPUs like the encoder's; versions 2 and 3 use float64, whose differences (at most 6e-9 of
# a grid step between kernel sets, measured) straddle a grid boundary about once in 35,000
# Kodak-size files (docs/reliability.md). Version 4 computes them on codec.exact's kernels (float64),
# the same bits on every CPU; models whose parameter path those kernels do not cover stay on 3.
PARAMETER_DTYPES = {1: torch.float32, 2: torch.float64, 3: torch.float64, 4: torch.float64}
EXACT_SINCE = 4
# Since version 3 a tile's streams share one section and are the parts of one rANS chain:
# one name, length, CRC and 8-byte coder state per stream less (docs/format.md).
PACKED_SINCE = 3
Y_STREAMS = 4  # rANS streams for the y of mean-scale models (channel groups)
TILE = 1024    # images with a side above this are coded in tiles of this side (memory bound)
MAX_TILE = 2048  # largest tile side (and untiled image area, MAX_TILE^2) a decoder accepts


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


def _to_tensor(rgb: np.ndarray, stride: int) -> torch.Tensor:
    x = torch.tensor(rgb).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    h, w = rgb.shape[:2]
    ph, pw = -h % stride, -w % stride
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


# ----------------------------------------------------------------------------- z (both kinds)
def _z_tables(model) -> tuple:
    eb = model.entropy_bottleneck
    return (eb._quantized_cdf.numpy().astype(np.int32), eb._cdf_length.numpy().astype(np.int32),
            eb._offset.numpy().astype(np.int32))


def _z_medians_and_indexes(model, shape) -> tuple[torch.Tensor, np.ndarray]:
    medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach().view(1, -1, 1, 1)
    indexes = np.broadcast_to(np.arange(shape[1], dtype=np.int32)[None, :, None, None], shape)
    return medians, np.ascontiguousarray(indexes)


# ----------------------------------------------------------------------------- y: shared helpers
@dataclass
class _Stream:
    """One rANS stream of y: its name, coder family, int32 symbols and parameter codes."""
    name: str
    family: str
    symbols: np.ndarray
    codes: dict


def _snap(family: str, residual: bool, params: dict, exact_grid: bool = False) -> tuple[dict, np.ndarray | float]:
    """Parameters snapped to the coder's grid: (codes the coder gets, offset of the symbols).
    `exact_grid` (coder version 4): snapped by comparisons only (codec.exact.quantize_params).

    Residual families code round(y - snapped mean) under the same law with mean 0, so the
    offset is the snapped mean; mixtures code round(y) itself (offset 0)."""
    codes = (exact.quantize_params if exact_grid else entropy.quantize_params)(family, **params)
    if not residual:
        return codes, 0.0
    snapped_means = entropy.dequantize_params(family, codes)["mean"]
    return {**codes, "mean": np.zeros_like(codes["mean"])}, snapped_means


def _symbols(v: np.ndarray, what: str) -> np.ndarray:
    """round(v) as int32; values the coder cannot take are refused, never clamped (everything
    within +-2^30 is coded exactly, escaped where the law gives it no frequency)."""
    s = np.rint(v)
    if not np.all(np.abs(s) <= 2**30):  # also catches NaN
        raise NeurocodecError(f"latent {what} out of the codable range (+-2^30) or not finite: "
                              f"the model's weights are unusable for this image")
    return s.astype(np.int32)


# ----------------------------------------------------------------------------- y: per model kind
@contextlib.contextmanager
def _one_thread(onednn: bool):
    """Torch on one thread, with or without oneDNN: nothing the codec computes may depend on
    the thread count. The coder's parameters (hyper and context networks) run without oneDNN,
    whose convolutions round differently with the thread count on large inputs (a 2572x1740
    photo decoded with 1 and 2 threads differed), and on one thread, since on an AVX512 Xeon
    (2026-12-02) PyTorch's native ones did too (a file encoded with 2 threads failed to decode
    with 1, tests/test_image.py). The analysis and the synthesis use oneDNN: on one thread it
    is invariant and still faster than native (mlic-medium on a Kodak image on an AVX2
    machine: the analysis 2.2x faster than native on two threads, the synthesis 4.3x than
    native on one; benchmarks/decode_profile.py); y itself is never recomputed by the decoder."""
    threads, before = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = onednn
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
        torch.set_num_threads(threads)


class _MeanScaleY:
    """Mean-scale hyperprior: one Gaussian per element of y from the hyper synthesis, y coded
    as Y_STREAMS channel-group streams ("y0".."y3")."""

    @staticmethod
    def _params(model, z_hat: torch.Tensor) -> tuple[dict, np.ndarray]:
        means, scales = model.hyper_synthesis(z_hat)
        return _snap("gaussian", True, {"mean": means.numpy(), "scale": scales.numpy()}, exact.is_parameter_net(model))

    @staticmethod
    def _groups(model) -> list[slice]:
        bounds = np.linspace(0, model.M, Y_STREAMS + 1).round().astype(int)
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    @classmethod
    def quantize(cls, model, y: torch.Tensor, z_hat: torch.Tensor, q) -> tuple[list[_Stream], torch.Tensor]:
        codes, offset = cls._params(model, z_hat)
        symbols = _symbols(y.double().numpy() - offset, "y")
        streams = [_Stream(f"y{i}", "gaussian", np.ascontiguousarray(symbols[:, g]),
                           {k: np.ascontiguousarray(v[:, g]) for k, v in codes.items()})
                   for i, g in enumerate(cls._groups(model))]
        return streams, torch.from_numpy(symbols + offset).float()

    @classmethod
    def decode(cls, model, z_hat: torch.Tensor, q, take, chain: entropy.ChainDecoder) -> torch.Tensor:
        codes, offset = cls._params(model, z_hat)
        parts = [chain.decode("gaussian", take(f"y{i}"), {k: np.ascontiguousarray(v[:, g]) for k, v in codes.items()})
                 for i, g in enumerate(cls._groups(model))]
        return torch.from_numpy(np.concatenate(parts, axis=1) + offset).float()


class _MultiReferenceY:
    """MLIC: the model's `coding_steps` drives the order (slices x checkerboard passes, mvgmm
    also per channel-in-group); each step is one stream, a section named after the step
    ("s0/anchor", "s0/nonanchor", ..., "s0/anchor/j1" for mvgmm). The decoder must decode
    the steps in order (each step's parameters depend on the values of the previous ones)."""

    @staticmethod
    def _drive(model, z_hat: torch.Tensor, q, values_of) -> torch.Tensor:
        gen = model.coding_steps(z_hat, q)
        step = next(gen)
        while True:
            codes, offset = _snap(step.family, step.symbols_are_residuals, step.params, exact.is_parameter_net(model))
            try:
                step = gen.send(torch.from_numpy(values_of(step, codes, offset)))
            except StopIteration as stop:
                return stop.value

    @classmethod
    def quantize(cls, model, y: torch.Tensor, z_hat: torch.Tensor, q) -> tuple[list[_Stream], torch.Tensor]:
        streams = []

        def values_of(step, codes, offset):
            symbols = _symbols(y[step.mask].double().numpy() - offset, step.name)
            streams.append(_Stream(step.name, step.family, symbols, codes))
            return symbols + offset

        return streams, cls._drive(model, z_hat, q, values_of)

    @classmethod
    def decode(cls, model, z_hat: torch.Tensor, q, take, chain: entropy.ChainDecoder) -> torch.Tensor:
        def values_of(step, codes, offset):
            return chain.decode(step.family, take(step.name), codes) + offset

        return cls._drive(model, z_hat, q, values_of)


def _y_coder(model):
    return _MultiReferenceY if hasattr(model, "coding_steps") else _MeanScaleY


def _parameter_net(model, version: int) -> torch.nn.Module:
    """The model that computes the coder's parameters for files of this coder version: the
    model itself for version 1, a float64 copy for versions 2 and 3, codec.exact's float64 copy
    for version 4, made once per image (the analysis and the synthesis stay float32: the
    decoder never recomputes y, and pixels may differ by a rounding between CPUs without
    breaking the stream)."""
    if version >= EXACT_SINCE:
        return exact.parameter_net(model)
    dtype = PARAMETER_DTYPES[version]
    return model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)


def _coder_version(model) -> int:
    """The version new files of this model get: CODER_VERSION, but 3 where codec.exact does not
    cover the model's parameter path."""
    return CODER_VERSION if CODER_VERSION < EXACT_SINCE or exact.supports(model) else EXACT_SINCE - 1


@dataclass
class _Latents:
    z_symbols: np.ndarray
    y_streams: list
    y_hat: torch.Tensor


@torch.no_grad()
def _analyse(model, param_net, x: torch.Tensor, quality: float, size: tuple[int, int], refine: int = 0,
             progress=None, version: int = CODER_VERSION) -> _Latents:
    """Latents of x, quantized and split into streams (parameters from `param_net`, the
    `_parameter_net` of `version`); `refine` > 0 first optimizes y and z for this image
    (codec.refine) on the real h x w pixels given by `size`."""
    q = torch.tensor([quality])
    coder = _y_coder(model)
    if refine:
        y, z = refine_latents(model, x, quality, refine, *size, progress=progress)
    else:
        with _one_thread(onednn=True):
            y = model.analysis(x, q)
    with _one_thread(onednn=False):
        if not refine:
            z = model.hyper_analysis(y)
        medians, _ = _z_medians_and_indexes(model, z.shape)
        z_symbols = torch.round(z - medians)
        z_hat = (z_symbols + medians).to(PARAMETER_DTYPES[version])
        streams, y_hat = coder.quantize(param_net, y, z_hat, q)
    return _Latents(z_symbols.numpy().astype(np.int32), streams, y_hat.float())


@torch.no_grad()
def _synthesis(model, y_hat: torch.Tensor, quality: float, h: int, w: int) -> np.ndarray:
    with _one_thread(onednn=True):
        # channels-last activations spare oneDNN a reorder before and after every layer:
        # 1.2x (mlic-small) to 1.8x (mlic-medium) faster (benchmarks/decode_profile.py)
        y_hat = y_hat.contiguous(memory_format=torch.channels_last)
        return _to_rgb8(model.synthesis(y_hat, torch.tensor([quality])), h, w)


def _tiles(h: int, w: int, tile: int | None) -> list[tuple[slice, slice]]:
    """(rows, columns) of each tile in raster order; the whole image when `tile` is None."""
    if tile is None:
        return [(slice(0, h), slice(0, w))]
    return [(slice(y, min(y + tile, h)), slice(x, min(x + tile, w)))
            for y in range(0, h, tile) for x in range(0, w, tile)]


def _tile_prefix(tile: int | None, i: int) -> str:
    return "" if tile is None else f"t{i}/"


def _encode_tile(net, param_net, rgb: np.ndarray, quality: float, refine: int, progress,
                 version: int) -> list[tuple[str, bytes]]:
    """The tile's streams as (name, bytes): z, then y in coding order."""
    lat = _analyse(net, param_net, _to_tensor(rgb, net.stride), quality, rgb.shape[:2], refine, progress, version)
    _, z_indexes = _z_medians_and_indexes(net, lat.z_symbols.shape)
    chain = entropy.ChainEncoder(chained=version >= PACKED_SINCE)
    chain.add_table(lat.z_symbols.ravel(), z_indexes.ravel(), *_z_tables(net))
    for s in lat.y_streams:
        chain.add(s.family, s.symbols, s.codes)
    return list(zip(["z"] + [s.name for s in lat.y_streams], chain.finish()))


def _tile_sections(streams: list[tuple[str, bytes]], prefix: str, version: int) -> list[Section]:
    if version >= PACKED_SINCE:
        return [Section(prefix + "streams", pack_streams([data for _, data in streams]))]
    return [Section(prefix + name, data) for name, data in streams]


def _tile_side(net, h: int, w: int, tile: int) -> int | None:
    """The tile side to code an h x w image with (None: one tile), checked."""
    if tile % net.stride or not net.stride <= tile <= MAX_TILE:
        raise NeurocodecError(f"tile must be a multiple of {net.stride} in [{net.stride}, {MAX_TILE}], got {tile}")
    return tile if max(h, w) > tile else None


def encode_image(image, model: str | None = None, quality: float = 4.0,
                 limits: Limits = DEFAULT_LIMITS, *, tile: int = TILE, refine: int = 0,
                 progress=None) -> bytes:
    """Compress an image (path, file object, PIL image or uint8 array) to .ncf bytes.

    `quality` is continuous in [1, L] (L = the model's number of trained rate points,
    8 for the shipped models): 1 gives the smallest files, fractions interpolate.
    Images with a side above `tile` are coded in independent tiles (bounded memory).
    `refine` > 0: optimize the latents for this image for that many steps first
    (codec.refine; slower encoding, the same decoder); `progress(done, total)` is called
    after every refinement step (total = steps x tiles).
    """
    if refine < 0:
        raise NeurocodecError(f"refine steps must be >= 0, got {refine}")
    release = model or DEFAULT_IMAGE_MODEL  # MODEL (its newest release) or MODEL@ID
    name, _ = split_release(release)
    preset = get_preset(name)
    if preset.kind != "image":
        raise NeurocodecError(f"model {name!r} is a {preset.kind} model, not an image model")
    net, sha = load_model(release)
    if not 1.0 <= float(quality) <= net.levels:
        raise NeurocodecError(f"quality must be in [1, {net.levels}], got {quality}")
    quality = float(np.float32(quality))  # the header stores float32; decode must see the same value
    rgb = load_rgb(image, limits)
    h, w = rgb.shape[:2]
    tile = _tile_side(net, h, w, tile)
    tiles = _tiles(h, w, tile)
    version = _coder_version(net)
    param_net = _parameter_net(net, version)
    sections = []
    for i, (rows, cols) in enumerate(tiles):
        tile_progress = progress and (lambda done, _, i=i: progress(i * refine + done, len(tiles) * refine))
        streams = _encode_tile(net, param_net, rgb[rows, cols], quality, refine, tile_progress, version)
        sections += _tile_sections(streams, _tile_prefix(tile, i), version)
    if len(sections) > DEFAULT_LIMITS.max_sections:  # every reader must be able to open the file
        raise NeurocodecError(f"{len(sections)} sections exceed the {DEFAULT_LIMITS.max_sections} a "
                              f"file may hold; use a larger tile")
    coder = {"version": version, "precision": entropy.PRECISION, "y_streams": len(streams) - 1}
    if tile is not None:
        coder["tile"] = tile
    header = Header(media=MediaKind.IMAGE, model=name, weights_hash=bytes.fromhex(sha[:16]),
                    width=w, height=h, pad_width=-(-w // net.stride) * net.stride,
                    pad_height=-(-h // net.stride) * net.stride,
                    color=COLOR_FORMAT, quality=quality, coder=coder)
    return write_container(header, sections)


@torch.no_grad()
def reconstruct(image, model: str | None = None, quality: float = 4.0,
                limits: Limits = DEFAULT_LIMITS, *, tile: int = TILE, refine: int = 0) -> np.ndarray:
    """The model's own quantized reconstruction, without entropy coding (what decode must equal)."""
    net, _ = load_model(model or DEFAULT_IMAGE_MODEL)
    quality = float(np.float32(quality))
    rgb = load_rgb(image, limits)
    h, w = rgb.shape[:2]
    out = np.empty_like(rgb)
    version = _coder_version(net)
    param_net = _parameter_net(net, version)
    for rows, cols in _tiles(h, w, _tile_side(net, h, w, tile)):
        part = rgb[rows, cols]
        lat = _analyse(net, param_net, _to_tensor(part, net.stride), quality, part.shape[:2], refine,
                       version=version)
        out[rows, cols] = _synthesis(net, lat.y_hat, quality, *part.shape[:2])
    return out


def _to_rgb8(x_hat: torch.Tensor, h: int, w: int) -> np.ndarray:
    x = x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def check_header(header: Header) -> tuple[torch.nn.Module, dict]:
    """Load the model a file names and refuse if its weights differ from those it was made with.

    A valid file the decoder will not decode raises NeurocodecError (WeightsError); a header
    that contradicts the model (padding, coder settings, tiling, quality) raises NcfError.
    """
    if header.media != MediaKind.IMAGE:
        raise NeurocodecError("this file holds a video, not an image")
    net, _ = load_model(f"{header.model}@{header.weights_hash.hex()}")  # the exact release it was made with
    if header.pad_width % net.stride or header.pad_height % net.stride or \
            header.pad_width - header.width >= net.stride or header.pad_height - header.height >= net.stride:
        raise NcfError(f"inconsistent padding {header.pad_width}x{header.pad_height} for "
                       f"{header.width}x{header.height} at stride {net.stride}")
    if header.color != COLOR_FORMAT or header.coder.get("version") not in PARAMETER_DTYPES \
            or header.coder.get("precision") != entropy.PRECISION:
        raise NcfError(f"unsupported colour format or coder settings: {header.color} {header.coder}")
    if header.coder["version"] >= EXACT_SINCE and not exact.supports(net):
        raise NcfError(f"coder version {header.coder['version']} does not cover model {header.model!r}")
    if not 1.0 <= header.quality <= net.levels:
        raise NcfError(f"quality {header.quality} out of the model's range [1, {net.levels}]")
    tile = header.coder.get("tile")
    if tile is None and header.pad_width * header.pad_height > MAX_TILE ** 2:
        raise NcfError(f"untiled image of {header.pad_width}x{header.pad_height} padded pixels exceeds "
                       f"the {MAX_TILE}x{MAX_TILE} a tile may have")
    if tile is not None and (tile % net.stride or not net.stride <= tile <= MAX_TILE):
        raise NcfError(f"tile side {tile} is not a multiple of {net.stride} in [{net.stride}, {MAX_TILE}]")
    return net, header.coder


def _decode_tile(net, param_net, header: Header, take, h: int, w: int) -> np.ndarray:
    zh, zw = -(-h // net.stride), -(-w // net.stride)
    z_shape = (1, net.entropy_bottleneck.channels, zh, zw)
    medians, z_indexes = _z_medians_and_indexes(net, z_shape)
    version = header.coder["version"]
    chain = entropy.ChainDecoder(chained=version >= PACKED_SINCE)
    z_symbols = chain.decode_table(take("z"), z_indexes.ravel(), *_z_tables(net)).reshape(z_shape)
    z_hat = torch.from_numpy(z_symbols).float() + medians
    with _one_thread(onednn=False):
        z_hat = z_hat.to(PARAMETER_DTYPES[version])
        y_hat = _y_coder(net).decode(param_net, z_hat, torch.tensor([header.quality]), take, chain)
    chain.finish()
    return _synthesis(net, y_hat.float(), header.quality, h, w)


class _TileStreams:
    """One tile's streams for the decoder, taken by name in coding order: from the sections of
    those names (coder versions 1 and 2) or, in order, from the tile's packed section."""

    def __init__(self, sections: dict, prefix: str, count: int, packed: bool, model: str):
        self.sections, self.prefix, self.model, self.packed = sections, prefix, model, None
        if packed:
            name = prefix + "streams"
            if name not in sections:
                raise NcfError(f"file lacks the section {name!r}")
            self.packed = unpack_streams(sections.pop(name), count, f"section {name!r}")[::-1]

    def take(self, name: str) -> bytes:
        if self.packed is None:
            if self.prefix + name not in self.sections:
                raise NcfError(f"file lacks the stream {self.prefix + name!r} that model {self.model!r} needs")
            return self.sections.pop(self.prefix + name)
        if not self.packed:
            raise NcfError(f"section {self.prefix + 'streams'!r} holds fewer streams than model {self.model!r} needs")
        return self.packed.pop()

    def check_all_taken(self) -> None:
        if self.packed:
            raise NcfError(f"section {self.prefix + 'streams'!r} holds {len(self.packed)} more streams than "
                           f"model {self.model!r} uses")


@torch.no_grad()
def decode_image(data: bytes, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode .ncf bytes to an HxWx3 uint8 RGB array (bit-exact with the encoder's reconstruction).

    Raises NcfError for a malformed or corrupt file (a stream that does not decode is one),
    NeurocodecError for a valid file it refuses (other weights, a video, limits), nothing else.
    """
    header, sections = read_container(data, limits)
    net, coder = check_header(header)
    streams = sections_by_name(sections)
    tile = coder.get("tile")
    tiles = _tiles(header.height, header.width, tile)
    per_tile = 1 + coder.get("y_streams", -1)
    packed = coder["version"] >= PACKED_SINCE
    if per_tile < 1 or len(streams) != len(tiles) * (1 if packed else per_tile):
        raise NcfError(f"file has {len(streams)} sections but its header announces {len(tiles)} tiles of "
                       f"z and {coder.get('y_streams')} y streams")
    out = np.empty((header.height, header.width, 3), dtype=np.uint8)
    param_net = _parameter_net(net, coder["version"])
    for i, (rows, cols) in enumerate(tiles):
        tile_streams = _TileStreams(streams, _tile_prefix(tile, i), per_tile, packed, header.model)
        try:
            out[rows, cols] = _decode_tile(net, param_net, header, tile_streams.take, rows.stop - rows.start,
                                           cols.stop - cols.start)
            tile_streams.check_all_taken()
        except entropy.EntropyCodingError as e:
            # Every section passed its CRC, so the bytes are as the encoder wrote them: either the
            # file was crafted, or the encoder's CPU computed the coder's parameters differently.
            portability = ("coder-version-1 files decode only where PyTorch uses the encoder's SIMD kernels"
                           if coder["version"] == 1 else "rare since coder version 2"
                           if coder["version"] < EXACT_SINCE else "ruled out since coder version 4")
            raise NcfError(f"the streams of tile {i} do not decode ({e}) although their CRCs match: the file "
                           f"was made by a faulty encoder, or on a CPU whose float arithmetic differs from "
                           f"this one's ({portability}; docs/reliability.md)") from None
    if streams:
        raise NcfError(f"file has sections {sorted(streams)} that model {header.model!r} does not use")
    return out


def save_image(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()
