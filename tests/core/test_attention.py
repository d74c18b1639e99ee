"""reweighted_attention against the float64 materialised reference, invariants, and errors.

Tolerances are max-abs errors relative to the output scale max|ref|:
fp32 1e-5, fp16 4e-3, bf16 2e-2 (the reference runs in float64 on the same rounded inputs,
so these bound only the kernel's own arithmetic plus the rounding of λ·K_s).
"""
import torch
import pytest
from hypothesis import given, settings, strategies as st

from zstar_attention import ZStarError, reweighted_attention, reweighted_attention_reference, sdpa_attention

DIMS = (40, 64, 80, 160)
LAMBDAS = (0.5, 1.0, 1.2, 3.0)
TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}


def rand(gen, b, n, width, dtype=torch.float32):
    return torch.randn(b, n, width, generator=gen).to(dtype)


def rel_err(out, ref):
    return float((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


class CountingAttention:
    """An `attention` callable that records how it was called."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, heads):
        self.calls.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), heads))
        return sdpa_attention(q, k, v, heads)


# ---------------------------------------------------------------- against the reference

@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 2),
    n=st.integers(1, 40),
    ms=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    heads=st.integers(1, 20),
    d=st.sampled_from(DIMS),
    lambdas=st.lists(st.sampled_from(LAMBDAS), min_size=3, max_size=3),
    as_list=st.booleans(),
    masked=st.sampled_from(["none", "random", "all", "nothing"]),
)
def test_fp32_matches_float64_reference(seed, batch, n, ms, heads, d, lambdas, as_list, masked):
    gen = torch.Generator().manual_seed(seed)
    width = heads * d
    q, k, v = (rand(gen, batch, n, width) for _ in range(3))
    ks = [rand(gen, batch, m, width) for m in ms]
    vs = [rand(gen, batch, m, width) for m in ms]
    lam = lambdas[: len(ms)]
    if len(ms) == 1 and not as_list:
        ks, vs, lam = ks[0], vs[0], lam[0]
    mask = {
        "none": None,
        "random": torch.rand(batch, n, generator=gen) < 0.5,
        "all": torch.ones(batch, n, dtype=torch.bool),
        "nothing": torch.zeros(batch, n, dtype=torch.bool),
    }[masked]
    out = reweighted_attention(q, k, v, ks, vs, heads, lam, query_mask=mask)
    ref = reweighted_attention_reference(q, k, v, ks, vs, heads, lam, query_mask=mask)
    assert out.shape == (batch, n, width) and out.dtype == torch.float32
    assert rel_err(out, ref) < TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(8))
def test_half_precision_matches_reference(dtype, case):
    gen = torch.Generator().manual_seed(100 + case)
    heads, d, lam = (1, 5, 8, 20)[case % 4], DIMS[case % 4], LAMBDAS[(case // 2) % 4]
    n, m = 17 + 9 * case, 40 - 3 * case
    width = heads * d
    q, k, v = (rand(gen, 2, n, width, dtype) for _ in range(3))
    ks, vs = rand(gen, 2, m, width, dtype), rand(gen, 2, m, width, dtype)
    mask = (torch.rand(2, n, generator=gen) < 0.5) if case % 2 else None
    out = reweighted_attention(q, k, v, ks, vs, heads, lam, query_mask=mask)
    ref = reweighted_attention_reference(q, k, v, ks, vs, heads, lam, query_mask=mask)
    assert out.dtype == dtype
    assert rel_err(out, ref) < TOL[dtype]


def test_reference_can_run_in_input_dtype():
    gen = torch.Generator().manual_seed(1)
    q, k, v, ks, vs = (rand(gen, 1, 8, 128) for _ in range(5))
    ref32 = reweighted_attention_reference(q, k, v, ks, vs, 2, 1.2, dtype=None)
    ref64 = reweighted_attention_reference(q, k, v, ks, vs, 2, 1.2)
    assert ref32.dtype == torch.float32 and ref64.dtype == torch.float64
    assert rel_err(ref32, ref64) < 1e-5


# ---------------------------------------------------------------- invariants

def test_duplicated_keys_with_lambda_one_is_self_attention():
    gen = torch.Generator().manual_seed(2)
    for heads, d, n in [(1, 40, 7), (8, 64, 33), (20, 80, 12)]:
        q, k, v = (rand(gen, 2, n, heads * d) for _ in range(3))
        out = reweighted_attention(q, k, v, k, v, heads, 1.0)
        plain = sdpa_attention(q, k, v, heads)
        torch.testing.assert_close(out, plain, rtol=0, atol=2e-6 * float(plain.abs().max()))


def test_all_false_mask_is_bitwise_self_attention():
    gen = torch.Generator().manual_seed(3)
    q, k, v = (rand(gen, 2, 20, 320) for _ in range(3))
    ks, vs = rand(gen, 2, 9, 320), rand(gen, 2, 9, 320)
    counter = CountingAttention()
    out = reweighted_attention(q, k, v, ks, vs, 5, 3.0, query_mask=torch.zeros(2, 20, dtype=torch.bool),
                               attention=counter)
    assert torch.equal(out, sdpa_attention(q, k, v, 5))
    assert counter.calls == [((2, 20, 320), (2, 20, 320), (2, 20, 320), 5)]


def test_masked_false_rows_are_self_attention_rows():
    gen = torch.Generator().manual_seed(4)
    q, k, v = (rand(gen, 2, 30, 256) for _ in range(3))
    ks, vs = rand(gen, 2, 11, 256), rand(gen, 2, 11, 256)
    mask = torch.rand(2, 30, generator=gen) < 0.5
    assert mask.any() and not mask.all()
    out = reweighted_attention(q, k, v, ks, vs, 4, 1.2, query_mask=mask)
    plain = sdpa_attention(q, k, v, 4)
    full = reweighted_attention(q, k, v, ks, vs, 4, 1.2)
    assert torch.equal(out[~mask], plain[~mask])
    assert torch.equal(out[mask], full[mask])


def test_all_true_mask_equals_no_mask_with_one_call():
    gen = torch.Generator().manual_seed(5)
    q, k, v = (rand(gen, 1, 16, 128) for _ in range(3))
    ks, vs = rand(gen, 1, 24, 128), rand(gen, 1, 24, 128)
    counter = CountingAttention()
    out = reweighted_attention(q, k, v, ks, vs, 2, 1.2, query_mask=torch.ones(1, 16, dtype=torch.bool),
                               attention=counter)
    assert torch.equal(out, reweighted_attention(q, k, v, ks, vs, 2, 1.2))
    assert len(counter.calls) == 1


def test_two_styles_with_one_lambda_equal_concatenated_style():
    gen = torch.Generator().manual_seed(6)
    q, k, v = (rand(gen, 2, 12, 192) for _ in range(3))
    ks1, vs1 = rand(gen, 2, 7, 192), rand(gen, 2, 7, 192)
    ks2, vs2 = rand(gen, 2, 19, 192), rand(gen, 2, 19, 192)
    two = reweighted_attention(q, k, v, [ks1, ks2], [vs1, vs2], 3, 1.2)
    two_scalar_list = reweighted_attention(q, k, v, [ks1, ks2], [vs1, vs2], 3, [1.2, 1.2])
    one = reweighted_attention(q, k, v, torch.cat([ks1, ks2], 1), torch.cat([vs1, vs2], 1), 3, 1.2)
    assert torch.equal(two, one) and torch.equal(two_scalar_list, one)


def test_attention_called_once_with_all_keys():
    gen = torch.Generator().manual_seed(7)
    q, k, v = (rand(gen, 2, 10, 160) for _ in range(3))
    ks = [rand(gen, 2, m, 160) for m in (3, 25)]
    vs = [rand(gen, 2, m, 160) for m in (3, 25)]
    counter = CountingAttention()
    out = reweighted_attention(q, k, v, ks, vs, 2, [0.5, 3.0], attention=counter)
    assert counter.calls == [((2, 10, 160), (2, 3 + 25 + 10, 160), (2, 3 + 25 + 10, 160), 2)]
    ref = reweighted_attention_reference(q, k, v, ks, vs, 2, [0.5, 3.0])
    assert rel_err(out, ref) < 1e-5


def test_mixed_mask_costs_one_extra_self_attention_call():
    gen = torch.Generator().manual_seed(8)
    q, k, v = (rand(gen, 1, 6, 64) for _ in range(3))
    ks, vs = rand(gen, 1, 4, 64), rand(gen, 1, 4, 64)
    counter = CountingAttention()
    mask = torch.tensor([[True, False, True, False, False, True]])
    reweighted_attention(q, k, v, ks, vs, 1, 1.2, query_mask=mask, attention=counter)
    assert [c[1][1] for c in counter.calls] == [10, 6]


def test_lambda_zero_is_not_off():
    # λ = 0 gives the style keys logit 0: they still take softmax mass (documented behaviour).
    gen = torch.Generator().manual_seed(9)
    q, k, v = (rand(gen, 1, 5, 64) for _ in range(3))
    ks, vs = rand(gen, 1, 5, 64), rand(gen, 1, 5, 64)
    out = reweighted_attention(q, k, v, ks, vs, 1, 0.0)
    ref = reweighted_attention_reference(q, k, v, ks, vs, 1, 0.0)
    assert rel_err(out, ref) < 1e-5
    assert not torch.allclose(out, sdpa_attention(q, k, v, 1))


# ---------------------------------------------------------------- errors

def _inputs():
    gen = torch.Generator().manual_seed(10)
    q, k, v = (rand(gen, 2, 8, 64) for _ in range(3))
    ks, vs = rand(gen, 2, 5, 64), rand(gen, 2, 5, 64)
    return q, k, v, ks, vs


@pytest.mark.parametrize("lam, fragment", [
    (float("nan"), "style_scale: must be finite, got nan"),
    (float("inf"), "style_scale: must be finite, got inf"),
    (-0.1, "style_scale: must be >= 0, got -0.1"),
    ("1.2", "style_scale: must be a number, got str"),
    (True, "style_scale: must be a number, got bool"),
])
def test_bad_lambda(lam, fragment):
    q, k, v, ks, vs = _inputs()
    with pytest.raises(ZStarError) as info:
        reweighted_attention(q, k, v, ks, vs, 2, lam)
    assert fragment in str(info.value)


def test_bad_lambda_in_list_names_index():
    q, k, v, ks, vs = _inputs()
    with pytest.raises(ZStarError) as info:
        reweighted_attention(q, k, v, [ks, ks], [vs, vs], 2, [1.2, float("nan")])
    assert "style_scale[1]: must be finite" in str(info.value)
    with pytest.raises(ZStarError) as info:
        reweighted_attention(q, k, v, [ks, ks], [vs, vs], 2, [1.2])
    assert "style_scale: 1 values for 2 styles" in str(info.value)


@pytest.mark.parametrize("build, fragment", [
    (lambda q, k, v, ks, vs: (q[0], k, v, ks, vs, 2), "q: expected shape (batch, tokens, heads*dim_head), got (8, 64)"),
    (lambda q, k, v, ks, vs: (q, k, v, ks, vs, 3), "heads: 3 does not divide q's width 64"),
    (lambda q, k, v, ks, vs: (q, k, v, ks, vs, 0), "heads: must be a positive integer, got 0"),
    (lambda q, k, v, ks, vs: (q, k[:1], v, ks, vs, 2), "k: batch 1 does not match q's batch 2"),
    (lambda q, k, v, ks, vs: (q, k, v[..., :32], ks, vs, 2), "v: width 32 does not match q's width 64"),
    (lambda q, k, v, ks, vs: (q, k, v[:, :4], ks, vs, 2), "v: 4 tokens do not match k's 8"),
    (lambda q, k, v, ks, vs: (q, k, v, ks[:1], vs, 2), "k_style: batch 1 does not match q's batch 2"),
    (lambda q, k, v, ks, vs: (q, k, v, ks, vs[..., :32], 2), "v_style: width 32 does not match q's width 64"),
    (lambda q, k, v, ks, vs: (q, k, v, ks, vs[:, :3], 2), "v_style: 3 tokens do not match k_style's 5"),
    (lambda q, k, v, ks, vs: (q, k, v, ks.double(), vs, 2), "k_style: dtype torch.float64 does not match q's dtype torch.float32"),
    (lambda q, k, v, ks, vs: (q, k, v, [ks, ks], [vs], 2), "v_style: 1 tensors for 2 k_style tensors"),
    (lambda q, k, v, ks, vs: (q, k, v, [ks, ks[:1]], [vs, vs], 2), "k_style[1]: batch 1 does not match q's batch 2"),
    (lambda q, k, v, ks, vs: (q, k, v, [], [], 2), "k_style: the list of styles is empty"),
    (lambda q, k, v, ks, vs: (q, k, v, [ks], vs, 2), "k_style/v_style: pass both as tensors or both as lists"),
])
def test_bad_shapes(build, fragment):
    args = build(*_inputs())
    with pytest.raises(ZStarError) as info:
        reweighted_attention(*args, 1.2)
    assert fragment in str(info.value)


@pytest.mark.parametrize("mask, fragment", [
    (torch.ones(2, 7, dtype=torch.bool), "query_mask: shape (2, 7) does not match q's (batch, tokens) (2, 8)"),
    (torch.ones(8, dtype=torch.bool), "query_mask: shape (8,) does not match"),
    (torch.ones(2, 8), "query_mask: dtype must be torch.bool, got torch.float32"),
    ([[True] * 8] * 2, "query_mask: expected a bool tensor of shape (batch, tokens), got list"),
])
def test_bad_mask(mask, fragment):
    q, k, v, ks, vs = _inputs()
    with pytest.raises(ZStarError) as info:
        reweighted_attention(q, k, v, ks, vs, 2, 1.2, query_mask=mask)
    assert fragment in str(info.value)


def test_errors_are_value_errors():
    assert issubclass(ZStarError, ValueError)
