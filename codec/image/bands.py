"""The analysis and synthesis transforms in fixed horizontal bands, run on parallel threads.

Why: torch's own threads split convolutions by the thread count and change their float32
rounding (codec.threads), so the pipeline keeps torch on one thread; to still use every core,
a transform's layers (the children of its nn.Sequential) run one at a time, each in bands of
rows that are independent units of work on the pool's threads, every band on one thread. A
band is its layer applied to the rows of the layer's input that its outputs need (the halo:
the receptive field of that one layer, a few rows) and cropped to its own rows, written into
the layer's whole output; the next layer starts when every band is done.

The bands' bounds depend only on the image size: every BAND_ROWS rows of the latent y, scaled
to each layer's resolution. Each output comes from the same operations on the same inputs
whatever thread computes it, so files and pixels do not depend on the thread count. And
oneDNN's single-threaded convolutions compute an output by the same operations whatever the
input's height, as long as the input is not small (MIN_BAND_AREA), so banded layers give the
unbanded pixels: files written before bands decode as they did (tests/test_threads.py checks
both).
"""
from __future__ import annotations

import threading

import torch
import torch.nn as nn
from compressai.layers import GDN

from codec.threads import give_back_free_memory
from models.layers import LayerNorm2d

BAND_ROWS = 8  # latent rows per band (128 pixel rows at stride 16)
# A layer is banded only where each band's input has at least this many positions: oneDNN
# picks other kernels, which round otherwise, for small inputs (under about 200 to 400
# positions for mlic-medium's layers on an AVX2 EPYC, measured), and banding must not change
# the pixels of files written before it; smaller layers cost little and run whole.
MIN_BAND_AREA = 1024
# layers that mix no positions: applied to a band, their output rows are its input rows
_POINTWISE = (nn.GELU, nn.ReLU, nn.LeakyReLU, nn.Identity, nn.LayerNorm, LayerNorm2d, GDN)


def _radius(module: nn.Module) -> int | None:
    """Rows a stride-1 block reads above and below each output: the sum of its convolutions'
    radii (a path through the block meets each at most once); None if it holds a layer this
    module does not know."""
    if isinstance(module, nn.Conv2d):
        ok = module.stride == (1, 1) and module.dilation == (1, 1) and not isinstance(module.padding, str) \
            and module.padding[0] == module.kernel_size[0] // 2 and module.kernel_size[0] % 2
        return module.kernel_size[0] // 2 if ok else None
    if isinstance(module, _POINTWISE):
        return 0
    children = list(module.children())
    if not children or isinstance(module, (nn.ConvTranspose2d, nn.Linear)):
        return None
    radii = [_radius(c) for c in children]
    return None if None in radii else sum(radii)


def _input_rows(layer: nn.Module, lo: int, hi: int, rows_in: int) -> tuple[int, int, int] | None:
    """(first, end) input rows that outputs lo..hi-1 of `layer` read, and the output row
    that the first input row's output is: a layer on rows first..end-1 gives output rows
    from that offset. None if `layer` cannot be banded."""
    if isinstance(layer, nn.ConvTranspose2d):
        (k, _), (s, _), (p, _) = layer.kernel_size, layer.stride, layer.padding
        if layer.dilation != (1, 1) or layer.groups != 1 or len({*layer.stride}) != 1:
            return None
        first, end = max(0, (lo + p - k + 1) // s), min(rows_in, (hi - 1 + p) // s + 1)
        return first, end, first * s
    if isinstance(layer, nn.Conv2d) and layer.stride[0] > 1:
        (k, _), (s, _), (p, _) = layer.kernel_size, layer.stride, layer.padding
        if layer.dilation != (1, 1) or isinstance(layer.padding, str) or len({*layer.stride}) != 1:
            return None
        first = max(0, lo * s - p) // s * s  # a multiple of the stride: its outputs start at first / s
        return first, min(rows_in, (hi - 1) * s - p + k), first // s
    r = _radius(layer)
    if r is None:
        return None
    first = max(0, lo - r)
    return first, min(rows_in, hi + r), first


def _rows_out(layer: nn.Module, rows_in: int) -> int:
    """Rows of `layer`'s output for an input of `rows_in` rows."""
    if isinstance(layer, nn.ConvTranspose2d):
        (k, _), (s, _), (p, _), (op, _) = layer.kernel_size, layer.stride, layer.padding, layer.output_padding
        return (rows_in - 1) * s - 2 * p + k + op
    if isinstance(layer, nn.Conv2d) and layer.stride[0] > 1:
        (k, _), (s, _), (p, _) = layer.kernel_size, layer.stride, layer.padding
        return (rows_in + 2 * p - k) // s + 1
    return rows_in


def bounds(rows_out: int, latent_rows: int) -> list[int]:
    """Band bounds of a layer's output of `rows_out` rows in an image of `latent_rows` y rows:
    every BAND_ROWS latent rows, at the layer's resolution."""
    return [b * rows_out // latent_rows for b in range(0, latent_rows, BAND_ROWS)] + [rows_out]


def run(layers: nn.Sequential, x: torch.Tensor, pool) -> torch.Tensor:
    """`layers`(x), layer by layer, each in bands on `pool` (codec.threads.Pool). The bands
    follow the rows of the narrowest resolution the layers pass (the latent y)."""
    rows = [x.shape[2]]
    for layer in layers:
        rows.append(_rows_out(layer, rows[-1]))
    for layer, rows_out in zip(layers, rows[1:]):
        x = _banded(layer, x, bounds(rows_out, min(rows)), pool)
    if pool.threads > 1:
        give_back_free_memory()
    return x


def _banded(layer: nn.Module, x: torch.Tensor, cuts: list[int], pool) -> torch.Tensor:
    plans = [_input_rows(layer, lo, hi, x.shape[2]) for lo, hi in zip(cuts[:-1], cuts[1:])]
    if len(plans) == 1 or None in plans or min(end - first for first, end, _ in plans) * x.shape[3] < MIN_BAND_AREA:
        return layer(x)
    out, lock = None, threading.Lock()
    grad = torch.is_grad_enabled()  # thread-local: the pool's threads get the caller's

    def band(i: int) -> None:
        nonlocal out
        (first, end, offset), lo, hi = plans[i], cuts[i], cuts[i + 1]
        with torch.set_grad_enabled(grad):
            part = layer(x[:, :, first:end])
        assert part.shape[2] >= hi - offset, (layer, part.shape, plans[i], lo, hi)
        with lock:
            if out is None:  # the first band done knows the output's channels, width and layout (as
                # the unbanded layer's: the next layer's kernels, and so its rounding, depend on it)
                layout = torch.channels_last if part.shape[1] > 1 and part.is_contiguous(
                    memory_format=torch.channels_last) else torch.contiguous_format
                out = torch.empty((part.shape[0], part.shape[1], cuts[-1], part.shape[3]), dtype=part.dtype,
                                  memory_format=layout)
        out[:, :, lo:hi] = part[:, :, lo - offset:hi - offset]

    pool.map(band, range(len(plans)))
    return out
