"""Joint attention with Z* written out row by row with explicit softmaxes, in float64: the
reference the tests hold zstar_attention.joint_zstar_attention to."""
from __future__ import annotations

import math

import torch

from zstar_attention import RowLayout, rotate_keys


def reference_joint_attention(q, k, v, layout: RowLayout, n_chunks: int, n_txt: int, style_scales,
                              style_self_scale: float = 0.0, query_mask=None, style_key_rotation=None,
                              n_after: int = 0, mask=None):
    """The same thing written out with explicit softmaxes, row by row, in (B, heads, L, d) float64:
    the reference the tests compare joint_zstar_attention against. Tokens [text ; image ; n_after
    others]; mask: the host's attention mask (bool or additive, (B, 1 or heads, 1 or L, L)), added to
    a row's scores on its own keys, 0 on the style keys."""
    q, k, v = (t.double() for t in (q, k, v))
    rows = layout.rows
    n_tok = q.shape[2]
    img = slice(n_txt, n_tok - n_after)
    out = torch.empty(q.shape[0], n_tok, q.shape[1] * q.shape[3], dtype=torch.float64)
    scale = 1 / math.sqrt(q.shape[-1])
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, -math.inf)

    def own_bias(i, queries):  # (heads or 1, Lq, L) the row's mask on its own keys for these queries
        if mask is None:
            return 0.0
        m = mask[i if mask.shape[0] > 1 else 0].double()
        return m if m.shape[1] == 1 else m[:, queries]

    def attend(qr, keys, vals, bias=0.0, n_front=0):  # qr (H, Lq, d), keys/vals (H, M, d)
        scores = qr @ keys.transpose(-1, -2) * scale
        if not isinstance(bias, float):
            scores = scores + torch.cat([torch.zeros(*bias.shape[:-1], n_front, dtype=torch.float64), bias], -1)
        w = torch.softmax(scores, dim=-1)
        o = w @ vals
        return o.transpose(0, 1).reshape(qr.shape[1], -1)

    everything = slice(None)
    for c in range(n_chunks):
        base = c * rows
        for r in range(rows):
            i = base + r
            out[i] = attend(q[i], k[i], v[i], own_bias(i, everything))
            if r < layout.n_content:
                g = layout.group_of(r)
                ks, vs = [], []
                for s, lam in enumerate(style_scales):
                    j = base + layout.style_row(g, s)
                    kk = k[j][:, img]
                    if style_key_rotation is not None:
                        kk = rotate_keys(kk, style_key_rotation.double())
                    ks.append(lam * kk)
                    vs.append(v[j][:, img])
                front = sum(t.shape[1] for t in ks)
                z = attend(q[i][:, img], torch.cat([*ks, k[i]], 1), torch.cat([*vs, v[i]], 1), own_bias(i, img), front)
                if query_mask is not None:
                    z = torch.where(query_mask[r].unsqueeze(-1), z, out[i][img])
                out[i][img] = z
            elif style_self_scale > 0:
                g = (r - layout.n_content) // layout.n_styles
                j = base + g
                kk = k[j][:, img]
                z = attend(q[i][:, img], torch.cat([style_self_scale * kk, k[i]], 1),
                           torch.cat([v[j][:, img], v[i]], 1), own_bias(i, img), kk.shape[1])
                out[i][img] = z
    return out
