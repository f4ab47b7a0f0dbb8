"""Why mlic-tiny stops near 29.7 dB, and where decoding time goes (the numbers in
docs/models.md and docs/benchmarks.md).

    python benchmarks/decode_profile.py [--model mlic-tiny-gaussian] [--kodak ../shared/data/kodak]

1. Block PCA of Kodak: PSNR when each 16x16x3 block (the area of one latent position at
   stride 16) keeps its first k principal components, k = 96 (mlic-tiny's M), 192
   (mlic-small's): a linear bound on what a latent of that width can carry.
2. Decoding kodim01: total seconds, the part spent in the entropy decoder, and the
   synthesis on native convolutions against oneDNN, both on one thread, in one process.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

import codec
from codec import entropy
from codec.image import load_rgb
from codec.zoo import DEFAULT_IMAGE_MODEL, load_model

ROOT = Path(__file__).resolve().parent.parent


def block_pca_psnr(images, ks, side=16):
    blocks = []
    for im in images:
        h, w = (s - s % side for s in im.shape[:2])
        b = im[:h, :w].astype(np.float64) / 255
        blocks.append(b.reshape(h // side, side, w // side, side, 3).transpose(0, 2, 1, 3, 4).reshape(-1, side * side * 3))
    x = np.concatenate(blocks)
    eig = np.linalg.eigvalsh(np.cov((x - x.mean(0)).T))[::-1]
    return {k: 10 * np.log10(x.shape[1] / eig[k:].sum()) for k in ks}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared/data/kodak"))
    args = ap.parse_args()
    paths = sorted(Path(args.kodak).glob("*.png"))
    for k, p in block_pca_psnr([load_rgb(p) for p in paths], (96, 192)).items():
        print(f"block PCA, {k} of 768 components: {p:.2f} dB over {len(paths)} images")

    torch.set_num_threads(1)
    rgb = load_rgb(paths[0])
    data = codec.encode_image(rgb, model=args.model)
    spent = [0.0]
    decode = entropy.decode

    def timed(*a, **kw):
        t = time.perf_counter()
        out = decode(*a, **kw)
        spent[0] += time.perf_counter() - t
        return out

    entropy.decode = timed
    t = time.perf_counter()
    codec.decode_image(data)
    total = time.perf_counter() - t
    entropy.decode = decode
    print(f"{args.model} decode {paths[0].name}: {total:.2f} s, of which entropy decoding {spent[0]:.3f} s")

    net, _ = load_model(args.model)
    q = torch.tensor([4.0])
    with torch.no_grad():
        y = net.analysis(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255, q)
        for onednn in (False, True):
            torch.backends.mkldnn.enabled = onednn
            t = time.perf_counter()
            net.synthesis(y, q)
            print(f"synthesis, one thread, {'oneDNN' if onednn else 'native'}: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
