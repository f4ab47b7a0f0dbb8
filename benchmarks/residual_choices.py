"""The residual layer's design choices (codec.image.residual), measured from real files:
which learned quality to put it on, the encoder's rounding offset, and the context classes.

    python benchmarks/residual_choices.py [--what bases rounding context] [--images ...]

Each variant codes the images at its qualities (bases: base .. base + 4; the others: 6 .. 10,
the default base) with the default model on one thread, and prints mean bpp, RGB PSNR and
MS-SSIM per quality and the BD-rate (PSNR and MS-SSIM in dB) against the shipped setting
(base 6, rounding 0.3, 5 context classes). Variants patch the module for the run only.
"""
import argparse
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import codec
from codec.eval.bd import bd_rate
from codec.eval.metrics import ms_ssim, psnr
from codec.image import load_rgb, residual

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
SIX = [KODAK / f"kodim{i:02d}.png" for i in (1, 4, 7, 13, 19, 23)]


@contextmanager
def patched(**values):
    old = {k: getattr(residual, k) for k in values}
    for k, v in values.items():
        setattr(residual, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(residual, k, v)


def curve(images: list, qualities: list[float]) -> np.ndarray:
    """(quality, bpp, PSNR, MS-SSIM in dB) means over the images, one row per quality."""
    rows = []
    for q in qualities:
        points = []
        for rgb in images:
            data = codec.encode_image(rgb, quality=q, threads=1)
            out = codec.decode_image(data, threads=1)
            points.append((len(data) * 8 / rgb[..., 0].size, psnr(rgb, out), -10 * np.log10(1 - ms_ssim(rgb, out))))
        rows.append((q, *np.mean(points, axis=0)))
    return np.array(rows)


def report(name: str, c: np.ndarray, ref: np.ndarray | None) -> None:
    points = "  ".join(f"q{q:g} {b:.4f} bpp {p:.2f} dB {1 - 10 ** (-m / 10):.5f}" for q, b, p, m in c)
    bd = "" if ref is None else (f"  BD-rate vs shipped: {bd_rate(ref[:, 1], ref[:, 2], c[:, 1], c[:, 2]):+.2f} % PSNR, "
                                 f"{bd_rate(ref[:, 1], ref[:, 3], c[:, 1], c[:, 3]):+.2f} % MS-SSIM")
    print(f"{name}: {points}{bd}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--what", nargs="+", default=["bases", "rounding", "context"],
                    choices=["bases", "rounding", "context"])
    ap.add_argument("--images", nargs="+", type=Path, default=SIX)
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = [load_rgb(p) for p in args.images]
    default = [6.0, 7.0, 8.0, 9.0, 10.0]
    shipped = curve(images, default)
    report("shipped (base 6, rounding 0.3, 5 classes)", shipped, None)
    if "bases" in args.what:
        for base in (5, 7, 8):
            with patched(base_quality=lambda levels, b=base: float(b)):
                report(f"base {base}", curve(images, [base + i for i in range(5)]), shipped)
    if "rounding" in args.what:
        for rounding in (0.2, 0.4, 0.5):
            with patched(ROUNDING=rounding):
                report(f"rounding {rounding}", curve(images, default), shipped)
    if "context" in args.what:
        with patched(CLASS_BOUNDS=np.array([], dtype=np.int64), CLASSES=1):
            report("one law per group (no context classes)", curve(images, default), shipped)


if __name__ == "__main__":
    main()
