"""zstar_batch_attention against the float64 reference, row by row, for every row layout.

Two code paths: one content row per chunk (the sampler's usual batch) reads every key as a
view of the layer's own k with the style rows scaled in place; other layouts copy. Both must
give, for each CFG chunk, content row i = reference(q_i, k_i, v_i, its style rows, λ) and
style row (g, s) = reference(q_s, k_s, v_s, content row g, λ_style) or plain attention.
"""
import itertools

import pytest
import torch

from zstar_attention import (RowLayout, ZStarError, attention_over_rows, reweighted_attention_reference,
                             sdpa_attention, zstar_batch_attention)

HEADS, D, N = 2, 8, 12
TOL = 1e-5
LAYOUTS = [  # (n_content, n_styles, groups, λ_style)
    (1, 1, 1, 0.0), (1, 1, 1, 1.5), (1, 2, 1, 0.0), (1, 3, 1, 0.0),
    (2, 1, 1, 0.0), (2, 2, 1, 0.0), (2, 1, 2, 1.5), (2, 2, 2, 1.5), (3, 1, 3, 0.0),
]
IN_PLACE = {(1, 1, 1, 0.0), (1, 1, 1, 1.5), (1, 2, 1, 0.0), (1, 3, 1, 0.0)}


def expected(q, k, v, layout: RowLayout, n_chunks, scales, self_scale, mask):
    """Float64 row-by-row transcription of what each row must read."""
    rows = []
    for c, r in itertools.product(range(n_chunks), range(layout.rows)):
        base = c * layout.rows
        row = slice(base + r, base + r + 1)
        if r < layout.n_content:
            g = layout.group_of(r)
            styles = [slice(base + layout.style_row(g, s), base + layout.style_row(g, s) + 1) for s in range(layout.n_styles)]
            m = None if mask is None else mask[r:r + 1]
            rows.append(reweighted_attention_reference(q[row], k[row], v[row], [k[s] for s in styles], [v[s] for s in styles],
                                                       HEADS, list(scales), query_mask=m))
        else:
            g = (r - layout.n_content) // layout.n_styles if layout.groups > 1 else 0
            if self_scale > 0:
                content = slice(base + g, base + g + 1)
                rows.append(reweighted_attention_reference(q[row], k[row], v[row], k[content], v[content], HEADS, self_scale))
            else:
                rows.append(sdpa_attention(q[row].double(), k[row].double(), v[row].double(), HEADS))
    return torch.cat(rows)


def rel_err(out, ref):
    return float((out.double() - ref).abs().max() / ref.abs().max())


class Recorder:
    def __init__(self, k):
        self.k_ptr = k.data_ptr()
        self.calls = []

    def __call__(self, q, k, v, heads):
        self.calls.append((k.shape[1], k.data_ptr() == self.k_ptr))
        return sdpa_attention(q, k, v, heads)


def inputs(seed, rows, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, N, HEADS * D, generator=gen).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("nc,ns,groups,self_scale", LAYOUTS)
@pytest.mark.parametrize("n_chunks", [1, 2])
@pytest.mark.parametrize("masked", ["none", "mixed", "nothing", "all"])
def test_matches_reference_row_by_row(nc, ns, groups, self_scale, n_chunks, masked):
    layout = RowLayout(nc, ns, groups)
    scales = [1.2, 0.7, 2.0][:ns]
    q, k, v = inputs(nc * 10 + ns + n_chunks, n_chunks * layout.rows)
    mask = {"none": None, "all": torch.ones(nc, N, dtype=torch.bool), "nothing": torch.zeros(nc, N, dtype=torch.bool),
            "mixed": torch.arange(nc * N).reshape(nc, N) % 3 == 0}[masked]
    ref = expected(q, k, v, layout, n_chunks, scales, self_scale, mask)
    out = zstar_batch_attention(q, k.clone(), v, HEADS, layout, n_chunks, scales, self_scale, query_mask=mask)
    assert out.shape == q.shape
    assert rel_err(out, ref) < TOL


