"""Peak memory and time of encoding and decoding an 8K (7680x4320) photo, tiled.

    PYTHONPATH=. python benchmarks/large_image_memory.py [--image PATH] [--threads N] [--quality Q] [--json]

The photo is the first training photo upscaled to 8K (a synthetic gradient where there is
none). Prints encode/decode seconds on `--threads` threads (default: every core), bpp, PSNR
and the process's peak RSS (ru_maxrss), which docs/reliability.md quotes.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"


def photo_8k(path: Path | None) -> np.ndarray:
    candidates = [path] if path else sorted(TRAIN.glob("*.jpg"))[:1]
    if candidates and candidates[0].exists():
        return np.asarray(Image.open(candidates[0]).convert("RGB").resize((7680, 4320), Image.BICUBIC))
    yy, xx = np.mgrid[0:4320, 0:7680].astype(np.float32)
    return np.stack([xx / 30, yy / 17, (xx + yy) / 47], -1).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quality", type=float, default=4.0, help="above 6: with the residual layer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from codec.image import decode_image, encode_image
    from codec.threads import default_threads

    threads = args.threads or default_threads()

    rgb = photo_8k(args.image)
    t0 = time.perf_counter()
    data = encode_image(rgb, quality=args.quality, threads=threads)
    t1 = time.perf_counter()
    out = decode_image(data, threads=threads)
    t2 = time.perf_counter()
    mse = np.mean((out.astype(np.float32) - rgb) ** 2)
    result = {"size": f"{rgb.shape[1]}x{rgb.shape[0]}", "threads": threads, "quality": args.quality, "bytes": len(data), "bpp": len(data) * 8 / rgb[..., 0].size,
              "psnr": float(10 * np.log10(255 ** 2 / mse)), "encode_s": t1 - t0, "decode_s": t2 - t1,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(result) if args.json else "\n".join(f"{k:12s} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
