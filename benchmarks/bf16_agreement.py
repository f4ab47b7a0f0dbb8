"""How far a bfloat16-autocast training step is from a float32 one, on trained weights.

    python benchmarks/bf16_agreement.py [--model mlic-medium-gaussian] [--qualities 1 8]

`train --bf16` runs the whole forward pass under autocast, the likelihoods included, so the
rate and the gradient it trains on are not float32's. For each quality, on the same patches
and the same noise: bpp and MSE of the bf16 forward pass against the float32 one, and the
cosine between the two gradients. For scale, the cosine between the float32 gradients of two
different batches (the noise that SGD lives with anyway) is printed beside it.
"""
import argparse
from pathlib import Path

import torch

from codec.train.data import RandomPatches
from codec.train.warmstart import init_from
from codec.zoo import DEFAULT_IMAGE_MODEL, get_preset

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--weights", help="a .safetensors file (default: the shipped weights of --model)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/train"))
    ap.add_argument("--qualities", type=float, nargs="+", default=[1.0, 8.0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = get_preset(args.model).build()
    init_from(model, args.weights or ROOT / "weights" / f"{args.model}.safetensors", noise=0.0)
    model.train()
    params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    data = RandomPatches(args.data, args.crop, seed=0)

    def step(x, q, bf16):
        torch.manual_seed(1)  # the same quantization noise in both precisions
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x, q)
        losses = model.rd_loss(x, q, out)
        model.zero_grad()
        losses["loss"].backward()
        grad = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
        return losses["bpp"].item(), losses["mse"].item(), grad

    cos = torch.nn.functional.cosine_similarity
    for quality in args.qualities:
        q = torch.full((args.batch,), quality)
        x, other = (torch.from_numpy(data.batch(i, args.batch)) for i in (0, 1))
        bpp32, mse32, g32 = step(x, q, False)
        bpp16, mse16, g16 = step(x, q, True)
        g_other = step(other, q, False)[2]
        print(f"quality {quality:g}: bf16 bpp {100 * (bpp16 / bpp32 - 1):+.2f} %, MSE {100 * (mse16 / mse32 - 1):+.2f} % "
              f"of float32's ({bpp32:.4f} bpp, {mse32:.3e}); gradient cosine bf16 vs fp32 {cos(g16, g32, 0).item():.3f}, "
              f"fp32 batch vs another batch {cos(g_other, g32, 0).item():.3f}")


if __name__ == "__main__":
    main()
