"""Implicit neural representation (INR) video networks: torch modules only.

HNeRV-style (Chen et al., CVPR 2023): a small ConvNeXt-style *encoder* turns each frame
into a tiny embedding map (content-adaptive embedding); the *decoder* (what a file
transmits, together with the embeddings) upsamples it back to the frame with blocks of
``conv -> PixelShuffle -> GELU`` whose kernel sizes grow and channel widths shrink
toward the output, so parameters are spread evenly over the blocks.

NeRV-style positional mode: :class:`PositionalEmbedding` maps the normalised frame
index through sin/cos features to an embedding map; its base frequency is chosen
FreSh-style (:func:`fresh_frequency`) from the temporal spectrum of the clip.

Quantization-aware training helpers: :func:`fake_quant` (round to a per-channel step
grid with a straight-through gradient) and :func:`step_from_code` (the exact float32
step a step code stands for; the decoder uses the same function, so encoder and decoder
agree bit for bit).

Nothing here reads files or knows the container; ``codec.video`` owns that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.layers import LayerNorm2d

STEP_CODE_BIAS = 192  # step = (8 + (code & 7)) / 8 * 2 ** ((code >> 3) - 24); code in 0..255


def step_from_code(codes: torch.Tensor) -> torch.Tensor:
    """Exact float32 quantization steps for integer step codes (0..255).

    ``(8 + (c & 7)) / 8 * 2 ** ((c >> 3) - 24)``: a mantissa of 1, 1.125, ..., 1.875 and a
    power of two from 2^-24 to 2^7, computed with exact operations (ldexp), never a libm
    transcendental, so every machine gets the same bits.
    """
    codes = codes.to(torch.int64)
    mant = (8 + (codes & 7)).to(torch.float64) / 8.0
    return torch.ldexp(mant, (codes >> 3) - 24).to(torch.float32)


def code_from_step(step: torch.Tensor) -> torch.Tensor:
    """The smallest step code whose step is >= ``step`` (elementwise, int64 in 0..255)."""
    step = step.detach().to(torch.float64).clamp(min=2.0 ** -24, max=1.875 * 2.0 ** 7)
    e = torch.floor(torch.log2(step)).to(torch.int64)
    mant = step / torch.ldexp(torch.ones_like(step), e)  # in [1, 2)
    m = torch.ceil((mant - 1.0) * 8.0 - 1e-9).to(torch.int64)
    e = torch.where(m >= 8, e + 1, e)
    m = torch.where(m >= 8, torch.zeros_like(m), m)
    code = ((e + 24) << 3) + m
    return code.clamp(0, 255)


def fake_quant(x: torch.Tensor, step: torch.Tensor, levels: int | None = None) -> torch.Tensor:
    """Round ``x`` to the grid ``k * step`` (``|k| <= levels`` when given) in the forward
    pass; identity gradient (straight-through estimator)."""
    k = torch.round(x / step)
    if levels is not None:
        k = k.clamp(-levels, levels)
    return x + (k * step - x).detach()


def channel_steps(x: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Per-output-channel (dim 0) symmetric step: max|x_c| / (2^(bits-1) - 1), as a float."""
    levels = 2 ** (bits - 1) - 1
    if per_channel and x.dim() > 1:
        amax = x.detach().abs().flatten(1).amax(1)
    else:
        amax = x.detach().abs().amax().reshape(1)
    return (amax / levels).clamp(min=1e-6)


def step_shape(x: torch.Tensor, per_channel: bool) -> tuple[int, ...]:
    """Shape the step vector of ``x`` broadcasts with."""
    if per_channel and x.dim() > 1:
        return (x.shape[0],) + (1,) * (x.dim() - 1)
    return (1,) * max(x.dim(), 1)


# ---------------------------------------------------------------- encoder


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LayerNorm -> 1x1 (4x) -> GELU -> 1x1, with a residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pw1 = nn.Conv2d(dim, 4 * dim, 1)
        self.pw2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x):
        return x + self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


