"""Rate-distortion sweeps: `neurocodec eval images` and `neurocodec eval video`.

Measures every codec the same way on the same data:

* bpp from the real encoded bytes (``len(data) * 8 / (H * W)``; video:
  ``/ (H * W * frames)``),
* RGB PSNR (8 bit) per image, averaged over images at each setting (video: per
  frame averaged over frames, plus Y-PSNR, BT.709 luma of the RGB frames),
* MS-SSIM (pytorch-msssim, data range 255; fewer scales for small images),
* encoding and decoding seconds (wall clock, in the measuring process).

Each (codec, setting, input) is one task for a process pool; measured points go to the
result cache (codec.eval.cache) as they arrive; the results are written by codec.eval.report
(JSON with CompressAI-style entries, CSV, BD table against an anchor, RD plot).

Heavy imports (numpy, torch, codecs) happen inside functions so that
``neurocodec --help`` stays fast.
"""
from __future__ import annotations

import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from codec.eval.cache import ResultCache
from codec.eval.metrics import ms_ssim, msssim_db, psnr, y_psnr
from codec.eval.report import finish, load_reference
from codec.files import sha256_file

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp"}


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


def _image_task(task: dict) -> dict:
    """Encode, decode and measure one (codec, setting, image). Runs in a worker."""
    from codec.eval.codecs import image_codec
    from codec.image.pixels import load_rgb

    c = image_codec(task["codec"], task["threads"])
    img = load_rgb(task["path"])
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
        results["ms-ssim-db"] = [msssim_db(p["ms-ssim"]) for p in points]
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


# --------------------------------------------------------------------------- the sweep


def _cache_path(cache, out) -> Path | None:
    """cache True: ``<out>.cache.jsonl`` (none without ``out``); a path; False/None: no cache."""
    if cache is True:
        return Path(out).with_name(Path(out).name + ".cache.jsonl") if out else None
    return Path(cache) if cache else None


@dataclass
class SweepOptions:
    """What both sweeps take besides their input: the settings to measure, the outputs, the
    BD anchor, the process pool and the cache."""
    qualities: dict[str, list[float]] | None = None  # per codec (`parse_qualities`); None: defaults
    out: str | os.PathLike | None = None             # results JSON
    csv_path: str | os.PathLike | None = None        # one row per input and setting
    plot: str | os.PathLike | None = None            # RD plot
    anchor: str | None = None                        # BD anchor: a codec or ref:NAME (default: the first)
    workers: int = 1                                 # processes (1: in this process)
    cache: str | os.PathLike | bool | None = True    # True: <out>.cache.jsonl; a path; None/False: none
    command: str | None = None                       # the command line, recorded in the results
    compressai_dir: str | os.PathLike | None = None  # also one CompressAI results file per codec here
    log: Callable[[str], None] | None = None         # progress messages (None: stderr)

    def __post_init__(self):
        if self.log is None:
            self.log = lambda message: print(message, file=sys.stderr)


def _sweep(names: list[str], codec_of, inputs: list[tuple[dict, dict, dict]], task_fn, opts: SweepOptions,
           *, what: str, desc: str, extra_metrics: Sequence[str] = ()):
    """Measure every (codec, setting, input) not in the cache; returns (rows in task order,
    CompressAI-style entries). `inputs`: (cache-key parts, task fields, row fields) per input."""
    infos = {n: codec_of(n).info() for n in names}
    qualities = opts.qualities or {}
    settings = {n: [codec_of(n).normalize(s) for s in _settings_for(n, codec_of(n).default_settings, qualities)]
                for n in names}
    tasks = []
    for n in names:
        c = codec_of(n)
        for s in settings[n]:
            exact = c.settings(s)
            for key_parts, fields, row_fields in inputs:
                key = ResultCache.key(codec=n, settings=exact, library=c.library, **key_parts)
                tasks.append({"codec": n, "setting": s, **fields, "meta": {
                    "key": key, "codec": n, "setting": s, "settings": exact, **row_fields}})
    opts.log(f"{what} {sum(len(v) for v in settings.values())} settings ({', '.join(names)}), "
             f"{opts.workers} worker(s)")
    rows = _run_tasks(tasks, task_fn, opts.workers, ResultCache(_cache_path(opts.cache, opts.out)), desc, opts.log)
    order = {t["meta"]["key"]: i for i, t in enumerate(tasks)}  # the cache may hold other rows
    rows = sorted((r for r in rows if r["key"] in order), key=lambda r: order[r["key"]])
    return rows, _aggregate(rows, infos, settings, len(inputs), extra_metrics)


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


