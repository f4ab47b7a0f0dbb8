"""Video files <-> (T, H, W, 3) uint8 RGB frames: the one frame reader (PyAV) that the video
codec, evaluation and the web demo use, and the writer of decoded videos.

Resizing (`size`) is swscale's AREA filter, applied while converting to RGB, for every kind
of source (video file, folder of PNGs, frames in memory), so a clip gives the same frames to
the INR codec and to the classical codecs it is measured against.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from codec.errors import NeurocodecError
from codec.files import parse_size

DEFAULT_FPS = Fraction(30)  # for PNG folders, frames in memory and files that do not say


def is_video(path) -> bool:
    """True when PyAV opens ``path`` as a video (not a still image, not a PNG directory)."""
    import av

    p = Path(path)
    if not p.is_file():
        return False
    try:
        with av.open(str(p)) as f:
            if not f.streams.video:
                return False
            name = f.format.name or ""
            if name.endswith("_pipe") or name.startswith("image2"):
                return False
            if name == "gif":
                s = f.streams.video[0]
                return (s.frames or 0) > 1
            return True
    except Exception:
        return False


def audio_only(path) -> bool:
    """True for a file PyAV opens that has audio streams and no video stream (so that the
    command line says so instead of trying it as an image)."""
    import av

    try:
        with av.open(str(path)) as f:
            return bool(f.streams.audio) and not f.streams.video
    except Exception:
        return False


def _png_files(path: Path) -> list[Path]:
    return sorted(q for q in path.iterdir() if q.suffix.lower() == ".png")


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    """A PyAV frame as HxWx3 uint8 RGB, resized to `size` (w, h) with swscale's AREA filter."""
    if size and (frame.width, frame.height) != size:
        return np.ascontiguousarray(frame.to_ndarray(width=size[0], height=size[1], format="rgb24",
                                                     interpolation="AREA"))
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def _array_frames(frames: np.ndarray):
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
        raise NeurocodecError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    for fr in frames:
        yield av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")


def _png_folder_frames(path: Path):
    import av
    from PIL import Image

    files = _png_files(path)
    if not files:
        raise NeurocodecError(f"no .png frames in directory {path}")
    for q in files:
        with Image.open(q) as im:
            yield av.VideoFrame.from_image(im.convert("RGB"))


def _file_frames(path: Path):
    import av

    if not path.is_file():
        raise NeurocodecError(f"input not found: {path}")
    try:
        container = av.open(str(path))
    except Exception as e:
        raise NeurocodecError(f"cannot open video {path}: {e}".splitlines()[0]) from None
    with container:
        if not container.streams.video:
            raise NeurocodecError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                n += 1
                yield frame
        except av.error.FFmpegError as e:
            raise NeurocodecError(f"cannot decode video {path}: {e}".splitlines()[0]) from None
        if n == 0:
            raise NeurocodecError(f"{path} contains no decodable frames")


def iter_frames(source, frames: int | None = None, size=None):
    """Yield HxWx3 uint8 RGB frames of `source` (a video file, a directory of PNGs, or
    (T, H, W, 3) uint8 frames), the first `frames` of them, resized to `size` ("WxH" or (w, h))."""
    wh = parse_size(size)
    if frames is not None and frames < 1:
        raise NeurocodecError(f"frames must be >= 1, got {frames}")
    if isinstance(source, np.ndarray):
        decoded = _array_frames(source)
    elif Path(source).is_dir():
        decoded = _png_folder_frames(Path(source))
    else:
        decoded = _file_frames(Path(source))
    first = None
    for i, frame in enumerate(decoded):
        if frames is not None and i >= frames:
            decoded.close()
            return
        rgb = _to_rgb(frame, wh)
        first = first or rgb.shape
        if rgb.shape != first:
            decoded.close()
            raise NeurocodecError(f"frame size changes at frame {i} ({first[1]}x{first[0]} -> "
                                  f"{rgb.shape[1]}x{rgb.shape[0]}); pass a size (--size WxH) to resize all")
        yield rgb


