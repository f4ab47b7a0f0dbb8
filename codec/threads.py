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

import torch


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
