"""Decode frames/s of the INR video codec (``hnerv``) on one clip.

    python benchmarks/video_decode_speed.py [--clip ../shared/data/video/bunny_1280x720.mp4]
        [--size 320x180] [--frames 132] [--quality 4] [--epochs 2] [--repeat 5]
        [--threads 1,2] [--ncf FILE] [--save FILE]

The clip is encoded once with few epochs (``--epochs``): the architecture, and so the
decoder's work, depends on the frame size, frame count and quality only, not on how long
the network was trained (pass ``--ncf`` to time an existing file instead; ``--save`` keeps
the encoded one). Then ``decode_video(threads=N)`` is timed ``--repeat`` times per thread
count, the counts alternating within each repeat (frames rendered in fixed batches, one batch
per thread: the same frames on any count, docs/video.md), and ``neurocodec decode -o .mkv``
once end to end in a new process (start-up, imports and the FFV1 write included).

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
    p.add_argument("--save", help="keep the encoded .ncf here (for a later --ncf)")
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
        if a.save:
            Path(a.save).write_bytes(data)
        result = {"bytes": len(data), "arch": info["arch"], "decode_video": {}}
        counts = [int(t) for t in a.threads.split(",")]
        times = {n: [] for n in counts}
        for _ in range(a.repeat):
            for threads in counts:
                t0 = time.perf_counter()
                out = video.decode_video(data, threads=threads)
                times[threads].append(time.perf_counter() - t0)
        for threads in counts:
            n = out.shape[0]
            fps = {"best": n / min(times[threads]), "median": n / statistics.median(times[threads])}
            result["decode_video"][threads] = {"frames": n, "seconds": times[threads], **fps}
            print(f"decode_video, threads={threads}: {n} frames, "
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
