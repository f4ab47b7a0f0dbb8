"""PSNR gap at equal rate between two codecs of one `neurocodec eval` JSON, point by point.

    python benchmarks/curve_gap.py docs/results/kodak.json neurocodec:mlic-medium-gaussian webp

For each point of the first codec, the second codec's PSNR at the same bpp (linear in log bpp
between its neighbouring points; none outside its range) and the difference. BD-rate averages
over the whole curve; this shows where along it one codec wins or loses. Last, the first
codec's BD-rate (PSNR) against the second (codec.eval.bd) over the whole curves, and over
their first six points (qualities 1-6 for neurocodec: the learned layer alone).
"""
import json
import sys

import numpy as np

from codec.eval.bd import bd_rate


def curve(results: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    by_name = {c["name"]: c["results"] for c in results["codecs"]}
    if name not in by_name:
        sys.exit(f"{name!r} is not in the JSON (codecs: {', '.join(by_name)})")
    return np.array(by_name[name]["bpp"]), np.array(by_name[name]["psnr-rgb"])


def psnr_at(bpp: float, other_bpp: np.ndarray, other_psnr: np.ndarray) -> float | None:
    """The other curve's PSNR at ``bpp``, linear in log bpp; None outside its measured range."""
    if not other_bpp.min() <= bpp <= other_bpp.max():
        return None
    order = np.argsort(other_bpp)
    return float(np.interp(np.log(bpp), np.log(other_bpp[order]), other_psnr[order]))


def main(path: str, codec: str, other: str) -> None:
    results = json.load(open(path))
    bpp, psnr = curve(results, codec)
    other_bpp, other_psnr = curve(results, other)
    print(f"| bpp | {codec} PSNR | {other} PSNR | difference (dB) |\n|---:|---:|---:|---:|")
    for b, p in zip(bpp, psnr):
        q = psnr_at(b, other_bpp, other_psnr)
        print(f"| {b:.3f} | {p:.2f} | " + ("- | - |" if q is None else f"{q:.2f} | {p - q:+.2f} |"))
    for points in (None, 6):
        n = slice(points)
        print(f"BD-rate of {codec} against {other}" + (f", first {points} points" if points else "") + ": "
              f"{bd_rate(other_bpp[n], other_psnr[n], bpp[n], psnr[n]):+.2f} %")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
