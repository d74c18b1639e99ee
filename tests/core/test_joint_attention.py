"""Z* joint attention (Flux / SD3.5 blocks) against explicit float64 softmaxes, row by row."""
import math

import pytest
import torch
import torch.nn.functional as F

from zstar_attention import RowLayout, ZStarError, joint_zstar_attention, rope_rotation, rotate_keys
from joint_reference import reference_joint_attention

HEADS, D, N_TXT, N_IMG = 2, 8, 3, 12


def sdpa_heads_first(q, k, v):
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def sdpa_flat(q, k, v, mask=None):
    b = q.shape[0]
    q_, k_, v_ = (t.reshape(b, t.shape[1], HEADS, D).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=host_mask(mask)).transpose(1, 2).reshape(b, q.shape[1], -1)


def sdpa_masked(q, k, v, mask=None):
    """The host's masked attention in (B, heads, L, d): 2-D masks (L_q, L), 3-D (B, L_q, L)
    (comfy/ldm/modules/attention.py attention_pytorch)."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=host_mask(mask))
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def host_mask(mask):
    if mask is not None and mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask is not None and mask.ndim == 3:
        mask = mask.unsqueeze(1)
    return mask


def qkv(rows, seed=0, n_txt=N_TXT, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, HEADS, n_txt + N_IMG, D, generator=gen, dtype=dtype) for _ in range(3)]


def flat(t):
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], -1)


CASES = [  # layout, n_chunks, scales, λ_style
    (RowLayout(1, 1), 1, (1.2,), 0.0),
    (RowLayout(1, 1), 2, (1.5,), 0.0),
    (RowLayout(2, 1), 2, (1.2,), 0.0),
    (RowLayout(1, 2), 1, (1.2, 0.7), 0.0),
    (RowLayout(2, 1, groups=2), 2, (1.2,), 1.5),
]


@pytest.mark.parametrize("layout,n_chunks,scales,self_scale", CASES)
@pytest.mark.parametrize("heads_first", [True, False])
def test_matches_explicit_softmax(layout, n_chunks, scales, self_scale, heads_first):
    q, k, v = qkv(n_chunks * layout.rows)
    ref = reference_joint_attention(q, k, v, layout, n_chunks, N_TXT, scales, self_scale)
    args = (q, k, v) if heads_first else tuple(flat(t) for t in (q, k, v))
    out = joint_zstar_attention(*args, sdpa_heads_first if heads_first else sdpa_flat, layout, n_chunks, N_TXT,
                                scales, self_scale, heads_first=heads_first)
    assert (out - ref).abs().max() < 1e-12


def test_text_queries_and_unchosen_rows_are_plain():
    layout = RowLayout(1, 1)
    q, k, v = qkv(layout.rows)
    out = joint_zstar_attention(q, k, v, sdpa_heads_first, layout, 1, N_TXT, (1.2,))
    plain = sdpa_heads_first(q, k, v)
    assert (out[0, :N_TXT] - plain[0, :N_TXT]).abs().max() < 1e-13  # content text queries: own keys only
    assert (out[1] - plain[1]).abs().max() < 1e-13  # style row, λ_style off
    assert (out[0, N_TXT:] - plain[0, N_TXT:]).abs().max() > 1e-3  # the image queries did change


def test_region_mask_keeps_own_attention_outside():
    layout = RowLayout(1, 1)
    q, k, v = qkv(layout.rows)
    mask = torch.zeros(1, N_IMG, dtype=torch.bool)
    mask[0, ::3] = True
    out = joint_zstar_attention(q, k, v, sdpa_heads_first, layout, 1, N_TXT, (1.2,), query_mask=mask)
    ref = reference_joint_attention(q, k, v, layout, 1, N_TXT, (1.2,), query_mask=mask)
    assert (out - ref).abs().max() < 1e-12
    plain = sdpa_heads_first(q, k, v)
    assert (out[0, N_TXT:][~mask[0]] - plain[0, N_TXT:][~mask[0]]).abs().max() < 1e-13


def test_image_only_call():
    """SD3.5's MMDiT-X second attention sees image tokens only (n_txt = 0)."""
    layout = RowLayout(1, 1)
    q, k, v = qkv(2, n_txt=0)
    ref = reference_joint_attention(q, k, v, layout, 1, 0, (1.3,))
    out = joint_zstar_attention(flat(q), flat(k), flat(v), sdpa_flat, layout, 1, 0, (1.3,), heads_first=False)
    assert (out - ref).abs().max() < 1e-12


