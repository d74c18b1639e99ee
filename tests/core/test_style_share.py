"""style_share against a float64 materialised softmax, against the fused attention itself, and
its memory bound (chunks of query rows, never the N×(M+N) score matrix)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from zstar_attention import ZStarError, reweighted_attention
from zstar_attention.style_share import style_share

TOL = 1e-5  # max abs error of a share (a probability); computed in float32 from any input dtype


def rand(gen, b, n, width, dtype=torch.float32):
    return torch.randn(b, n, width, generator=gen).to(dtype)


def share_reference(q, k, style_keys, scales, heads, query_mask=None):
    """Float64, explicit: softmax over [λ_s·Q K_sᵀ …, Q Kᵀ]/√d, mass on the style columns, mean over heads."""
    b, n, width = q.shape
    d = width // heads

    def h(t):
        return t.double().reshape(t.shape[0], t.shape[1], heads, d).permute(0, 2, 1, 3)

    qh = h(q)
    logits = [lam * torch.einsum("bhnd,bhmd->bhnm", qh, h(ks)) / math.sqrt(d) for ks, lam in zip(style_keys, scales)]
    n_style = sum(x.shape[-1] for x in logits)
    logits.append(torch.einsum("bhnd,bhmd->bhnm", qh, h(k)) / math.sqrt(d))
    probs = torch.softmax(torch.cat(logits, dim=-1), dim=-1)
    share = probs[..., :n_style].sum(-1).mean(1)  # (B, N)
    if query_mask is not None:
        share = share.masked_fill(~query_mask, 0.0)
    return share


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    n=st.integers(1, 50),
    ms=st.lists(st.integers(1, 50), min_size=1, max_size=3),
    heads=st.integers(1, 10),
    d=st.sampled_from((8, 40, 64, 160)),
    lambdas=st.lists(st.sampled_from((0.0, 0.5, 1.0, 1.2, 3.0, 30.0)), min_size=3, max_size=3),
    chunk=st.sampled_from((1, 7, 1024)),
    dtype=st.sampled_from((torch.float32, torch.float16, torch.bfloat16)),
    masked=st.booleans(),
)
def test_matches_float64_reference(seed, batch, n, ms, heads, d, lambdas, chunk, dtype, masked):
    gen = torch.Generator().manual_seed(seed)
    width = heads * d
    q, k = rand(gen, batch, n, width, dtype), rand(gen, batch, n, width, dtype)
    ks = [rand(gen, batch, m, width, dtype) for m in ms]
    lam = lambdas[: len(ms)]
    mask = torch.rand(batch, n, generator=gen) < 0.5 if masked else None
    got = style_share(q, k, ks, lam, heads, query_mask=mask, chunk_rows=chunk)
    ref = share_reference(q, k, ks, lam, heads, mask)
    assert got.shape == (batch, n) and got.dtype == torch.float32
    assert float((got.double() - ref).abs().max()) < TOL
    assert bool(((got >= 0) & (got <= 1)).all())


def test_equals_the_fused_attentions_weight_on_style_values():
    """The share is what reweighted_attention itself gives the style: its output with
    V_style = 1 and V = 0, averaged over every channel (= over heads)."""
    gen = torch.Generator().manual_seed(0)
    heads, d, n = 4, 16, 33
    q, k = rand(gen, 2, n, heads * d), rand(gen, 2, n, heads * d)
    ks = [rand(gen, 2, 20, heads * d), rand(gen, 2, 45, heads * d)]
    lam = [0.8, 1.6]
    mask = torch.rand(2, n, generator=gen) < 0.5
    out = reweighted_attention(q, k, torch.zeros_like(k), ks, [torch.ones_like(t) for t in ks], heads,
                               style_scale=lam, query_mask=mask)
    got = style_share(q, k, ks, lam, heads, query_mask=mask, chunk_rows=8)
    assert torch.allclose(got, out.mean(-1), atol=1e-6)


def test_single_tensor_and_scalar_scale_equal_the_list_form():
    gen = torch.Generator().manual_seed(1)
    q, k, ks = rand(gen, 1, 12, 32), rand(gen, 1, 12, 32), rand(gen, 1, 9, 32)
    assert torch.equal(style_share(q, k, ks, 1.2, 2), style_share(q, k, [ks], [1.2], 2))


def test_larger_lambda_gives_larger_share_for_aligned_styles():
    """With style keys that match the queries (positive logits), λ pushes mass onto them."""
    gen = torch.Generator().manual_seed(2)
    q = rand(gen, 1, 64, 64)
    k = rand(gen, 1, 64, 64)
    ks = q + 0.1 * rand(gen, 1, 64, 64)
    shares = [style_share(q, k, ks, lam, 4).mean().item() for lam in (0.5, 1.2, 3.0)]
    assert shares[0] < shares[1] < shares[2]


class LargestScores(TorchDispatchMode):
    """The largest product q·kᵀ block (matmul output) computed inside the block."""

    MATMULS = {"mm", "bmm", "baddbmm", "addmm", "matmul"}

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in self.MATMULS:
            self.largest = max(self.largest, out.numel())
        return out


def test_never_holds_the_full_score_matrix():
    gen = torch.Generator().manual_seed(3)
    b, heads, d, n, m = 1, 2, 8, 512, 512
    q, k, ks = rand(gen, b, n, heads * d), rand(gen, b, n, heads * d), rand(gen, b, m, heads * d)
    with LargestScores() as spy:
        share = style_share(q, k, ks, 1.2, heads, chunk_rows=64)
    assert spy.largest == b * heads * 64 * max(n, m)  # one chunk's scores against one key set
    assert spy.largest < b * heads * n * (n + m) // 8
    assert torch.allclose(share, style_share(q, k, ks, 1.2, heads, chunk_rows=n), atol=1e-6)


def test_chunk_size_is_capped_by_memory(monkeypatch):
    import zstar_attention.style_share as module

    gen = torch.Generator().manual_seed(4)
    q, k, ks = rand(gen, 2, 100, 32), rand(gen, 2, 100, 32), rand(gen, 2, 70, 32)
    want = style_share(q, k, ks, 1.2, 2)
    monkeypatch.setattr(module, "MAX_SCORE_ELEMENTS", 2 * 2 * 100 * 3)  # 3 rows per chunk
    with LargestScores() as spy:
        got = style_share(q, k, ks, 1.2, 2)
    assert spy.largest == 2 * 2 * 3 * 100
    assert torch.allclose(got, want, atol=1e-6)


def test_errors():
    gen = torch.Generator().manual_seed(5)
    q, k, ks = rand(gen, 1, 10, 32), rand(gen, 1, 10, 32), rand(gen, 1, 6, 32)
    with pytest.raises(ZStarError, match="k_style: width 16"):
        style_share(q, k, rand(gen, 1, 6, 16), 1.2, 2)
    with pytest.raises(ZStarError, match="style_scale: 2 values for 1 styles"):
        style_share(q, k, [ks], [1.0, 2.0], 2)
    with pytest.raises(ZStarError, match="heads: 3 does not divide"):
        style_share(q, k, ks, 1.2, 3)
    with pytest.raises(ZStarError, match="chunk_rows"):
        style_share(q, k, ks, 1.2, 2, chunk_rows=0)
    with pytest.raises(ZStarError, match="query_mask: shape"):
        style_share(q, k, ks, 1.2, 2, query_mask=torch.ones(1, 9, dtype=torch.bool))
    with pytest.raises(ZStarError, match="style_scale: must be >= 0"):
        style_share(q, k, ks, -1.0, 2)
