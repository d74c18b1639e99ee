"""Where the style went: the share of each query's attention mass that Z* puts on style keys.

For one head, with d = dim_head and the reweighted softmax of attention.py,

    share = Σ_s Σ_j exp(λ_s q·k_sj/√d) / (Σ_s Σ_j exp(λ_s q·k_sj/√d) + Σ_j exp(q·k_j/√d))
          = sigmoid(L_style − L_self),
    L_style = logsumexp over every style key of λ_s q·k_sj/√d,   L_self = logsumexp_j q·k_j/√d,

i.e. exactly the weight the reweighted attention gives to [V_s1; …] as a whole (its output
with V_s = 1 and V = 0). Query rows are processed in chunks, so no N×(M+N) matrix is ever
held: at most `chunk_rows` queries × one key set × all heads at a time. Rows outside
`query_mask` get share 0, since there the attention has style logits −∞ (paper eqs. 16–17).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .attention import _check_mask, _normalise_styles
from .errors import ZStarError

__all__ = ["style_share"]

MAX_SCORE_ELEMENTS = 1 << 24  # one chunk's score block: 64 MiB in float32


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, width = t.shape
    return t.float().reshape(b, n, heads, width // heads).transpose(1, 2)  # (B,H,N,d)


def style_share(q: torch.Tensor, k: torch.Tensor, style_keys: Sequence[torch.Tensor], style_scales,
                heads: int, query_mask: torch.Tensor | None = None, chunk_rows: int = 1024) -> torch.Tensor:
    """(B, N) float32: per query row, the reweighted attention's mass on style keys, averaged over heads.

    q, k: (B, N, H·d), the row's own queries and keys. style_keys: a tensor or list of
    (B, M_s, H·d), NOT yet scaled by λ (as attention.py takes them); style_scales: λ, one
    number or one per style. query_mask: optional (B, N) bool, share 0 where False.
    Computed in float32 whatever the input dtype.
    """
    k_styles, _, scales = _normalise_styles(q, k, k, style_keys, style_keys, heads, style_scales)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ZStarError(f"chunk_rows: must be a positive integer, got {chunk_rows!r}")
    if query_mask is not None:
        query_mask = _check_mask(query_mask, q)
    b, n, width = q.shape
    scale = 1.0 / math.sqrt(width // heads)
    widest = max([k.shape[1]] + [ks.shape[1] for ks in k_styles])
    rows = max(1, min(chunk_rows, MAX_SCORE_ELEMENTS // (b * heads * widest)))

    kh = _heads(k, heads)
    ksh = [_heads(ks, heads) * (lam * scale) for ks, lam in zip(k_styles, scales)]
    share = torch.empty(b, n, dtype=torch.float32, device=q.device)
    for start in range(0, n, rows):
        qh = _heads(q[:, start:start + rows], heads)  # (B,H,n,d)
        own = torch.logsumexp(qh @ kh.transpose(-1, -2) * scale, dim=-1)
        style = torch.logsumexp(torch.stack([torch.logsumexp(qh @ ks.transpose(-1, -2), dim=-1) for ks in ksh]),
                                dim=0)
        share[:, start:start + rows] = torch.sigmoid(style - own).mean(dim=1)
    if query_mask is not None:
        share = share.masked_fill(~query_mask, 0.0)
    return share
