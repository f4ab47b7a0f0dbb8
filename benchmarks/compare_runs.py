"""BD-rate between training runs from their last validation (val.csv: real files), against the first run.

    python benchmarks/compare_runs.py /work/runs/cmp-gaussian /work/runs/cmp-gg /work/runs/cmp-gmm

Prints a Markdown table: steps, validation images, bpp and PSNR per quality, BD-rate and
BD-PSNR (codec.eval.bd, PCHIP over the overlapping range) against the first run.
"""
import csv
import sys
from pathlib import Path

from codec.eval.bd import bd_quality, bd_rate


def last_validation(run: Path) -> dict:
    rows = list(csv.DictReader(open(run / "val.csv")))
    step = max(int(r["step"]) for r in rows)
    rows = [r for r in rows if int(r["step"]) == step]
    return {"step": step, "images": int(rows[0]["images"]),
            "bpp": [float(r["bpp"]) for r in rows], "psnr": [float(r["psnr"]) for r in rows]}


def main(runs: list[str]) -> None:
    results = {Path(r).name: last_validation(Path(r)) for r in runs}
    anchor = next(iter(results.values()))
    print("| run | steps | images | bpp | PSNR (dB) | BD-rate | BD-PSNR |\n|---|---:|---:|---|---|---:|---:|")
    for name, v in results.items():
        rate = bd_rate(anchor["bpp"], anchor["psnr"], v["bpp"], v["psnr"])
        dq = bd_quality(anchor["bpp"], anchor["psnr"], v["bpp"], v["psnr"])
        print(f"| {name} | {v['step']} | {v['images']} | {' '.join(f'{b:.3f}' for b in v['bpp'])} | "
              f"{' '.join(f'{p:.2f}' for p in v['psnr'])} | {rate:+.1f} % | {dq:+.2f} dB |")


if __name__ == "__main__":
    main(sys.argv[1:])
