"""Write the result tables of README.md and docs/*.md from the data files, or check them.

    python benchmarks/docs_tables.py            # rewrite every generated region
    python benchmarks/docs_tables.py --check    # exit 1 if a region differs from its data

A region is the text between `<!-- generated:NAME ARGS -->` and `<!-- /generated:NAME ARGS -->`.
NAME picks a table below; ARGS (space-separated) say which model or results file. The data are
`weights/manifest.json` (what ships, how it was trained, its Kodak curve) and the `neurocodec
eval` / `benchmarks/refine_gain.py` JSONs in `docs/results/`. BD figures are computed here with
the evaluation's own BD code against several anchors, so each number is typed nowhere: change a
data file, run this, commit both.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this tree's `codec`, not an installed one

from codec.eval.bd import bd_table  # noqa: E402
from codec.eval.report import load_reference  # noqa: E402

from curve_gap import psnr_at  # noqa: E402

REGION = re.compile(r"<!-- generated:(?P<name>[^>]+?) -->(?P<body>.*?)<!-- /generated:(?P=name) -->",
                    re.DOTALL)
KODAK_ANCHORS = [("webp", "WebP"), ("jpeg2000", "JPEG 2000"),
                 ("ref:bpg_444_x265_ycbcr", "BPG (published)"), ("ref:vtm", "VTM (published)")]


@functools.cache
def read_json(rel: str) -> dict:
    return json.loads((ROOT / rel).read_text(encoding="utf-8"))


def manifest() -> dict:
    return read_json("weights/manifest.json")


def float_tensors(file: str) -> dict[str, int]:
    """Values per float dtype stored in a safetensors file (its integer CDF tables left out)."""
    with open(ROOT / "weights" / file, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    header.pop("__metadata__", None)
    counts: dict[str, int] = {}
    for t in header.values():
        if t["dtype"].startswith(("F", "BF")):
            counts[t["dtype"]] = counts.get(t["dtype"], 0) + math.prod(t["shape"])
    return counts


def parameters(file: str) -> int:
    return sum(float_tensors(file).values())


def stored_as(file: str) -> str:
    counts = float_tensors(file)
    return {"F16": "float16", "F32": "float32", "BF16": "bfloat16"}[max(counts, key=counts.get)]


def models_best_first() -> list[str]:
    m = manifest()
    return sorted(m, key=lambda name: m[name]["kodak"]["bd_rate_vs_webp_pct"])


def pct(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v == 0:
        return "0 %"
    return f"{v:+.2f} %" if abs(v) < 1 else f"{v:+.1f} %"


def db(v: float | None) -> str:
    return "n/a" if v is None else "0 dB" if v == 0 else f"{v:+.2f} dB"


def table(head: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(head))]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, align, *rows])


def lr(v: float) -> str:
    return f"{v:.0e}".replace("e-0", "e-")


def config_text(config: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in config.items() if k in ("N", "M", "slices"))


# --------------------------------------------------------------------------- tables


def weights_table() -> str:
    """One row per shipped weights file."""
    rows = []
    for name in models_best_first():
        e = manifest()[name]
        t = e["training"]
        rows.append([f"`{name}`", config_text(e["config"]), f"{parameters(e['file']) / 1e6:.2f} M",
                     stored_as(e["file"]), f"`{e['sha256'][:12]}`", f"{t['steps']:,}",
                     f"{t['hours']:.2f}", pct(e["kodak"]["bd_rate_vs_webp_pct"]),
                     f"{e['kodak']['quality'][0]:g}-{e['kodak']['quality'][-1]:g}"])
    return table(["weights", "config", "parameters", "stored as", "sha256", "steps of its last run",
                  "hours of its last run", "Kodak BD-rate vs WebP", "over qualities"], rows, right_from=2)


def kodak_model(name: str) -> str:
    """bpp, PSNR and MS-SSIM of one shipped model on Kodak, per quality."""
    e = manifest()[name]
    c = next(c for c in read_json("docs/results/kodak.json")["codecs"] if c["name"] == f"neurocodec:{name}")
    if {s["weights_sha256"] for s in c["settings"]} != {e["sha256"]}:
        raise SystemExit(f"docs/results/kodak.json measured other weights than the shipped {name}")
    r = c["results"]
    head = ["quality"] + [f"{s['quality']:g}" for s in c["settings"]]
    rows = [["bpp"] + [f"{v:.3f}" for v in r["bpp"]],
            ["PSNR (dB)"] + [f"{v:.2f}" for v in r["psnr-rgb"]],
            ["MS-SSIM"] + [f"{v:.4f}" for v in r["ms-ssim"]]]
    caption = (f"`{name}` ({config_text(e['config'])}; {parameters(e['file']) / 1e6:.2f} M parameters; "
               f"sha256 `{e['sha256'][:12]}`):")
    return caption + "\n\n" + table(head, rows)


def kodak_models() -> str:
    return "\n\n".join(kodak_model(name) for name in models_best_first())


def kodak_bd() -> str:
    """BD-rate of every codec of docs/results/kodak.json against each anchor."""
    results = read_json("docs/results/kodak.json")
    refs = load_reference("kodak")["curves"]
    by_anchor = {a: {r["codec"]: r for r in bd_table(results["codecs"], a, refs)["rows"]}
                 for a, _ in KODAK_ANCHORS}
    rows = []
    for c in results["codecs"]:
        w = by_anchor["webp"][c["name"]]
        rows.append([f"`{c['name']}`", pct(w["bd_rate_psnr_pct"]), db(w["bd_psnr_db"]),
                     pct(w["bd_rate_msssim_pct"])]
                    + [pct(by_anchor[a][c["name"]]["bd_rate_psnr_pct"]) for a, _ in KODAK_ANCHORS[1:]])
    head = ["codec", "BD-rate vs WebP", "BD-PSNR vs WebP", "BD-rate vs WebP (MS-SSIM)"] + \
           [f"BD-rate vs {label}" for _, label in KODAK_ANCHORS[1:]]
    return table(head, rows)


def kodak_gap(codec: str, other: str) -> str:
    """``codec``'s Kodak points and ``other``'s PSNR at the same bpp (benchmarks/curve_gap.py)."""
    import numpy as np

    curves = {c["name"]: c["results"] for c in read_json("docs/results/kodak.json")["codecs"]}
    ob, op = np.array(curves[other]["bpp"]), np.array(curves[other]["psnr-rgb"])
    rows = []
    for b, p in zip(curves[codec]["bpp"], curves[codec]["psnr-rgb"]):
        q = psnr_at(b, ob, op)
        rows.append([f"{b:.3f}", f"{p:.2f}"] + (["-", "-"] if q is None else [f"{q:.2f}", f"{p - q:+.2f}"]))
    return table(["bpp", f"`{codec}` PSNR", f"`{other}` PSNR at this bpp", "difference (dB)"], rows, 0)


def video(rel: str) -> str:
    """The neurocodec points of a video sweep and each classical codec's PSNR at the same bpp."""
    import numpy as np

    results = read_json(rel)
    ours = next(c for c in results["codecs"] if c["name"] == "neurocodec")
    others = [c for c in results["codecs"] if c["name"] != "neurocodec"]
    frames = results["video"]["frames"]
    r = ours["results"]
    rows = []
    for i, s in enumerate(ours["settings"]):
        row = [f"{s['quality']:g}", f"{r['bpp'][i]:.4f}", f"{r['psnr-rgb'][i]:.2f}", f"{r['ms-ssim'][i]:.4f}"]
        for c in others:
            q = psnr_at(r["bpp"][i], np.array(c["results"]["bpp"]), np.array(c["results"]["psnr-rgb"]))
            row.append("-" if q is None else f"{q:.2f} ({r['psnr-rgb'][i] - q:+.2f})")
        row += [f"{r['encoding_time'][i] / 60:.1f} min", f"{frames / r['decoding_time'][i]:.0f}"]
        rows.append(row)
    head = ["quality", "bpp", "RGB PSNR", "MS-SSIM"] + \
           [f"{c['name']} {c['settings'][0].get('preset', '')} at this bpp (dB, difference)" for c in others] + \
           ["encode", "decode frames/s"]
    return table(head, rows)


