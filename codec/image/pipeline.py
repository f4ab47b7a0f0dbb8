"""Image pipeline: pixels <-> model <-> entropy streams <-> .ncf container.

Input: any image Pillow reads, converted to 8-bit RGB (`codec.image.pixels` has the policy).
The model sees the image padded (edge replication) to a multiple of its stride; the
decoder crops back to the original size, so any size from 1x1 up round-trips.

Streams: "z" (the hyper-latent, table-coded with the model's factorized prior), then y, one
stream per step of the model's `coding_steps` (models/coding.py, driven by
`codec.image.ycoding`), named after it, in coding order:
- mean-scale hyperprior: "y0".."y3", Gaussian streams over 4 channel groups;
- MLIC: "s0/anchor", "s0/nonanchor", "s1/anchor", ...; mvgmm: "s0/anchor/j0", "s0/anchor/j1", ...
The header's coder settings give the number of y streams per tile. Coder versions 3 and 4 store a
tile's streams, z first, then y in coding order, in one section "streams"
(`codec.container.pack_streams`), as the parts of one rANS chain (`entropy.ChainEncoder`:
only the first carries the coder's state); versions 1 and 2 stored each stream, with its own
state, in a section of its name.

Tiling bounds memory (`codec.image.tiles`): an image wider or taller than `TILE` pixels is
coded as independent TILE x TILE tiles (raster order, edge tiles smaller, each padded on its
own), every section name prefixed with its tile ("t0/streams", "t1/streams", ...; before
version 3 "t0/z", "t0/y0", ..., "t1/z", ...) and the tile side stored as coder setting "tile". A 1024x1024 tile needs about 0.6 GB of activations, whatever the image
size. Files without "tile" are one tile; decoders refuse tiles above MAX_TILE^2 pixels.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from codec import entropy, exact
from codec.container import (DEFAULT_LIMITS, Header, Limits, MediaKind, NcfError, Section, read_container,
                             sections_by_name, write_container)
from codec.errors import NeurocodecError
from codec.image import bands, residual
from codec.image.pixels import load_rgb, to_rgb8, to_tensor
from codec.image.refine import effort_steps, refine_latents
from codec.image.tiles import (MAX_TILE, PACKED_SINCE, TILE, TileStreams, tile_grid, tile_prefix, tile_sections,
                               tile_side)
from codec.image.ycoding import decode_y, quantize_y
from codec.threads import Pool, give_back_free_memory, torch_threads
from codec.zoo import DEFAULT_IMAGE_MODEL, get_preset, load_model, split_release

COLOR_FORMAT = "rgb8"
CODER_VERSION = 8
# The precision of the hyper and context networks that compute the coder's parameters, per
# coder version. Version 1 computed them in float32, whose rounding differs between PyTorch's
# AVX2, AVX512 and scalar kernels by more than the parameter grid, so its files decode only
# on CPUs like the encoder's; versions 2 and 3 use float64, whose differences (at most 6e-9 of
# a grid step between kernel sets, measured) straddle a grid boundary about once in 35,000
# Kodak-size files (docs/reliability.md). Version 4 computes them on codec.exact's kernels (float64),
# the same bits on every CPU; models whose parameter path those kernels do not cover stayed on 3.
# Version 5 is written for every model: codec.exact's kernels where they cover the model (the
# streams of version 4), float64 PyTorch elsewhere, and Gaussian-mixture steps code residuals
# around their heaviest component's mean (codec.image.ycoding). Version 6 is version 5 with
# the multivariate mixture's steps coding residuals too (the same bytes for every other model).
# Version 7 computes the Gaussian mixture's parameters on codec.exact too (its softmax on the
# exact exp); the same bytes as version 6 for every other model. Version 8 adds the residual layer
# (codec.image.residual) above a model's base quality; below it, the streams of version 7.
PARAMETER_DTYPES = {1: torch.float32, 2: torch.float64, 3: torch.float64, 4: torch.float64, 5: torch.float64,
                    6: torch.float64, 7: torch.float64, 8: torch.float64}
EXACT_SINCE = 4
EXACT_MIXTURES_SINCE = 7
MIXTURE_RESIDUALS_SINCE = {"gmm": 5, "mvgmm": 6}


def mixture_residuals(model, version: int) -> bool:
    """Whether the model's mixture steps code residuals in files of this coder version."""
    return version >= MIXTURE_RESIDUALS_SINCE.get(getattr(model, "likelihood", None), MIXTURE_RESIDUALS_SINCE["gmm"])


