"""Where a layer's tokens sit on the latent: the token grid of a U-Net level."""
from __future__ import annotations

from .errors import ZStarError

__all__ = ["token_grid"]


def token_grid(n_tokens: int, latent_hw: tuple) -> tuple:
    """The (h, w) token grid of a layer with n_tokens, for a latent of latent_hw: the U-Net
    halves the grid per level, rounding up (stride-2 convolutions with padding 1)."""
    h, w = latent_hw
    while h * w > n_tokens:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != n_tokens:
        raise ZStarError(f"style map: a layer has {n_tokens} tokens, which is no level of a {latent_hw} latent")
    return h, w
