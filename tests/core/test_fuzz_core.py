"""Property-based tests of the core's input handling (issue 7): every input either works or
raises ZStarError with a message, never another exception type from deep inside torch.

Inputs range over what a caller can pass (shapes, dtypes, numbers incl. NaN/inf/negatives,
arbitrary text), bounded only where a valid input is simply large (step counts of 10⁵ work,
they just take memory). Successful calls are checked for the right shape, and small ones
against the float64 reference.
"""
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings, strategies as st

from zstar_attention import (
    RowLayout, ZStarError, ddim_invert, ddim_sample, ddim_sigmas, ddim_timesteps, parse_layers,
    reweighted_attention, reweighted_attention_reference, scaled_linear_alphas_cumprod, sigmas_from_table, step_window,
    zstar_batch_attention,
)

# ZSTAR_FUZZ_EXAMPLES=5000 runs a long, randomised search instead of the fixed quick one.
DEEP = int(os.environ.get("ZSTAR_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=DEEP or 150, deadline=None, derandomize=not DEEP,
                suppress_health_check=[HealthCheck.too_slow])
NAN, INF = float("nan"), float("inf")


def works_or_zstar_error(fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except ZStarError as e:
        assert str(e).strip(), "ZStarError without a message"
        event("ZStarError")
        return None
    event("ran")
    return result


def mostly(good, bad):
    """Three parts plausible to one part anything (hypothesis starts from the simplest values)."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else good)


any_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                       st.sampled_from([NAN, INF, -INF, -1.0, True, None, "1.2", torch.tensor(1.5), torch.ones(2)]))
any_int = st.one_of(st.integers(-5, 2000), st.sampled_from([True, 2.0, 2.5, None, "3", torch.tensor(3), torch.ones(2)]))


# ---------------------------------------------------------------- reweighted_attention

@st.composite
def attention_inputs(draw):
    """q/k/v and styles of mostly consistent shapes, each with a chance of one thing off."""
    b, n = draw(mostly(st.integers(1, 3), st.integers(0, 1))), draw(mostly(st.integers(1, 9), st.integers(0, 1)))
    heads, d = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    width = heads * d
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.float16]))
    flaw = draw(mostly(st.none(), st.sampled_from(
        ["k batch", "k width", "v tokens", "v dtype", "q 2-D", "q list", "heads 0", "heads float", "heads divides not",
         "style batch", "style width", "style tokens kv", "no styles", "kv list/tensor", "scale count", "mask dtype",
         "mask shape", "k none"])))
    n_styles = draw(st.integers(1, 3))
    styles_m = [draw(mostly(st.integers(1, 9), st.integers(0, 1))) for _ in range(n_styles)]
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))

    def t(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen).to(dt)

    q, k, v = t(b, n, width), t(b, n, width), t(b, n, width)
    ks = [t(b, m, width) for m in styles_m]
    vs = [t(b, m, width) for m in styles_m]
    scales = [draw(mostly(st.floats(0, 4), any_number)) for _ in styles_m]
    use_list = draw(st.booleans()) or n_styles > 1
    mask = draw(st.sampled_from([None, "random", "all", "none"]))
    query_mask = None if mask is None else {
        "random": torch.rand(b, n, generator=gen) > 0.5, "all": torch.ones(b, n, dtype=torch.bool),
        "none": torch.zeros(b, n, dtype=torch.bool)}[mask]
    if flaw == "k batch":
        k = t(b + 1, n, width)
    elif flaw == "k width":
        k = t(b, n, width + 1)
    elif flaw == "v tokens":
        v = t(b, n + 1, width)
    elif flaw == "v dtype":
        v = v.to(torch.bfloat16)
    elif flaw == "q 2-D":
        q = q.reshape(-1, width)
    elif flaw == "q list":
        q = q.tolist()
    elif flaw == "heads 0":
        heads = 0
    elif flaw == "heads float":
        heads = float(heads)
    elif flaw == "heads divides not":
        heads = width + 1
    elif flaw == "style batch":
        ks[0] = t(b + 1, styles_m[0], width)
    elif flaw == "style width":
        vs[-1] = t(b, styles_m[-1], width + 2)
    elif flaw == "style tokens kv":
        vs[0] = t(b, styles_m[0] + 1, width)
    elif flaw == "no styles":
        ks, vs, use_list = [], [], True
    elif flaw == "kv list/tensor":
        ks, use_list = ks[0], None
    elif flaw == "scale count":
        scales = scales + [1.0]
    elif flaw == "mask dtype":
        query_mask = torch.ones(b, n)
    elif flaw == "mask shape":
        query_mask = torch.ones(b, n + 1, dtype=torch.bool)
    elif flaw == "k none":
        k = None
    if use_list is None:  # k_style a tensor, v_style a list
        k_style, v_style, scale = ks, vs, scales[0]
    elif use_list:
        k_style, v_style, scale = ks, vs, scales if draw(st.booleans()) or len(scales) != 1 else scales[0]
    else:
        k_style, v_style, scale = ks[0], vs[0], scales[0]
    return dict(q=q, k=k, v=v, k_style=k_style, v_style=v_style, heads=heads, style_scale=scale,
                query_mask=query_mask)


@FUZZ
@given(args=attention_inputs())
def test_fuzz_reweighted_attention(args):
    out = works_or_zstar_error(reweighted_attention, **args)
    if out is None:
        return
    q = args["q"]
    assert out.shape == q.shape and out.dtype == q.dtype
    scales = args["style_scale"] if isinstance(args["style_scale"], list) else [args["style_scale"]]
    if q.dtype != torch.float16 and all(float(s) <= 4 for s in scales):
        ref = reweighted_attention_reference(**args)
        assert torch.allclose(out.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("b, n, m", [(0, 3, 3), (1, 0, 3), (1, 3, 0), (1, 0, 0), (0, 0, 0)])
def test_empty_batches_and_token_sets(b, n, m):
    """Zero rows or tokens anywhere: an empty or well-defined result, not a reshape error."""
    gen = torch.Generator().manual_seed(0)
    q, k, ks = torch.randn(b, n, 8, generator=gen), torch.randn(b, n, 8, generator=gen), torch.randn(b, m, 8, generator=gen)
    out = reweighted_attention(q, k, k, ks, ks, 2)
    assert out.shape == q.shape and torch.isfinite(out).all()


@FUZZ
@given(n_content=mostly(st.integers(1, 3), st.integers(-1, 0)), n_styles=mostly(st.integers(1, 3), st.integers(-1, 0)),
       groups=mostly(st.just(1), st.integers(-1, 4)),
       n_chunks=st.integers(0, 3), extra_rows=mostly(st.just(0), st.integers(-2, 2)),
       self_scale=mostly(st.sampled_from([0.0, 1.5]), any_number), mask=st.booleans())
def test_fuzz_batch_attention(n_content, n_styles, groups, n_chunks, extra_rows, self_scale, mask):
    layout = works_or_zstar_error(RowLayout, n_content, n_styles, groups)
    if layout is None:
        return
    rows = max(0, n_chunks * layout.rows + extra_rows)
    gen = torch.Generator().manual_seed(rows)
    q, k, v = (torch.randn(rows, 6, 8, generator=gen) for _ in range(3))
    query_mask = torch.rand(layout.n_content, 6, generator=gen) > 0.5 if mask else None
    out = works_or_zstar_error(zstar_batch_attention, q, k, v, 2, layout, n_chunks, [1.2] * layout.n_styles,
                               self_scale, query_mask=query_mask)
    if out is not None:
        assert out.shape == q.shape
        assert torch.isfinite(out).all() or not abs(float(self_scale)) <= 100  # a huge λ may overflow: allowed


# ---------------------------------------------------------------- layers and steps

layer_text = st.one_of(st.text(max_size=16), st.from_regex(r"\A[ 0-9,\-]{0,12}\Z"),
                       st.sampled_from(["auto", "all", "ALL", " 10 - 15 ", "0-15", "١٠-١٥", "9" * 5000, "1-" + "9" * 5000]),
                       st.sampled_from([None, 10, 10.5, b"10-15", ["10"]]))


@FUZZ
@given(spec=layer_text, num_layers=mostly(st.sampled_from([16, 70]), st.one_of(any_int, st.integers(-3, 1000))))
def test_fuzz_parse_layers(spec, num_layers):
    chosen = works_or_zstar_error(parse_layers, spec, num_layers)
    if chosen is not None:
        assert chosen == tuple(sorted(set(chosen))) and chosen and 0 <= chosen[0] and chosen[-1] < num_layers


@FUZZ
@given(steps=mostly(st.integers(1, 60), any_int), start=mostly(st.integers(0, 30), any_int),
       end=mostly(st.integers(1, 60), any_int))
def test_fuzz_step_window(steps, start, end):
    window = works_or_zstar_error(step_window, steps, start, end)
    if window is not None:
        assert len(window) == steps and sum(window) == end - start and window[start] and not any(window[end:])


@FUZZ
@given(steps=mostly(st.integers(1, 1000), any_int), train=mostly(st.just(1000), st.one_of(any_int, st.integers(-2, 5000))),
       offset=mostly(st.integers(0, 2), any_int))
def test_fuzz_ddim_timesteps(steps, train, offset):
    ts = works_or_zstar_error(ddim_timesteps, steps, num_train_steps=train, steps_offset=offset)
    if ts is not None:
        assert len(ts) == steps and all(a > b for a, b in zip(ts, ts[1:])) and 0 <= ts[-1] and ts[0] < train
        table = torch.linspace(0.03, 14.6, train)
        sigmas = works_or_zstar_error(sigmas_from_table, table, ts)
        if sigmas is not None:  # offset 0 ends at t = 0, which is the end point itself: refused
            assert sigmas.shape == (steps + 1,) and ts[-1] >= 1


# ---------------------------------------------------------------- schedules and DDIM loops

@FUZZ
@given(table=mostly(st.lists(st.floats(0.01, 20), min_size=2, max_size=50),
                    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3)), max_size=6)),
       timesteps=mostly(st.lists(st.integers(1, 49), min_size=1, max_size=6, unique=True).map(sorted).map(lambda t: t[::-1]),
                        st.lists(mostly(st.integers(1, 49), any_int), max_size=6)),
       ndim=mostly(st.just(1), st.integers(0, 3)))
def test_fuzz_sigmas_from_table(table, timesteps, ndim):
    t = torch.tensor(table, dtype=torch.float64)
    t = t.reshape((1,) * (ndim - 1) + tuple(t.shape)) if ndim >= 1 else (t[0] if t.numel() else t.sum())
    sigmas = works_or_zstar_error(sigmas_from_table, t, timesteps)
    if sigmas is not None:
        assert sigmas.shape == (len(timesteps) + 1,)


@FUZZ
@given(steps=mostly(st.integers(1, 50), any_int),
       alphas=mostly(st.none(), st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=60)))
def test_fuzz_ddim_sigmas(steps, alphas):
    ac = None if alphas is None else torch.tensor(alphas, dtype=torch.float64)
    sigmas = works_or_zstar_error(ddim_sigmas, steps, ac)
    if sigmas is not None:
        assert sigmas.ndim == 1 and len(sigmas) == steps + 1 and torch.isfinite(sigmas).all()


@FUZZ
@given(sigmas=mostly(st.lists(st.floats(0.03, 15), min_size=2, max_size=8, unique=True).map(sorted).map(lambda s: s[::-1]),
                     st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2)), max_size=6)),
       shape=mostly(st.just((1, 4, 4, 4)), st.sampled_from([(2, 4, 2, 2), (1, 1), (3,)])))
def test_fuzz_ddim_loops(sigmas, shape):
    x = torch.randn(shape, dtype=torch.float64)
    denoiser = lambda x_, s: 0.5 * x_  # noqa: E731
    traj = works_or_zstar_error(ddim_invert, denoiser, x, sigmas)
    if traj is not None:
        assert len(traj) == len(sigmas) and all(t.shape == x.shape and torch.isfinite(t).all() for t in traj)
    end = works_or_zstar_error(ddim_sample, denoiser, x, sigmas)
    if end is not None:
        assert end.shape == x.shape


def test_paper_schedule_is_among_the_accepted():
    """A fixed point next to the fuzzing: the official 30-step schedule passes every check."""
    assert ddim_timesteps(30)[0] == 958 and ddim_timesteps(30)[-1] == 1
    ac = scaled_linear_alphas_cumprod()
    assert math.isclose(float(ddim_sigmas(30, ac)[-1]), float(((1 - ac[0]) / ac[0]).sqrt()))
    assert step_window(30, 5, 30).count(True) == 25
    with pytest.raises(ZStarError):
        parse_layers("9" * 5000, 16)
