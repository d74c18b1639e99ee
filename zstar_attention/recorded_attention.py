"""Fast mode's attention: content rows only, the style's keys and values from a record.

A Style Record holds each style's keys and values per step, layer and CFG half. In a model
call the content rows come one chunk per CFG half (cond_or_uncond says which); each chunk's
content rows read the record of their own half, expanded to the chunk's rows (a view, no
copy), and the call is reweighted_attention over [λ·K_style ; K] as on the paper path.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .attention import reweighted_attention
from .rows import rows_per_chunk

__all__ = ["recorded_style_attention"]


def recorded_style_attention(q, k, v, heads: int, n_content: int, style_kv: Sequence[Sequence[tuple]],
                             style_scales: Sequence[float], query_mask: torch.Tensor | None = None,
                             attention: Callable | None = None, probe: Callable | None = None):
    """q, k, v: (n_chunks · n_content, N, C), the content rows of every CFG chunk in the call.
    style_kv[s][c] = (k, v), each (1, M, C): style s's record for chunk c's CFG half.
    query_mask: optional (n_content, N) bool, True where style may act (repeated per chunk).
    probe: optional callable(q, k, style_keys, style_scales) for inspection.
    """
    n_chunks = len(style_kv[0])
    rows_per_chunk(q.shape[0], n_chunks, n_content)
    styles_k, styles_v = [], []
    for chunks in style_kv:
        ks = [kv[0].to(q).expand(n_content, -1, -1) for kv in chunks]
        vs = [kv[1].to(v).expand(n_content, -1, -1) for kv in chunks]
        styles_k.append(ks[0] if len(ks) == 1 else torch.cat(ks))  # one CFG half: a view, no copy
        styles_v.append(vs[0] if len(vs) == 1 else torch.cat(vs))
    if query_mask is not None:
        query_mask = query_mask.repeat(n_chunks, 1)
    if probe is not None:
        probe(q, k, styles_k, list(style_scales))
    return reweighted_attention(q, k, v, styles_k, styles_v, heads, style_scale=list(style_scales),
                                query_mask=query_mask, attention=attention)
