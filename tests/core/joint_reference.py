"""Joint attention with Z* written out row by row with explicit softmaxes, in float64: the
reference the tests hold zstar_attention.joint_zstar_attention to."""
from __future__ import annotations

import math

import torch

from zstar_attention import RowLayout, rotate_keys


def reference_joint_attention(q, k, v, layout: RowLayout, n_chunks: int, n_txt: int, style_scales,
                              style_self_scale: float = 0.0, query_mask=None, style_key_rotation=None):
    """The same thing written out with explicit softmaxes, row by row, in (B, heads, L, d) float64:
    the reference the tests compare joint_zstar_attention against."""
    q, k, v = (t.double() for t in (q, k, v))
    rows = layout.rows
    out = torch.empty(q.shape[0], q.shape[2], q.shape[1] * q.shape[3], dtype=torch.float64)
    scale = 1 / math.sqrt(q.shape[-1])

    def attend(qr, keys, vals):  # qr (H, Lq, d), keys/vals (H, M, d)
        w = torch.softmax(qr @ keys.transpose(-1, -2) * scale, dim=-1)
        o = w @ vals
        return o.transpose(0, 1).reshape(qr.shape[1], -1)

    for c in range(n_chunks):
        base = c * rows
        for r in range(rows):
            i = base + r
            out[i] = attend(q[i], k[i], v[i])
            if r < layout.n_content:
                g = layout.group_of(r)
                ks, vs = [], []
                for s, lam in enumerate(style_scales):
                    j = base + layout.style_row(g, s)
                    kk = k[j][:, n_txt:]
                    if style_key_rotation is not None:
                        kk = rotate_keys(kk, style_key_rotation.double())
                    ks.append(lam * kk)
                    vs.append(v[j][:, n_txt:])
                z = attend(q[i][:, n_txt:], torch.cat([*ks, k[i]], 1), torch.cat([*vs, v[i]], 1))
                if query_mask is not None:
                    z = torch.where(query_mask[r].unsqueeze(-1), z, out[i][n_txt:])
                out[i][n_txt:] = z
            elif style_self_scale > 0:
                g = (r - layout.n_content) // layout.n_styles
                j = base + g
                z = attend(q[i][:, n_txt:], torch.cat([style_self_scale * k[j][:, n_txt:], k[i]], 1),
                           torch.cat([v[j][:, n_txt:], v[i]], 1))
                out[i][n_txt:] = z
    return out
