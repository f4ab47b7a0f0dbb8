"""Training steps per second of a preset on this machine, for several ways of running a step.

    python benchmarks/training_speed.py --model mlic-small-gaussian --threads 2 --crop 256 --batch 4
    python benchmarks/training_speed.py --variants fp32,channels_last,compile --profile

Times forward + RD loss + backward + AdamW on random patches (median of the steps after two
warm-up steps), the same work as one step of `neurocodec train`. Variants, all in one run and
reported as ratios to the first: `fp32` (what `train` does without native bfloat16), `bf16`
(autocast, what `train --bf16` does), `channels_last` (model and input in NHWC), `compile`
(`torch.compile` of the model; its compile time is reported apart, it is not in the median) and
`entropy` (what `train --train-only entropy` does: a rate-only pass, the transforms frozen).
"""
import argparse
import statistics
import time

import torch

from codec.train.loop import freeze_for
from codec.zoo import get_preset

VARIANTS = ("fp32", "bf16", "channels_last", "compile", "entropy")


def make_step(model_name: str, variant: str, crop: int, batch: int):
    """A function that runs one training step of the preset on random patches."""
    torch.manual_seed(0)
    model = get_preset(model_name).build().train()
    rate_only = freeze_for(model, "entropy" if variant == "entropy" else None)
    opt = torch.optim.AdamW([p for n, p in model.named_parameters() if not n.endswith("quantiles") and p.requires_grad],
                            lr=1e-4)
    x = torch.rand(batch, 3, crop, crop)
    forward = model
    if variant == "channels_last":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    elif variant == "compile":
        forward = torch.compile(model)

    def step():
        q = torch.rand(batch) * (model.levels - 1) + 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
            out = forward(x, q, rate_only=True) if rate_only else forward(x, q)
        loss = model.rd_loss(x, q, out)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def seconds_per_step(step, steps: int) -> tuple[float, float]:
    """(median seconds per step after two warm-up steps, seconds of the first step, which
    includes any compiling)."""
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:]), times[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mlic-tiny-gaussian")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--variants", default="fp32,bf16", help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--profile", action="store_true",
                    help="also print torch.profiler's operators by CPU time over 2 steps of the first variant")
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    base = first_step = None
    for variant in variants:
        step = make_step(args.model, variant, args.crop, args.batch)
        first_step = first_step or step
        s, first = seconds_per_step(step, args.steps)
        base = base or s
        extra = f", first step {first:.0f} s" if variant == "compile" else ""
        print(f"{args.model} threads={args.threads} {variant}: {s:.3f} s/step, {1 / s:.2f} steps/s, "
              f"{args.batch * args.crop ** 2 / s / 1e3:.0f} kpixel/s, {base / s:.2f}x of {variants[0]}{extra}")
    if args.profile:  # the first variant's step, already warmed up by its timing
        with torch.profiler.profile() as prof:
            for _ in range(2):
                first_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
