"""Materialised transcription of the Z* formula, for tests and as the benchmark baseline.

    out = softmax([λ1·Q K_s1ᵀ, …, Q Kᵀ] / √d) · [V_s1; …; V]     (per head)

Written the way the official code computes it (explicit score matrix, einsum), independent of
attention.py's key-folding trick, so the two check each other. Masked-out query rows get
style logits of −∞ (paper eqs. 16–17). Memory is O(B·H·N·(M+N)): small inputs only.
"""
from __future__ import annotations

import math

import torch

__all__ = ["reweighted_attention_reference"]


def _heads(t: torch.Tensor, heads: int, dtype) -> torch.Tensor:
    b, n, width = t.shape
    return t.to(dtype).reshape(b, n, heads, width // heads).permute(0, 2, 1, 3)  # (B,H,N,d)


def reweighted_attention_reference(q, k, v, k_style, v_style, heads, style_scale=1.2,
                                   query_mask=None, dtype=torch.float64):
    """Explicit-softmax Z* attention; computes and returns in `dtype` (None: q's dtype).

    Same arguments as reweighted_attention: k_style/v_style a tensor or a list; style_scale a
    number or a list (one per style); query_mask (B,N) bool or None.
    """
    dtype = q.dtype if dtype is None else dtype
    many = isinstance(k_style, (list, tuple))
    k_styles = list(k_style) if many else [k_style]
    v_styles = list(v_style) if many else [v_style]
    scales = list(style_scale) if isinstance(style_scale, (list, tuple)) else [style_scale] * len(k_styles)

    b, n, width = q.shape
    d = width // heads
    qh = _heads(q, heads, dtype)
    logits, values = [], []
    for ks, vs, lam in zip(k_styles, v_styles, scales):
        s = float(lam) * torch.einsum("bhnd,bhmd->bhnm", qh, _heads(ks, heads, dtype)) / math.sqrt(d)
        if query_mask is not None:
            s = s.masked_fill(~query_mask.to(s.device)[:, None, :, None], float("-inf"))
        logits.append(s)
        values.append(_heads(vs, heads, dtype))
    logits.append(torch.einsum("bhnd,bhmd->bhnm", qh, _heads(k, heads, dtype)) / math.sqrt(d))
    values.append(_heads(v, heads, dtype))

    probs = torch.softmax(torch.cat(logits, dim=-1), dim=-1)  # (B,H,N,ΣM+N), materialised
    out = torch.einsum("bhnm,bhmd->bhnd", probs, torch.cat(values, dim=2))
    return out.permute(0, 2, 1, 3).reshape(b, n, heads * d)
