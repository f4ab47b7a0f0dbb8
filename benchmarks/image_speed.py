"""Encode/decode seconds of one Kodak image: neurocodec models beside CompressAI's
`mbt2018_mean` and `cheng2020_anchor` (untrained weights: only the timing matters), in the
same process, with parameters and MACs per pixel, on each thread count of `--threads`
(neurocodec's `threads=`, CompressAI's torch threads).

    python benchmarks/image_speed.py [--models hyperprior-small,mlic-tiny-gaussian,...] [--repeat 3] [--threads 1,2]
    [--compressai mbt2018_mean,cheng2020_anchor]

Models without shipped weights are timed with random weights exported the way training
exports them (into a temporary folder).

Prints a table and, last, one JSON line. Times are the minimum over the repeats; the thread
counts alternate within each repeat, so that a load that comes and goes meets them alike.
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


def best_of(fns: dict, repeat: int) -> tuple[dict, dict]:
    """The minimum seconds of each fn, calling each once per repeat in turn; and their outputs."""
    best, out = {k: float("inf") for k in fns}, {}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            out[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best, out


def with_torch_threads(n: int, fn):
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=str(ROOT.parent / "shared/data/kodak/kodim01.png"))
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--compressai", default="mbt2018_mean,cheng2020_anchor", help="CompressAI models ('' for none)")
    ap.add_argument("--models", default="mlic-medium-gaussian,hyperprior-small,mlic-tiny-gaussian,mlic-small-gaussian",
                    help="comma-separated neurocodec presets")
    args = ap.parse_args()
    counts = [int(n) for n in args.threads.split(",")]

    from compressai.zoo import cheng2020_anchor, mbt2018_mean

    from codec.image import decode_image, encode_image
    from codec.train.export import write_weights
    from codec.zoo import get_preset, load_model, manifest, weights_from
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
            with weights_from(folder) if folder else contextlib.nullcontext():
                net, _ = load_model(name)  # weight loading is not timed
                data = encode_image(rgb, model=name, quality=args.quality, threads=1)  # nor the first call
                enc, _ = best_of({n: lambda n=n: encode_image(rgb, model=name, quality=args.quality, threads=n)
                                  for n in counts}, args.repeat)
                dec, _ = best_of({n: lambda n=n: decode_image(data, threads=n) for n in counts}, args.repeat)
            rows[f"neurocodec {name}" + ("" if folder is None else " (random weights)")] = {
                "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
                "kmacs_per_pixel": count_macs(net) / 256**2 / 1e3,
                "encode_s": enc, "decode_s": dec}

    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).unsqueeze(0)
    anchors = {"mbt2018_mean": mbt2018_mean, "cheng2020_anchor": cheng2020_anchor}
    for label in filter(None, args.compressai.split(",")):
        net = anchors[label](quality=4, pretrained=False).eval()
        net.update(force=True)
        with torch.no_grad():
            comp = net.compress(x)
            enc, _ = best_of({n: with_torch_threads(n, lambda: net.compress(x)) for n in counts}, args.repeat)
            dec, _ = best_of({n: with_torch_threads(n, lambda: net.decompress(comp["strings"], comp["shape"]))
                              for n in counts}, args.repeat)
        rows[f"compressai {label} q4 (untrained)"] = {"params_M": sum(p.numel() for p in net.parameters()) / 1e6,
                                                      "kmacs_per_pixel": count_macs(net) / 256**2 / 1e3,
                                                      "encode_s": enc, "decode_s": dec}

    print(f"{Path(args.image).name} {w}x{h}, quality {args.quality:g}, best of {args.repeat}")
    head = "".join(f" encode s, {n} thr |" for n in counts) + "".join(f" decode s, {n} thr |" for n in counts)
    print(f"| codec | params (M) | kMAC/pixel |{head}\n|---|---:|---:|" + "---:|" * 2 * len(counts))
    for name, r in rows.items():
        times = "".join(f" {r['encode_s'][n]:.3f} |" for n in counts) + "".join(f" {r['decode_s'][n]:.3f} |" for n in counts)
        print(f"| {name} | {r['params_M']:.2f} | {r['kmacs_per_pixel']:.1f} |{times}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
