"""Z* attention over a whole sampling batch: content rows reweighted against their style rows.

ComfyUI hands an attn1 replacement one tensor holding every row of every CFG half it chose
to run in this call. This module splits it by the RowLayout, so the same code serves cond and
uncond run together, apart, or alone.
"""
from __future__ import annotations

import torch

from .attention import _check_scale, reweighted_attention, sdpa_attention
from .errors import ZStarError
from .rows import RowLayout


def _rows(t: torch.Tensor, n_chunks: int, rows: int) -> torch.Tensor:
    return t.view(n_chunks, rows, *t.shape[1:])


def zstar_batch_attention(q, k, v, heads, layout: RowLayout, n_chunks: int, style_scales,
                          style_self_scale: float = 0.0, attention=None, query_mask=None, probe=None):
    """Reweighted attention for a stacked [content | style] batch, per CFG chunk.

    q, k, v: (n_chunks * layout.rows, N, heads*d). Each chunk holds layout.rows rows in the
    RowLayout order. Content rows get softmax([λ_s·Q K_sᵀ…, Q Kᵀ]) over their style rows'
    keys of the SAME chunk; style rows get the official λ_style reweighting against their
    content row (style_self_scale > 0) or plain self-attention (0).
    query_mask: optional (n_content, N) bool, True where style may act on content rows.
    probe: optional callable(q_content, k_content, style_keys, style_scales) for inspection
    (e.g. where the attention mass went); it must not change its arguments.
    """
    attention = attention or sdpa_attention
    if isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < 1:
        raise ZStarError(f"Z* batch: n_chunks must be a positive integer (CFG chunks in the call), got {n_chunks!r}")
    style_self_scale = _check_scale(style_self_scale, "style_self_scale")
    total, n_tok, width = q.shape
    if total != n_chunks * layout.rows:
        raise ZStarError(
            f"Z* batch: got {total} rows for {n_chunks} CFG chunk(s) of {layout.rows} rows "
            f"({layout.n_content} content + {layout.n_style_rows} style); the batch was split "
            "in a way Z* does not support (area conditioning?)")
    nc, ns, groups = layout.n_content, layout.n_styles, layout.groups
    if style_self_scale > 0 and groups != nc:
        raise ZStarError("Z* batch: λ_style > 0 needs one set of style rows per content row (groups == n_content)")
    q4, k4, v4 = (_rows(t, n_chunks, layout.rows) for t in (q, k, v))
    kv_width = k.shape[-1]

    # Content rows: style keys/values of their own group, per style, flattened over chunks.
    def per_content(t4, s):
        styles = t4[:, nc:].view(n_chunks, groups, ns, n_tok, t4.shape[-1])[:, :, s]
        if groups == 1:
            styles = styles.expand(n_chunks, nc, n_tok, t4.shape[-1])
        return styles.reshape(n_chunks * nc, n_tok, t4.shape[-1])

    mask = None
    if query_mask is not None:
        if query_mask.shape != (nc, n_tok):
            raise ZStarError(f"Z* batch: query_mask must be ({nc}, {n_tok}), got {tuple(query_mask.shape)}")
        mask = query_mask.repeat(n_chunks, 1)
    q_content = q4[:, :nc].reshape(-1, n_tok, width)
    k_content = k4[:, :nc].reshape(-1, n_tok, kv_width)
    style_keys = [per_content(k4, s) for s in range(ns)]
    if probe is not None:
        probe(q_content, k_content, style_keys, list(style_scales))
    content_out = reweighted_attention(
        q_content, k_content, v4[:, :nc].reshape(-1, n_tok, v.shape[-1]),
        style_keys, [per_content(v4, s) for s in range(ns)],
        heads, style_scale=list(style_scales), query_mask=mask, attention=attention)

    qs = q4[:, nc:].reshape(-1, n_tok, width)
    ks = k4[:, nc:].reshape(-1, n_tok, kv_width)
    vs = v4[:, nc:].reshape(-1, n_tok, v.shape[-1])
    if style_self_scale > 0:
        # style row (g, s) looks at the content row of its group g
        def own_content(t4):
            c = t4[:, :nc].unsqueeze(2).expand(n_chunks, nc, ns, n_tok, t4.shape[-1])
            return c.reshape(-1, n_tok, t4.shape[-1])
        style_out = reweighted_attention(qs, ks, vs, own_content(k4), own_content(v4), heads,
                                         style_scale=style_self_scale, attention=attention)
    else:
        style_out = attention(qs, ks, vs, heads)

    out = content_out.new_empty(n_chunks, layout.rows, n_tok, content_out.shape[-1])
    out[:, :nc] = content_out.view(n_chunks, nc, n_tok, -1)
    out[:, nc:] = style_out.view(n_chunks, layout.n_style_rows, n_tok, -1)
    return out.view(total, n_tok, -1)
