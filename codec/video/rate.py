"""Rate control of the video encoder: step sizes chosen so that the real coded bytes meet a
byte budget, measured with the coder itself (codec.video.bitstream), not estimated.

Why: the network is sized from average bits per value (codec.video.arch), which alone lands
the file 3-11 % off the target. Two free knobs close the gap without changing the format:
the decoder's per-channel weight steps (fixed for the clip when group 0 starts quantization-
aware training: one multiplier on all of them, chosen so that group 0's weights code to their
planned share) and each group's embedding steps (stored per group: chosen so that the group's
payload lands on its share of the file). A multiplier 2^s scales every bits-derived step
(max|x| / (2^(bits-1) - 1)); the step codes round it per channel (1/8 octave), so the bytes are
a fine-grained, non-increasing step function of s, searched by bisection.
"""
from __future__ import annotations

import numpy as np
import torch

from codec.video.arch import BITS_PER_DELTA, BITS_PER_WEIGHT, EMB_SHARE, Arch
from codec.video.bitstream import encode_ints, pack_embeddings, pack_weights
from models.inr import channel_steps, code_from_step, count_params, step_from_code

LOG2_LO, LOG2_HI = -2.0, 4.0   # step multipliers searched: 1/4x .. 16x the bits-derived step (weights: from 1x)
# The weights' multiplier never goes below 1x: a finer grid for group 0 makes every later group's
# deltas (in steps) larger, and they were then squeezed back to their budget; this floor and
# unused bytes going to the deltas (codec.video.codec) gained bunny 320x180 (5 groups, 0.1 bpp)
# 0.57 dB together (docs/video.md, "Several groups"); the embeddings take the bytes instead.
WEIGHT_LOG2_LO = 0.0
RANGE = 4                      # |k| <= RANGE * (2^(bits-1) - 1): the finest multiplier never clips
ITERATIONS = 10                # bisection steps (resolution 6 / 2^10 octave)


def closest_scale(cost, budget: float, lo: float | None = None, hi: float | None = None) -> float:
    """The value in [lo, hi] (a log2 multiplier; default LOG2_LO, LOG2_HI, read at the call)
    whose cost (bytes, non-increasing in it) is closest to ``budget``; the ends when the budget
    is out of reach."""
    lo, hi = LOG2_LO if lo is None else lo, LOG2_HI if hi is None else hi
    memo = {}

    def c(s):
        if s not in memo:
            memo[s] = cost(s)
        return memo[s]

    if c(lo) <= budget:
        return lo
    if c(hi) >= budget:
        return hi
    for _ in range(ITERATIONS):
        mid = (lo + hi) / 2
        if c(mid) > budget:
            lo = mid
        else:
            hi = mid
    return lo if abs(c(lo) - budget) < abs(c(hi) - budget) else hi


def scaled_codes(x: torch.Tensor, bits: int, log2m: float, per_channel: bool = True) -> torch.Tensor:
    """Step codes of ``x`` (per output channel, dim 0) at 2^log2m times its bits-derived step."""
    return code_from_step(channel_steps(x, bits, per_channel) * 2.0 ** log2m)


def quantize(x: torch.Tensor, codes: torch.Tensor, sshape, levels: int) -> np.ndarray:
    """x on the grid of its step codes: the integers the file holds."""
    step = step_from_code(codes).reshape(sshape)
    return torch.round(x.detach() / step).clamp(-levels, levels).to(torch.int64).numpy()


def delta_ints(x: torch.Tensor, step: torch.Tensor, prev: torch.Tensor, log2t: float, levels: int) -> torch.Tensor:
    """A later group's integer weights: the previous group's plus the rounded change, where
    changes below the dead zone 2^log2t steps (log2t = -1: plain rounding) stay zero, so
    that the deltas' bytes can be set (`delta_zone`). Float tensor of integers."""
    v = x / step - prev
    d = torch.where(v.abs() < 2.0 ** log2t, torch.zeros_like(v), torch.round(v))
    return (prev + d).clamp(-levels, levels)


# Up to 2^5 steps, where 2^3 is not enough: with 200 epochs the second group of carphone drifted
# so far from the first that 2^3 left its deltas 41 % over their budget (file +5.9 %, 1.4 dB
# lost; docs/video.md). Searched only then, so that every other encode is as before.
MAX_DEAD_ZONE = 5.0


