"""The one exception type of the container layer."""

__all__ = ["NcfError"]


class NcfError(ValueError):
    """A malformed, truncated, foreign, oversized or inconsistent .ncf file.

    This is the only exception :func:`read_container` and :func:`read_header`
    raise for bad input.  The message says what is wrong and, where it helps,
    at which byte offset.  It subclasses :class:`ValueError`.
    """
