"""Rate-distortion evaluation: ``neurocodec eval images`` and ``neurocodec eval video``.

Measures every codec the same way on the same data:

* bpp from the real encoded bytes (``len(data) * 8 / (H * W)``; video:
  ``/ (H * W * frames)``),
* RGB PSNR (8 bit) per image, averaged over images at each setting (video: per
  frame averaged over frames, plus Y-PSNR, BT.709 luma of the RGB frames),
* MS-SSIM (pytorch-msssim, data range 255; fewer scales for small images),
* encoding and decoding seconds (wall clock, in the measuring process).

Results: a JSON whose per-codec entries follow CompressAI's results format
(``{"name", "description", "results": {"bpp", "psnr-rgb", "ms-ssim",
"encoding_time", "decoding_time"}}``, plus ``settings`` and ``library``), a CSV
with one row per image and setting, BD-rate / BD-PSNR against an anchor
(Bjontegaard, PCHIP; :mod:`codec.bdrate`), and an RD plot with published
reference curves (``codec/data/kodak_published.json``).

Every measured point is appended to a JSON-lines cache keyed by codec, exact
settings, library versions and the image's SHA-256, so an interrupted sweep
resumes where it stopped when the same command is run again.

Heavy imports (numpy, torch, codecs) happen inside functions so that
``neurocodec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = [
    "register_cli",
    "evaluate_images",
    "evaluate_video",
    "bd_table",
    "load_reference",
    "plot_rd",
    "psnr",
    "ms_ssim",
    "y_psnr",
    "parse_qualities",
    "ResultCache",
]

CACHE_VERSION = 1
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp"}
DEFAULT_IMAGE_CODECS = "jpeg,webp,avif,jpegxl,jpeg2000,neurocodec"
DEFAULT_VIDEO_CODECS = "x264,x265,svtav1"
_DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_REFERENCES = {
    "kodak": _DATA_DIR / "kodak_published.json",
    "uvg": _DATA_DIR / "uvg_published.json",
}


# --------------------------------------------------------------------------- metrics


def psnr(a, b, peak: float = 255.0) -> float:
    """PSNR in dB between two uint8 arrays of the same shape (inf when identical)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _luma(x):
    """BT.709 luma (full range, 0..255) of an ...x3 RGB array, as CompressAI's rgb2ycbcr."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return 0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]


def y_psnr(a, b) -> float:
    """PSNR of the BT.709 luma of two RGB arrays."""
    return psnr(_luma(a), _luma(b))


_MS_SSIM_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]


def ms_ssim(a, b) -> float:
    """MS-SSIM (pytorch-msssim, data range 255) of two HxWx3 uint8 images.

    pytorch-msssim needs the smaller side > (win - 1) * 2**4 = 160 for its five
    scales. Smaller images use fewer scales (the first weights, renormalized),
    and for very small images a smaller Gaussian window; images smaller than
    3 pixels give ``nan``.
    """
    import numpy as np
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim
    from pytorch_msssim import ssim as _ssim

    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    side = min(a.shape[0], a.shape[1])
    # float32: several times faster than float64 on CPUs, the same MS-SSIM to about 1e-7
    x = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(np.array(b, copy=True)).permute(2, 0, 1)[None].float()
    win = 11
    # levels such that side > (win - 1) * 2 ** (levels - 1)
    levels = 5
    while levels > 1 and side <= (win - 1) * 2 ** (levels - 1):
        levels -= 1
    with torch.no_grad():
        if levels == 5:
            return float(_ms_ssim(x, y, data_range=255.0, size_average=True, win_size=win))
        if levels >= 2:
            # pytorch-msssim asserts on the 5-scale minimum even with fewer weights;
            # run its algorithm here with the first `levels` weights.
            w = torch.tensor(_MS_SSIM_WEIGHTS[:levels], dtype=torch.float32)
            w = w / w.sum()
            return float(_ms_ssim_levels(x, y, w, win))
        win = min(11, side if side % 2 == 1 else side - 1)
        if win < 3:
            return math.nan
        return float(_ssim(x, y, data_range=255.0, size_average=True, win_size=win))


def _ms_ssim_levels(x, y, weights, win_size: int):
    import torch
    import torch.nn.functional as F
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    win = _fspecial_gauss_1d(win_size, 1.5).to(x.dtype).repeat([x.shape[1], 1, 1, 1])
    mcs = []
    levels = weights.shape[0]
    for i in range(levels):
        ssim_pc, cs = _ssim(x, y, win=win, data_range=255.0, size_average=False,
                            K=(0.01, 0.03))
        if i < levels - 1:
            mcs.append(torch.relu(cs))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    ssim_pc = torch.relu(ssim_pc)
    vals = torch.stack(mcs + [ssim_pc], dim=0)
    return torch.prod(vals ** weights.view(-1, 1, 1), dim=0).mean()


def _msssim_db(v: float) -> float:
    if v is None or not math.isfinite(v):
        return math.nan
    return -10.0 * math.log10(max(1.0 - v, 1e-12))


# --------------------------------------------------------------------------- cache


class ResultCache:
    """Append-only JSON-lines cache of measured points, keyed by a hash of
    (codec, exact settings, library versions, input hash). A truncated last line
    (an interrupted write) is ignored."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.rows: dict[str, dict] = {}
        if self.path and self.path.exists():
            with open(self.path, "r", encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and "key" in row:
                        self.rows[row["key"]] = row
        self._fh = None

    @staticmethod
    def key(**parts: Any) -> str:
        blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = row
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # start a fresh line if the previous run died mid-line
            needs_nl = False
            if self.path.exists() and self.path.stat().st_size > 0:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    needs_nl = f.read(1) != b"\n"
            self._fh = open(self.path, "a", encoding="utf-8")
            if needs_nl:
                self._fh.write("\n")
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- settings


def _parse_values(text: str) -> list[float]:
    """``"1,2,3"`` or ``"10:90:10"`` (start:stop:step, stop included) or a mix."""
    out: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            bits = [float(p) for p in part.split(":")]
            if len(bits) == 2:
                bits.append(1.0)
            start, stop, step = bits
            if step <= 0:
                raise ValueError(f"bad range {part!r}: step must be > 0")
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            out.extend(round(start + i * step, 10) for i in range(max(n, 0)))
        else:
            out.append(float(part))
    return out


def parse_qualities(specs: Sequence[str] | None) -> dict[str, list[float]]:
    """Parse ``--qualities`` values: ``CODEC=LIST`` for one codec (``neurocodec``
    covers every ``neurocodec:*`` model), or a bare ``LIST`` for all codecs
    (key ``"*"``). LIST is ``a,b,c`` and/or ``start:stop:step``."""
    out: dict[str, list[float]] = {}
    for spec in specs or []:
        for item in spec.split(";"):
            item = item.strip()
            if not item:
                continue
            if "=" in item:
                name, values = item.split("=", 1)
                out[name.strip().lower()] = _parse_values(values)
            else:
                out["*"] = _parse_values(item)
    return out


def _settings_for(name: str, defaults: Sequence[float], q: dict[str, list[float]]) -> list[float]:
    low = name.lower()
    if low in q:
        return list(q[low])
    if low.startswith("neurocodec:") and "neurocodec" in q:
        return list(q["neurocodec"])
    if "*" in q:
        return list(q["*"])
    return list(defaults)


# --------------------------------------------------------------------------- workers


def _worker_init() -> None:
    os.environ.setdefault("SVT_LOG", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # pragma: no cover
        pass


def _load_rgb(path: str):
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def _image_task(task: dict) -> dict:
    """Encode, decode and measure one (codec, setting, image). Runs in a worker."""
    from codec.eval_codecs import image_codec

    c = image_codec(task["codec"])
    img = _load_rgb(task["path"])
    h, w = img.shape[:2]
    t0 = time.perf_counter()
    data = c.encode(img, task["setting"])
    t1 = time.perf_counter()
    rec = c.decode(data)
    t2 = time.perf_counter()
    if rec.shape != img.shape:
        raise RuntimeError(f"{c.name}: decoded shape {rec.shape} != source {img.shape} "
                           f"for {task['path']}")
    row = dict(task["meta"])
    row.update({
        "width": w,
        "height": h,
        "bytes": len(data),
        "bpp": len(data) * 8.0 / (h * w),
        "psnr-rgb": psnr(img, rec),
        "ms-ssim": ms_ssim(img, rec),
        "encoding_time": t1 - t0,
        "decoding_time": t2 - t1,
    })
    return row


def _run_tasks(tasks: list[dict], fn: Callable[[dict], dict], workers: int, cache: ResultCache,
               desc: str, log: Callable[[str], None]) -> list[dict]:
    """Run tasks not in the cache with a process pool (or in-process for 1 worker),
    caching each result as it arrives; returns all rows (cached + new)."""
    from tqdm import tqdm

    rows: list[dict] = []
    todo: list[dict] = []
    for t in tasks:
        hit = cache.get(t["meta"]["key"])
        if hit is not None:
            rows.append(hit)
        else:
            todo.append(t)
    if rows:
        log(f"{len(rows)} of {len(tasks)} points from the cache"
            + (f" ({cache.path})" if cache.path else ""))
    if not todo:
        return rows
    bar = tqdm(total=len(todo), desc=desc, unit="pt", file=sys.stderr,
               disable=not sys.stderr.isatty() and os.environ.get("NEUROCODEC_PROGRESS") != "1")
    failures: list[str] = []

    def accept(row: dict) -> None:
        cache.put(row)
        rows.append(row)
        bar.update(1)

    try:
        if workers <= 1:
            os.environ.setdefault("SVT_LOG", "1")  # leave torch's threads alone in-process
            for t in todo:
                try:
                    accept(fn(t))
                except Exception as exc:  # one bad point must not lose the sweep
                    failures.append(f"{t['meta']['codec']} {t['meta'].get('setting')} "
                                    f"{t['meta'].get('image', '')}: {exc}")
                    bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = mp.get_context("spawn")  # torch and fork do not mix
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                     initializer=_worker_init) as pool:
                futs = {pool.submit(fn, t): t for t in todo}
                try:
                    for fut in as_completed(futs):
                        t = futs[fut]
                        try:
                            accept(fut.result())
                        except Exception as exc:
                            failures.append(f"{t['meta']['codec']} {t['meta'].get('setting')} "
                                            f"{t['meta'].get('image', '')}: {exc}")
                            bar.update(1)
                except KeyboardInterrupt:
                    for f in futs:
                        f.cancel()
                    raise
    except KeyboardInterrupt:
        log(f"interrupted: {len(rows)} points are in the cache; run the same command "
            "again to resume")
        raise
    finally:
        bar.close()
        cache.close()
    for f in failures:
        log(f"failed: {f}")
    return rows


# --------------------------------------------------------------------------- aggregation


def _mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return math.nan
    return sum(vals) / len(vals)


def _aggregate(rows: list[dict], infos: dict[str, dict], settings: dict[str, list[float]],
               n_inputs: int, extra_metrics: Sequence[str] = ()) -> list[dict]:
    """Average per (codec, setting) over inputs; CompressAI-style entries sorted by bpp."""
    entries = []
    for name, info in infos.items():
        points = []
        for s in settings[name]:
            sel = [r for r in rows if r["codec"] == name and r["setting"] == s]
            if not sel:
                continue
            if len(sel) < n_inputs:
                # incomplete point (failures): report, but do not average a subset silently
                complete = False
            else:
                complete = True
            pt = {
                "setting": s,
                "settings": sel[0]["settings"],
                "n": len(sel),
                "complete": complete,
                "bpp": _mean(r["bpp"] for r in sel),
                "psnr-rgb": _mean(r["psnr-rgb"] for r in sel),
                "ms-ssim": _mean(r["ms-ssim"] for r in sel),
                "encoding_time": _mean(r["encoding_time"] for r in sel),
                "decoding_time": _mean(r["decoding_time"] for r in sel),
            }
            for m in extra_metrics:
                pt[m] = _mean(r[m] for r in sel)
            points.append(pt)
        if not points:
            continue
        points.sort(key=lambda p: p["bpp"])
        metrics = ["bpp", "psnr-rgb", "ms-ssim", *extra_metrics, "encoding_time",
                   "decoding_time"]
        results = {m: [p[m] for p in points] for m in metrics}
        results["ms-ssim-rgb"] = list(results["ms-ssim"])  # the key CompressAI's plot reads
        results["ms-ssim-db"] = [_msssim_db(p["ms-ssim"]) for p in points]
        entries.append({
            "name": name,
            "description": info["description"],
            "library": info["library"],
            "setting_name": info["setting_name"],
            "settings": [p["settings"] for p in points],
            "n": [p["n"] for p in points],
            "incomplete": [p["setting"] for p in points if not p["complete"]],
            "results": results,
        })
    return entries


# --------------------------------------------------------------------------- references


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


# --------------------------------------------------------------------------- BD table


def _curve_of(entry: dict) -> dict:
    r = entry["results"]
    return {"bpp": r["bpp"], "psnr": r["psnr-rgb"], "ms-ssim": r.get("ms-ssim")}


def bd_table(entries: list[dict], anchor: str,
             references: dict[str, dict] | None = None) -> dict[str, Any]:
    """BD-rate (PSNR and MS-SSIM in dB) and BD-PSNR of every measured codec
    against ``anchor`` (a measured codec, or a reference curve as ``ref:NAME``
    or plain ``NAME`` when no measured codec has that name)."""
    from codec.bdrate import bd_psnr, bd_rate

    curves = {e["name"]: _curve_of(e) for e in entries}
    refs = references or {}
    if anchor in curves:
        a = curves[anchor]
        anchor_kind = "measured"
    else:
        ref_name = anchor[4:] if anchor.startswith("ref:") else anchor
        if ref_name not in refs:
            raise ValueError(f"anchor {anchor!r} is neither a measured codec "
                             f"({', '.join(curves) or 'none'}) nor a reference curve")
        a = refs[ref_name]
        anchor_kind = "reference"

    def safe(fn, *args):
        try:
            v = fn(*args)
        except ValueError:
            return None
        return None if v is None or not math.isfinite(v) else round(float(v), 4)

    rows = []
    for name, c in curves.items():
        row: dict[str, Any] = {"codec": name}
        row["bd_rate_psnr_pct"] = safe(bd_rate, a["bpp"], a["psnr"], c["bpp"], c["psnr"])
        row["bd_psnr_db"] = safe(bd_psnr, a["bpp"], a["psnr"], c["bpp"], c["psnr"])
        if a.get("ms-ssim") and c.get("ms-ssim"):
            qa = [_msssim_db(v) for v in a["ms-ssim"]]
            qc = [_msssim_db(v) for v in c["ms-ssim"]]
            row["bd_rate_msssim_pct"] = safe(bd_rate, a["bpp"], qa, c["bpp"], qc)
            row["bd_msssim_db"] = safe(bd_psnr, a["bpp"], qa, c["bpp"], qc)
        else:
            row["bd_rate_msssim_pct"] = None
            row["bd_msssim_db"] = None
        rows.append(row)
    return {
        "anchor": anchor,
        "anchor_kind": anchor_kind,
        "method": "Bjontegaard, piecewise cubic (PCHIP) interpolation of log10(bpp), "
                  "integrated over the overlapping quality range; MS-SSIM in dB "
                  "(-10 log10(1 - MS-SSIM)); null = curves do not overlap",
        "rows": rows,
    }


def format_bd_table(bd: dict) -> str:
    def f(v, unit):
        return "n/a" if v is None else f"{v:+.2f}{unit}"

    head = ["codec", "BD-rate PSNR", "BD-PSNR", "BD-rate MS-SSIM", "BD-MS-SSIM"]
    body = [[r["codec"], f(r["bd_rate_psnr_pct"], " %"), f(r["bd_psnr_db"], " dB"),
             f(r["bd_rate_msssim_pct"], " %"), f(r["bd_msssim_db"], " dB")]
            for r in bd["rows"]]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [f"BD metrics against {bd['anchor']} ({bd['anchor_kind']}; negative BD-rate = "
           "fewer bits):", line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    return "\n".join(out)


# --------------------------------------------------------------------------- plot


def plot_rd(entries: list[dict], path: str | os.PathLike, *, title: str = "",
            references: dict[str, dict] | None = None, xlabel: str = "bpp") -> None:
    """PSNR and MS-SSIM (dB) against bpp; measured curves solid, references dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
    xmax = max((max(e["results"]["bpp"]) for e in entries), default=None)
    xmin = min((min(e["results"]["bpp"]) for e in entries), default=None)
    cmap = plt.get_cmap("tab10")
    for i, e in enumerate(entries):
        r = e["results"]
        kw = dict(marker="o", markersize=4, linewidth=2, color=cmap(i % 10), label=e["name"])
        axes[0].plot(r["bpp"], r["psnr-rgb"], **kw)
        axes[1].plot(r["bpp"], [_msssim_db(v) for v in r["ms-ssim"]], **kw)
    refs = references or {}
    rcmap = plt.get_cmap("tab20b")
    for j, (name, c) in enumerate(refs.items()):
        kw = dict(linestyle="--", linewidth=1, marker=".", markersize=3,
                  color=rcmap(j % 20), alpha=0.8, label=f"{name} (published)")
        axes[0].plot(c["bpp"], c["psnr"], **kw)
        if c.get("ms-ssim"):
            axes[1].plot(c["bpp"], [_msssim_db(v) for v in c["ms-ssim"]], **kw)
    for ax, ylabel in zip(axes, ["PSNR RGB (dB)", "MS-SSIM (dB, -10 log10(1 - MS-SSIM))"]):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if xmax is not None:
            ax.set_xlim(0, xmax * 1.05)
    if xmax is not None:
        # y range from the measured curves so that far-away references do not squash them
        for k, ax in enumerate(axes):
            ys = [v for e in entries for v in (e["results"]["psnr-rgb"] if k == 0 else
                  [_msssim_db(m) for m in e["results"]["ms-ssim"]]) if math.isfinite(v)]
            if ys:
                pad = 0.05 * (max(ys) - min(ys) + 1)
                ax.set_ylim(min(ys) - pad, max(ys) + pad)
    handles: dict[str, Any] = {}
    for ax in axes:
        for hdl, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, hdl)
    axes[1].legend(list(handles.values()), list(handles.keys()), loc="center left",
                   bbox_to_anchor=(1.01, 0.5), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- output


def _write_json(path: str | os.PathLike, obj: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")

    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(clean(obj), f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _write_csv(path: str | os.PathLike, rows: list[dict], columns: Sequence[str]) -> None:
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
        _write_json(path, {"name": e["name"], "description": e["description"],
                           "results": e["results"], "settings": e["settings"],
                           "library": e["library"]})
        out.append(path)
    return out


def _default_cache_path(out: str | os.PathLike | None) -> Path | None:
    if not out:
        return None
    out = Path(out)
    return out.with_name(out.name + ".cache.jsonl")


def _finish(result: dict, entries: list[dict], *, anchor: str | None, references: dict,
            out, plot, title: str, log, compressai_dir=None) -> dict:
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
        _write_json(out, result)
        log(f"wrote {out}")
    if compressai_dir:
        files = write_compressai_files(result, compressai_dir)
        log(f"wrote {len(files)} CompressAI results files to {compressai_dir}")
    if plot and entries:
        plot_rd(entries, plot, title=title, references=references.get("curves"))
        log(f"wrote {plot}")
    return result


# --------------------------------------------------------------------------- images


def list_images(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    if not files:
        raise FileNotFoundError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTS))})")
    return files


def evaluate_images(path: str | os.PathLike, codecs: Sequence[str], *,
                    qualities: dict[str, list[float]] | None = None,
                    out: str | os.PathLike | None = None,
                    csv_path: str | os.PathLike | None = None,
                    plot: str | os.PathLike | None = None,
                    anchor: str | None = None,
                    workers: int = 1,
                    reference: str | os.PathLike | None = "kodak",
                    cache: str | os.PathLike | None | bool = True,
                    dataset: str | None = None,
                    limit: int | None = None,
                    command: str | None = None,
                    compressai_dir: str | os.PathLike | None = None,
                    log: Callable[[str], None] | None = None) -> dict:
    """Run the image RD sweep and return the results dict (also written to ``out``).

    ``cache``: True = ``<out>.cache.jsonl``, a path, or False/None for no cache.
    """
    from codec.eval_codecs import environment, expand_image_codecs, image_codec

    log = log or (lambda m: print(m, file=sys.stderr))
    files = list_images(path)
    if limit:
        files = files[:limit]
    names = expand_image_codecs(codecs, log=log)
    if not names:
        raise ValueError("no usable codec among: " + ", ".join(codecs))
    q = qualities or {}
    infos = {n: image_codec(n).info() for n in names}
    settings = {n: [image_codec(n).normalize(s) for s in
                    _settings_for(n, image_codec(n).default_settings, q)] for n in names}
    hashes = {str(f): _file_sha256(f) for f in files}
    cache_path = _default_cache_path(out) if cache is True else (cache or None)
    rc = ResultCache(cache_path)
    tasks = []
    for n in names:
        c = image_codec(n)
        for s in settings[n]:
            st = c.settings(s)
            for f in files:
                key = ResultCache.key(kind="image", codec=n, settings=st, library=c.library,
                                      input=hashes[str(f)])
                tasks.append({"codec": n, "setting": s, "path": str(f), "meta": {
                    "key": key, "codec": n, "setting": s, "settings": st, "image": f.name,
                    "image_sha256": hashes[str(f)]}})
    log(f"{len(files)} images x {sum(len(v) for v in settings.values())} settings "
        f"({', '.join(names)}), {workers} worker(s)")
    rows = _run_tasks(tasks, _image_task, workers, rc, "eval images", log)
    # keep only rows of this run's tasks (the cache may hold others)
    keys = {t["meta"]["key"] for t in tasks}
    rows = [r for r in rows if r["key"] in keys]
    order = {t["meta"]["key"]: i for i, t in enumerate(tasks)}
    rows.sort(key=lambda r: order[r["key"]])
    entries = _aggregate(rows, infos, settings, len(files))
    references = load_reference(reference)
    ds = dataset or Path(path).name
    result = {
        "dataset": ds,
        "images": [{"name": f.name, "sha256": hashes[str(f)]} for f in files],
        "protocol": "bpp = 8*len(encoded bytes)/(H*W); PSNR on 8-bit RGB per image, "
                    "averaged over images; MS-SSIM (pytorch-msssim, data range 255) "
                    "averaged over images; times = wall-clock seconds per image in the "
                    "measuring process",
        "command": command,
        "environment": environment(),
        "workers": workers,
        "reference": references.get("path"),
        "codecs": entries,
    }
    if csv_path:
        _write_csv(csv_path, rows, ["codec", "setting", "image", "width", "height", "bytes",
                                    "bpp", "psnr-rgb", "ms-ssim", "encoding_time",
                                    "decoding_time", "image_sha256", "settings"])
        log(f"wrote {csv_path}")
    return _finish(result, entries, anchor=anchor, references=references, out=out, plot=plot,
                   title=f"{ds}: rate-distortion", log=log,
                   compressai_dir=compressai_dir)


# --------------------------------------------------------------------------- video


def read_video(path: str | os.PathLike, frames: int | None = None,
               size: tuple[int, int] | None = None):
    """Decode the first ``frames`` frames of a video to ``NxHxWx3 uint8`` RGB
    (optionally resized to ``size = (W, H)`` by swscale, bicubic), and its fps."""
    import numpy as np

    try:
        import av
    except ImportError as exc:
        raise RuntimeError("reading videos needs PyAV (pip install av)") from exc
    out = []
    with av.open(str(path)) as inp:
        stream = inp.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for frame in inp.decode(stream):
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1],
                                       interpolation="BICUBIC")
            out.append(frame.to_ndarray(format="rgb24"))
            if frames and len(out) >= frames:
                break
    if not out:
        raise ValueError(f"{path}: no video frames")
    arr = np.stack(out)
    if arr.shape[1] % 2 or arr.shape[2] % 2:
        # yuv420p needs even sizes
        arr = arr[:, : arr.shape[1] // 2 * 2, : arr.shape[2] // 2 * 2]
    return arr, fps


def _video_task(task: dict) -> dict:
    import numpy as np

    from codec.eval_codecs import video_codec

    c = video_codec(task["codec"], task["threads"], task.get("epochs"), task.get("preset"))
    src, fps = read_video(task["path"], task["frames"], task["size"])
    n, h, w = src.shape[:3]
    t0 = time.perf_counter()
    data = c.encode(src, task["setting"], fps=fps,
                    source={"path": task["path"], "frames": task["frames"],
                            "size": task["size"]})
    t1 = time.perf_counter()
    rec = c.decode(data)
    t2 = time.perf_counter()
    if rec.shape != src.shape:
        raise RuntimeError(f"{c.name}: decoded {rec.shape} != source {src.shape}")
    p = [psnr(src[i], rec[i]) for i in range(n)]
    py = [y_psnr(src[i], rec[i]) for i in range(n)]
    ms = [ms_ssim(src[i], rec[i]) for i in range(n)]
    row = dict(task["meta"])
    row.update({
        "frames": n, "width": w, "height": h, "fps": fps, "bytes": len(data),
        "bpp": len(data) * 8.0 / (w * h * n),
        "kbps": len(data) * 8.0 / 1000.0 / (n / fps) if fps else None,
        "psnr-rgb": float(np.mean(p)), "psnr-y": float(np.mean(py)),
        "ms-ssim": float(np.mean(ms)),
        "encoding_time": t1 - t0, "decoding_time": t2 - t1,
    })
    return row


def evaluate_video(path: str | os.PathLike, codecs: Sequence[str], *,
                   frames: int | None = None,
                   size: tuple[int, int] | None = None,
                   qualities: dict[str, list[float]] | None = None,
                   out: str | os.PathLike | None = None,
                   csv_path: str | os.PathLike | None = None,
                   plot: str | os.PathLike | None = None,
                   anchor: str | None = None,
                   workers: int = 1,
                   threads: int = 1,
                   epochs: int | None = None,
                   presets: dict[str, str] | None = None,
                   reference: str | os.PathLike | None = None,
                   cache: str | os.PathLike | None | bool = True,
                   command: str | None = None,
                   compressai_dir: str | os.PathLike | None = None,
                   log: Callable[[str], None] | None = None) -> dict:
    """Run the video RD sweep (one process-pool task per codec setting). ``presets``:
    encoder preset per PyAV codec, e.g. ``{"x264": "veryslow"}`` (recorded in the
    settings; the others keep their defaults)."""
    from codec.eval_codecs import PRESET_CODECS, environment, expand_video_codecs, video_codec

    log = log or (lambda m: print(m, file=sys.stderr))
    os.environ.setdefault("SVT_LOG", "1")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    presets = {k.lower(): str(v) for k, v in (presets or {}).items()}
    unknown = sorted(set(presets) - set(PRESET_CODECS))
    if unknown:
        raise ValueError(f"presets for {', '.join(unknown)}: only "
                         f"{', '.join(PRESET_CODECS)} take a preset")
    names = expand_video_codecs(codecs, threads, log=log, epochs=epochs, presets=presets)
    if not names:
        raise ValueError("no usable video codec among: " + ", ".join(codecs))
    src, fps = read_video(path, frames, size)
    n, h, w = src.shape[:3]
    q = qualities or {}

    def codec_of(m: str):
        return video_codec(m, threads, epochs, presets.get(m))

    infos = {m: codec_of(m).info() for m in names}
    settings = {m: [codec_of(m).normalize(s) for s in
                    _settings_for(m, codec_of(m).default_settings, q)]
                for m in names}
    vhash = _file_sha256(path)
    rc = ResultCache(_default_cache_path(out) if cache is True else (cache or None))
    tasks = []
    for m in names:
        c = codec_of(m)
        for s in settings[m]:
            st = c.settings(s)
            key = ResultCache.key(kind="video", codec=m, settings=st, library=c.library,
                                  input=vhash, frames=frames, size=size)
            tasks.append({"codec": m, "setting": s, "path": str(path), "frames": frames,
                          "size": size, "threads": threads, "epochs": epochs,
                          "preset": presets.get(m), "meta": {
                              "key": key, "codec": m, "setting": s, "settings": st,
                              "video": Path(path).name, "video_sha256": vhash}})
    log(f"{Path(path).name}: {n} frames {w}x{h} @ {fps:g} fps, "
        f"{len(tasks)} settings ({', '.join(names)}), {workers} worker(s)")
    rows = _run_tasks(tasks, _video_task, workers, rc, "eval video", log)
    keys = {t["meta"]["key"] for t in tasks}
    rows = [r for r in rows if r["key"] in keys]
    entries = _aggregate(rows, infos, settings, 1, extra_metrics=("psnr-y",))
    references = load_reference(reference)
    result = {
        "dataset": f"{Path(path).name} ({n} frames, {w}x{h})",
        "video": {"name": Path(path).name, "sha256": vhash, "frames": n, "width": w,
                  "height": h, "fps": fps},
        "protocol": "bpp = 8*len(encoded bytes)/(W*H*frames); PSNR on 8-bit RGB per frame "
                    "averaged over frames; psnr-y = BT.709 luma of the RGB frames; source = "
                    "the decoded input frames (resized with swscale bicubic if --size)",
        "command": command,
        "environment": environment(),
        "workers": workers,
        "reference": references.get("path"),
        "codecs": entries,
    }
    if csv_path:
        _write_csv(csv_path, rows, ["codec", "setting", "video", "frames", "width", "height",
                                    "bytes", "bpp", "kbps", "psnr-rgb", "psnr-y", "ms-ssim",
                                    "encoding_time", "decoding_time", "settings"])
        log(f"wrote {csv_path}")
    return _finish(result, entries, anchor=anchor, references=references, out=out, plot=plot,
                   title=f"{result['dataset']}: rate-distortion", log=log,
                   compressai_dir=compressai_dir)


# --------------------------------------------------------------------------- CLI


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, got {text!r}") from None


def _codec_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _presets(text: str) -> dict[str, str]:
    """``"x264=veryslow,x265=slow"`` -> ``{"x264": "veryslow", "x265": "slow"}``."""
    out = {}
    for item in _codec_list(text):
        name, sep, preset = item.partition("=")
        if not sep or not name.strip() or not preset.strip():
            raise argparse.ArgumentTypeError(f"preset must be CODEC=PRESET, got {item!r}")
        out[name.strip().lower()] = preset.strip()
    return out


def _add_common(p: argparse.ArgumentParser, default_codecs: str, default_ref: str) -> None:
    p.add_argument("--codecs", type=_codec_list, default=_codec_list(default_codecs),
                   help=f"comma-separated codecs (default {default_codecs})")
    p.add_argument("--qualities", nargs="+", metavar="SPEC",
                   help="settings to sweep: CODEC=LIST for one codec (neurocodec covers all "
                        "its models) or LIST for all; LIST = a,b,c or start:stop:step, "
                        "e.g. --qualities jpeg=10:90:10 neurocodec=1:8:1")
    p.add_argument("--out", required=True, help="results JSON (CompressAI-style entries)")
    p.add_argument("--csv", help="CSV with one row per input and setting")
    p.add_argument("--plot", help="RD plot (PNG/PDF/SVG)")
    p.add_argument("--anchor", help="codec (or ref:NAME, a reference curve) for BD-rate; "
                                    "default: the first codec")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="processes (default: half the CPU cores)")
    p.add_argument("--reference", default=default_ref,
                   help=f"published curves for the plot/anchor: FILE, kodak, uvg or none "
                        f"(default {default_ref})")
    p.add_argument("--compressai-dir", metavar="DIR",
                   help="also write one CompressAI results file per codec into DIR")
    p.add_argument("--cache", default=None,
                   help="JSON-lines cache for resuming (default OUT.cache.jsonl; none = off)")


def _cache_arg(value: str | None):
    if value is None:
        return True
    if value.lower() == "none":
        return None
    return value


def _command_line() -> str:
    import shlex

    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "neurocodec"
    if prog in ("neurocodec", "cli.py", "__main__.py", "-c"):
        return shlex.join(["neurocodec", *sys.argv[1:]])
    return shlex.join(sys.argv)


def _cmd_images(args: argparse.Namespace) -> int:
    evaluate_images(
        args.dir, args.codecs, qualities=parse_qualities(args.qualities), out=args.out,
        csv_path=args.csv, plot=args.plot, anchor=args.anchor, workers=args.workers,
        reference=args.reference, cache=_cache_arg(args.cache), dataset=args.dataset,
        limit=args.limit, command=_command_line(), compressai_dir=args.compressai_dir,
    )
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    evaluate_video(
        args.file, args.codecs, frames=args.frames, size=args.size,
        qualities=parse_qualities(args.qualities), out=args.out, csv_path=args.csv,
        plot=args.plot, anchor=args.anchor, workers=args.workers, threads=args.threads,
        epochs=args.epochs, presets=args.preset,
        reference=args.reference, cache=_cache_arg(args.cache),
        command=_command_line(), compressai_dir=args.compressai_dir,
    )
    return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``eval images`` and ``eval video`` to the CLI's sub-parsers."""
    p = subparsers.add_parser("eval", help="rate-distortion evaluation against classical codecs",
                              description="Measure RD curves (bpp, PSNR, MS-SSIM, times) of "
                                          "neurocodec and classical codecs, with BD-rate, "
                                          "plots, and a resumable cache.")
    sub = p.add_subparsers(dest="eval_command", metavar="{images,video}")
    sub.required = True

    pi = sub.add_parser("images", help="RD sweep over a folder of images (e.g. Kodak)")
    pi.add_argument("dir", help="folder of images (or one image)")
    _add_common(pi, DEFAULT_IMAGE_CODECS, "kodak")
    pi.add_argument("--dataset", help="dataset name in the JSON (default: the folder name)")
    pi.add_argument("--limit", type=int, help="only the first N images (sorted by name)")
    pi.set_defaults(func=_cmd_images)

    pv = sub.add_parser("video", help="RD sweep of one video (x264, x265, SVT-AV1, neurocodec)")
    pv.add_argument("file", help="video file (decoded frames are the source)")
    _add_common(pv, DEFAULT_VIDEO_CODECS, "none")
    pv.add_argument("--frames", type=int, help="first N frames")
    pv.add_argument("--size", type=_size, help="resize to WxH before coding")
    pv.add_argument("--threads", type=int, default=1,
                    help="encoder threads per process (default 1; recorded in the settings)")
    pv.add_argument("--epochs", type=int,
                    help="neurocodec video: training epochs per first group (default: the "
                         "codec's default; recorded in the settings)")
    pv.add_argument("--preset", type=_presets, default={}, metavar="CODEC=PRESET[,...]",
                    help="encoder presets, e.g. x264=veryslow,x265=slow (default: medium for "
                         "x264/x265, 8 for svtav1; recorded in the settings)")
    pv.set_defaults(func=_cmd_video)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m codec.evaluate images ...``)."""
    parser = argparse.ArgumentParser(prog="neurocodec")
    sub = parser.add_subparsers(dest="command")
    register_cli(sub)
    args = parser.parse_args(["eval", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
