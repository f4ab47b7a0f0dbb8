"""The INR's architecture: sized for a target rate, and serialized as the file's "arch" section.

`plan_arch` sizes the network for a target bpp (embeddings take about EMB_SHARE of the bits,
the decoder the rest); `choose_strides` picks the upsampling strides that pad the frame
least. Quality only ever selects a target rate (`quality_to_bpp`).
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass

import torch

from codec.container import NcfError, encode_uvarint
from codec.video.bitstream import FieldReader
from models.inr import HNeRVConfig, HNeRVDecoder, count_params, default_channels, default_kernels, step_shape

ARCH_VERSION = 1
DEFAULT_BITS = 6
MAX_PARAMS = 50_000_000            # decoder parameters a file may declare


def quality_to_bpp(quality: float) -> float:
    """Quality 1..8 (continuous) -> target bits per pixel: 0.1 * 2^((q - 4) * 0.6)."""
    return 0.1 * 2.0 ** ((quality - 4.0) * 0.6)


def bpp_to_quality(bpp: float) -> float:
    return 4.0 + math.log2(bpp / 0.1) / 0.6


@dataclass
class Arch:
    cfg: HNeRVConfig
    bits: int

    def to_bytes(self) -> bytes:
        c = self.cfg
        out = [ARCH_VERSION, self.bits, c.c_emb, c.emb_h, c.emb_w, len(c.strides)]
        out += list(c.strides) + list(c.channels) + list(c.kernels) + [c.head_k]
        return b"".join(encode_uvarint(v) for v in out)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Arch":
        r = FieldReader(data, "section 'arch'")
        r.uvarint("layout version", ARCH_VERSION, ARCH_VERSION)
        bits = r.uvarint("bits", 2, 16)
        c_emb = r.uvarint("c_emb", 1, 1024)
        eh, ew = r.uvarint("emb_h", 1, 4096), r.uvarint("emb_w", 1, 4096)
        n = r.uvarint("blocks", 1, 8)
        strides = [r.uvarint("stride", 1, 8) for _ in range(n)]
        channels = [r.uvarint("channels", 1, 1024) for _ in range(n)]
        kernels = [r.uvarint("kernel", 1, 9) for _ in range(n)]
        head_k = r.uvarint("head kernel", 1, 9)
        r.done()
        cfg = HNeRVConfig(c_emb, eh, ew, strides, channels, kernels, head_k)
        try:
            cfg.validate()
        except ValueError as e:
            raise NcfError(f"section 'arch': {e}") from None
        if count_params(cfg) > MAX_PARAMS:
            raise NcfError(f"section 'arch': {count_params(cfg)} parameters above the limit {MAX_PARAMS}")
        return cls(cfg, bits)

    def hash8(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()[:8]


def tensor_specs(cfg: HNeRVConfig) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, shape, step shape) of every decoder tensor, in file order."""
    with torch.device("meta"):
        tensors = HNeRVDecoder(cfg).state_dict()
    return [(name, tuple(p.shape), step_shape(p, per_channel=True)) for name, p in tensors.items()]


# every non-increasing sequence of 2 to 6 strides from {5, 4, 3, 2}
STRIDE_CANDIDATES = [sorted(combo, reverse=True) for n in range(2, 7)
                     for combo in itertools.combinations_with_replacement([5, 4, 3, 2], n)]


def choose_strides(width: int, height: int, min_pos: int = 6, max_pos: int = 60) -> tuple[list[int], int, int]:
    """Upsampling strides whose product S pads the frame least, with the embedding map
    (ceil(H/S) x ceil(W/S)) holding min_pos..max_pos positions. Returns (strides, pad_w, pad_h)."""
    best = None
    for seq in STRIDE_CANDIDATES:
        s = math.prod(seq)
        eh, ew = -(-height // s), -(-width // s)
        pos = eh * ew
        over = (eh * ew * s * s) / (width * height) - 1.0
        penalty = 0.0 if min_pos <= pos <= max_pos else 10.0 + abs(math.log(pos / (min_pos if pos < min_pos else max_pos)))
        score = over + penalty + 0.01 * abs(len(seq) - 4)
        if best is None or score < best[0]:
            best = (score, seq, ew * s, eh * s)
    _, seq, pw, ph = best
    return list(seq), pw, ph


# bits per coded value, used only to size the model for a target rate
BITS_PER_WEIGHT = 6.0
BITS_PER_DELTA = 3.5
BITS_PER_EMB = 2.0
EMB_SHARE = 0.2
K_MAX = 3         # kernel of the last block (first is 1)
REDUCE = 1.5      # channel shrink per block
LOWER = 8         # narrowest block


def _narrowest(width: int, height: int) -> HNeRVConfig:
    """The smallest network plan_arch makes for a frame size (2 embedding channels, width floor)."""
    strides, pw, ph = choose_strides(width, height)
    s, n = math.prod(strides), len(strides)
    return HNeRVConfig(2, ph // s, pw // s, strides, default_channels(n, 4, REDUCE, LOWER),
                       default_kernels(n, 1, K_MAX), 1)


def min_bpp(width: int, height: int, frames: int, group: int) -> float:
    """The lowest target bpp a clip can be coded at: the narrowest network (its weights,
    the later groups' deltas, one step code per channel) plus 2 embedding channels per frame,
    at the planner's bits per value."""
    cfg = _narrowest(width, height)
    groups = -(-frames // group)
    params = count_params(cfg)
    bits = (params * (BITS_PER_WEIGHT + (groups - 1) * BITS_PER_DELTA)
            + 8 * sum(math.prod(sshape) for _, _, sshape in tensor_specs(cfg))
            + cfg.c_emb * cfg.emb_h * cfg.emb_w * frames * BITS_PER_EMB)
    return bits / (width * height * frames)


def plan_arch(width: int, height: int, frames: int, bpp: float, group: int, bits: int = DEFAULT_BITS) -> Arch:
    """Size the network for a target bpp: embeddings take about EMB_SHARE of the bits,
    the decoder (group 0 plus the deltas of later groups) the rest."""
    strides, pw, ph = choose_strides(width, height)
    s = math.prod(strides)
    eh, ew = ph // s, pw // s
    total = bpp * width * height * frames
    c_emb = int(min(max(round(EMB_SHARE * total / (frames * eh * ew * BITS_PER_EMB)), 2), 32))
    emb_bits = c_emb * eh * ew * frames * BITS_PER_EMB
    groups = -(-frames // group)
    per_param = BITS_PER_WEIGHT + (groups - 1) * BITS_PER_DELTA
    target = max((total - emb_bits) / per_param, 500)
    n = len(strides)
    kernels = default_kernels(n, 1, K_MAX)
    lo, hi = 4, 1024
    while lo < hi:
        mid = (lo + hi + 1) // 2
        cfg = HNeRVConfig(c_emb, eh, ew, strides, default_channels(n, mid, REDUCE, LOWER), kernels, 1)
        if count_params(cfg) <= target:
            lo = mid
        else:
            hi = mid - 1
    cfg = HNeRVConfig(c_emb, eh, ew, strides, default_channels(n, lo, REDUCE, LOWER), kernels, 1)
    cfg.validate()
    return Arch(cfg, bits)
