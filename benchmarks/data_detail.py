"""Do the training patches show the model as much fine detail as Kodak? Block PCA of 16x16x3
blocks (the area of one latent position) on training patches cut exactly as `neurocodec train`
cuts them, beside Kodak: the PSNR a linear transform keeping k of the 768 values reaches (lower
= more detail left after k components), and the mean absolute neighbour difference.

    python benchmarks/data_detail.py [--train ../shared/data/train] [--kodak ../shared/data/kodak] [--patches 400]
"""
import argparse
from pathlib import Path

import numpy as np
from decode_profile import block_pca_psnr

from codec.image import load_rgb
from codec.train.data import RandomPatches

ROOT = Path(__file__).resolve().parent.parent


def mean_gradient(images) -> float:
    return float(np.mean([(np.abs(np.diff(i.astype(float), axis=0)).mean()
                           + np.abs(np.diff(i.astype(float), axis=1)).mean()) / 2 for i in images]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default=str(ROOT.parent / "shared/data/train"))
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared/data/kodak"))
    ap.add_argument("--patches", type=int, default=400)
    ap.add_argument("--crop", type=int, default=256)
    args = ap.parse_args()
    data = RandomPatches(args.train, args.crop, seed=1)
    sets = {f"training patches ({args.patches} x {args.crop} px)":
            [(data.patch(s, 0).transpose(1, 2, 0) * 255).round().astype(np.uint8) for s in range(args.patches)],
            "Kodak (24 images)": [load_rgb(p) for p in sorted(Path(args.kodak).glob("*.png"))]}
    ks = (96, 192, 256, 320)
    print("set | " + " | ".join(f"PCA {k}" for k in ks) + " | mean |gradient|")
    for name, images in sets.items():
        psnr = block_pca_psnr(images, ks)
        print(f"{name} | " + " | ".join(f"{psnr[k]:.2f} dB" for k in ks) + f" | {mean_gradient(images):.2f}")


if __name__ == "__main__":
    main()