def test_style_equal_content_at_lambda_one_is_self_attention():
    """With the style row equal to the content row and λ = 1, every key appears twice with the
    same weight, except the text keys (style adds image keys only): the image queries then see
    the image keys doubled. Check that against an explicit call, and that λ → 0-logit is not 'off'."""
    layout = RowLayout(1, 1)
    q, k, v = qkv(1)
    q, k, v = (torch.cat([t, t]) for t in (q, k, v))
    out = joint_zstar_attention(q, k, v, sdpa_heads_first, layout, 1, N_TXT, (1.0,))
    doubled_k = torch.cat([k[:1, :, N_TXT:], k[:1]], 2)
    doubled_v = torch.cat([v[:1, :, N_TXT:], v[:1]], 2)
    expect = sdpa_heads_first(q[:1, :, N_TXT:], doubled_k, doubled_v)
    assert (out[0, N_TXT:] - expect[0]).abs().max() < 1e-12


def test_rope_rotation_composes_and_matches_flux_rope():
    axes, theta = (4, 6, 6), 10000

    def flux_rope(pos):  # comfy/ldm/flux/math.py rope + EmbedND, written out
        mats = []
        for p, dim in zip(pos, axes):
            scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64)
            a = p / theta ** scale
            mats.append(torch.stack([torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)], -1).reshape(-1, 2, 2))
        return torch.cat(mats).float()

    gen = torch.Generator().manual_seed(1)
    k = torch.randn(5, 16, generator=gen)
    p, delta = (0.0, 3.0, 7.0), (1.0, 0.0, 4.0)
    moved = rotate_keys(rotate_keys(k, flux_rope(p)), rope_rotation(delta, axes, theta))
    direct = rotate_keys(k, flux_rope(tuple(a + b for a, b in zip(p, delta))))
    assert (moved - direct).abs().max() < 1e-5
    assert torch.equal(rotate_keys(k, rope_rotation((0, 0, 0), axes, theta)), k)
    # rotations keep the norm of every pair, so scores against unrotated queries change, magnitudes do not
    assert torch.allclose(moved.norm(dim=-1), k.norm(dim=-1), atol=1e-5)


def test_rotated_style_keys_match_reference():
    layout = RowLayout(1, 1)
    q, k, v = qkv(2)
    rot = rope_rotation((1, 0, 3), (2, 2, 4), 10000.0).double()
    ref = reference_joint_attention(q, k, v, layout, 1, N_TXT, (1.2,), style_key_rotation=rot)
    out = joint_zstar_attention(q, k, v, sdpa_heads_first, layout, 1, N_TXT, (1.2,), style_key_rotation=rot)
    assert (out - ref).abs().max() < 1e-6


@pytest.mark.parametrize("layout,n_chunks,scales,self_scale", CASES)
def test_trailing_pad_tokens_are_neither_image_nor_lent(layout, n_chunks, scales, self_scale):
    """Z-Image's [caption ; image ; pad] rows: the pad tokens after the image attend plainly and are
    never lent as style keys."""
    q, k, v = qkv(n_chunks * layout.rows)
    n_after = 4
    ref = reference_joint_attention(q, k, v, layout, n_chunks, N_TXT - 1, scales, self_scale, n_after=n_after)
    out = joint_zstar_attention(q, k, v, sdpa_heads_first, layout, n_chunks, N_TXT - 1, scales, self_scale,
                                n_after=n_after)
    assert (out - ref).abs().max() < 1e-12
    plain = sdpa_heads_first(q, k, v)
    assert (out[0, -n_after:] - plain[0, -n_after:]).abs().max() < 1e-13


