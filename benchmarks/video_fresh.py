"""FreSh (spectrum-matched positional frequencies) against the codec's embeddings, measured.

The codec transmits one HNeRV embedding map per frame (models.inr.EmbeddingEncoder). A NeRV
positional embedding (models.inr.PositionalEmbedding: sin/cos of the frame time through an
MLP) transmits an MLP instead; FreSh picks its base frequency from the clip's temporal
spectrum (models.inr.fresh_frequency). This fits the same decoder (sized by plan_arch for
--bpp) with each embedding, in float32 (no quantization, no rate), for the same epochs and
learning-rate schedule, and prints the PSNR each reaches and what each would transmit
besides the decoder. Not part of the file format (sin/cos are not bit-exact across machines).

    OMP_NUM_THREADS=1 nice python benchmarks/video_fresh.py /work/shared/data/video/carphone_176x144.mp4 \
        --frames 30 --bpp 0.1 --epochs 100
"""
from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F

from codec.video import read_frames
from codec.video.arch import plan_arch
from models.inr import EmbeddingEncoder, HNeRVDecoder, PositionalEmbedding, count_params, fresh_frequency


def fit(cfg, frames: torch.Tensor, height: int, width: int, embed, epochs: int, lr: float = 1e-2, batch: int = 2,
        seed: int = 0) -> float:
    """Train decoder + ``embed(indices, frames)`` on the frames; PSNR (dB) of the final fit."""
    torch.manual_seed(seed)
    decoder = HNeRVDecoder(cfg)
    params = list(decoder.parameters()) + list(embed.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    n = frames.shape[0]
    total = epochs * -(-n // batch)
    step = 0
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total)) * min(1.0, (step + 1) / 50)
            step += 1
            y = decoder(embed(idx, frames[idx]))
            loss = F.mse_loss(y[..., :height, :width], frames[idx][..., :height, :width])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
    with torch.no_grad():
        mse = sum(F.mse_loss(decoder(embed(torch.tensor([i]), frames[i:i + 1]))[..., :height, :width],
                             frames[i:i + 1, :, :height, :width]).item() for i in range(n)) / n
    return -10 * math.log10(mse)


class Content(torch.nn.Module):
    """HNeRV: the frame encoder (its output is what the file transmits)."""

    def __init__(self, cfg):
        super().__init__()
        self.enc = EmbeddingEncoder(cfg.strides, cfg.c_emb)

    def forward(self, idx, frames):
        return self.enc(frames)


class Positional(torch.nn.Module):
    """NeRV: the frame's time in [0, 1] through PositionalEmbedding (its MLP is transmitted)."""

    def __init__(self, cfg, n: int, base: float):
        super().__init__()
        self.n, self.pe = n, PositionalEmbedding(cfg.c_emb, cfg.emb_h, cfg.emb_w, base=base)

    def forward(self, idx, frames):
        return self.pe(idx.to(torch.float32) / max(self.n - 1, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", default=None)
    ap.add_argument("--bpp", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    src, _ = read_frames(args.video, args.frames, args.size)
    n, h, w, _ = src.shape
    cfg = plan_arch(w, h, n, args.bpp, n).cfg
    x = torch.from_numpy(src).permute(0, 3, 1, 2).float() / 255
    x = F.pad(x, (0, cfg.out_w - w, 0, cfg.out_h - h), mode="replicate")
    fresh = fresh_frequency(x)
    emb_values = n * cfg.c_emb * cfg.emb_h * cfg.emb_w
    for name, embed in [("hnerv embeddings", Content(cfg)), ("positional, base 1", Positional(cfg, n, 1.0)),
                        (f"positional, FreSh base {fresh:g}", Positional(cfg, n, fresh))]:
        sent = emb_values if isinstance(embed, Content) else sum(p.numel() for p in embed.pe.parameters())
        psnr = fit(cfg, x, h, w, embed, args.epochs)
        print(json.dumps({"embedding": name, "psnr_float": round(psnr, 3), "decoder_params": count_params(cfg),
                          "embedding_values_sent": sent, "frames": n, "epochs": args.epochs}), flush=True)


if __name__ == "__main__":
    main()
