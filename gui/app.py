"""The Gradio app: four tabs (image, video, decode, RD results) over the public `codec` API.

Every event is a named API endpoint (`gradio_client` can call /compress_image, /compare_image,
/encode_video, /decode_file). Handlers only touch files inside the app's temporary folder,
which holds Gradio's uploads and cache as well and is deleted when the server stops.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np

import codec

log = logging.getLogger("neurocodec.demo")

MAX_UPLOAD = "25mb"
MAX_IMAGE_PIXELS = 2048 * 2048
MAX_VIDEO_FRAMES = 60
MAX_VIDEO_SIDE = 320          # clips are scaled down to fit this, keeping the aspect ratio
CLASSICAL_IMAGE = ("jpeg", "webp", "avif")
OUTPUT_MAX_AGE_S = 3600       # output files (ours and Gradio's copies) older than this are deleted
ZOOM = 3

_REPO = Path(__file__).resolve().parents[1]
EXAMPLE = _REPO / "examples" / "kodim23.png"
RD_PLOT = _REPO / "docs" / "results" / "kodak_rd.png"
RD_JSON = _REPO / "docs" / "results" / "kodak.json"

VIDEO_LIMITS = (f"Clips up to {MAX_UPLOAD.upper()}; the first frames (at most {MAX_VIDEO_FRAMES}) are encoded, "
                f"scaled down to fit {MAX_VIDEO_SIDE} pixels on the longer side. One video encode runs at a "
                "time; others wait in the queue.")


class _Workspace:
    """The one folder the app reads and writes; user-supplied paths must lie inside it."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.outputs = self.root / "outputs"

    def check(self, path: str | None, what: str) -> Path:
        if not path:
            raise _user_error(f"no {what} given")
        p = Path(path).resolve()
        if not p.is_relative_to(self.root) or not p.is_file():
            raise _user_error(f"{what} is not an uploaded file")
        return p

    def new_dir(self) -> Path:
        """A fresh folder for one request's outputs (Gradio copies them into its cache), after
        deleting those of requests older than OUTPUT_MAX_AGE_S."""
        self.outputs.mkdir(exist_ok=True)
        now = time.time()
        for old in self.outputs.iterdir():
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        d = self.outputs / uuid.uuid4().hex
        d.mkdir()
        return d


