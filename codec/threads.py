"""Torch's thread count (and oneDNN) pinned for a block, restored afterwards.

Why: the codecs' outputs must not depend on the thread count. oneDNN's and PyTorch's native
convolutions split their reductions differently with more threads, which changes float32
rounding: a 2572x1740 photo decoded with 1 and 2 threads differed, a file encoded with 2
threads on an AVX512 Xeon failed to decode with 1 (tests/test_image.py), and the video
decoder's frames differed on 176x144 clips. The image pipeline and the video renderer
therefore compute on one thread; the video fit takes the caller's count.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from codec.errors import NeurocodecError


@contextlib.contextmanager
def torch_threads(threads: int | None = 1, onednn: bool | None = None):
    """Run the block with `threads` torch threads (None: leave as is) and oneDNN on/off
    (None: leave as is); both restored on exit."""
    before_threads, before_onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    if threads is not None:
        torch.set_num_threads(int(threads))
    if onednn is not None:
        torch.backends.mkldnn.enabled = onednn
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before_onednn
        torch.set_num_threads(before_threads)


try:  # glibc: free memory of every malloc arena back to the system
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # another C library: nothing to do
    _malloc_trim = None


def give_back_free_memory() -> None:
    """Return the malloc arenas' free pages to the system. Why: each thread of a Pool frees its
    units' temporaries into its own glibc arena, which other threads do not reuse, so without
    this the 8K photo's peak RSS on 2 threads grew to 1.66 GB over its 40 tiles (1.53-1.59 GB with)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def default_threads() -> int:
    """Every core this process may run on (`--threads`' default)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Pool:
    """`threads` threads (None: every core) for independent units of work (bands of an image,
    batches of video frames), each unit on one thread: `map(fn, items)` is [fn(i) for i in
    items], in order, whatever the thread count. The calling thread takes units too, beside
    threads - 1 workers (fewer threads, fewer malloc arenas: a lower peak memory). Torch
    releases the GIL in its operations, so the units run concurrently; the caller holds torch
    at one thread (`torch_threads(1)`) so that each unit computes on its own thread."""

    def __init__(self, threads: int | None = 1):
        threads = default_threads() if threads is None else threads
        if int(threads) < 1:
            raise NeurocodecError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        # torch.set_num_threads in each worker too: it also sets the OpenMP thread count that
        # oneDNN reads, which is per thread and otherwise every core in a new thread
        self._executor = ThreadPoolExecutor(self.threads - 1, initializer=torch.set_num_threads, initargs=(1,)) \
            if self.threads > 1 else None

    def map(self, fn, items) -> list:
        items = list(items)
        if self._executor is None or len(items) < 2:
            return [fn(i) for i in items]
        results, todo, lock = [None] * len(items), iter(range(len(items))), threading.Lock()

        def take_units():
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                results[i] = fn(items[i])

        workers = [self._executor.submit(take_units) for _ in range(min(self.threads, len(items)) - 1)]
        try:
            take_units()
        finally:
            for w in workers:
                w.result()
        return results

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
