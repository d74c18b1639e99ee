"""The one exception type of the pack.

Every bad input raises ZStarError with a message that names the input and says what would be
accepted, so a ComfyUI user sees an actionable line instead of a tensor-shape traceback. It is
a ValueError so callers that already catch ValueError keep working.
"""
import operator


class ZStarError(ValueError):
    """A bad input to Z*; the message names the input and the accepted values."""


def as_int(value, name: str) -> int:
    """Accept Python/numpy/0-d tensor integers (anything with __index__), not bools or floats."""
    if isinstance(value, bool):
        raise ZStarError(f"{name}: must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ZStarError(f"{name}: must be an integer, got {value!r}") from None
