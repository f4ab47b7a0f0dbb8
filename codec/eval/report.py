"""What a sweep writes: the results JSON (CompressAI-style entries), the per-point CSV,
CompressAI results files, the BD table and the plot; and the published reference curves
it compares against (codec/data/*_published.json)."""
from __future__ import annotations

import csv
import math
import json
import os
from pathlib import Path
from typing import Any, Sequence

from codec.eval.bd import bd_table, format_bd_table
from codec.eval.plot import plot_rd
from codec.files import write_atomic

_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SHIPPED_REFERENCES = {
    "kodak": _DATA_DIR / "kodak_published.json",
    "uvg": _DATA_DIR / "uvg_published.json",
}


def load_reference(spec: str | os.PathLike | None) -> dict[str, Any]:
    """Load published reference curves.

    ``spec`` is a path, ``"kodak"`` / ``"uvg"`` (the files shipped in
    ``codec/data``), or ``None`` / ``"none"`` for no references. Returns
    ``{"dataset": str, "path": str, "curves": {name: {"description", "source",
    "bpp": [...], "psnr": [...], "ms-ssim": [...] | None}}}``. Understands the
    ``{"curves": {name: {"points": [...]}}}`` layout and the
    ``{"methods": {name: {"rd_*": [{bpp, psnr}...]}}}`` layout.
    """
    if spec is None or str(spec).lower() == "none":
        return {"dataset": None, "path": None, "curves": {}}
    path = SHIPPED_REFERENCES.get(str(spec).lower(), Path(spec))
    if not Path(path).exists():
        raise FileNotFoundError(f"reference file {spec} not found")
    with open(path, "r", encoding="utf-8") as f:
        raw = json.load(f)
    curves: dict[str, dict] = {}

    def add(name: str, desc: str, source: str, pts: list) -> None:
        pts = [p for p in pts if isinstance(p, dict) and "bpp" in p and "psnr" in p]
        if len(pts) < 2:
            return
        pts = sorted(pts, key=lambda p: p["bpp"])
        ms = [p.get("ms_ssim", p.get("ms-ssim")) for p in pts]
        curves[name] = {
            "description": desc,
            "source": source,
            "bpp": [float(p["bpp"]) for p in pts],
            "psnr": [float(p["psnr"]) for p in pts],
            "ms-ssim": [float(m) for m in ms] if all(m is not None for m in ms) else None,
        }

    if isinstance(raw.get("curves"), dict):
        for name, c in raw["curves"].items():
            add(name, c.get("description", name), c.get("source", ""), c.get("points", []))
        dataset = raw.get("dataset")
    elif isinstance(raw.get("methods"), dict):
        for name, m in raw["methods"].items():
            rd = [k for k, v in m.items() if k.startswith("rd_") and isinstance(v, list)]
            for k in rd:
                label = name if len(rd) == 1 else f"{name} [{k[3:]}]"
                add(label, label, str(m.get("rd_source", m.get("source", ""))), m[k])
        notes = raw.get("_notes") or []
        dataset = notes[0] if notes else None
    else:
        raise ValueError(f"{path}: unknown reference layout (expected 'curves' or 'methods')")
    return {"dataset": dataset, "path": str(path), "curves": curves}


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """`obj` as indented JSON, atomically; non-finite floats as null / "inf" / "-inf"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    write_atomic(path, (json.dumps(clean(obj), indent=1) + "\n").encode())


def write_csv(path: str | os.PathLike, rows: list[dict], columns: Sequence[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            out = []
            for c in columns:
                v = r.get(c)
                if isinstance(v, float):
                    v = f"{v:.6g}"
                elif isinstance(v, dict):
                    v = json.dumps(v, sort_keys=True)
                out.append(v)
            w.writerow(out)


def write_compressai_files(result: dict, directory: str | os.PathLike) -> list[Path]:
    """One CompressAI results file per codec (``{"name", "description", "results"}``),
    e.g. for ``python -m compressai.utils.plot --results-file DIR/*.json``."""
    d = Path(directory)
    out = []
    for e in result.get("codecs", []):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in e["name"])
        path = d / f"{safe}.json"
        write_json(path, {"name": e["name"], "description": e["description"],
                           "results": e["results"], "settings": e["settings"],
                           "library": e["library"]})
        out.append(path)
    return out


def finish(result: dict, entries: list[dict], rows: list[dict], csv_columns: Sequence[str], opts, references: dict,
           title: str) -> dict:
    """Write what a sweep's options ask for (CSV of `rows`, results JSON, CompressAI files,
    plot) and add the BD table against the anchor (default: the first codec) to `result`."""
    log, anchor, out, plot, compressai_dir = opts.log, opts.anchor, opts.out, opts.plot, opts.compressai_dir
    if opts.csv_path:
        write_csv(opts.csv_path, rows, csv_columns)
        log(f"wrote {opts.csv_path}")
    anchor_name = anchor
    if anchor_name is None and entries:
        anchor_name = entries[0]["name"]
    if anchor_name is not None and entries:
        try:
            bd = bd_table(entries, anchor_name, references.get("curves"))
            result["bd"] = bd
            log(format_bd_table(bd))
        except ValueError as exc:
            log(f"no BD table: {exc}")
    if out:
        write_json(out, result)
        log(f"wrote {out}")
    if compressai_dir:
        files = write_compressai_files(result, compressai_dir)
        log(f"wrote {len(files)} CompressAI results files to {compressai_dir}")
    if plot and entries:
        plot_rd(entries, plot, title=title, references=references.get("curves"))
        log(f"wrote {plot}")
    return result
