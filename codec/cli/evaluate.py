"""`neurocodec eval images|video`: argument wiring for codec.eval.sweep."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from codec.errors import NeurocodecError
from codec.files import parse_size

DEFAULT_IMAGE_CODECS = "jpeg,webp,avif,jpegxl,jpeg2000,neurocodec"
DEFAULT_VIDEO_CODECS = "x264,x265,svtav1"


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except NeurocodecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    from codec.eval.sweep import evaluate_images, parse_qualities
    from codec.threads import default_threads

    if args.threads is not None and args.threads < 1:
        raise NeurocodecError(f"threads must be >= 1, got {args.threads}")
    evaluate_images(
        args.dir, args.codecs, qualities=parse_qualities(args.qualities), out=args.out,
        csv_path=args.csv, plot=args.plot, anchor=args.anchor, workers=args.workers,
        reference=args.reference, cache=_cache_arg(args.cache), dataset=args.dataset,
        limit=args.limit, command=_command_line(), compressai_dir=args.compressai_dir,
        threads=args.threads or max(1, default_threads() // max(1, args.workers)),
    )
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    from codec.eval.sweep import evaluate_video, parse_qualities

    evaluate_video(
        args.file, args.codecs, frames=args.frames, size=args.size,
        qualities=parse_qualities(args.qualities), out=args.out, csv_path=args.csv,
        plot=args.plot, anchor=args.anchor, workers=args.workers, threads=args.threads,
        epochs=args.epochs, presets=args.preset,
        reference=args.reference, cache=_cache_arg(args.cache),
        command=_command_line(), compressai_dir=args.compressai_dir,
    )
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
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
    pi.add_argument("--threads", type=int, default=None,
                    help="neurocodec's threads per worker (default: the cores divided among the workers; "
                         "the files do not depend on it; recorded in the results)")
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
