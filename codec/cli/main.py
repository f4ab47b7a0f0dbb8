"""The `neurocodec` command: wires arguments to the public API, nothing more.

Errors print as one line on stderr with a non-zero exit code (traceback with --debug);
outputs are written atomically and never replace an existing file without --force.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from io import BytesIO

from codec import files
from codec.errors import NeurocodecError

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def _cmd_encode(args) -> int:
    from codec.video.io import audio_only, is_video

    files.check_output(args.output, args.force, (args.input,))
    if args.input != files.STDIO and audio_only(args.input):
        raise NeurocodecError(f"{args.input} holds audio only (no video stream): nothing to encode")
    if args.input != files.STDIO and is_video(args.input):
        if args.refine:
            raise NeurocodecError("--refine applies to images; videos take --epochs")
        return _encode_video(args)
    from codec.image import encode_image
    from codec.image.refine import effort_steps

    if args.bpp is not None:
        raise NeurocodecError("--bpp applies to videos; images take --quality")
    quality = 4.0 if args.quality is None else args.quality
    if args.effort is not None and args.refine:
        raise NeurocodecError("give --effort or --refine, not both")
    refine = args.refine if args.effort is None else effort_steps(args.effort)
    limits = _limits(args)
    source = files.read_bytes(args.input, limits.max_file_bytes)
    _check_image(args.input, source)
    t0 = time.perf_counter()
    from tqdm import tqdm

    with tqdm(desc="refine", unit="step", dynamic_ncols=True, file=sys.stderr, disable=not refine) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        data = encode_image(BytesIO(source), model=args.model, quality=quality, limits=limits,
                            refine=refine, progress=progress, threads=args.threads)
    seconds = time.perf_counter() - t0
    if args.verify:
        _verify(data, BytesIO(source), args.model, quality, limits, refine, args.threads)
    files.write_atomic(args.output, data)
    _report(args.output, data, seconds)
    return 0


def _check_image(name: str, data: bytes) -> None:
    """Input that is not a video must be an image; if Pillow cannot identify it either, say
    both (reads the header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(BytesIO(data)):
            pass
    except UnidentifiedImageError:
        what = "standard input" if name == files.STDIO else name
        raise NeurocodecError(f"{what} is neither a video PyAV can decode nor an image Pillow can read") from None


def _encode_video(args) -> int:
    """Fit the INR video codec; its training state lives in OUT.resume/ until the file is written."""
    import shutil
    from pathlib import Path

    import numpy as np

    from codec.video import decode_video, encode_video

    if args.output == files.STDIO:
        raise NeurocodecError("video encoding needs an output file (its resume state is kept beside it)")
    resume_dir = Path(args.output + ".resume")
    if resume_dir.exists() and not args.resume:
        shutil.rmtree(resume_dir)
    t0 = time.perf_counter()
    recon = []  # the encoder's reconstruction of the groups fitted in this run (the last ones)
    try:
        data = encode_video(args.input, bpp=args.bpp, quality=args.quality, frames=args.frames,
                            size=args.size, epochs=args.epochs, effort=args.effort or "default", model=args.model,
                            group=args.group, resume_dir=resume_dir, threads=args.threads, on_group=lambda _, frames: recon.append(frames))
    except KeyboardInterrupt:
        print(f"neurocodec: interrupted; rerun the same command with --resume to continue "
              f"(state in {resume_dir})", file=sys.stderr)
        return EXIT_INTERRUPTED
    seconds = time.perf_counter() - t0
    if args.verify:
        decoded = decode_video(data, _limits(args), threads=args.threads)
        fitted = np.concatenate(recon) if recon else decoded[:0]
        if not np.array_equal(decoded[len(decoded) - len(fitted):], fitted):
            raise NeurocodecError("verification failed: the decoded video differs from the encoder's "
                                  "reconstruction; nothing written")
    files.write_atomic(args.output, data)
    shutil.rmtree(resume_dir, ignore_errors=True)
    _report(args.output, data, seconds)
    return 0


def _report(output: str, data: bytes, seconds: float) -> None:
    if output == files.STDIO:
        return
    import codec

    info = codec.read_info(data)
    frames = f" x {info['frames']} frames" if info["media"] == "video" else ""
    print(f"{output}: {info['width']}x{info['height']}{frames} {info['model']} q={info['quality']:g} "
          f"{len(data)} bytes, {info['bpp']:.4f} bpp, {seconds:.2f} s", file=sys.stderr)


def _verify(data: bytes, source, model: str | None, quality: float, limits, refine: int = 0,
            threads: int | None = None) -> None:
    """Decode what was just written and compare with the encoder's own reconstruction."""
    import numpy as np

    from codec.image import decode_image, reconstruct

    expected = reconstruct(source, model, quality, limits=limits, refine=refine, threads=threads)
    if not np.array_equal(decode_image(data, limits, threads=threads), expected):
        raise NeurocodecError("verification failed: the decoded image differs from the encoder's "
                              "reconstruction (non-deterministic model arithmetic?); nothing written")


def _cmd_decode(args) -> int:
    from pathlib import Path

    from codec.container import MediaKind, read_header

    files.check_output(args.output, args.force, (args.input,))
    limits = _limits(args)
    data = files.read_bytes(args.input, limits.max_file_bytes)
    if read_header(data, limits).media == MediaKind.VIDEO:
        return _decode_video(data, args.output, limits, args.threads)
    from codec.image import decode_image, save_image

    rgb = decode_image(data, limits, threads=args.threads)
    fmt = "PNG" if args.output == files.STDIO else _image_format(Path(args.output).suffix)
    files.write_atomic(args.output, save_image(rgb, fmt))
    return 0


def _decode_video(data: bytes, output: str, limits, threads: int | None) -> int:
    """Frames to .y4m/.mkv (lossless), .mp4 (x264, for viewing) or a folder of PNGs, atomically."""
    from codec.video import decode_video, video_fps_of, write_frames

    if output == files.STDIO:
        raise NeurocodecError("decoding a video needs an output file or folder (.y4m, .mkv, .mp4, dir/)")
    frames = decode_video(data, limits, threads=threads)
    files.write_atomic_with(output, lambda tmp: write_frames(frames, tmp, video_fps_of(data, limits)))
    return 0


def _image_format(suffix: str) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(suffix.lower())
    if fmt is None:
        raise NeurocodecError(f"unknown output image type {suffix!r}; use .png (lossless), .bmp, .tif, .ppm, ...")
    return fmt


def _cmd_info(args) -> int:
    import codec

    limits = _limits(args)
    info = codec.read_info(files.read_bytes(args.input, limits.max_file_bytes), limits)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for key, value in info.items():
            if value is not None:  # e.g. no fps for an image
                print(f"{key:13s} {value}")
    return 0


def _cmd_models(args) -> int:
    from codec.zoo import install_release, list_models

    if args.models_command == "install":
        for release in args.releases:
            print(f"installed {release}: {install_release(release)}")
        return 0
    models = list_models()
    if args.json:
        print(json.dumps(models, indent=1))
        return 0
    print(f"{'name':20s} {'kind':6s} {'likelihood':10s} {'weights':8s} description")
    for m in models:
        mark = "yes" if m["weights_shipped"] else "no"
        name = m["name"] + (" *" if m["default"] else "")
        print(f"{name:20s} {m['kind']:6s} {m['likelihood']:10s} {mark:8s} {m['description']}")
        for r in m["releases"] if args.all else []:
            where = "installed" if r["installed"] else f"in commit {r['commit'][:12]}" if "commit" in r else "missing"
            print(f"    {r['release']}  shipped {r['shipped']}  {where}")
    print("* default model" + ("" if args.all else "; --all lists every weight release"), file=sys.stderr)
    return 0


def _cmd_demo(args) -> int:
    from gui import launch

    if args.threads is not None and args.threads < 1:
        raise NeurocodecError(f"threads must be >= 1, got {args.threads}")
    launch(args.host, args.port, args.share, args.threads)
    return 0


def _limits(args):
    """The reader's resource limits, with the --max-* flags applied."""
    import dataclasses

    from codec.container import DEFAULT_LIMITS

    given = {"max_pixels": args.max_pixels, "max_frames": args.max_frames, "max_file_bytes": args.max_bytes}
    return dataclasses.replace(DEFAULT_LIMITS, **{k: v for k, v in given.items() if v is not None})


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    from codec.container import DEFAULT_LIMITS as d

    g = p.add_argument_group("limits (what a file or an input image may declare; refused before decoding)")
    g.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help=f"pixels per image or frame (default {d.max_pixels})")
    g.add_argument("--max-frames", type=int, default=None, metavar="N", help=f"frames of a video (default {d.max_frames})")
    g.add_argument("--max-bytes", type=int, default=None, metavar="N", help=f"input file size (default {d.max_file_bytes})")


