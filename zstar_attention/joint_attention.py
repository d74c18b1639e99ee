"""Z* in a joint-attention transformer (Flux.1, SD3.5): one sequence of [text ; image] tokens.

In an MMDiT block the text and image tokens of a row attend as one sequence. Z* acts on the
content row's IMAGE-token queries only, exactly as in the U-Net's self-attention:

    image queries of a content row:  softmax over [λ_1·K_style1,img ; … ; K_own]  with  [V_style1,img ; … ; V_own]
    text queries of a content row:   plain attention over K_own  (our choice: the prompt's tokens
                                     are not the image's appearance, so they are left alone)
    style rows:                      plain attention over their own tokens, or with λ_style > 0
                                     their image queries over [λ_style·K_content,img ; K_own]

K_own is the row's whole sequence (text and image keys), so a content query keeps everything
it saw before; the style adds only its image tokens. Each reweighted group is ONE fused call
of the host's attention over the concatenated keys (λ folded into them), never a score matrix.

Layouts: `heads_first=True` is Flux's (B, heads, L, d) after RoPE; False is ComfyUI's
(B, L, heads·d) (SD3). `attention(q, k, v) -> (B, Lq, heads·d)` in the same input layout is the
host's backend, bound to the call's heads and options. Rows follow the RowLayout, once per CFG
chunk, exactly as zstar_batch_attention's.

Rotary positions (Flux): `style_key_rotation` (d/2, 2, 2) is applied to the style's image keys
before they join, i.e. their positions are moved by a fixed offset (see rope_rotation).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .attention import stack_scaled, with_query_mask
from .errors import ZStarError, check_strength
from .rows import RowLayout, check_stacked_call, contents_of_styles, styles_of_contents

__all__ = ["joint_zstar_attention", "rope_rotation", "rotate_keys"]


def rope_rotation(offsets: Sequence[float], axes_dim: Sequence[int], theta: float) -> torch.Tensor:
    """The rotary matrices (d/2, 2, 2) that move a post-RoPE key by `offsets` (one per axis).

    RoPE rotates each pair of channels by θ_j·p, and rotations compose: R(p + Δ) = R(Δ)·R(p).
    So a key that was rotated for position p is moved to p + Δ by R(Δ) alone, without knowing p.
    The frequencies are Flux's (comfy/ldm/flux/math.py `rope`): ω_j = θ^(−2j/dim) per axis,
    matrices [[cos, −sin], [sin, cos]], axes concatenated in order.
    """
    if len(offsets) != len(axes_dim):
        raise ZStarError(f"positions: {len(offsets)} offsets for {len(axes_dim)} rotary axes")
    parts = []
    for delta, dim in zip(offsets, axes_dim):
        scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64)
        angle = float(delta) / (theta ** scale)
        cos, sin = torch.cos(angle), torch.sin(angle)
        parts.append(torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2))
    return torch.cat(parts, dim=0).to(torch.float32)


def rotate_keys(k: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """k (..., d) with pairs of channels rotated by rotation (d/2, 2, 2), as Flux applies RoPE."""
    if rotation.shape != (k.shape[-1] // 2, 2, 2) or k.shape[-1] % 2:
        raise ZStarError(f"positions: a rotation of shape {tuple(rotation.shape)} does not fit keys of width {k.shape[-1]}")
    rotation = rotation.to(k.device)
    pairs = k.to(rotation.dtype).reshape(*k.shape[:-1], -1, 2)
    out = rotation[..., 0] * pairs[..., 0:1] + rotation[..., 1] * pairs[..., 1:2]
    return out.reshape(k.shape).to(k.dtype)


def joint_zstar_attention(q, k, v, attention: Callable, layout: RowLayout, n_chunks: int, n_txt: int,
                          style_scales: Sequence[float], style_self_scale: float = 0.0, query_mask=None,
                          heads_first: bool = True, style_key_rotation: torch.Tensor | None = None,
                          n_after: int = 0, mask: torch.Tensor | None = None):
    """Z* for one joint-attention call holding every row of the call's CFG chunks.

    q, k, v: (n_chunks·rows, heads, L, d) if heads_first else (n_chunks·rows, L, heads·d), each
    row's tokens ordered [text (n_txt) ; image ; n_after others] (Z-Image pads its image tokens
    to a multiple of 32 with a learnt pad token: those follow the image and are treated as text,
    never lent as style keys). query_mask: optional (n_content, image tokens) bool over the
    content's image tokens (the region mask); False tokens get exactly their plain attention.
    mask: the call's own attention mask as the host passes it (bool, True = attend, or additive
    float; (L_q, L), (B, L_q, L) or (B, heads, L_q, L), L_q may be 1), e.g. a caption padding
    mask: it keeps its meaning on the row's own keys, and the style keys added beside them are
    always attended (they are image tokens, which no host masks). Returns (n_chunks·rows, L, heads·d).
    """
    tok = 2 if heads_first else 1
    total, n_tok = q.shape[0], q.shape[tok]
    style_self_scale = check_stacked_call(layout, total, n_chunks, style_self_scale)
    scales = [check_strength(s, f"style_scales[{i}]") for i, s in enumerate(style_scales)]
    if not (0 <= n_txt and 0 <= n_after and n_txt + n_after < n_tok):
        raise ZStarError(f"Z* joint attention: {n_txt} text and {n_after} trailing tokens in a sequence of {n_tok}")
    nc, ns = layout.n_content, layout.n_styles
    if len(scales) != ns:
        raise ZStarError(f"Z* joint attention: {len(scales)} style scales for {ns} styles")
    n_img = n_tok - n_txt - n_after
    img_stop = n_txt + n_img
    masks = _CallMask(mask, layout, n_chunks, total, n_tok, q)

    def rows(t):  # (n_chunks, rows, …)
        return t.reshape(n_chunks, layout.rows, *t.shape[1:])

    def flat(t):
        return t.reshape(-1, *t.shape[2:])

    def tokens(t, start, stop=None):
        return t[:, :, start:stop] if heads_first else t[:, start:stop]

    others = [(a, b) for a, b in ((0, n_txt), (img_stop, n_tok)) if b > a]  # the text (and trailing) tokens

    def other_tokens(t):
        parts = [tokens(t, a, b) for a, b in others]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=tok)

    def attend(q_, k_, v_, m):
        return attention(q_, k_, v_) if m is None else attention(q_, k_, v_, mask=m)

    def put_others(out, row_slice, result, n_rows):  # scatter the text/trailing queries' output
        result = result.reshape(n_chunks, n_rows, -1, result.shape[-1])
        at = 0
        for a, b in others:
            out[:, row_slice, a:b] = result[:, :, at:at + b - a]
            at += b - a

    q4, k4, v4 = rows(q), rows(k), rows(v)

    def style_of_content(t4, s):  # (n_chunks·nc, …) the image tokens of content row i's style s
        return tokens(styles_of_contents(t4, layout, s), n_txt, img_stop)

    qc, kc, vc = (flat(t4[:, :nc]) for t4 in (q4, k4, v4))

    def rotated(ks):
        if style_key_rotation is None:
            return ks
        return rotate_keys(ks, style_key_rotation) if heads_first else _rotate_flat(ks, style_key_rotation)

    q_img = tokens(qc, n_txt, img_stop)
    region = None if query_mask is None else _check_mask(query_mask, nc, n_img, n_chunks, q)
    content, styles = slice(0, nc), slice(nc, None)
    image_queries = slice(n_txt, img_stop)

    def reweighted():  # the one fused call over [λ·K_style… ; K_own], keys and values built in one buffer each
        k_all = stack_scaled(tok, [(rotated(style_of_content(k4, s)), scales[s]) for s in range(ns)], kc)
        v_all = stack_scaled(tok, [(style_of_content(v4, s), 1.0) for s in range(ns)], vc)
        return attend(q_img, k_all, v_all, masks.sub(content, image_queries, ns * n_img))

    img_out = with_query_mask(region, reweighted, lambda: attend(q_img, kc, vc, masks.sub(content, image_queries)))
    out = img_out.new_empty(n_chunks, layout.rows, n_tok, img_out.shape[-1])
    out[:, :nc, n_txt:img_stop] = img_out.reshape(n_chunks, nc, n_img, -1)
    del img_out
    if others:
        put_others(out, content, attend(other_tokens(qc), kc, vc, masks.sub(content, others)), nc)

    qs, ks_, vs = (flat(t4[:, nc:]) for t4 in (q4, k4, v4))
    if style_self_scale > 0:  # style row (g, s) also reads its content row g's image tokens, scaled by λ_style
        def own_content(t):
            return tokens(contents_of_styles(t, layout), n_txt, img_stop)
        style_img = attend(tokens(qs, n_txt, img_stop), stack_scaled(tok, [(own_content(k4), style_self_scale)], ks_),
                           stack_scaled(tok, [(own_content(v4), 1.0)], vs), masks.sub(styles, image_queries, n_img))
        out[:, nc:, n_txt:img_stop] = style_img.reshape(n_chunks, layout.n_style_rows, n_img, -1)
        if others:
            put_others(out, styles, attend(other_tokens(qs), ks_, vs, masks.sub(styles, others)), layout.n_style_rows)
    else:
        out[:, nc:] = attend(qs, ks_, vs, masks.sub(styles, None)).reshape(n_chunks, layout.n_style_rows, n_tok, -1)
    return out.reshape(total, n_tok, -1)


class _CallMask:
    """The host's attention mask of a joint call, cut to the rows and queries of each sub-call and
    widened over the style keys put in front of a row's own keys (always attended)."""

    def __init__(self, mask, layout: RowLayout, n_chunks: int, total: int, n_tok: int, like):
        self.layout, self.n_chunks = layout, n_chunks
        if mask is None:
            self.mask = None
            return
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
            raise ZStarError("Z* joint attention: the attention mask must be a tensor of 2 to 4 dimensions")
        m = mask[None, None] if mask.ndim == 2 else mask[:, None] if mask.ndim == 3 else mask
        if m.shape[-1] != n_tok or m.shape[-2] not in (1, n_tok) or m.shape[0] not in (1, total):
            raise ZStarError(f"Z* joint attention: an attention mask of shape {tuple(mask.shape)} does not fit "
                             f"{total} rows of {n_tok} tokens")
        self.mask = m.to(like.device)

    def sub(self, row_slice, queries, n_front: int = 0):
        """The mask for rows `row_slice` (content or style rows of every chunk), queries `queries`
        (a slice, a list of (start, stop) spans, or None for all) and n_front style keys in front."""
        m = self.mask
        if m is None:
            return None
        if m.shape[0] > 1:
            m = m.reshape(self.n_chunks, self.layout.rows, *m.shape[1:])[:, row_slice]
            m = m.reshape(-1, *m.shape[2:])
        if m.shape[2] > 1 and queries is not None:
            if isinstance(queries, slice):
                m = m[:, :, queries]
            else:
                m = torch.cat([m[:, :, a:b] for a, b in queries], dim=2)
        if n_front:
            front = m.new_ones(*m.shape[:-1], n_front) if m.dtype == torch.bool else m.new_zeros(*m.shape[:-1], n_front)
            m = torch.cat([front, m], dim=-1)
        return m


def _rotate_flat(k, rotation):
    """rotate_keys for ComfyUI's (B, L, heads·d) layout."""
    d = rotation.shape[0] * 2
    heads = k.shape[-1] // d
    if heads * d != k.shape[-1]:
        raise ZStarError(f"positions: a rotation for heads of width {d} does not fit keys of width {k.shape[-1]}")
    return rotate_keys(k.reshape(*k.shape[:-1], heads, d), rotation).reshape(k.shape)


def _check_mask(query_mask, nc: int, n_img: int, n_chunks: int, like) -> torch.Tensor:
    if not isinstance(query_mask, torch.Tensor) or query_mask.dtype != torch.bool:
        raise ZStarError("query_mask: expected a bool tensor of shape (n_content, image tokens)")
    if tuple(query_mask.shape) != (nc, n_img):
        raise ZStarError(f"Z* batch: query_mask must be ({nc}, {n_img}), got {tuple(query_mask.shape)}")
    return query_mask.to(like.device).repeat(n_chunks, 1)
