"""Encode/decode seconds of one Kodak image: neurocodec models beside CompressAI's
`mbt2018_mean` and `cheng2020_anchor` (untrained weights: only the timing matters), in the
same process, with parameters and MACs per pixel.

    python benchmarks/image_speed.py [--models hyperprior-small,mlic-tiny-gaussian,...] [--repeat 3] [--threads 2]

Models without shipped weights are timed with random weights exported the way training
exports them (into a temporary folder).

Prints a table and, last, one JSON line. Times are the minimum over the repeats.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
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
    ap.add_argument("--models", default="hyperprior-small,mlic-tiny-gaussian,mlic-tiny-gmm,mlic-small-gaussian,mlic++-gaussian",
                    help="comma-separated neurocodec presets")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from compressai.zoo import cheng2020_anchor, mbt2018_mean

    from codec.image import decode_image, encode_image
    from codec.train import _weights_from, write_weights
    from codec.zoo import get_preset, load_model, manifest
    from models.mlic import count_macs

    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = rgb.shape[:2]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            folder = None
            if name not in manifest():
                torch.manual_seed(0)
                write_weights(get_preset(name).build(), name, Path(tmp), "float32")
                folder = tmp
            with _weights_from(folder) if folder else contextlib.nullcontext():
                net, _ = load_model(name)  # weight loading is not timed
                enc_s, data = best_of(lambda: encode_image(rgb, model=name, quality=args.quality), args.repeat)
                dec_s, _ = best_of(lambda: decode_image(data), args.repeat)
            rows[f"neurocodec {name}" + ("" if folder is None else " (random weights)")] = {
                "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
                "kmacs_per_pixel": count_macs(net) / 256**2 / 1e3,
                "encode_s": enc_s, "decode_s": dec_s}

    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).unsqueeze(0)
    for label, build in [("compressai mbt2018_mean q4", lambda: mbt2018_mean(quality=4, pretrained=False)),
                         ("compressai cheng2020_anchor q4", lambda: cheng2020_anchor(quality=4, pretrained=False))]:
        net = build().eval()
        net.update(force=True)
        with torch.no_grad():
            enc_s, comp = best_of(lambda: net.compress(x), args.repeat)
            dec_s, _ = best_of(lambda: net.decompress(comp["strings"], comp["shape"]), args.repeat)
        rows[label + " (untrained)"] = {"params_M": sum(p.numel() for p in net.parameters()) / 1e6,
                                        "kmacs_per_pixel": count_macs(net) / 256**2 / 1e3,
                                        "encode_s": enc_s, "decode_s": dec_s}

    print(f"{Path(args.image).name} {w}x{h}, quality {args.quality:g}, {args.threads} threads, best of {args.repeat}")
    print("| codec | params (M) | kMAC/pixel | encode s | decode s |\n|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['params_M']:.2f} | {r['kmacs_per_pixel']:.1f} | {r['encode_s']:.3f} | {r['decode_s']:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