def _user_error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def _handler(fn):
    """Turn every failure into a readable message: codec errors verbatim, anything else a
    generic line (the traceback goes to the server log, never to the user)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (codec.NeurocodecError, codec.NcfError, codec.EntropyCodingError) as e:
            raise _user_error(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise _user_error("unexpected internal error (details are in the server log)") from None
    return wrapped


def _image_models() -> list[str]:
    """Image presets whose weights are shipped, the default first."""
    models = [m for m in codec.list_models() if m["kind"] == "image" and m["weights_shipped"]]
    return [m["name"] for m in sorted(models, key=lambda m: not m["default"])]


def _zoomed_crop(original: np.ndarray, recon: np.ndarray, side: int = 128) -> np.ndarray:
    """The most detailed square of the original (left; largest luma spread, where coding
    artefacts show) beside the same square of the reconstruction, enlarged ZOOM times."""
    h, w = original.shape[:2]
    ch, cw = min(side, h), min(side, w)
    luma = original.mean(axis=2)
    corners = [(y, x) for y in range(0, h - ch + 1, max(1, ch // 2)) for x in range(0, w - cw + 1, max(1, cw // 2))]
    y, x = max(corners, key=lambda c: luma[c[0]:c[0] + ch, c[1]:c[1] + cw].std())
    gap = np.full((ch, max(1, cw // 32), 3), 255, np.uint8)
    pair = np.concatenate([original[y:y + ch, x:x + cw], gap, recon[y:y + ch, x:x + cw]], axis=1)
    return pair.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)


def _ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    value = codec.ms_ssim(a, b)
    return None if np.isnan(value) else round(value, 4)


def _round_psnr(value: float) -> float | None:
    return None if np.isinf(value) else round(value, 2)  # JSON has no infinity (lossless)


def build_app(root: Path, threads: int | None = None):
    """The gr.Blocks of the demo; ``root`` is its private temporary folder; every image and
    video decode, and every image encode, computes on ``threads`` threads (None: every core)."""
    ws = _Workspace(root)
    models = _image_models()

    @_handler
    def compress_image(image, model, quality):
        if image is None:
            raise _user_error("upload an image first (or pick the example)")
        if image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
            raise _user_error(f"image is {image.shape[1]}x{image.shape[0]}; the demo accepts up to "
                              f"{MAX_IMAGE_PIXELS // 2**20} megapixels")
        t0 = time.perf_counter()
        data = codec.encode_image(image, model=model, quality=float(quality), threads=threads)
        t1 = time.perf_counter()
        recon = codec.decode_image(data, threads=threads)
        t2 = time.perf_counter()
        h, w = image.shape[:2]
        path = ws.new_dir() / "compressed.ncf"
        path.write_bytes(data)
        metrics = {"model": model, "quality": float(quality), "size": f"{w}x{h}",
                   "file size (bytes)": len(data), "bpp": round(8 * len(data) / (w * h), 4),
                   "PSNR (dB)": _round_psnr(codec.psnr(image, recon)), "MS-SSIM": _ms_ssim(image, recon),
                   "encode time (s)": round(t1 - t0, 3), "decode time (s)": round(t2 - t1, 3)}
        return (image, recon), _zoomed_crop(image, recon), metrics, str(path)

    @_handler
    def compare_image(image, ncf_file):
        if image is None or not ncf_file:
            raise _user_error("compress an image first; the comparison uses the size of its file")
        data = ws.check(ncf_file, "compressed file").read_bytes()
        ours = codec.decode_image(data, threads=threads)
        if ours.shape != image.shape:
            raise _user_error("the compressed file is not of this image; compress it again")
        pixels = image.shape[0] * image.shape[1]
        rows = [("neurocodec", len(data), ours)]
        notes = []
        for name in CLASSICAL_IMAGE:
            try:
                r = codec.encode_classical(image, name, len(data))
            except codec.NeurocodecError as e:  # e.g. imagecodecs built without AVIF
                notes.append(f"{name}: {e}")
                continue
            label = f"{name} ({r['setting_name']} {r['setting']})" + ("" if r["fits"] else ", smallest it makes")
            rows.append((label, len(r["data"]), r["decoded"]))
        gallery, table = [], []
        for label, nbytes, rgb in rows:
            p = _round_psnr(codec.psnr(image, rgb))
            quality_text = "lossless" if p is None else f"{p} dB"
            gallery.append((rgb, f"{label}: {nbytes} bytes, {8 * nbytes / pixels:.3f} bpp, {quality_text}"))
            table.append([label, nbytes, round(8 * nbytes / pixels, 4), p, _ms_ssim(image, rgb)])
        if notes:
            gr.Warning("; ".join(notes))
        return gallery, table

    @_handler
    def encode_video(video, quality, frames, epochs, progress=gr.Progress()):
        src = ws.check(video, "video")
        first, _ = codec.read_frames(src, frames=1)
        h, w = first.shape[1:3]
        scale = min(1.0, MAX_VIDEO_SIDE / max(w, h))
        size = (max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2))  # even, for x264
        frames = min(int(frames), MAX_VIDEO_FRAMES)
        original, fps = codec.read_frames(src, frames=frames, size=size)
        progress(0, desc="fitting the video codec")
        t0 = time.perf_counter()
        data = codec.encode_video(original, fps=fps, quality=float(quality), epochs=int(epochs),  # read once
                                  progress=lambda done, total: progress((done, total), desc="training", unit="epochs"))
        seconds = time.perf_counter() - t0
        progress(1, desc="decoding and comparing with x264")
        decoded = codec.decode_video(data, threads=threads)
        x264 = codec.encode_classical(original, "x264", len(data), fps=float(fps))
        out = ws.new_dir()
        (out / "compressed.ncf").write_bytes(data)
        codec.write_frames(decoded, out / "decoded.mp4", fps)
        n = len(original)
        pixels = n * size[0] * size[1]

        def row(nbytes, frames_out):
            return {"file size (bytes)": nbytes, "bpp": round(8 * nbytes / pixels, 4),
                    "PSNR (dB)": _round_psnr(float(np.mean([codec.psnr(a, b) for a, b in zip(original, frames_out)])))}
        metrics = {"frames": n, "size": f"{size[0]}x{size[1]}", "fps": float(fps), "encode time (s)": round(seconds, 1),
                   "neurocodec": row(len(data), decoded),
                   f"x264 (crf {x264['setting']})": row(len(x264["data"]), x264["decoded"])}
        return str(out / "decoded.mp4"), metrics, str(out / "compressed.ncf")

    @_handler
    def decode_file(ncf_file):
        data = ws.check(ncf_file, ".ncf file").read_bytes()
        info = codec.read_info(data)
        if info["media"] == "video":
            path = ws.new_dir() / "decoded.mp4"
            codec.write_frames(codec.decode_video(data, threads=threads), path, info["fps"] or 30)
            return gr.update(value=None, visible=False), gr.update(value=str(path), visible=True), info
        image = codec.decode_image(data, threads=threads)
        return gr.update(value=image, visible=True), gr.update(value=None, visible=False), info

    with gr.Blocks(title="neurocodec demo", analytics_enabled=False,
                   delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown("# neurocodec\nLearned image and video compression into real `.ncf` files. "
                    "Sizes and bits per pixel are those of the file you can download. "
                    f"Uploads up to {MAX_UPLOAD.upper()}.")
        with gr.Tab("Image"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="numpy", image_mode="RGB", label=f"Image (up to {MAX_IMAGE_PIXELS // 2**20} megapixels)", elem_id="image-in", height=340)
                    if EXAMPLE.is_file():
                        gr.Examples([[str(EXAMPLE)]], inputs=image, label="Example (Kodak kodim23)")
                    model = gr.Dropdown(models, value=models[0] if models else None, label="Model")
                    quality = gr.Slider(1, 12, value=4, step=0.1, label="Quality (1 = smallest file, 12 = best)")
                    compress = gr.Button("Compress", variant="primary", elem_id="compress")
                    ncf_out = gr.File(label="Compressed .ncf")
                with gr.Column():
                    slider = gr.ImageSlider(label="Original | reconstruction (drag the bar)", type="numpy", height=340)
                    crop = gr.Image(label=f"Detail x{ZOOM}: original | reconstruction", type="numpy")
                    metrics = gr.JSON(label="Measured", elem_id="image-metrics")
            compare = gr.Button("Compare with JPEG, WebP and AVIF at the same file size")
            gallery = gr.Gallery(label="Same file size", columns=4)
            table = gr.Dataframe(headers=["codec", "bytes", "bpp", "PSNR (dB)", "MS-SSIM"], label="Same file size")
            compress.click(compress_image, [image, model, quality], [slider, crop, metrics, ncf_out],
                           api_name="compress_image")
            compare.click(compare_image, [image, ncf_out], [gallery, table], api_name="compare_image")

        with gr.Tab("Video"):
            gr.Markdown("Fits the INR video codec to the clip: it trains a small network, which takes "
                        "minutes on a CPU. " + VIDEO_LIMITS)
            with gr.Row():
                with gr.Column():
                    video_in = gr.Video(label="Clip", sources=["upload"])
                    v_quality = gr.Slider(1, 8, value=4, step=0.5, label="Quality")
                    v_frames = gr.Slider(2, MAX_VIDEO_FRAMES, value=16, step=1, label="Frames")
                    v_epochs = gr.Slider(5, 300, value=60, step=5, label="Training epochs (more = better, slower)")
                    v_encode = gr.Button("Encode", variant="primary")
                with gr.Column():
                    video_out = gr.Video(label="Decoded")
                    v_metrics = gr.JSON(label="Measured, beside x264 at the same file size")
                    v_ncf = gr.File(label="Compressed .ncf")
            v_encode.click(encode_video, [video_in, v_quality, v_frames, v_epochs], [video_out, v_metrics, v_ncf],
                           api_name="encode_video", concurrency_limit=1, concurrency_id="video")

        with gr.Tab("Decode"):
            ncf_in = gr.File(label=".ncf file", file_types=[".ncf"])
            decode = gr.Button("Decode", variant="primary")
            with gr.Row():
                decoded_image = gr.Image(label="Decoded image", type="numpy")
                decoded_video = gr.Video(label="Decoded video", visible=False)
                header = gr.JSON(label="Header")
            decode.click(decode_file, [ncf_in], [decoded_image, decoded_video, header], api_name="decode_file")

        with gr.Tab("RD results"):
            _rd_tab()
    return demo


def _rd_tab() -> None:
    """The committed Kodak sweep: plot, BD-rate table and the measured points."""
    if not RD_JSON.is_file():
        gr.Markdown("The Kodak results (docs/results/) are not part of this installation.")
        return
    result = json.loads(RD_JSON.read_text())
    bd = result["bd"]
    gr.Markdown(f"Kodak ({len(result['images'])} images), bpp of real files, RGB PSNR averaged over images. "
                f"BD-rate against {bd['anchor']} (negative = smaller files at the same quality).")
    if RD_PLOT.is_file():
        gr.Image(str(RD_PLOT), label="Kodak rate-distortion", interactive=False)
    gr.Dataframe([[r["codec"], r["bd_rate_psnr_pct"], r["bd_psnr_db"], r["bd_rate_msssim_pct"]] for r in bd["rows"]],
                 headers=["codec", "BD-rate PSNR (%)", "BD-PSNR (dB)", "BD-rate MS-SSIM (%)"], label="BD-rate")
    points = [[c["name"], json.dumps(s, sort_keys=True), round(b, 4), round(p, 2), round(m, 4)]
              for c in result["codecs"]
              for s, b, p, m in zip(c["settings"], c["results"]["bpp"], c["results"]["psnr-rgb"], c["results"]["ms-ssim"])]
    gr.Dataframe(points, headers=["codec", "setting", "bpp", "PSNR (dB)", "MS-SSIM"], label="Measured points",
                 max_height=400)


def launch(host: str = "127.0.0.1", port: int = 7860, share: bool = False, threads: int | None = None) -> None:
    """Serve the demo until interrupted (Ctrl+C or SIGTERM), then delete every file it made;
    ``threads``: what each encode and decode computes on (None: every core)."""
    logging.basicConfig()  # tracebacks of failed requests go to stderr
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind, so the temp folder goes too
    with tempfile.TemporaryDirectory(prefix="neurocodec-demo-") as root:
        os.environ["GRADIO_TEMP_DIR"] = root  # Gradio's uploads and cache live in our folder
        demo = build_app(Path(root), threads)
        demo.queue(default_concurrency_limit=2, max_size=32)
        demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD,
                    ssr_mode=False, show_error=False)