def exact_parameters(model, version: int) -> bool:
    """Whether files of this coder version take the model's parameters from codec.exact."""
    if getattr(model, "likelihood", None) == "gmm" and version < EXACT_MIXTURES_SINCE:
        return False
    return version == EXACT_SINCE or (version > EXACT_SINCE and exact.supports(model))


# ----------------------------------------------------------------------------- z (every model)
def _z_tables(model) -> tuple:
    return tuple(t.numpy().astype(np.int32) for t in model.z_tables())


def _z_medians_and_indexes(model, shape) -> tuple[torch.Tensor, np.ndarray]:
    medians = model.z_medians().view(1, -1, 1, 1)
    indexes = np.broadcast_to(np.arange(shape[1], dtype=np.int32)[None, :, None, None], shape)
    return medians, np.ascontiguousarray(indexes)


# ----------------------------------------------------------------------------- threads
# Torch on one thread, with or without oneDNN: nothing the codec computes may depend on the
# thread count (codec.threads). The cores are used by units of work whose split depends only
# on the image: the transforms' layers in fixed bands of rows (codec.image.bands), each band on
# one thread of the pool, and the products of the parameter networks in runs of columns or rows
# (codec.exact.threads), each output on one thread. The coder's parameters (hyper and context networks) run without
# oneDNN, whose convolutions round differently with the thread count on large inputs, and on
# one thread, since on an AVX512 Xeon (2026-12-02) PyTorch's native ones did too. The analysis
# and the synthesis use oneDNN: on one thread it is invariant and still faster than native
# (mlic-medium on a Kodak image on an AVX2 machine: the analysis 2.2x faster than native on two
# threads, the synthesis 4.3x than native on one; benchmarks/decode_profile.py); y itself is
# never recomputed by the decoder.
def _transforms_thread():
    return torch_threads(1, onednn=True)


def _parameters_thread():
    return torch_threads(1, onednn=False)