def video_fps(path) -> Fraction:
    """Frame rate of a video file (DEFAULT_FPS for PNG directories, arrays or when unknown)."""
    import av

    if isinstance(path, np.ndarray) or Path(path).is_dir():
        return DEFAULT_FPS
    p = Path(path)
    try:
        with av.open(str(p)) as f:
            s = f.streams.video[0]
            r = s.average_rate or s.guessed_rate
            if r and r > 0:
                return Fraction(r.numerator, r.denominator).limit_denominator(1_000_000)
    except Exception:
        pass
    return DEFAULT_FPS


def read_frames(path, frames: int | None = None, size=None) -> tuple[np.ndarray, Fraction]:
    """All (or the first ``frames``) frames as a (T, H, W, 3) uint8 array, and the frame rate."""
    arr = np.stack(list(iter_frames(path, frames, size)))
    return arr, video_fps(path)


def as_fraction(fps) -> Fraction:
    """A positive frame rate as a Fraction (floats: the nearest with a denominator <= 1,001,000)."""
    if isinstance(fps, Fraction):
        r = fps
    else:
        r = Fraction(fps).limit_denominator(1001 * 1000)
    if r <= 0:
        raise NeurocodecError(f"frame rate must be positive, got {fps}")
    return r


def _write_y4m(frames: np.ndarray, f, fps: Fraction) -> None:
    """YUV4MPEG2, 4:4:4, full-range BT.601 (8-bit YCbCr: RGB round-trips within +-1)."""
    t, h, w, _ = frames.shape
    f.write(f"YUV4MPEG2 W{w} H{h} F{fps.numerator}:{fps.denominator} Ip A1:1 C444 XCOLORRANGE=FULL\n".encode())
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    off = np.array([0.0, 128.0, 128.0])
    for fr in frames:
        yuv = fr.reshape(-1, 3).astype(np.float64) @ m.T + off
        yuv = np.clip(np.floor(yuv + 0.5), 0, 255).astype(np.uint8).reshape(h, w, 3)
        f.write(b"FRAME\n")
        f.write(np.ascontiguousarray(yuv.transpose(2, 0, 1)).tobytes())


def _bgr0_frame(av, fr: np.ndarray):
    """An RGB frame as a `bgr0` frame, filled by NumPy: the bytes swscale's rgb24 -> bgr0 gives
    (padding byte 255), 6-7x faster (it was 0.9 s of a 1.4 s `.mkv` write of 132 frames at 320x180)."""
    h, w, _ = fr.shape
    vf = av.VideoFrame(w, h, "bgr0")
    plane = vf.planes[0]
    buf = np.full((h, plane.line_size), 255, np.uint8)
    buf[:, :4 * w].reshape(h, w, 4)[..., :3] = fr[..., ::-1]
    plane.update(buf)
    return vf


def write_frames(frames: np.ndarray, path, fps=30) -> None:
    """Write (T, H, W, 3) uint8 frames by extension: .y4m, .mkv (FFV1, lossless RGB),
    .mp4 (x264 CRF 18, for viewing), or a directory (frame_00000.png ...; lossless)."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise NeurocodecError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    fps = as_fraction(fps)
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".y4m":
        with open(p, "wb") as f:
            _write_y4m(frames, f, fps)
        return
    if ext in (".mkv", ".mp4"):
        t, h, w, _ = frames.shape
        with av.open(str(p), "w") as out:
            if ext == ".mkv":
                s = out.add_stream("ffv1", rate=fps)
                s.pix_fmt = "bgr0"
            else:
                s = out.add_stream("libx264", rate=fps)
                s.pix_fmt = "yuv420p" if (w % 2 == 0 and h % 2 == 0) else "yuv444p"
                s.options = {"crf": "18", "preset": "medium"}
            s.width, s.height = w, h
            for fr in frames:
                vf = _bgr0_frame(av, fr) if ext == ".mkv" else \
                    av.VideoFrame.from_ndarray(fr, format="rgb24").reformat(format=s.pix_fmt)
                for pkt in s.encode(vf):
                    out.mux(pkt)
            for pkt in s.encode():
                out.mux(pkt)
        return
    if ext == "" or p.is_dir():
        from PIL import Image

        p.mkdir(parents=True, exist_ok=True)
        for i, fr in enumerate(frames):
            Image.fromarray(fr).save(p / f"frame_{i:05d}.png")
        return
    raise NeurocodecError(f"unsupported output {path}: use .y4m, .mkv, .mp4 or a directory")
