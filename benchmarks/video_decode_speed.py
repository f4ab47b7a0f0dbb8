"""Decode frames/s of the INR video codec (``hnerv``) on one clip.

    python benchmarks/video_decode_speed.py [--clip ../shared/data/video/bunny_1280x720.mp4]
        [--size 320x180] [--frames 132] [--quality 4] [--epochs 2] [--repeat 5]
        [--threads 1,2] [--ncf FILE]

The clip is encoded once with few epochs (``--epochs``): the architecture, and so the
decoder's work, depends on the frame size, frame count and quality only, not on how long
the network was trained (pass ``--ncf`` to time an existing file instead). Then
``decode_video`` is timed ``--repeat`` times per torch thread count (the network itself
always runs on one thread, see docs/video.md, Determinism), and ``neurocodec decode -o
.mkv`` once end to end in a new process (start-up, imports and the FFV1 write included).

Prints a line per measurement and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from codec import video


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="../shared/data/video/bunny_1280x720.mp4")
    p.add_argument("--size", default="320x180")
    p.add_argument("--frames", type=int, default=132)
    p.add_argument("--quality", type=float, default=4.0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--ncf", help="time this .ncf instead of encoding the clip")
    a = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="video-decode-speed-") as tmp:
        path = Path(a.ncf) if a.ncf else Path(tmp) / "clip.ncf"
        if not a.ncf:
            w, h = (int(v) for v in a.size.lower().split("x"))
            path.write_bytes(video.encode_video(a.clip, frames=a.frames, size=(w, h),
                                                quality=a.quality, epochs=a.epochs,
                                                progress=False, threads=1))
        data = path.read_bytes()
        info = video.video_info(data)
        print(f"{path.name}: {len(data)} bytes, arch {info['arch']}", flush=True)
        result = {"bytes": len(data), "arch": info["arch"], "decode_video": {}}
        for threads in (int(t) for t in a.threads.split(",")):
            torch.set_num_threads(threads)
            times = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                out = video.decode_video(data)
                times.append(time.perf_counter() - t0)
            n = out.shape[0]
            fps = {"best": n / min(times), "median": n / statistics.median(times)}
            result["decode_video"][threads] = {"frames": n, "seconds": times, **fps}
            print(f"decode_video, torch threads {threads}: {n} frames, "
                  f"{fps['median']:.1f} frames/s median, {fps['best']:.1f} best", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "codec.cli", "decode", str(path), "-o",
                        str(Path(tmp) / "out.mkv"), "-f"], check=True)
        dt = time.perf_counter() - t0
        result["cli_mkv_seconds"] = dt
        print(f"neurocodec decode -> .mkv, new process: {dt:.2f} s "
              f"({result['decode_video'][threads]['frames'] / dt:.1f} frames/s)", flush=True)
    result["loadavg"] = open("/proc/loadavg").read().split()[:3] if os.path.exists(
        "/proc/loadavg") else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
