"""A time-boxed prototype of a lighter video representation, measured against hnerv:
Cool-chic/C3-like latent grids over (time, y, x) at several resolutions, upsampled
trilinearly and mixed by a small per-pixel synthesis MLP (about 1.3k MAC/pixel), trained
with a rate term (noise, then straight-through rounding; a per-level Laplace with learned
scale, no autoregressive context model) whose weight is steered to the target bpp.

The bytes reported are real: every latent level and every quantized synthesis tensor is
coded with codec.video.bitstream.encode_ints (the video codec's rANS coder and densities);
no container or header is counted (a file would add ~40 bytes). The PSNR is that of the
decoded (quantized) representation. Not a codec: nothing here is in the file format.

    OMP_NUM_THREADS=1 nice python benchmarks/video_latent_grid.py \
        /work/shared/data/video/carphone_176x144.mp4 --frames 30 --bpp 0.1 --minutes 8
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from codec.video import read_frames
from codec.video.bitstream import encode_ints

# (temporal stride, spatial stride) of each latent grid: fine detail is shared over a few
# frames, coarse structure is per frame
LEVELS = [(4, 1), (2, 2), (2, 4), (1, 8), (1, 16), (1, 32)]
HIDDEN = 32
WEIGHT_BITS = 8


class LatentGrid(nn.Module):
    def __init__(self, t: int, h: int, w: int):
        super().__init__()
        self.size = (t, h, w)
        self.latents = nn.ParameterList([nn.Parameter(torch.zeros(1, 1, -(-t // ts), -(-h // ss), -(-w // ss)))
                                         for ts, ss in LEVELS])
        self.log_scale = nn.Parameter(torch.zeros(len(LEVELS)))
        c = len(LEVELS)
        self.synth = nn.Sequential(nn.Conv3d(c, HIDDEN, 1), nn.GELU(), nn.Conv3d(HIDDEN, HIDDEN, 1), nn.GELU(),
                                   nn.Conv3d(HIDDEN, 3, 1))

    def macs_per_pixel(self) -> int:
        return sum(m.weight.numel() for m in self.synth if isinstance(m, nn.Conv3d))

    def quantized(self, mode: str):
        """The latents as coded, and their bits under the per-level Laplace. mode: "noise"
        (training), "ste" (rounded, straight-through gradient) or "round" (decoded)."""
        ys, bits = [], 0.0
        for lat, ls in zip(self.latents, self.log_scale):
            if mode == "noise":
                y = lat + torch.empty_like(lat).uniform_(-0.5, 0.5)
            else:
                y = lat + (torch.round(lat) - lat).detach()
            b = torch.exp(ls).clamp(min=0.02)
            cdf = lambda v: 0.5 + 0.5 * torch.sign(v) * (1 - torch.exp(-v.abs() / b))  # noqa: E731
            bits = bits + (-torch.log2((cdf(y + 0.5) - cdf(y - 0.5)).clamp(min=1e-9))).sum()
            ys.append(y)
        return ys, bits

    def at(self, ys, grid: torch.Tensor) -> torch.Tensor:
        """RGB at points ``grid`` (1, N, 1, 1, 3) = normalized (x, y, t), align_corners=False:
        the same trilinear sampling as F.interpolate to the full size."""
        feats = [F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False) for y in ys]
        f = torch.cat(feats, 1).flatten(2).squeeze(0).t()  # (N, levels): linear layers, 4x faster than conv3d here
        for layer in self.synth:
            f = F.linear(f, layer.weight.flatten(1), layer.bias) if isinstance(layer, nn.Conv3d) else layer(f)
        return torch.sigmoid(f).t()

    def full(self, ys, frames: slice) -> torch.Tensor:
        """Decoded frames (1, 3, n, H, W): every latent grid upsampled to the clip's size."""
        up = [F.interpolate(y, size=self.size, mode="trilinear", align_corners=False)[:, :, frames] for y in ys]
        return torch.sigmoid(self.synth(torch.cat(up, 1)))


def coded_bytes(model: LatentGrid) -> tuple[int, dict]:
    """Real rANS bytes of the rounded latents and of the synthesis weights at WEIGHT_BITS."""
    lat = sum(len(encode_ints(torch.round(p).to(torch.int32).numpy())) for p in model.latents)
    wq, wbytes = {}, 0
    for name, p in model.synth.named_parameters():
        step = max(p.detach().abs().max().item(), 1e-8) / (2 ** (WEIGHT_BITS - 1) - 1)
        k = torch.round(p.detach() / step)
        wbytes += len(encode_ints(k.to(torch.int32).numpy())) + 2  # + the step (2 bytes)
        wq[name] = k * step
    return lat + wbytes, wq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", default=None)
    ap.add_argument("--bpp", type=float, default=0.1)
    ap.add_argument("--minutes", type=float, default=8.0, help="training time box")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--points", type=int, default=32768, help="pixels sampled per training step")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    src, _ = read_frames(args.video, args.frames, args.size)
    t, h, w, _ = src.shape
    x = torch.from_numpy(src).permute(3, 0, 1, 2).unsqueeze(0).float() / 255  # (1, 3, T, H, W)
    pixels = t * h * w
    model = LatentGrid(t, h, w)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    lam, it, t0 = 1e-3, 0, time.perf_counter()
    budget = args.minutes * 60
    norm = torch.tensor([w, h, t], dtype=torch.float32)
    flat = x.reshape(3, -1)
    while (elapsed := time.perf_counter() - t0) < budget:
        frac = elapsed / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05)
        ys, bits = model.quantized("noise" if frac < 0.7 else "ste")
        idx = torch.randint(0, pixels, (args.points,))
        ti, rem = idx // (h * w), idx % (h * w)
        pos = torch.stack([rem % w, rem // w, ti], 1).to(torch.float32)
        grid = ((2 * pos + 1) / norm - 1).reshape(1, -1, 1, 1, 3)
        y = model.at(ys, grid)
        mse = F.mse_loss(y, flat[:, idx])
        loss = mse + lam * bits / pixels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        if it % 25 == 0:  # steer the rate weight toward the target (latents only; weights ~ fixed)
            wbits = sum(p.numel() for p in model.synth.parameters()) * 6
            bpp = (float(bits.detach()) + wbits) / pixels
            lam *= math.exp(0.5 * math.log(max(bpp, 1e-4) / args.bpp))
            lam = min(max(lam, 1e-6), 10.0)
    with torch.no_grad():
        nbytes, wq = coded_bytes(model)
        for name, p in model.synth.named_parameters():
            p.copy_(wq[name])
        ys, _ = model.quantized("round")
        y = torch.cat([model.full(ys, slice(i, i + 2)) for i in range(0, t, 2)], 2)
        out = torch.round(y.clamp(0, 1) * 255)
        ref = x * 255
        mse = ((out - ref) ** 2).mean(dim=(0, 1, 3, 4))
        psnr = float(torch.mean(10 * torch.log10(255.0 ** 2 / mse.clamp(min=1e-10))))
    print(json.dumps({"model": "latent-grid prototype", "frames": t, "size": f"{w}x{h}", "target_bpp": args.bpp,
                      "bpp": round(8 * nbytes / pixels, 5), "psnr": round(psnr, 3), "iterations": it,
                      "minutes": args.minutes, "macs_per_pixel": model.macs_per_pixel(),
                      "latents": int(sum(p.numel() for p in model.latents)), "lambda": lam}), flush=True)


if __name__ == "__main__":
    main()
