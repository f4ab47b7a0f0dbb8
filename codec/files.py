"""File helpers shared by the CLI, the video resume store, evaluation and training: `-` for
stdin/stdout, atomic writes (never a half-written output), never clobbering the input, sha256."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from codec.errors import NeurocodecError

STDIO = "-"


def read_bytes(path: str, max_bytes: int = 2**34) -> bytes:
    if path == STDIO:
        return sys.stdin.buffer.read()
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise NeurocodecError(f"{path} is {size} bytes, above the limit of {max_bytes}")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise NeurocodecError(f"input not found: {path}") from None
    except IsADirectoryError:
        raise NeurocodecError(f"input is a directory: {path}") from None
    except PermissionError:
        raise NeurocodecError(f"permission denied reading {path}") from None


def check_output(path: str, force: bool, inputs: tuple[str, ...] = ()) -> None:
    """Refuse before any work: an existing output without --force, or an output that is an input."""
    if path == STDIO:
        return
    out = Path(path)
    for inp in inputs:
        if inp != STDIO and out.exists() and Path(inp).exists() and os.path.samefile(inp, out):
            raise NeurocodecError(f"output {path} is the input file; refusing to overwrite it")
    if out.exists() and not force:
        raise NeurocodecError(f"output {path} exists; use --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise NeurocodecError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise NeurocodecError(f"output folder {parent} is not writable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic_with(path: str, write) -> None:
    """Let `write(tmp_path)` produce a file or folder beside `path`, then rename it into place."""
    import shutil

    out = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else "."))
    target = tmp / (out.name if out.suffix else "frames")
    try:
        write(target)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(target, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside the target, fsync, then rename: never a half-written
    output. `-` writes to stdout."""
    path = str(path)
    if path == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    out = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_size(text: str | tuple | None) -> tuple[int, int] | None:
    """"WxH" (or a (w, h) pair) -> (w, h), each in 1..16384; None stays None."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            w, h = text.lower().split("x")
            text = (int(w), int(h))
        except ValueError:
            raise NeurocodecError(f"size must be WxH, e.g. 320x180, got {text!r}") from None
    w, h = (int(v) for v in text)
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise NeurocodecError(f"size {w}x{h} outside 1..16384")
    return w, h
