"""Exception types of the codec layer.

`NcfError` (malformed files, in `codec.container`) and `EntropyCodingError` (in
`codec.entropy`) are raised by the layers below; everything the pipelines refuse
(bad input images, unknown models, wrong weights, limits) is a `NeurocodecError`.
The decoders (`decode_image`, `decode_video`) raise `NcfError` for any malformed,
corrupt or inconsistent file, a coded stream that does not decode included, and
`NeurocodecError` for a valid file they refuse; nothing else (fuzzed: tests/test_fuzz.py).
The CLI prints any of them as one line.
"""


class NeurocodecError(Exception):
    """A request neurocodec refuses, with a message meant for the user."""


class WeightsError(NeurocodecError):
    """Weights missing, corrupted (sha256 mismatch) or not the ones a file was made with."""