def weight_deltas(params: dict, steps: dict, prev: dict, log2t: float, levels: int) -> list[np.ndarray]:
    """A later group's coded weight deltas (int32 per tensor) at the dead zone 2^log2t steps."""
    with torch.no_grad():
        return [(delta_ints(params[k], steps[k], prev[k], log2t, levels) - prev[k]).to(torch.int32).numpy()
                for k in steps]


def delta_zone(params: dict, steps: dict, prev: dict, n_frames: int, levels: int, budget: float) -> float:
    """The dead zone (log2 steps, -1..5) at which a later group's weight deltas code to
    ``budget`` bytes (with the group's frame count, as `pack_weights` writes them)."""
    def cost(t):
        return len(pack_weights(n_frames, weight_deltas(params, steps, prev, t, levels)))

    t = closest_scale(cost, budget, -1.0, 3.0)
    if t == 3.0 and cost(t) > budget:  # out of reach below 2^3: wider zones (earlier encoders stopped here)
        t = closest_scale(cost, budget, 3.0, MAX_DEAD_ZONE)
    return t


def weight_codes(params: dict, specs, bits: int, budget: float | None) -> np.ndarray:
    """The clip's weight step codes: one multiplier on every tensor's bits-derived steps, chosen
    so that the quantized weights code to ``budget`` bytes (None: the multiplier 1)."""
    levels = RANGE * (2 ** (bits - 1) - 1)

    def codes_at(s):
        return [scaled_codes(params[name], bits, s).ravel() for name, _, _ in specs]

    def cost(s):
        return sum(len(encode_ints(quantize(params[name], c, sshape, levels)))
                   for (name, _, sshape), c in zip(specs, codes_at(s)))

    s = 0.0 if budget is None else closest_scale(cost, budget, WEIGHT_LOG2_LO)
    return torch.cat(codes_at(s)).numpy()


def embedding_scale(e: torch.Tensor, bits: int, budget: float) -> float:
    """The embedding step multiplier (log2) at which a group's embeddings (n, c, h, w) code
    to ``budget`` bytes (step codes and mode byte included)."""
    levels = RANGE * (2 ** (bits - 1) - 1)
    per_c = e.transpose(0, 1)

    def cost(s):
        codes = scaled_codes(per_c, bits, s)
        return len(pack_embeddings(codes.numpy(), quantize(e, codes, (1, -1, 1, 1), levels)))

    return closest_scale(cost, budget)


def laplace_bits(k: torch.Tensor) -> torch.Tensor:
    """Bits of the (straight-through rounded) integers ``k`` under a zero-mean Laplace fitted
    to them, the density the coder uses most: -log2(F(k + 1/2) - F(k - 1/2)), summed; the
    scale is held fixed (mean |k|), so the gradient pulls each value toward cheaper ones."""
    b = k.detach().abs().mean().clamp(min=0.1)

    def cdf(x):
        return 0.5 + 0.5 * torch.sign(x) * (1 - torch.exp(-x.abs() / b))

    p = (cdf(k + 0.5) - cdf(k - 0.5)).clamp(min=1e-9)
    return -torch.log2(p).sum()


def group_targets(arch: Arch, n_frames: int, group: int, payload_bytes: float) -> tuple[list[float], list[float]]:
    """The groups' byte targets: (cumulative payload targets, the last = ``payload_bytes``;
    each group's weight budget). Weights get their planned bytes (group 0 at BITS_PER_WEIGHT,
    later deltas at BITS_PER_DELTA), scaled down where they would leave the embeddings less
    than half their planned share (EMB_SHARE / 2; only near the minimum rate: elsewhere the
    plan gives them 18-23 %); the embeddings share the rest by frames."""
    n_groups = -(-n_frames // group)
    weights = [planned_weight_bytes(arch, g) for g in range(n_groups)]
    cap = (1 - EMB_SHARE / 2) * payload_bytes
    if sum(weights) > cap:
        weights = [w * cap / sum(weights) for w in weights]
    per_frame = (payload_bytes - sum(weights)) / n_frames
    targets, acc = [], 0.0
    for g in range(n_groups):
        acc += weights[g] + per_frame * min(group, n_frames - g * group)
        targets.append(acc)
    targets[-1] = payload_bytes
    return targets, weights


def planned_weight_bytes(arch: Arch, group_index: int) -> float:
    """Bytes planned for a group's weights: group 0's at BITS_PER_WEIGHT, later deltas at BITS_PER_DELTA."""
    return count_params(arch.cfg) * (BITS_PER_WEIGHT if group_index == 0 else BITS_PER_DELTA) / 8


