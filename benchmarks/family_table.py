"""The likelihood-family table: BD-rate of each curve against several anchors, from `eval images`
results files (real files), e.g. every family trained from the same Gaussian with equal budgets.

    python benchmarks/family_table.py \
        --curve "Gaussian, 1,500 steps=/tmp/ctrl.json#neurocodec:mlic-medium-gaussian" \
        --curve "GMM=docs/results/kodak.json#neurocodec:mlic-medium-gmm" \
        --anchor "WebP=docs/results/kodak.json#webp" --anchor "AVIF=docs/results/kodak.json#avif" \
        --anchor "Gaussian, 1,500 steps"

Each --curve and --anchor is LABEL=FILE#CODEC (a codec of that results file); an anchor may also
name a --curve by its label. Prints a Markdown table: images, bpp and PSNR per setting, and the
BD-rate (codec.eval.bd, PCHIP over the overlapping range) against each anchor.
"""
import argparse
import json
from pathlib import Path

from codec.eval.bd import bd_rate


def load_curve(spec: str) -> dict:
    """{"images", "bpp", "psnr"} of the codec FILE#CODEC names."""
    path, _, name = spec.partition("#")
    result = json.loads(Path(path).read_text())
    for entry in result["codecs"]:
        if entry["name"] == name:
            r = entry["results"]
            return {"images": len(result["images"]), "bpp": r["bpp"], "psnr": r["psnr-rgb"]}
    raise SystemExit(f"{path} has no codec {name!r} (it has {', '.join(e['name'] for e in result['codecs'])})")


def labelled(specs: list[str], known: dict) -> dict:
    out = {}
    for spec in specs:
        label, sep, source = spec.partition("=")
        if sep:
            out[label] = load_curve(source)
        elif spec in known:
            out[spec] = known[spec]
        else:
            raise SystemExit(f"{spec!r} is neither LABEL=FILE#CODEC nor a --curve label")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--curve", action="append", required=True, help="LABEL=FILE#CODEC")
    p.add_argument("--anchor", action="append", required=True, help="LABEL=FILE#CODEC, or a --curve's LABEL")
    args = p.parse_args()
    curves = labelled(args.curve, {})
    anchors = labelled(args.anchor, curves)
    print("| weights | images | bpp | PSNR (dB) | " + " | ".join(f"vs {a}" for a in anchors) + " |")
    print("|---|---:|---|---|" + "---:|" * len(anchors))
    for label, c in curves.items():
        rates = [bd_rate(a["bpp"], a["psnr"], c["bpp"], c["psnr"]) for a in anchors.values()]
        print(f"| {label} | {c['images']} | {' '.join(f'{b:.3f}' for b in c['bpp'])} | "
              f"{' '.join(f'{q:.2f}' for q in c['psnr'])} | " + " | ".join(f"{r:+.2f} %" for r in rates) + " |")


if __name__ == "__main__":
    main()
