"""The one exception type of the pack.

Every bad input raises ZStarError with a message that names the input and says what would be
accepted, so a ComfyUI user sees an actionable line instead of a tensor-shape traceback. It is
a ValueError so callers that already catch ValueError keep working.
"""


class ZStarError(ValueError):
    """A bad input to Z*; the message names the input and the accepted values."""
