"""The gain of `neurocodec encode --refine STEPS`: BD-rate of refined against plain encodes of
the same images and qualities, from real file sizes and decoded pixels (both in one run).

    python benchmarks/refine_gain.py [--model M] [--steps 50] [--images 6] [--crop 256]
        [--qualities 1 3 5 8] [--threads 1] [--json docs/results/refine.json]

Images: `--images` Kodak images evenly spaced in the sorted folder (the training
validation subset), each center-cropped to `--crop` pixels (0: whole image) to keep the
run short on a CPU. Prints per-quality bpp / PSNR / seconds and the BD-rate (negative =
refinement saves bits at equal PSNR).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import codec
from codec.eval.bd import bd_quality, bd_rate
from codec.eval.metrics import psnr
from codec.image import load_rgb
from codec.zoo import DEFAULT_IMAGE_MODEL

ROOT = Path(__file__).resolve().parent.parent


def center_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    if not side:
        return rgb
    h, w = rgb.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(rgb[y:y + side, x:x + side])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared/data/kodak"))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--qualities", type=float, nargs="+", default=[1.0, 3.0, 5.0, 8.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = sorted(Path(args.kodak).glob("*.png"))
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, args.images).round().astype(int)]
    images = [center_crop(load_rgb(p), args.crop) for p in paths]
    rows = []
    for steps in (0, args.steps):
        for q in args.qualities:
            bpp, quality, seconds = [], [], 0.0
            for rgb in images:
                t = time.perf_counter()
                data = codec.encode_image(rgb, model=args.model, quality=q, refine=steps)
                seconds += time.perf_counter() - t
                bpp.append(len(data) * 8 / (rgb.shape[0] * rgb.shape[1]))
                quality.append(psnr(rgb, codec.decode_image(data)))
            rows.append({"refine": steps, "quality": q, "bpp": float(np.mean(bpp)),
                         "psnr": float(np.mean(quality)), "encode_s_per_image": seconds / len(images)})
            r = rows[-1]
            print(f"refine={steps:4d} q{q:g}: {r['bpp']:.4f} bpp {r['psnr']:.2f} dB, "
                  f"encode {r['encode_s_per_image']:.1f} s/image", flush=True)
    plain = [r for r in rows if r["refine"] == 0]
    refined = [r for r in rows if r["refine"] == args.steps]
    rate = bd_rate([r["bpp"] for r in plain], [r["psnr"] for r in plain],
                   [r["bpp"] for r in refined], [r["psnr"] for r in refined])
    gain = bd_quality([r["bpp"] for r in plain], [r["psnr"] for r in plain],
                      [r["bpp"] for r in refined], [r["psnr"] for r in refined])
    print(f"{args.model}, {len(images)} Kodak images ({args.crop or 'full'} px), --refine {args.steps}: "
          f"BD-rate {rate:+.2f} %, BD-PSNR {gain:+.3f} dB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "steps": args.steps, "images": [p.name for p in paths], "crop": args.crop,
            "threads": args.threads, "rows": rows, "bd_rate_percent": rate, "bd_psnr_db": gain}, indent=1) + "\n")


if __name__ == "__main__":
    main()
