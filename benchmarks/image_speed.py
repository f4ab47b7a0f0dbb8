"""Encode/decode seconds of one Kodak image: neurocodec's default model beside CompressAI's
`mbt2018_mean` (untrained weights: only the timing matters), in the same process.

    python benchmarks/image_speed.py [--image ../shared/data/kodak/kodim01.png] [--repeat 3] [--threads 2]

Prints a table and, last, one JSON line. Times are the minimum over the repeats.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=str(ROOT.parent / "shared/data/kodak/kodim01.png"))
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from compressai.zoo import mbt2018_mean

    from codec.image import decode_image, encode_image
    from codec.zoo import DEFAULT_IMAGE_MODEL, load_model

    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    load_model(DEFAULT_IMAGE_MODEL)  # exclude weight loading from the timings
    enc_s, data = best_of(lambda: encode_image(rgb, quality=args.quality), args.repeat)
    dec_s, _ = best_of(lambda: decode_image(data), args.repeat)

    net = mbt2018_mean(quality=4, pretrained=False).eval()
    net.update(force=True)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).unsqueeze(0)
    with torch.no_grad():
        ref_enc_s, comp = best_of(lambda: net.compress(x), args.repeat)
        ref_dec_s, _ = best_of(lambda: net.decompress(comp["strings"], comp["shape"]), args.repeat)

    h, w = rgb.shape[:2]
    rows = {
        f"neurocodec {DEFAULT_IMAGE_MODEL}": {"encode_s": enc_s, "decode_s": dec_s, "bpp": len(data) * 8 / (h * w)},
        "compressai mbt2018_mean q4 (untrained)": {"encode_s": ref_enc_s, "decode_s": ref_dec_s},
    }
    print(f"{Path(args.image).name} {w}x{h}, {args.threads} threads, best of {args.repeat}")
    for name, r in rows.items():
        print(f"  {name:42s} encode {r['encode_s']:.3f} s  decode {r['decode_s']:.3f} s")
    print(f"  decode time ratio neurocodec / mbt2018_mean: {dec_s / ref_dec_s:.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
