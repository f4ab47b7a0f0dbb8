"""Rate control of the INR video codec: how close the real file lands to --bpp, and the
PSNR it reaches there (docs/video.md, "Rate control").

    OMP_NUM_THREADS=1 nice python benchmarks/video_rate_control.py \
        --clip carphone=/work/shared/data/video/carphone_176x144.mp4 \
        --clip bunny=/work/shared/data/video/bunny_1280x720.mp4@320x180 \
        --frames 30 --bpp 0.05 0.1 0.2 --out rate.jsonl

One JSON line per (clip, bpp): target, real bpp (8 * file bytes / pixels), error %, RGB PSNR,
encode seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

import codec.video.arch  # noqa: F401  (the modules --set reaches)
import codec.video.fit  # noqa: F401
import codec.video.rate  # noqa: F401
from codec.video import decode_video, encode_video, read_frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the per-frame RGB PSNR (what `neurocodec eval video` reports)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def log_zones() -> None:
    """Wrap `codec.video.rate.delta_zone` (which codec.video.fit calls through the module) to log."""
    rate = codec.video.rate
    choose = rate.delta_zone

    def logged(params, steps, prev, n_frames, levels, budget):
        t = choose(params, steps, prev, n_frames, levels, budget)
        deltas = rate.weight_deltas(params, steps, prev, t, levels)
        print(json.dumps({"dead_zone_log2": round(t, 3), "bytes": len(rate.pack_weights(n_frames, deltas)),
                          "budget": round(budget), "nonzero": sum(int(np.count_nonzero(d)) for d in deltas),
                          "deltas": sum(d.size for d in deltas)}), file=sys.stderr, flush=True)
        return t

    rate.delta_zone = logged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", action="append", required=True, help="name=path[@WxH]")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--bpp", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--quality", type=float, default=None, help="encode at this --quality instead of --bpp")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--effort", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=None, help="frames per training step (encode_video's default if unset)")
    ap.add_argument("--lr", type=float, default=None, help="group 0's learning rate (encode_video's default if unset)")
    ap.add_argument("--group", type=int, default=None, help="frames per group (encode_video's default if unset)")
    ap.add_argument("--out", default=None, help="append JSON lines here too")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a codec.video constant (e.g. RATE_LAMBDA=0.01, BITS_PER_WEIGHT=4.5) "
                         "in every codec.video module that defines it")
    ap.add_argument("--log-zones", action="store_true",
                    help="print every dead zone the rate control picks for a later group's weight deltas, "
                         "with the bytes it reaches, their budget and the non-zero deltas")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.log_zones:
        log_zones()
    overrides = {}
    for item in args.set:
        name, value = item.split("=", 1)
        overrides[name] = float(value)
        modules = [m for k, m in sys.modules.items() if k.startswith("codec.video.") and hasattr(m, name)]
        if not modules:
            raise SystemExit(f"no codec.video module defines {name}")
        for m in modules:
            setattr(m, name, float(value))
    fit_args = {k: v for k, v in (("batch", args.batch), ("lr", args.lr), ("group", args.group)) if v is not None}
    for spec in args.clip:
        name, path = spec.split("=", 1)
        path, _, size = path.partition("@")
        src, fps = read_frames(path, args.frames, size or None)
        for bpp in [None] if args.quality is not None else args.bpp:
            t0 = time.perf_counter()
            kw = {"seed": args.seed} if args.effort is None else {"effort": args.effort, "seed": args.seed}
            kw.update(fit_args)
            data = encode_video(src, fps=fps, bpp=bpp, quality=args.quality, epochs=args.epochs, progress=False,
                                threads=1, **kw)
            seconds = time.perf_counter() - t0
            real = 8 * len(data) / src[..., 0].size
            row = {"clip": name, "frames": len(src), "size": f"{src.shape[2]}x{src.shape[1]}", "target": bpp, "quality": args.quality,
                   "bpp": round(real, 5), "error_pct": None if bpp is None else round(100 * (real / bpp - 1), 2),
                   "psnr": round(psnr(decode_video(data), src), 3), "encode_s": round(seconds, 1),
                   "epochs": args.epochs, "effort": args.effort, "seed": args.seed, **fit_args, **overrides}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
