"""Z*'s reweighted self-attention as ONE ordinary attention call.

    out = softmax([λ1·Q K_s1ᵀ, …, Q Kᵀ] / √d) · [V_s1; …; V]      (per head)

Because λ·Q K_sᵀ = Q (λ K_s)ᵀ, the style scale folds into the style keys and the whole thing
is a plain attention over the concatenated keys [λ1·K_s1; …; K] and values [V_s1; …; V]. That
lets the host's fused kernel (flash / SDPA / xformers, passed in as `attention`) do the work,
so the N×(M+N) score matrix is never materialised (the official code materialises it and runs
out of memory at 512² on 12 GB cards).

Tensors use ComfyUI's layout: (batch, tokens, heads·dim_head).
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from .errors import ZStarError, check_strength

Tensor = torch.Tensor
StyleTensors = Union[Tensor, Sequence[Tensor]]
AttentionFn = Callable[[Tensor, Tensor, Tensor, int], Tensor]

__all__ = ["sdpa_attention", "reweighted_attention", "attention_over_rows"]


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """Default attention backend: ComfyUI layout around torch's fused SDPA.

    q (B,N,H·d), k/v (B,M,H·d) -> (B,N,H·d). `mask` is passed to SDPA as attn_mask after
    ComfyUI's broadcasting rules ((M)/(N,M) -> add batch, (B,N,M) -> add heads).
    """
    b, n, width = q.shape
    if heads < 1 or width % heads:
        raise ZStarError(f"heads: {heads} does not divide the attention width {width}")
    d = width // heads
    q_, k_, v_ = (t.reshape(b, t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))  # -1 fails for b = 0
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, n, heads * d)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_tensor(t, name: str, ref: Tensor, batch: int, width: int) -> None:
    if not isinstance(t, Tensor):
        raise ZStarError(f"{name}: expected a tensor, got {type(t).__name__}")
    if t.ndim != 3:
        raise ZStarError(f"{name}: expected shape (batch, tokens, heads*dim_head), got {tuple(t.shape)}")
    if t.shape[0] != batch:
        raise ZStarError(f"{name}: batch {t.shape[0]} does not match q's batch {batch}")
    if t.shape[2] != width:
        raise ZStarError(f"{name}: width {t.shape[2]} does not match q's width {width}")
    if t.dtype != ref.dtype:
        raise ZStarError(f"{name}: dtype {t.dtype} does not match q's dtype {ref.dtype}")
    if t.device != ref.device:
        raise ZStarError(f"{name}: device {t.device} does not match q's device {ref.device}")


def _normalise_styles(q, k, v, k_style, v_style, heads, style_scale):
    """Validate everything and return (k_styles, v_styles, scales) as equal-length lists."""
    if not isinstance(q, Tensor) or q.ndim != 3:
        shape = tuple(q.shape) if isinstance(q, Tensor) else type(q).__name__
        raise ZStarError(f"q: expected shape (batch, tokens, heads*dim_head), got {shape}")
    batch, _, width = q.shape
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ZStarError(f"heads: must be a positive integer, got {heads!r}")
    if width % heads:
        raise ZStarError(f"heads: {heads} does not divide q's width {width}")
    _check_tensor(k, "k", q, batch, width)
    _check_tensor(v, "v", q, batch, width)
    if k.shape[1] != v.shape[1]:
        raise ZStarError(f"v: {v.shape[1]} tokens do not match k's {k.shape[1]}")

    if isinstance(k_style, (list, tuple)) != isinstance(v_style, (list, tuple)):
        raise ZStarError("k_style/v_style: pass both as tensors or both as lists")
    k_styles, v_styles = _as_list(k_style), _as_list(v_style)
    if not k_styles:
        raise ZStarError("k_style: the list of styles is empty")
    if len(k_styles) != len(v_styles):
        raise ZStarError(f"v_style: {len(v_styles)} tensors for {len(k_styles)} k_style tensors")
    many = isinstance(k_style, (list, tuple))
    for i, (ks, vs) in enumerate(zip(k_styles, v_styles)):
        kn, vn = (f"k_style[{i}]", f"v_style[{i}]") if many else ("k_style", "v_style")
        _check_tensor(ks, kn, q, batch, width)
        _check_tensor(vs, vn, q, batch, width)
        if ks.shape[1] != vs.shape[1]:
            raise ZStarError(f"{vn}: {vs.shape[1]} tokens do not match {kn}'s {ks.shape[1]}")

    if isinstance(style_scale, (list, tuple)):
        if len(style_scale) != len(k_styles):
            raise ZStarError(f"style_scale: {len(style_scale)} values for {len(k_styles)} styles")
        scales = [check_strength(s, f"style_scale[{i}]") for i, s in enumerate(style_scale)]
    else:
        scales = [check_strength(style_scale, "style_scale")] * len(k_styles)
    return k_styles, v_styles, scales


def _check_mask(query_mask, q: Tensor) -> Tensor:
    if not isinstance(query_mask, Tensor):
        raise ZStarError(f"query_mask: expected a bool tensor of shape (batch, tokens), got {type(query_mask).__name__}")
    if query_mask.dtype != torch.bool:
        raise ZStarError(f"query_mask: dtype must be torch.bool, got {query_mask.dtype}")
    if tuple(query_mask.shape) != tuple(q.shape[:2]):
        raise ZStarError(f"query_mask: shape {tuple(query_mask.shape)} does not match q's (batch, tokens) {tuple(q.shape[:2])}")
    return query_mask.to(q.device)


def reweighted_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_style: StyleTensors,
    v_style: StyleTensors,
    heads: int,
    style_scale: Union[float, Sequence[float]] = 1.2,
    query_mask: Tensor | None = None,
    attention: AttentionFn | None = None,
) -> Tensor:
    """Z* attention of a row's queries over [λ·style keys ; own keys], fused.

    q, k, v: (B,N,H·d), the row's own projections. k_style, v_style: (B,M,H·d) (M may differ
    from N), or lists of such tensors for several styles (each with its own M); style_scale
    is λ, one number or one per style. λ = 0 is NOT "off": the style logits become 0, which
    still competes in the softmax; use query_mask (or skip the call) to switch style off.

    query_mask: optional (B,N) bool, True where style may act. False rows get exactly
    attention(q, k, v, heads) (the paper's −∞ style logits, eqs. 16–17). All False returns
    that call's result unchanged; all True computes only the reweighted call; a mixed mask
    costs ONE extra plain self-attention call (never a score matrix) and picks rows with
    torch.where. Checking "all/none" reads the mask's value (a device sync on GPU).

    attention: callable (q, k, v, heads) -> (B,N,H·d); ComfyUI's optimized attention in the
    nodes, sdpa_attention by default. It is called once with M1+…+N keys.
    """
    k_styles, v_styles, scales = _normalise_styles(q, k, v, k_style, v_style, heads, style_scale)
    attn = sdpa_attention if attention is None else attention

    if query_mask is not None:
        query_mask = _check_mask(query_mask, q)
    return with_query_mask(
        query_mask,
        lambda: attn(q, _stack_tokens(k_styles, scales, k), _stack_tokens(v_styles, None, v), heads),
        lambda: attn(q, k, v, heads))


def with_query_mask(query_mask: Tensor | None, reweighted, plain) -> Tensor:
    """The region mask's semantics, in one place: rows where query_mask (B,N) is False get
    plain() (self-attention), the others reweighted(). None or all True calls reweighted()
    only, all False plain() only, a mixed mask both (reweighted first) and picks per row."""
    if query_mask is None:
        return reweighted()
    if not bool(query_mask.any()):
        return plain()
    out = reweighted()
    if not bool(query_mask.all()):
        out = torch.where(query_mask.unsqueeze(-1), out, plain())
    return out


def _stack_tokens(parts: Sequence[Tensor], scales, own: Tensor) -> Tensor:
    """[s1·part1; …; own] along the tokens (ComfyUI's layout), see stack_scaled."""
    scales = [1.0] * len(parts) if scales is None else scales
    return stack_scaled(1, list(zip(parts, scales)), own)


def stack_scaled(dim: int, parts, own: Tensor) -> Tensor:
    """[s1·part1; …; own] along `dim` for parts [(tensor, scale)], written straight into one new
    buffer, so the scaled style keys never exist as a temporary of their own (the same values as
    torch.cat of p * s)."""
    if torch.is_grad_enabled() and (own.requires_grad or any(p.requires_grad for p, _ in parts)):
        return torch.cat([p if s == 1.0 else p * s for p, s in parts] + [own], dim=dim)  # out= cannot record grads
    shape = list(own.shape)
    shape[dim] += sum(p.shape[dim] for p, _ in parts)
    buf = own.new_empty(shape)
    at = 0
    for p, s in parts:
        dst = buf.narrow(dim, at, p.shape[dim])
        if s == 1.0:
            dst.copy_(p)
        else:
            torch.mul(p, s, out=dst)
        at += p.shape[dim]
    buf.narrow(dim, at, own.shape[dim]).copy_(own)
    return buf


def attention_over_rows(q: Tensor, k_rows: Tensor, v_rows: Tensor, heads: int, row_scales: Sequence[float],
                        attention: AttentionFn | None = None) -> Tensor:
    """Attention of q over the keys of R rows side by side, row r's keys scaled by row_scales[r].

    q: (B,N,H·d); k_rows, v_rows: (B,R,M,H·d), e.g. the U-Net layer's own k and v viewed per
    chunk as [content row; style rows]. softmax is blind to the order of the keys, so this is
    Z*'s reweighted attention for the row whose scale is 1 (its own keys) against the rows with
    scale λ (its styles). The scaling happens IN PLACE on k_rows and, when k_rows and v_rows
    are contiguous, the R·M keys and values are a view: besides the inputs the call holds only
    the output and the backend's own workspace. Meant for the patched layer, whose k is a
    temporary it owns; the caller must not need k_rows' old values afterwards.
    """
    if k_rows.ndim != 4 or v_rows.shape[:3] != k_rows.shape[:3] or len(row_scales) != k_rows.shape[1]:
        raise ZStarError(f"attention_over_rows: k_rows/v_rows must be (batch, rows, tokens, width) with one scale per row; "
                         f"got {tuple(k_rows.shape)}, {tuple(v_rows.shape)} and {len(row_scales)} scales")
    for r, s in enumerate(row_scales):
        s = check_strength(s, f"row_scales[{r}]")
        if s != 1.0:
            k_rows[:, r].mul_(s)
    b, r, m, _ = k_rows.shape
    attn = sdpa_attention if attention is None else attention
    return attn(q, k_rows.reshape(b, r * m, k_rows.shape[-1]), v_rows.reshape(b, r * m, v_rows.shape[-1]), heads)
