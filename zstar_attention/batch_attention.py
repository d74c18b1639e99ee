"""Z* attention over a whole sampling batch: content rows reweighted against their style rows.

ComfyUI hands an attn1 replacement one tensor holding every row of every CFG half it chose
to run in this call. This module splits it by the RowLayout, so the same code serves cond and
uncond run together, apart, or alone.
"""
from __future__ import annotations

import torch

from .attention import attention_over_rows, reweighted_attention, sdpa_attention, with_query_mask
from .errors import ZStarError
from .rows import RowLayout, check_stacked_call, contents_of_styles, styles_of_contents


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

    k is scratch: with one content row per chunk the style rows' keys are scaled IN PLACE so
    that no concatenated copy is needed (see _in_place). The patched layer's k is a temporary
    of that call; other callers pass a copy if they need k afterwards.
    """
    attention = attention or sdpa_attention
    total, n_tok, width = q.shape
    style_self_scale = check_stacked_call(layout, total, n_chunks, style_self_scale)
    nc, ns = layout.n_content, layout.n_styles
    q4, k4, v4 = (_rows(t, n_chunks, layout.rows) for t in (q, k, v))
    kv_width = k.shape[-1]

    mask = None
    if query_mask is not None:
        if query_mask.shape != (nc, n_tok):
            raise ZStarError(f"Z* batch: query_mask must be ({nc}, {n_tok}), got {tuple(query_mask.shape)}")
        mask = query_mask.repeat(n_chunks, 1)
    if _rows_side_by_side(q, k, v, layout, style_self_scale):
        return _in_place(q4, k4, v4, heads, layout, n_chunks, style_scales, style_self_scale, attention, mask, probe)

    # Content rows: style keys/values of their own group, per style, flattened over chunks.
    q_content = q4[:, :nc].reshape(-1, n_tok, width)
    k_content = k4[:, :nc].reshape(-1, n_tok, kv_width)
    style_keys = [styles_of_contents(k4, layout, s) for s in range(ns)]
    if probe is not None:
        probe(q_content, k_content, style_keys, list(style_scales))
    content_out = reweighted_attention(
        q_content, k_content, v4[:, :nc].reshape(-1, n_tok, v.shape[-1]),
        style_keys, [styles_of_contents(v4, layout, s) for s in range(ns)],
        heads, style_scale=list(style_scales), query_mask=mask, attention=attention)

    qs = q4[:, nc:].reshape(-1, n_tok, width)
    ks = k4[:, nc:].reshape(-1, n_tok, kv_width)
    vs = v4[:, nc:].reshape(-1, n_tok, v.shape[-1])
    if style_self_scale > 0:
        # style row (g, s) looks at the content row of its group g
        style_out = reweighted_attention(qs, ks, vs, contents_of_styles(k4, layout), contents_of_styles(v4, layout), heads,
                                         style_scale=style_self_scale, attention=attention)
    else:
        style_out = attention(qs, ks, vs, heads)

    out = content_out.new_empty(n_chunks, layout.rows, n_tok, content_out.shape[-1])
    out[:, :nc] = content_out.view(n_chunks, nc, n_tok, -1)
    out[:, nc:] = style_out.view(n_chunks, layout.n_style_rows, n_tok, -1)
    return out.view(total, n_tok, -1)


def _rows_side_by_side(q, k, v, layout: RowLayout, style_self_scale: float) -> bool:
    """One content row per chunk, followed by its style rows, in contiguous k and v we may
    overwrite: then every row's keys are a view of k (see _in_place)."""
    if layout.n_content != 1 or (style_self_scale > 0 and layout.n_styles != 1):
        return False
    if not (k.is_contiguous() and v.is_contiguous() and k.shape[1] == q.shape[1]):
        return False
    # in-place scaling would break autograd's saved tensors (e.g. a gradient through the U-Net)
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))


def _in_place(q4, k4, v4, heads, layout, n_chunks, style_scales, style_self_scale, attention, mask, probe):
    """zstar_batch_attention for chunks laid out [content, style 1, …, style S], without copies.

    Each chunk's k rows, viewed as one (S+1)·N token sequence, ARE the keys both reweightings
    need, up to per-row scales (softmax does not care about the keys' order). So the style
    rows are scaled in place in the layer's own k (a temporary of this call) and the content
    row runs one fused call over that view: no concatenated copy of keys or values. The style
    rows go first, while their keys are unscaled; with λ_style the content row's keys are
    scaled for that call and restored from a saved copy (exact, one row of memory).
    """
    total_rows, n_tok, width = n_chunks * layout.rows, q4.shape[2], q4.shape[3]
    ns = layout.n_styles
    if probe is not None:
        probe(q4[:, 0], k4[:, 0], [k4[:, 1 + s] for s in range(ns)], list(style_scales))

    if style_self_scale > 0:  # ns == 1: the style row reads [λ_style·K_content ; K_style]
        saved = k4[:, 0].clone()
        style_out = attention_over_rows(q4[:, 1].contiguous(), k4, v4, heads, (style_self_scale, 1.0), attention)
        k4[:, 0].copy_(saved)
        del saved
    else:
        style_out = attention(q4[:, 1:].reshape(-1, n_tok, width), k4[:, 1:].reshape(-1, n_tok, k4.shape[-1]),
                              v4[:, 1:].reshape(-1, n_tok, v4.shape[-1]), heads)
    out = style_out.new_empty(n_chunks, layout.rows, n_tok, style_out.shape[-1])
    out[:, 1:] = style_out.view(n_chunks, ns, n_tok, -1)
    del style_out

    # Row 0 of every chunk; a copy only when CFG halves share the call (then the rows are strided).
    q_content = q4[:, 0].contiguous()

    def plain():  # the content row's own keys keep scale 1, so this is right before and after
        return attention(q_content, k4[:, 0].contiguous(), v4[:, 0].contiguous(), heads)

    out[:, 0] = with_query_mask(
        mask, lambda: attention_over_rows(q_content, k4, v4, heads, (1.0, *style_scales), attention), plain)
    return out.view(total_rows, n_tok, -1)