class EmbeddingEncoder(nn.Module):
    """ConvNeXt-style frame encoder: (B, 3, H, W) in [0, 1] -> (B, c_emb, H/S, W/S).

    One stage per stride (patchify conv of kernel = stride, LayerNorm, one ConvNeXt
    block); the strides are the decoder's in reverse. Not transmitted: only its output
    (the quantized embeddings) goes into the file.
    """

    def __init__(self, strides: list[int], c_emb: int, dims: list[int] | None = None):
        super().__init__()
        strides = list(reversed(strides))
        dims = dims or [min(16 * 2 ** i, 96) for i in range(len(strides))]
        layers, cin = [], 3
        for s, d in zip(strides, dims):
            layers += [nn.Conv2d(cin, d, s, stride=s), LayerNorm2d(d, eps=1e-6), ConvNeXtBlock(d)]
            cin = d
        layers.append(nn.Conv2d(cin, c_emb, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


# ---------------------------------------------------------------- decoder


@dataclass
class HNeRVConfig:
    """Everything that fixes the decoder's shape (stored in the file)."""

    c_emb: int                 # embedding channels
    emb_h: int                 # embedding map height (= padded height / prod(strides))
    emb_w: int
    strides: list[int]         # per block upsampling factor
    channels: list[int]        # per block output channels (before the head)
    kernels: list[int]         # per block conv kernel size (odd)
    head_k: int = 1            # kernel of the final conv to RGB

    @property
    def stride(self) -> int:
        return math.prod(self.strides)

    @property
    def out_h(self) -> int:
        return self.emb_h * self.stride

    @property
    def out_w(self) -> int:
        return self.emb_w * self.stride

    def validate(self) -> None:
        n = len(self.strides)
        if not (1 <= n <= 8) or len(self.channels) != n or len(self.kernels) != n:
            raise ValueError("HNeRV config: 1..8 blocks with strides, channels and kernels each")
        for s in self.strides:
            if not 1 <= s <= 8:
                raise ValueError(f"HNeRV config: stride {s} outside 1..8")
        for c in self.channels + [self.c_emb]:
            if not 1 <= c <= 1024:
                raise ValueError(f"HNeRV config: channel count {c} outside 1..1024")
        for k in self.kernels + [self.head_k]:
            if not (1 <= k <= 9 and k % 2 == 1):
                raise ValueError(f"HNeRV config: kernel {k} must be odd in 1..9")
        if not (1 <= self.emb_h <= 4096 and 1 <= self.emb_w <= 4096):
            raise ValueError("HNeRV config: embedding size outside 1..4096")


def default_kernels(n: int, k_min: int = 1, k_max: int = 5) -> list[int]:
    """Kernel sizes growing from k_min (first block) to k_max (last), odd."""
    if n == 1:
        return [k_max]
    half_min, half_max = k_min // 2, k_max // 2
    return [2 * int(half_min + (half_max - half_min) * i / (n - 1) + 0.5) + 1 for i in range(n)]


def default_channels(n: int, width: int, reduce: float = 1.5, lower: int = 8) -> list[int]:
    """Channel widths shrinking by ``reduce`` per block toward the output, at least ``lower``."""
    return [max(int(round(width / reduce ** i)), lower) for i in range(n)]


class HNeRVBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, s: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * s * s, k, padding=k // 2)
        self.shuffle = nn.PixelShuffle(s) if s > 1 else nn.Identity()

    def forward(self, x):
        return F.gelu(self.shuffle(self.conv(x)))


class HNeRVDecoder(nn.Module):
    """Embedding map (B, c_emb, h, w) -> frame (B, 3, h*S, w*S) in [0, 1]."""

    def __init__(self, cfg: HNeRVConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        blocks, cin = [], cfg.c_emb
        for cout, k, s in zip(cfg.channels, cfg.kernels, cfg.strides):
            blocks.append(HNeRVBlock(cin, cout, k, s))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(cin, 3, cfg.head_k, padding=cfg.head_k // 2)

    def forward(self, e):
        return torch.sigmoid(self.head(self.blocks(e)))


def count_params(cfg: HNeRVConfig) -> int:
    n, cin = 0, cfg.c_emb
    for cout, k, s in zip(cfg.channels, cfg.kernels, cfg.strides):
        n += cin * cout * s * s * k * k + cout * s * s
        cin = cout
    return n + cin * 3 * cfg.head_k ** 2 + 3


# ---------------------------------------------------------------- positional mode (NeRV)


def fresh_frequency(frames: torch.Tensor, max_octaves: int = 8) -> float:
    """FreSh-style choice of the base frequency of the positional embedding.

    FreSh (Kania et al.) matches the spectrum of the embedding to that of the signal.
    Here the signal is the clip as a function of time: we take the temporal power
    spectrum of the frames (T, C, H, W), find the frequency below which 90% of the
    non-DC energy lies (in cycles per clip) and return it as the base frequency (at
    least 1).
    """
    t = frames.shape[0]
    if t < 4:
        return 1.0
    x = frames.reshape(t, -1).to(torch.float32)
    x = x - x.mean(0, keepdim=True)
    p = torch.fft.rfft(x, dim=0).abs().pow(2).sum(1)[1:]
    if float(p.sum()) <= 0:
        return 1.0
    c = torch.cumsum(p, 0) / p.sum()
    f90 = int(torch.searchsorted(c, torch.tensor(0.9)).item()) + 1
    return float(min(max(f90, 1), 2 ** max_octaves))


class PositionalEmbedding(nn.Module):
    """NeRV-style: normalised time t in [0, 1] -> embedding map (B, c_emb, h, w).

    gamma(t) = [sin(2^i * pi * b * t), cos(...)]_{i < L} with base frequency ``b``
    (from :func:`fresh_frequency`), followed by an MLP whose output is reshaped to the
    embedding map the HNeRV decoder expects. Its weights are transmitted like the
    decoder's (instead of per-frame embeddings).
    """

    def __init__(self, c_emb: int, h: int, w: int, base: float = 1.0, levels: int = 8, hidden: int = 64):
        super().__init__()
        self.c_emb, self.h, self.w = c_emb, h, w
        self.register_buffer("freqs", (2.0 ** torch.arange(levels, dtype=torch.float32)) * math.pi * base,
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * levels, hidden), nn.GELU(), nn.Linear(hidden, c_emb * h * w))

    def forward(self, t):
        a = t.reshape(-1, 1).to(torch.float32) * self.freqs
        g = torch.cat([torch.sin(a), torch.cos(a)], 1)
        return self.mlp(g).reshape(-1, self.c_emb, self.h, self.w)