def video_bd(rel: str) -> str:
    """BD metrics of a video sweep against the anchor it was run with."""
    results = read_json(rel)
    anchor = results["bd"]["anchor"]
    rows = [[f"`{r['codec']}`", pct(r["bd_rate_psnr_pct"]), db(r["bd_psnr_db"]), pct(r["bd_rate_msssim_pct"])]
            for r in bd_table(results["codecs"], anchor)["rows"] if r["codec"] != anchor]
    return table(["codec", f"BD-rate vs {anchor}", f"BD-PSNR vs {anchor}", f"BD-rate vs {anchor} (MS-SSIM)"],
                 rows)


def refine(rel: str) -> str:
    """Plain against refined encodes of one `benchmarks/refine_gain.py` JSON."""
    res = read_json(rel)
    by = {(row["refine"], row["quality"]): row for row in res["rows"]}
    steps = res["steps"]
    rows = []
    for q in sorted({row["quality"] for row in res["rows"]}):
        a, b = by[(0, q)], by[(steps, q)]
        rows.append([f"{q:g}", f"{a['bpp']:.4f}", f"{a['psnr']:.2f}", f"{b['bpp']:.4f}", f"{b['psnr']:.2f}",
                     f"{a['encode_s_per_image']:.1f} / {b['encode_s_per_image']:.1f}"])
    head = ["quality", "plain bpp", "plain PSNR", f"`--refine {steps}` bpp", f"`--refine {steps}` PSNR",
            "encode s/image (plain / refined)"]
    return (f"`{res['model']}`, {len(res['images'])} Kodak crops of {res['crop']} px, threads {res['threads']}: "
            f"BD-rate of `--refine {steps}` against plain **{pct(res['bd_rate_percent'])}** "
            f"(BD-PSNR {db(res['bd_psnr_db'])}).\n\n" + table(head, rows))