class _Work:
    """`threads` threads for one image (None: every core): torch on one thread and the pool of
    bands, the exact kernels' products on as many threads; everything restored on exit."""

    def __init__(self, threads: int | None):
        self.pool = Pool(threads)
        self._blocks = (torch_threads(1), exact.threads(self.pool.threads), self.pool)

    def run(self, layers: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A transform's layers on x in bands (the models' `run` argument)."""
        return bands.run(layers, x, self.pool)

    def groups(self, count: int) -> list[range]:
        """Tiles 0..count-1 in consecutive groups of one per thread: a group's tiles are coded
        side by side (`per_tile`), then its transforms run tile after tile, in bands (one
        tile's activations in memory at a time)."""
        return [range(i, min(i + self.pool.threads, count)) for i in range(0, count, self.pool.threads)]

    def per_tile(self, fn, tiles: range) -> list:
        """[fn(i) for i in tiles], each tile on one thread of the pool. Why: a tile's coding
        steps, snapping and rANS run in sequence, so threads inside one tile (the products'
        rows) leave cores idle; tiles side by side fill them. Each tile computes on one thread
        (its products too), so its bits do not depend on the thread count. The caller sets
        torch's switches (`_parameters_thread`) for the whole group, not each unit: they are
        process-wide, and units toggling them would race."""
        def unit(i):
            with torch.no_grad():  # thread-local: the pool's threads do not inherit the caller's
                return fn(i)

        if len(tiles) < 2 or self.pool.threads < 2:
            return [unit(i) for i in tiles]
        with exact.threads(1):
            results = self.pool.map(unit, tiles)
        give_back_free_memory()  # the workers' arenas hold their tiles' temporaries (codec.threads)
        return results

    def __enter__(self):
        for block in self._blocks:
            block.__enter__()
        return self

    def __exit__(self, *exc):
        for block in reversed(self._blocks):
            block.__exit__(*exc)


_PARAMETER_NETS = weakref.WeakKeyDictionary()  # model -> {coder version: its parameter_net}


def parameter_net(model, version: int) -> torch.nn.Module:
    """The model that computes the coder's parameters for files of this coder version: the
    model itself for version 1, a float64 copy for versions 2 and 3, codec.exact's float64 copy
    for version 4 (and later versions where they cover the model), made once per loaded model
    (the analysis and the synthesis stay float32: the decoder never recomputes y, and pixels
    may differ by a rounding between CPUs without breaking the stream)."""
    if PARAMETER_DTYPES[version] == torch.float32:
        return model
    nets = _PARAMETER_NETS.setdefault(model, {})
    if version not in nets:  # converting mlic-medium's weights took a fifth of a kodim01 decode
        nets[version] = (exact.parameter_net(model) if exact_parameters(model, version)
                         else copy.deepcopy(model).to(torch.float64))
    return nets[version]


@dataclass
class _Latents:
    z_symbols: np.ndarray
    y_streams: list  # of ycoding.YStream
    y_hat: torch.Tensor


@torch.no_grad()
def _transform(model, x: torch.Tensor, quality: float, size: tuple[int, int], work: _Work, refine: int = 0,
               progress=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(y, z) of x, z None unless `refine` > 0 first optimizes y and z for this image
    (codec.image.refine) on the real h x w pixels given by `size`."""
    if refine:
        return refine_latents(model, x, quality, refine, *size, progress=progress)
    with _transforms_thread():
        return model.analysis(x, torch.tensor([quality]), run=work.run), None


@torch.no_grad()
def _quantize(model, param_net, y: torch.Tensor, z: torch.Tensor | None, quality: float,
              version: int = CODER_VERSION) -> _Latents:
    """y and z quantized and y split into streams (parameters from `param_net`, the
    `parameter_net` of `version`; z from y unless given). Call within `_parameters_thread`."""
    if z is None:
        z = model.hyper_analysis(y)
    medians, _ = _z_medians_and_indexes(model, z.shape)
    z_symbols = torch.round(z - medians)
    z_hat = (z_symbols + medians).to(PARAMETER_DTYPES[version])
    streams, y_hat = quantize_y(param_net, y, z_hat, torch.tensor([quality]), mixture_residuals(param_net, version))
    return _Latents(z_symbols.numpy().astype(np.int32), streams, y_hat.float())


@torch.no_grad()
def _synthesis(model, y_hat: torch.Tensor, quality: float, h: int, w: int, work: _Work) -> np.ndarray:
    with _transforms_thread():
        # channels-last activations spare oneDNN a reorder before and after every layer:
        # 1.2x (mlic-small) to 1.8x (mlic-medium) faster (benchmarks/decode_profile.py)
        y_hat = y_hat.contiguous(memory_format=torch.channels_last)
        return to_rgb8(model.synthesis(y_hat, torch.tensor([quality]), run=work.run), h, w)


def _tile_streams(net, lat: _Latents, version: int) -> list[tuple[str, bytes]]:
    """The tile's streams as (name, bytes): z, then y in coding order."""
    _, z_indexes = _z_medians_and_indexes(net, lat.z_symbols.shape)
    chain = entropy.ChainEncoder(chained=version >= PACKED_SINCE)
    chain.add_table(lat.z_symbols.ravel(), z_indexes.ravel(), *_z_tables(net))
    for s in lat.y_streams:
        chain.add(s.family, s.symbols, s.codes)
    return list(zip(["z"] + [s.name for s in lat.y_streams], chain.finish()))


def encode_image(image, model: str | None = None, quality: float = 4.0,
                 limits: Limits = DEFAULT_LIMITS, *, tile: int = TILE, refine: int = 0,
                 effort: str | None = None, progress=None, threads: int | None = None,
                 residual_layer: bool = True) -> bytes:
    """Compress an image (path, file object, PIL image or uint8 array) to .ncf bytes.

    `quality` is continuous in [1, L + 4] (L = the model's number of trained rate points,
    8 for the shipped models): 1 gives the smallest files, fractions interpolate; qualities
    above L - 2 add the residual layer (codec.image.residual) to the learned one.
    Images with a side above `tile` are coded in independent tiles (bounded memory).
    `refine` > 0: optimize the latents for this image for that many steps first
    (codec.image.refine; slower encoding, the same decoder); `progress(done, total)` is called
    after every refinement step (total = steps x tiles). `effort` ("fast", "default", "max")
    picks the refinement steps instead (codec.image.refine.EFFORT_STEPS). `threads`: how many
    threads to compute on (None: every core); the file is the same for every count.
    `residual_layer=False` codes the learned layer alone at qualities up to L, as coder version
    7 did (what training validates: the learned layer's own rate points).
    """
    if effort is not None:
        if refine:
            raise NeurocodecError("give an effort level or refinement steps, not both")
        refine = effort_steps(effort)
    if refine < 0:
        raise NeurocodecError(f"refine steps must be >= 0, got {refine}")
    release = model or DEFAULT_IMAGE_MODEL  # MODEL (its newest release) or MODEL@ID
    name, _ = split_release(release)
    preset = get_preset(name)
    if preset.kind != "image":
        raise NeurocodecError(f"model {name!r} is a {preset.kind} model, not an image model")
    net, sha = load_model(release)
    version = CODER_VERSION if residual_layer else residual.SINCE - 1
    top = residual.max_quality(net.levels, version)
    if not 1.0 <= float(quality) <= top:
        raise NeurocodecError(f"quality must be in [1, {top:g}], got {quality}")
    quality = float(np.float32(quality))  # the header stores float32; decode must see the same value
    learned, step = residual.split(quality, net.levels, version)
    rgb = load_rgb(image, limits)
    h, w = rgb.shape[:2]
    tile = tile_side(net, h, w, tile)
    tiles = tile_grid(h, w, tile)
    param_net = parameter_net(net, version)
    sections = []
    with _Work(threads) as work:
        for group in work.groups(len(tiles)):
            latents = {}
            for i in group:
                part = rgb[tiles[i]]
                tile_progress = progress and (lambda done, _, i=i: progress(i * refine + done, len(tiles) * refine))
                latents[i] = _transform(net, to_tensor(part, net.stride), learned, part.shape[:2], work, refine,
                                        tile_progress)
            def code(i: int) -> tuple[list[tuple[str, bytes]], torch.Tensor]:  # tile i's coding steps and rANS
                lat = _quantize(net, param_net, *latents.pop(i), learned, version)
                return _tile_streams(net, lat, version), lat.y_hat

            with _parameters_thread():
                coded = work.per_tile(code, group)
            for i, (streams, y_hat) in zip(group, coded):
                sections += tile_sections(streams, tile_prefix(tile, i), version)
                if step is not None:
                    part = rgb[tiles[i]]
                    x_hat = _synthesis(net, y_hat, learned, *part.shape[:2], work)
                    sections.append(Section(tile_prefix(tile, i) + "residual", residual.encode(part, x_hat, step)))
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
                limits: Limits = DEFAULT_LIMITS, *, tile: int = TILE, refine: int = 0,
                threads: int | None = None) -> np.ndarray:
    """The model's own quantized reconstruction, without entropy coding (what decode must equal)."""
    net, _ = load_model(model or DEFAULT_IMAGE_MODEL)
    quality = float(np.float32(quality))
    rgb = load_rgb(image, limits)
    h, w = rgb.shape[:2]
    out = np.empty_like(rgb)
    version = CODER_VERSION
    learned, step = residual.split(quality, net.levels, version)
    param_net = parameter_net(net, version)
    with _Work(threads) as work:
        for rows, cols in tile_grid(h, w, tile_side(net, h, w, tile)):
            part = rgb[rows, cols]
            y, z = _transform(net, to_tensor(part, net.stride), learned, part.shape[:2], work, refine)
            with _parameters_thread():
                lat = _quantize(net, param_net, y, z, learned, version)
            out[rows, cols] = _synthesis(net, lat.y_hat, learned, *part.shape[:2], work)
            if step is not None:
                out[rows, cols] = residual.reconstruction(part, out[rows, cols], step)
    return out


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
    if header.coder["version"] == EXACT_SINCE and not exact.supports(net):
        raise NcfError(f"coder version {header.coder['version']} does not cover model {header.model!r}")
    top = residual.max_quality(net.levels, header.coder["version"])
    if not 1.0 <= header.quality <= top:
        raise NcfError(f"quality {header.quality} out of the model's range [1, {top:g}]")
    tile = header.coder.get("tile")
    if tile is None and header.pad_width * header.pad_height > MAX_TILE ** 2:
        raise NcfError(f"untiled image of {header.pad_width}x{header.pad_height} padded pixels exceeds "
                       f"the {MAX_TILE}x{MAX_TILE} a tile may have")
    if tile is not None and (tile % net.stride or not net.stride <= tile <= MAX_TILE):
        raise NcfError(f"tile side {tile} is not a multiple of {net.stride} in [{net.stride}, {MAX_TILE}]")
    return net, header.coder


def _decode_latents(net, param_net, header: Header, take, h: int, w: int, quality: float) -> torch.Tensor:
    """y_hat of an h x w tile from its streams `take(name)` gives. Call within `_parameters_thread`."""
    zh, zw = -(-h // net.stride), -(-w // net.stride)
    z_shape = (1, net.z_medians().numel(), zh, zw)
    medians, z_indexes = _z_medians_and_indexes(net, z_shape)
    version = header.coder["version"]
    chain = entropy.ChainDecoder(chained=version >= PACKED_SINCE)
    z_symbols = chain.decode_table(take("z"), z_indexes.ravel(), *_z_tables(net)).reshape(z_shape)
    z_hat = (torch.from_numpy(z_symbols).float() + medians).to(PARAMETER_DTYPES[version])
    y_hat = decode_y(param_net, z_hat, torch.tensor([quality]), take, chain,
                     mixture_residuals(param_net, version))
    chain.finish()
    return y_hat.float()


@torch.no_grad()
def decode_image(data: bytes, limits: Limits = DEFAULT_LIMITS, *, threads: int | None = None) -> np.ndarray:
    """Decode .ncf bytes to an HxWx3 uint8 RGB array (bit-exact with the encoder's reconstruction),
    on `threads` threads (None: every core; the pixels are the same for every count).

    Raises NcfError for a malformed or corrupt file (a stream that does not decode is one),
    NeurocodecError for a valid file it refuses (other weights, a video, limits), nothing else.
    """
    header, sections = read_container(data, limits)
    net, coder = check_header(header)
    streams = sections_by_name(sections)
    tile = coder.get("tile")
    tiles = tile_grid(header.height, header.width, tile)
    per_tile = 1 + coder.get("y_streams", -1)
    packed = coder["version"] >= PACKED_SINCE
    learned, step = residual.split(header.quality, net.levels, coder["version"])
    if per_tile < 1 or len(streams) != len(tiles) * ((1 if packed else per_tile) + (step is not None)):
        raise NcfError(f"file has {len(streams)} sections but its header announces {len(tiles)} tiles of "
                       f"z and {coder.get('y_streams')} y streams" + ("" if step is None else " and a residual"))
    out = np.empty((header.height, header.width, 3), dtype=np.uint8)
    param_net = parameter_net(net, coder["version"])

    def latents(i: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """Tile i's y_hat and, above the base quality, its residual's coefficients."""
        rows, cols = tiles[i]
        h, w = rows.stop - rows.start, cols.stop - cols.start
        tile_streams = TileStreams(streams, tile_prefix(tile, i), per_tile, packed, header.model)
        try:
            y_hat = _decode_latents(net, param_net, header, tile_streams.take, h, w, learned)
        except entropy.EntropyCodingError as e:
            # Every section passed its CRC, so the bytes are as the encoder wrote them: either the
            # file was crafted, or the encoder's CPU computed the coder's parameters differently.
            portability = ("coder-version-1 files decode only where PyTorch uses the encoder's SIMD kernels"
                           if coder["version"] == 1 else "ruled out for parameters from codec.exact"
                           if exact_parameters(net, coder["version"]) else "rare since coder version 2")
            raise NcfError(f"the streams of tile {i} do not decode ({e}) although their CRCs match: the file "
                           f"was made by a faulty encoder, or on a CPU whose float arithmetic differs from "
                           f"this one's ({portability}; docs/reliability.md)") from None
        tile_streams.check_all_taken()
        if step is None:
            return y_hat, None
        name = tile_prefix(tile, i) + "residual"
        if name not in streams:
            raise NcfError(f"file lacks the section {name!r}")
        return y_hat, residual.decode(streams.pop(name), h, w)

    with _Work(threads) as work:
        for group in work.groups(len(tiles)):
            with _parameters_thread():
                decoded = work.per_tile(latents, group)
            for i, (y_hat, coefficients) in zip(group, decoded):
                rows, cols = tiles[i]
                out[rows, cols] = _synthesis(net, y_hat, learned, rows.stop - rows.start,
                                             cols.stop - cols.start, work)
                if coefficients is not None:
                    out[rows, cols] = residual.add(out[rows, cols], coefficients, step)
    if streams:
        raise NcfError(f"file has sections {sorted(streams)} that model {header.model!r} does not use")
    return out
