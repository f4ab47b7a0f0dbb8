"""Training steps per second of a preset on this machine: float32 against bfloat16 autocast.

    python benchmarks/training_speed.py --model mlic-tiny-gaussian --threads 2 --crop 256 --batch 4

Times forward + RD loss + backward + AdamW on random patches (median of the steps after two
warm-up steps), the same work as one step of `neurocodec train`, both settings in one run.
"""
import argparse
import statistics
import time

import torch

from codec.zoo import get_preset


def seconds_per_step(model_name: str, bf16: bool, crop: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = get_preset(model_name).build().train()
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.endswith("quantiles")], lr=1e-4)
    x = torch.rand(batch, 3, crop, crop)
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        q = torch.rand(batch) * (model.levels - 1) + 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x, q)
        loss = model.rd_loss(x, q, out)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mlic-tiny-gaussian")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = None
    for bf16 in (False, True):
        s = seconds_per_step(args.model, bf16, args.crop, args.batch, args.steps)
        base = base or s
        print(f"{args.model} threads={args.threads} {'bf16' if bf16 else 'fp32'}: {s:.3f} s/step, "
              f"{1 / s:.2f} steps/s, {args.batch * args.crop ** 2 / s / 1e3:.0f} kpixel/s, "
              f"{base / s:.2f}x of fp32")


if __name__ == "__main__":
    main()
