"""Decode time of each likelihood family at one model size, and the share spent in entropy
decoding: the issue-35 family table's speed columns (targets: at most 1 s per Kodak image on one
core; mixtures within 1.3x of the Gaussian).

    python benchmarks/family_decode.py [--size mlic-medium] [--image ../shared/data/kodak/kodim01.png]
        [--quality 4] [--repeat 3] [--families gaussian gg gmm mvgmm]

Each family's weights are the shipped Gaussian's carried over by `train --init` (GG as
beta = 2, the mixtures as equal components), exported and coded as real files, so the coder
sees laws shaped like a trained model's. One thread (`threads=1`); the families interleaved in every round, best of `--repeat`.
"""
import argparse
import tempfile
from pathlib import Path

import torch
from decode_profile import timed_decode

import codec
from codec.image import load_rgb
from codec.train.export import write_weights
from codec.train.warmstart import init_from
from codec.zoo import find_release, get_preset, release_file, weights_dir, weights_from

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="mlic-medium")
    ap.add_argument("--image", default=str(ROOT.parent / "shared/data/kodak/kodim01.png"))
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=["gaussian", "gg", "gmm", "mvgmm"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    gaussian = f"{args.size}-gaussian"
    source = weights_dir() / release_file(gaussian, find_release(gaussian)["sha256"])
    rgb = load_rgb(args.image)
    files, best, share = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            name = f"{args.size}-{family}"
            model = get_preset(name).build()
            init_from(model, source)
            write_weights(model.eval(), name, Path(tmp), "float32")
        with weights_from(tmp):
            for family in args.families:
                files[family] = codec.encode_image(rgb, model=f"{args.size}-{family}", quality=args.quality, threads=1)
            for _ in range(args.repeat):
                for family, data in files.items():
                    seconds, spent = timed_decode(data, threads=1)
                    if seconds < best.get(family, float("inf")):
                        best[family], share[family] = seconds, spent / seconds
    base = best.get("gaussian")
    print(f"{Path(args.image).name}, quality {args.quality:g}, one thread, best of {args.repeat}")
    print("family | file bytes | decode s | x gaussian | entropy decoding share")
    for family in args.families:
        ratio = f"{best[family] / base:.2f}" if base else "-"
        print(f"{family} | {len(files[family])} | {best[family]:.3f} | {ratio} | {share[family]:.0%}")


if __name__ == "__main__":
    main()