def training_runs() -> str:
    """The settings each shipped file's last run saved (its manifest entry), and its last validation."""
    rows = []
    for name in models_best_first():
        t = manifest()[name]["training"]
        s = t["settings"]
        init = Path(s["init"]).name if s.get("init") else "-"
        v = t.get("validation")
        val = "-" if v is None else (" ".join(f"{x:.3f}" for x in v["bpp"]) + " bpp / "
                                    + " ".join(f"{x:.2f}" for x in v["psnr"]) + " dB")
        rows.append([f"`{name}`", init, f"{t['steps']:,}", f"{s['steps']:,}", f"{s['batch']} x {s['crop']}^2", lr(s["lr"]),
                     str(s["warmup"]), f"{s['decay_frac']:g}", str(s["seed"]),
                     "bfloat16" if s.get("bf16") else "float32", str(s["threads"]), f"{t['hours']:.2f}", val])
    return table(["weights", "`--init`", "steps trained", "`--steps`", "`--batch` x `--crop`", "`--lr`", "`--warmup`",
                  "`--decay-frac`", "`--seed`", "precision", "`--threads`", "hours", "validation at the end "
                  "(6 Kodak images, q 1/3/5/8)"], rows, right_from=2)


GENERATORS = {
    "weights": weights_table,
    "kodak-model": kodak_model,
    "kodak-models": kodak_models,
    "kodak-bd": kodak_bd,
    "kodak-gap": kodak_gap,
    "video": video,
    "video-bd": video_bd,
    "refine": refine,
    "training-runs": training_runs,
}


# --------------------------------------------------------------------------- regions


def render(name: str) -> str:
    kind, *args = name.split()
    if kind not in GENERATORS:
        raise SystemExit(f"unknown generated region {name!r} (known: {', '.join(GENERATORS)})")
    return "\n" + GENERATORS[kind](*args) + "\n"


def regenerate(text: str) -> tuple[str, list[str]]:
    """``text`` with every region rewritten, and the names of those that changed."""
    stale = []

    def sub(m: re.Match) -> str:
        body = render(m["name"])
        if body != m["body"]:
            stale.append(m["name"])
        return f"<!-- generated:{m['name']} -->{body}<!-- /generated:{m['name']} -->"

    return REGION.sub(sub, text), stale


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a region is stale")
    check = p.parse_args(argv).check
    stale_anywhere = False
    for path in documents():
        text = path.read_text(encoding="utf-8")
        if text.count("<!-- generated:") != len(REGION.findall(text)):
            raise SystemExit(f"{path.relative_to(ROOT)}: a generated region has no matching end marker")
        new, stale = regenerate(text)
        for name in stale:
            print(f"{path.relative_to(ROOT)}: {name} is stale")
        if stale and not check:
            path.write_text(new, encoding="utf-8")
        stale_anywhere |= bool(stale)
    if check and stale_anywhere:
        print("run: python benchmarks/docs_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