def caption_padding(rows, kind, n_tok, seed=3):
    """A caption padding mask as hosts build them: each row hides its last 0-2 text keys."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.ones(rows, n_tok, dtype=torch.bool)
    for r, hidden in enumerate(torch.randint(0, 3, (rows,), generator=gen).tolist()):
        keep[r, N_TXT - hidden:N_TXT] = False
    if kind == "bool":
        return keep[:, None, None]  # (B, 1, 1, L)
    if kind == "additive":
        return torch.zeros(rows, 1, 1, n_tok, dtype=torch.float64).masked_fill(~keep[:, None, None], -math.inf)
    if kind == "per_query":  # (B, L, L): the same key mask for every query, written out
        return keep[:, None].expand(rows, n_tok, n_tok).clone()
    return keep[:1].expand(n_tok, n_tok).clone()  # "shared_2d": (L, L) for every row


@pytest.mark.parametrize("kind", ["bool", "additive", "per_query", "shared_2d"])
@pytest.mark.parametrize("layout,n_chunks,scales,self_scale", CASES)
def test_host_attention_mask_is_kept_and_widened_over_style_keys(layout, n_chunks, scales, self_scale, kind):
    q, k, v = qkv(n_chunks * layout.rows)
    rows, n_tok = q.shape[0], q.shape[2]
    mask = caption_padding(rows, kind, n_tok)
    ref_mask = host_mask(mask)
    ref = reference_joint_attention(q, k, v, layout, n_chunks, N_TXT, scales, self_scale, mask=ref_mask, n_after=2)
    out = joint_zstar_attention(q, k, v, sdpa_masked, layout, n_chunks, N_TXT, scales, self_scale, mask=mask,
                                n_after=2)
    assert (out - ref).abs().max() < 1e-12
    unmasked = joint_zstar_attention(q, k, v, sdpa_masked, layout, n_chunks, N_TXT, scales, self_scale, n_after=2)
    if kind != "shared_2d" or not bool(mask.all()):
        assert (out - unmasked).abs().max() > 1e-4  # the mask did act


def test_flat_layout_with_mask():
    layout = RowLayout(1, 1)
    q, k, v = qkv(2)
    mask = caption_padding(2, "bool", N_TXT + N_IMG)
    ref = reference_joint_attention(q, k, v, layout, 1, N_TXT, (1.3,), mask=mask)
    out = joint_zstar_attention(flat(q), flat(k), flat(v), sdpa_flat, layout, 1, N_TXT, (1.3,), heads_first=False,
                                mask=mask)
    assert (out - ref).abs().max() < 1e-12


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_after=N_IMG), "text and 12 trailing tokens in a sequence of 15"),
    (dict(mask=torch.ones(3, 1, 1, N_TXT + N_IMG, dtype=torch.bool)), "does not fit 2 rows of 15 tokens"),
    (dict(mask=torch.ones(2, 1, 1, N_IMG, dtype=torch.bool)), "does not fit 2 rows of 15 tokens"),
    (dict(mask=torch.ones(N_IMG, dtype=torch.bool)), "a tensor of 2 to 4 dimensions"),
    (dict(n_chunks=3), "Z* batch: got 2 rows for 3 CFG chunk(s)"),
    (dict(n_txt=N_TXT + N_IMG), "text and 0 trailing tokens in a sequence of"),
    (dict(style_scales=(1.0, 1.0)), "2 style scales for 1 styles"),
    (dict(style_scales=(math.inf,)), "style_scales[0]"),
    (dict(query_mask=torch.ones(1, N_IMG + 1, dtype=torch.bool)), "query_mask must be (1, 12)"),
])
def test_bad_input_is_named(kwargs, message):
    q, k, v = qkv(2)
    args = dict(layout=RowLayout(1, 1), n_chunks=1, n_txt=N_TXT, style_scales=(1.2,))
    args.update(kwargs)
    with pytest.raises(ZStarError) as e:
        joint_zstar_attention(q, k, v, sdpa_heads_first, **args)
    assert message in str(e.value)