def _ncf_reading_command(sub, name: str, text: str, func) -> argparse.ArgumentParser:
    """A subcommand that reads an .ncf file: its input argument and the reader's limit flags."""
    p = sub.add_parser(name, help=text)
    p.add_argument("input", help=".ncf file or - for stdin")
    _add_limit_flags(p)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurocodec",
        description="Learned image compression into real .ncf files, and back.",
        epilog="Examples:\n  neurocodec encode photo.png -o photo.ncf --quality 4\n"
               "  neurocodec decode photo.ncf -o photo.png\n  neurocodec info photo.ncf",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"neurocodec {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="compress an image or a video into an .ncf file")
    p.add_argument("input", help="image file (PNG, JPEG, WebP, TIFF, ...; - for stdin) or video file (MP4, MKV, Y4M, ...)")
    p.add_argument("-o", "--output", required=True, help=".ncf file to write, or - for stdout")
    p.add_argument("--model", default=None, help="model preset (see `neurocodec models`; default: the shipped default)")
    p.add_argument("--quality", type=float, default=None,
                   help="images: 1 (smallest file) to 12 (best quality; above 6 a DCT residual layer tops up "
                        "the learned one, past its 36 dB ceiling), videos: 1 to 8; fractions allowed (default 4)")
    p.add_argument("--verify", action="store_true", help="decode the result and fail if it differs from the encoder's reconstruction")
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="images: optimize the latents for this image for STEPS steps before coding "
                        "(stochastic Gumbel annealing; smaller files at the same quality, encoding "
                        "about 1.3 x STEPS times slower, decoding unchanged; try 25)")
    p.add_argument("--effort", choices=["fast", "default", "max"], default=None,
                   help="how hard the encoder works (decoding is the same for every level). Images: fast "
                        "and default are the plain encode (about 2 s for a 768x512 photo on one core), "
                        "max is --refine 50 (about 2.5 %% smaller files at the same quality, about 60x "
                        "slower: 2 minutes for that photo). Videos: 25, 100 or 300 training epochs for up to "
                        "30 frames (carphone, 30 frames, one thread: about 26 s, 89 s and 270 s), fewer for "
                        "longer clips, so that the time grows with half the frames beyond 30 (docs/video.md)")
    v = p.add_argument_group("video (the input is detected as a video by PyAV)")
    v.add_argument("--bpp", type=float, default=None, help="target bits per pixel instead of --quality")
    v.add_argument("--frames", type=int, default=None, help="encode only the first N frames")
    v.add_argument("--size", default=None, help="resize frames to WxH first, e.g. 320x180")
    v.add_argument("--epochs", type=int, default=None, help="training epochs of the first group of frames "
                   "(overrides --effort)")
    v.add_argument("--group", type=int, default=None, help="frames per group: one network is fitted to a "
                   "group, later groups code its changes (default: the whole clip up to 150 frames, fewer for "
                   "large frames, in equal groups; smaller groups use less memory and lose quality)")
    v.add_argument("--resume", action="store_true", help="continue an interrupted video encode from OUT.resume/")
    p.add_argument("--threads", type=int, default=None,
                   help="threads to compute on (default: every core); an image's file is the same for "
                        "every count; a video's fit runs on that many torch threads (1 is much faster "
                        "when other jobs share the cores)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output file")
    _add_limit_flags(p)
    p.set_defaults(func=_cmd_encode)

    p = _ncf_reading_command(sub, "decode", "decode an .ncf file to an image or a video", _cmd_decode)
    p.add_argument("-o", "--output", required=True,
                   help="image: type from the extension (.png recommended; - writes PNG to stdout); "
                        "video: .y4m or .mkv (lossless), .mp4 (x264, for viewing) or a folder for PNG frames")
    p.add_argument("--threads", type=int, default=None,
                   help="threads to compute on (default: every core; the pixels are the same for every count)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output file")

    p = _ncf_reading_command(sub, "info", "show the header of an .ncf file", _cmd_info)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("models", help="list the model presets and their weight releases; install older releases",
                       description="List the model presets and whether weights are installed. A weight release "
                                   "is named MODEL@ID (ID: the first 16 hex digits of its sha256, recorded in every "
                                   ".ncf file); `--model MODEL` means its newest release.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--all", action="store_true", help="also list every release ever shipped, installed or not")
    p.set_defaults(func=_cmd_models, models_command=None)
    i = p.add_subparsers(dest="models_command", metavar="install").add_parser(
        "install", help="restore older weight releases from the git history of this checkout (see --all)")
    i.add_argument("releases", nargs="+", metavar="MODEL@ID", help="releases to install (sha256-checked)")

    p = sub.add_parser("demo", help="start the web demo (Gradio) in this process")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    p.add_argument("--threads", type=int, default=None,
                   help="threads each encode and decode computes on (default: every core)")
    p.set_defaults(func=_cmd_demo)

    from codec.cli import evaluate, train

    evaluate.add_parser(sub)
    train.add_parser(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neurocodec")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `neurocodec models | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("neurocodec: interrupted; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # every error becomes one line unless --debug
        if args.debug:
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"neurocodec: error: {message}", file=sys.stderr)
        return EXIT_ERROR

