"""Exception types of the codec layer.

`NcfError` (malformed files, in `codec.container`) and `EntropyCodingError` (in
`codec.entropy`) are raised by the layers below; everything the pipelines refuse
(bad input images, unknown models, wrong weights, limits) is a `NeurocodecError`.
The CLI prints any of them as one line.
"""


class NeurocodecError(Exception):
    """A request neurocodec refuses, with a message meant for the user."""


class WeightsError(NeurocodecError):
    """Weights missing, corrupted (sha256 mismatch) or not the ones a file was made with."""