def evaluate_images(path: str | os.PathLike, codecs: Sequence[str], *, reference: str | os.PathLike | None = "kodak",
                    dataset: str | None = None, limit: int | None = None, threads: int = 1, **options) -> dict:
    """Run the image RD sweep over a folder (or one image) and return the results dict (also
    written to ``out``); ``options`` are `SweepOptions`' fields; ``limit``: the first N images;
    ``threads``: neurocodec's threads per worker (its files do not depend on them, its times do)."""
    from codec.eval.codecs import environment, expand_image_codecs, image_codec

    opts = SweepOptions(**options)
    log = opts.log
    files = list_images(path)
    if limit:
        files = files[:limit]
    names = expand_image_codecs(codecs, log=log)
    if not names:
        raise ValueError("no usable codec among: " + ", ".join(codecs))
    hashes = {str(f): sha256_file(f) for f in files}
    inputs = [({"kind": "image", "input": hashes[str(f)]}, {"path": str(f), "threads": threads},
               {"image": f.name, "image_sha256": hashes[str(f)]}) for f in files]
    rows, entries = _sweep(names, image_codec, inputs, _image_task, opts, what=f"{len(files)} images x",
                           desc="eval images")
    references = load_reference(reference)
    ds = dataset or Path(path).name
    result = {
        "dataset": ds,
        "images": [{"name": f.name, "sha256": hashes[str(f)]} for f in files],
        "protocol": "bpp = 8*len(encoded bytes)/(H*W); PSNR on 8-bit RGB per image, "
                    "averaged over images; MS-SSIM (pytorch-msssim, data range 255) "
                    "averaged over images; times = wall-clock seconds per image in the "
                    "measuring process",
        "command": opts.command,
        "environment": environment(),
        "workers": opts.workers,
        "threads": threads,
        "reference": references.get("path"),
        "codecs": entries,
    }
    columns = ["codec", "setting", "image", "width", "height", "bytes", "bpp", "psnr-rgb", "ms-ssim",
               "encoding_time", "decoding_time", "image_sha256", "settings"]
    return finish(result, entries, rows, columns, opts, references, title=f"{ds}: rate-distortion")


# --------------------------------------------------------------------------- video


def read_video(path: str | os.PathLike, frames: int | None = None, size=None):
    """The source frames of a video sweep: the first ``frames`` frames as ``NxHxWx3 uint8``
    RGB (resized to ``size`` = "WxH" or (w, h) by codec.video.io, the video codec's reader),
    cropped to even sides (yuv420p needs them), and the frame rate as a float."""
    from codec.video.io import read_frames

    arr, fps = read_frames(path, frames, size)
    return arr[:, : arr.shape[1] // 2 * 2, : arr.shape[2] // 2 * 2], float(fps)


def _video_task(task: dict, presets: dict[str, str]) -> dict:
    """Encode, decode and measure one (codec, setting) on the clip. Runs in a worker."""
    import numpy as np

    from codec.eval.codecs import video_codec

    c = video_codec(task["codec"], task["threads"], task.get("epochs"), presets.get(task["codec"]))
    src, fps = read_video(task["path"], task["frames"], task["size"])
    n, h, w = src.shape[:3]
    t0 = time.perf_counter()
    data = c.encode(src, task["setting"], fps=fps)
    t1 = time.perf_counter()
    rec = c.decode(data)
    t2 = time.perf_counter()
    if rec.shape != src.shape:
        raise RuntimeError(f"{c.name}: decoded {rec.shape} != source {src.shape}")
    row = dict(task["meta"])
    row.update({
        "frames": n, "width": w, "height": h, "fps": fps, "bytes": len(data),
        "bpp": len(data) * 8.0 / (w * h * n),
        "kbps": len(data) * 8.0 / 1000.0 / (n / fps) if fps else None,
        "psnr-rgb": float(np.mean([psnr(src[i], rec[i]) for i in range(n)])),
        "psnr-y": float(np.mean([y_psnr(src[i], rec[i]) for i in range(n)])),
        "ms-ssim": float(np.mean([ms_ssim(src[i], rec[i]) for i in range(n)])),
        "encoding_time": t1 - t0, "decoding_time": t2 - t1,
    })
    return row


def evaluate_video(path: str | os.PathLike, codecs: Sequence[str], *, reference: str | os.PathLike | None = None,
                   frames: int | None = None, size: tuple[int, int] | None = None, threads: int = 1,
                   epochs: int | None = None, presets: dict[str, str] | None = None, **options) -> dict:
    """Run the video RD sweep (one process-pool task per codec setting). ``presets``:
    encoder preset per PyAV codec, e.g. ``{"x264": "veryslow"}`` (recorded in the
    settings; the others keep their defaults); ``options`` are `SweepOptions`' fields."""
    from codec.eval.codecs import PRESET_CODECS, environment, expand_video_codecs, video_codec

    opts = SweepOptions(**options)
    log = opts.log
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
    vhash = sha256_file(path)
    name = Path(path).name
    inputs = [({"kind": "video", "input": vhash, "frames": frames, "size": size},
               {"path": str(path), "frames": frames, "size": size, "threads": threads, "epochs": epochs},
               {"video": name, "video_sha256": vhash})]

    def codec_of(m: str):
        return video_codec(m, threads, epochs, presets.get(m))

    rows, entries = _sweep(names, codec_of, inputs, functools.partial(_video_task, presets=presets), opts,
                           what=f"{name}: {n} frames {w}x{h} @ {fps:g} fps,", desc="eval video",
                           extra_metrics=("psnr-y",))
    references = load_reference(reference)
    result = {
        "dataset": f"{name} ({n} frames, {w}x{h})",
        "video": {"name": name, "sha256": vhash, "frames": n, "width": w, "height": h, "fps": fps},
        "protocol": "bpp = 8*len(encoded bytes)/(W*H*frames); PSNR on 8-bit RGB per frame "
                    "averaged over frames; psnr-y = BT.709 luma of the RGB frames; source = "
                    "the decoded input frames (resized with swscale's AREA filter if --size)",
        "command": opts.command,
        "environment": environment(),
        "workers": opts.workers,
        "reference": references.get("path"),
        "codecs": entries,
    }
    columns = ["codec", "setting", "video", "frames", "width", "height", "bytes", "bpp", "kbps", "psnr-rgb",
               "psnr-y", "ms-ssim", "encoding_time", "decoding_time", "settings"]
    return finish(result, entries, rows, columns, opts, references, title=f"{result['dataset']}: rate-distortion")
