"""How much of a model's distortion is quantization and how much its transforms: PSNR of the
reconstruction without rounding (synthesis(analysis(x))) beside the eval-mode forward pass
with rounding, per quality, averaged over images (PSNR per image, then the mean).

    python benchmarks/transform_ceiling.py [--model mlic-tiny-gaussian] [--image ../shared/data/kodak/kodim19.png ...]
    python benchmarks/transform_ceiling.py --image ../shared/data/kodak/*.png --qualities 1 8   # all of Kodak
    # older weights of the same preset, e.g. from git history:
    git show c8cc26d~1:weights/mlic-small-gaussian.safetensors > /tmp/w.safetensors
    python benchmarks/transform_ceiling.py --model mlic-small-gaussian --weights /tmp/w.safetensors

If the unquantized PSNR stays flat across qualities, the transforms (capacity or training)
cap the quality, not the entropy model.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from codec.zoo import DEFAULT_IMAGE_MODEL, build_with_weights, load_model

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--image", nargs="+", default=[str(ROOT.parent / "shared/data/kodak/kodim19.png")])
    ap.add_argument("--qualities", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("--weights", help="a .safetensors file for --model instead of its shipped weights")
    args = ap.parse_args()
    net = build_with_weights(args.model, args.weights) if args.weights else load_model(args.model)[0]
    images = []
    for path in args.image:
        rgb = np.array(Image.open(path).convert("RGB"))
        h, w = (s // net.stride * net.stride for s in rgb.shape[:2])  # crop to the stride: no padding effects
        images.append(torch.from_numpy(rgb[:h, :w]).permute(2, 0, 1).float().div(255)[None])

    def psnr(a, x):
        return -10 * torch.log10((a.clamp(0, 1) - x).pow(2).mean()).item()

    with torch.no_grad():
        for q in args.qualities:
            quality = torch.tensor([q])
            plain = [psnr(net.synthesis(net.analysis(x, quality), quality), x) for x in images]
            rounded = [psnr(net(x, quality)["x_hat"], x) for x in images]
            print(f"{args.model} q{q:g} ({len(images)} images): unquantized {np.mean(plain):.2f} dB, "
                  f"quantized {np.mean(rounded):.2f} dB", flush=True)


if __name__ == "__main__":
    main()