@pytest.mark.parametrize("nc,ns,groups,self_scale", LAYOUTS)
def test_side_by_side_rows_are_read_without_copies(nc, ns, groups, self_scale):
    """One content row per chunk: every reweighted call's keys are a view of the layer's own k."""
    layout = RowLayout(nc, ns, groups)
    q, k, v = inputs(1, 2 * layout.rows)
    rec = Recorder(k)
    zstar_batch_attention(q, k, v, HEADS, layout, 2, [1.2] * ns, self_scale, attention=rec)
    reweighted = [view for keys, view in rec.calls if keys > N]
    assert reweighted, rec.calls
    if (nc, ns, groups, self_scale) in IN_PLACE:
        assert all(reweighted) and len(rec.calls) == 2
    else:
        assert not any(reweighted)


def test_in_place_path_leaves_content_keys_exact_and_scales_style_keys():
    """The documented scratch contract: content keys bitwise intact (λ_style restored from a
    copy, not divided back), style keys multiplied by λ."""
    layout = RowLayout(1, 1, 1)
    q, k, v = inputs(3, 4)
    original = k.clone()
    zstar_batch_attention(q, k, v, HEADS, layout, 2, [1.2], 1.5)
    assert torch.equal(k[0::2], original[0::2])
    assert torch.equal(k[1::2], original[1::2] * 1.2)


def test_with_gradients_nothing_is_changed_in_place():
    layout = RowLayout(1, 1, 1)
    q, k, v = (t.requires_grad_() for t in inputs(4, 2))
    before = k.detach().clone()
    out = zstar_batch_attention(q, k, v, HEADS, layout, 1, [1.2], 1.5)
    out.square().sum().backward()
    assert torch.equal(k.detach(), before)
    assert k.grad is not None and torch.isfinite(k.grad).all()
    with torch.no_grad():
        fast = zstar_batch_attention(q.detach(), k.detach().clone(), v.detach(), HEADS, layout, 1, [1.2], 1.5)
    assert rel_err(out.detach(), fast.double()) < TOL


def test_probe_sees_unscaled_keys():
    layout = RowLayout(1, 2, 1)
    q, k, v = inputs(5, 3)
    seen = {}

    def probe(qc, kc, style_keys, scales):
        seen.update(qc=qc.clone(), kc=kc.clone(), styles=[s.clone() for s in style_keys], scales=scales)

    zstar_batch_attention(q, k.clone(), v, HEADS, layout, 1, [1.2, 0.8], probe=probe)
    assert torch.equal(seen["qc"], q[:1]) and torch.equal(seen["kc"], k[:1])
    assert torch.equal(seen["styles"][0], k[1:2]) and torch.equal(seen["styles"][1], k[2:3])
    assert seen["scales"] == [1.2, 0.8]


def test_attention_over_rows_is_reweighted_attention():
    q, k, v = inputs(6, 2)
    k_rows, v_rows = k.view(1, 2, N, -1), v.view(1, 2, N, -1)
    ref = reweighted_attention_reference(q[:1], k[:1], v[:1], k[1:], v[1:], HEADS, 1.2)
    out = attention_over_rows(q[:1], k_rows.clone(), v_rows, HEADS, (1.0, 1.2))
    assert rel_err(out, ref) < TOL


@pytest.mark.parametrize("shapes,scales,fragment", [
    (((1, 2, N, 16), (1, 3, N, 16)), (1.0, 1.2), "k_rows/v_rows must be (batch, rows, tokens, width)"),
    (((1, 2, N, 16), (1, 2, N, 16)), (1.0,), "one scale per row"),
    (((2, N, 16), (2, N, 16)), (1.0, 1.2), "got (2, 12, 16)"),
])
def test_attention_over_rows_errors(shapes, scales, fragment):
    q = torch.zeros(1, N, 16)
    with pytest.raises(ZStarError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        attention_over_rows(q, torch.zeros(shapes[0]), torch.zeros(shapes[1]), HEADS, scales)


def test_attention_over_rows_rejects_bad_scale():
    with pytest.raises(ZStarError, match=r"row_scales\[1\]: must be finite"):
        attention_over_rows(torch.zeros(1, N, 16), torch.zeros(1, 2, N, 16), torch.zeros(1, 2, N, 16), HEADS,
                            (1.0, float("nan")))
