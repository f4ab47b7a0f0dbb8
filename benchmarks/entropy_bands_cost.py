"""What coding the entropy model in independent bands of latent rows would cost in bits.

    PYTHONPATH=. python benchmarks/entropy_bands_cost.py [--rows 16] [--model mlic-medium-gmm]
        [--images ../shared/data/kodak/kodim01.png ...] [--qualities 1 4 8]

Why: a tile's coding steps run in sequence (each pass needs the previous one's symbols), so two
threads cannot share one tile's steps. Bands whose contexts stop at their edges (the hyper
features still computed from the whole z) could be decoded side by side, one per thread. This
prints the real rANS bytes of y coded whole and in bands of `--rows` latent rows (coder version
7's exact parameters), per image and quality, and the total change per quality.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from codec import entropy
from codec.image import pipeline
from codec.image.pixels import load_rgb, to_tensor
from codec.threads import torch_threads
from codec.zoo import load_model

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def y_bytes(streams) -> int:
    chain = entropy.ChainEncoder(chained=True)
    for s in streams:
        chain.add(s.family, s.symbols, s.codes)
    return sum(len(b) for b in chain.finish())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--model", default="mlic-medium-gmm")
    parser.add_argument("--images", nargs="+", type=Path,
                        default=[KODAK / f"kodim{i:02d}.png" for i in (1, 4, 7, 13, 19, 23)])
    parser.add_argument("--qualities", nargs="+", type=float, default=[1.0, 4.0, 8.0])
    args = parser.parse_args()
    net, _ = load_model(args.model)
    params = pipeline.parameter_net(net, pipeline.CODER_VERSION)
    residuals = pipeline.mixture_residuals(params, pipeline.CODER_VERSION)
    totals = {q: [0, 0] for q in args.qualities}
    print("| image | quality | latent rows | y bytes whole | in bands | change |\n|---|---:|---:|---:|---:|---:|")
    with torch.no_grad(), torch_threads(1):
        for path in args.images:
            x = to_tensor(load_rgb(path), net.stride)
            for q in args.qualities:
                quality = torch.tensor([q])
                y = net.analysis(x, quality)
                medians = net.z_medians().view(1, -1, 1, 1)
                z_hat = (torch.round(net.hyper_analysis(y) - medians) + medians).double()
                whole = y_bytes(pipeline.quantize_y(params, y, z_hat, quality, residuals)[0])
                hyper, banded = params.hyper_synthesis(z_hat), 0
                for r0 in range(0, y.shape[2], args.rows):
                    rows = slice(r0, r0 + args.rows)
                    params.hyper_synthesis = lambda _, rows=rows: hyper[:, :, rows]  # the band's hyper features
                    banded += y_bytes(pipeline.quantize_y(params, y[:, :, rows], z_hat, quality, residuals)[0])
                del params.hyper_synthesis
                totals[q][0] += whole
                totals[q][1] += banded
                print(f"| {path.name} | {q:g} | {y.shape[2]} | {whole} | {banded} | {100 * (banded / whole - 1):+.2f} % |",
                      flush=True)
    for q, (whole, banded) in totals.items():
        print(f"quality {q:g}: {100 * (banded / whole - 1):+.2f} % y bytes in bands of {args.rows} latent rows")


if __name__ == "__main__":
    main()
