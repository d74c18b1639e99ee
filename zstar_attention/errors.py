"""The one exception type of the pack.

Every bad input raises ZStarError with a message that names the input and says what would be
accepted, so a ComfyUI user sees an actionable line instead of a tensor-shape traceback. It is
a ValueError so callers that already catch ValueError keep working.
"""
import math
import operator
from numbers import Real


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


def check_strength(value, name: str) -> float:
    """A strength (λ, λ_style, a row scale): one finite number ≥ 0, as a float.

    The one check for every "finite number ≥ 0" in the pack: Python and numpy numbers and
    single-element tensors are accepted; bools, strings, NaN, infinities and negatives are not.
    """
    if hasattr(value, "numel") and hasattr(value, "item"):  # a tensor, without importing torch here
        if value.numel() != 1:
            raise ZStarError(f"{name}: must be a single number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ZStarError(f"{name}: must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ZStarError(f"{name}: must be finite, got {value}")
    if value < 0:
        raise ZStarError(f"{name}: must be >= 0, got {value}")
    return value
