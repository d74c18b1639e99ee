"""Rectified-flow inversion/sampling against an exact flow.

For data x₀ ~ N(μ, s²) per dimension and x_σ = (1−σ)x₀ + σε, the optimal denoiser is the
Gaussian posterior mean D(x, σ) = μ + (1−σ)s²/r²·(x − (1−σ)μ), r² = (1−σ)²s² + σ², and the
flow ODE dx/dσ = (x − D)/σ is linear, solved by the monotone map between the marginals:
x(σ) = (1−σ)μ + r(σ)/s·(x₀ − μ). Solvers are compared with it in float64.
"""
import math

import pytest
import torch

from zstar_attention import FlowTrajectory, ZStarError, flow_invert, flow_sample, flow_step, flow_velocity

SHAPE = (2, 4, 4, 4)
STEPS = (8, 16, 32, 64)


def gaussian(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn((1,) + SHAPE[1:], generator=gen, dtype=torch.float64)
    s = 0.5 + 0.7 * torch.rand((1,) + SHAPE[1:], generator=gen, dtype=torch.float64)
    x0 = mu + s * torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    mu, s, x0 = mu.to(dtype), s.to(dtype), x0.to(dtype)

    def denoiser(x, sigma, seen=None):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype and bool((sigma == sigma[0]).all())
        if seen is not None:
            seen.append(float(sigma[0]))
        q = sigma.view(-1, 1, 1, 1)
        a = 1 - q
        return mu + a * s * s / (a * a * s * s + q * q) * (x - a * mu)

    def exact(sigma):
        return (1 - sigma) * mu + ((1 - sigma) ** 2 * s * s + sigma ** 2).sqrt() / s * (x0 - mu)

    return denoiser, exact, x0


def shifted(steps, shift=3.0, top=1.0, bottom=0.0):
    """A Flux/SD3-style schedule: uniform t from top to bottom, σ = shift·t/(1 + (shift−1)·t)."""
    t = torch.linspace(top, bottom, steps + 1, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def slope(steps, errors):
    """Least-squares order p in error ≈ C·steps^(−p)."""
    xs, ys = [math.log(n) for n in steps], [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return -sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def test_converges_to_the_exact_flow_with_the_solver_order():
    denoiser, exact, x0 = gaussian()
    rows, errs = [], {}
    for order in (1, 2):
        for n in STEPS:
            sig = shifted(n)
            inv = flow_invert(denoiser, x0, sig, order=order)
            inv_err = max(rel(inv[i], exact(float(sig[i]))) for i in range(n + 1))
            down = flow_sample(denoiser, exact(float(sig[0])), sig, order=order)
            down_err = max(rel(down[i], exact(float(sig[i]))) for i in range(n + 1))
            rec = flow_sample(denoiser, inv[0], sig, order=order)
            rec_err = rel(rec[-1], x0)
            errs[order, n] = (inv_err, down_err, rec_err)
            rows.append(f"{n:5d}  {order:5d}  {inv.evaluations:3d}+{rec.evaluations:<3d}  "
                        f"{inv_err:9.3e}  {down_err:9.3e}  {rec_err:13.3e}")
    fits = {order: [slope(STEPS, [errs[order, n][k] for n in STEPS]) for k in range(3)] for order in (1, 2)}
    table = "\n".join(
        ["steps  order  calls    inversion  sampling   inv+sampling"]
        + rows
        + [f"fitted order {o}: " + "  ".join(f"{p:.2f}" for p in fits[o]) for o in (1, 2)]
    )
    print("\nGaussian flow, shift-3 schedule 1 -> 0: max relative L2 error against the exact trajectory "
          "(inversion from x0; sampling from the exact x(σ_max)) and the round trip x0 -> σ_max -> x0\n" + table)
    for k in range(3):
        assert 0.8 < fits[1][k] < 1.2, table
        for order in (1, 2):
            errors = [errs[order, n][k] for n in STEPS]
            assert all(a > b for a, b in zip(errors, errors[1:])), table
        assert all(errs[2, n][k] < errs[1, n][k] / 5 for n in STEPS), table
    assert 1.7 < fits[2][0] < 2.5 and 1.7 < fits[2][1] < 2.5, table
    # The round trip converges faster than either half (observed ≈ 3): inversion and sampling
    # evaluate their midpoints at the same point up to O(h³), so their leading errors cancel.
    assert fits[2][2] > 1.8, table


def test_flow_step_is_the_euler_step_and_the_ddim_step():
    denoiser, exact, _ = gaussian(1)
    x = exact(0.4)
    sigma = torch.full((SHAPE[0],), 0.4, dtype=torch.float64)
    d = denoiser(x, sigma)
    for s_next in (0.0, 0.25, 0.7, 1.0):  # down, and up (inverting)
        euler = x + (s_next - 0.4) * (x - d) / 0.4
        assert torch.allclose(flow_step(x, d, 0.4, s_next), euler, rtol=0, atol=1e-13)
        assert torch.allclose(x + (s_next - 0.4) * flow_velocity(x, d, 0.4), euler, rtol=0, atol=1e-13)
    # x0-hat and eps-hat reproduce x at σ; σ' = 0 lands on the prediction
    assert torch.allclose(flow_step(x, d, 0.4, 0.4), x, rtol=0, atol=1e-13)
    assert torch.allclose(flow_step(x, d, 0.4, 0.0), d, rtol=0, atol=1e-13)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("bottom", [0.0, 0.05])
def test_calls_sigmas_and_trajectory_layout(order, bottom):
    denoiser, _, x0 = gaussian(2)
    n = 6
    sig = shifted(n, bottom=bottom)
    values = sig.tolist()
    seen, calls = [], []
    inv = flow_invert(lambda x, s: denoiser(x, s, seen), x0, sig, order=order,
                      callback=lambda i, total, x: calls.append((i, total)))
    assert isinstance(inv, FlowTrajectory) and len(inv) == n + 1 and inv[-1] is x0
    assert calls == [(i, n) for i in range(1, n + 1)]
    up = values[::-1]  # ascending
    starts_at_zero = up[0] == 0
    if order == 1:  # Euler at the lower σ of each interval; no call at σ = 0 (v = −x exactly)
        expected = up[1:-1] if starts_at_zero else up[:-1]
    else:  # one call at the start unless σ = 0, then the midpoint of every interval
        expected = ([] if starts_at_zero else [up[0]]) + [a + (b - a) / 2 for a, b in zip(up, up[1:])]
    assert seen == pytest.approx(expected, rel=0, abs=1e-15)
    assert inv.evaluations == len(seen) == n + order - 1 - starts_at_zero

    seen.clear()
    down = flow_sample(lambda x, s: denoiser(x, s, seen), inv[0], sig, order=order)
    assert len(down) == n + 1 and down[0] is inv[0]
    expected = values[:-1] if order == 1 else [values[0]] + [a + (b - a) / 2 for a, b in zip(values, values[1:])]
    assert seen == pytest.approx(expected, rel=0, abs=1e-15)
    assert down.evaluations == n + order - 1


def test_first_step_from_zero_uses_the_exact_velocity_without_a_start_velocity():
    x0 = gaussian(3)[2]
    sig = torch.tensor([0.5, 0.0], dtype=torch.float64)
    inv = flow_invert(lambda x, s: pytest.fail("no call expected"), x0, sig, order=1)
    assert torch.equal(inv[0], x0 + 0.5 * -x0) and inv.evaluations == 0


@pytest.mark.parametrize("order", [1, 2])
def test_start_velocity_is_the_first_steps_velocity(order):
    """The caller's v(x0, σ = 0) (the model's, as FireFlow's reference asks it) replaces the exact
    limit in the first step; every later velocity still comes from the denoiser, and it counts."""
    denoiser, _, x0 = gaussian(4)
    sig = shifted(4)
    v0 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9), dtype=x0.dtype)
    seen = []
    inv = flow_invert(lambda x, s: denoiser(x, s, seen), x0, sig, order=order, start_velocity=v0)
    up = sig.tolist()[::-1]
    h = up[1] - up[0]
    if order == 1:
        assert torch.equal(inv[-2], x0 + h * v0)
    else:  # the midpoint is reached with v0, the step taken with the midpoint's velocity
        x_mid = x0 + (h / 2) * v0
        v_mid = (x_mid - denoiser(x_mid, torch.full((x0.shape[0],), up[0] + h / 2, dtype=x0.dtype), [])) / (up[0] + h / 2)
        assert torch.allclose(inv[-2], x0 + h * v_mid, rtol=0, atol=1e-12)
    assert 0.0 not in seen and inv.evaluations == len(seen) + 1 == len(sig) - 1 + order - 1
    exact_start = flow_invert(denoiser, x0, sig, order=order)
    assert not torch.equal(inv[0], exact_start[0])
    with pytest.raises(ZStarError, match=r"start_velocity: shape \(1, 1, 1, 1\) differs from the latent's"):
        flow_invert(denoiser, x0, sig, order=order, start_velocity=v0[:1, :1, :1, :1])


@pytest.mark.parametrize("order", [1, 2])
def test_batch_rows_are_independent(order):
    denoiser, _, x0 = gaussian(4)
    sig = shifted(5)
    both = flow_invert(denoiser, x0, sig, order=order)
    for row in range(SHAPE[0]):
        alone = flow_invert(denoiser, x0[row:row + 1], sig, order=order)
        for a, b in zip(alone, both):
            assert torch.allclose(a[0], b[row], rtol=0, atol=1e-14)
    out = flow_sample(denoiser, both[0], sig, order=order)[-1]
    alone = flow_sample(denoiser, both[0][1:], sig, order=order)[-1]
    assert torch.allclose(alone[0], out[1], rtol=0, atol=1e-14)


@pytest.mark.parametrize("order", [1, 2])
def test_float32_stays_float32(order):
    denoiser, _, x0 = gaussian(5, dtype=torch.float32)
    sig = shifted(4).float()
    inv = flow_invert(denoiser, x0, sig, order=order)
    assert all(t.dtype == torch.float32 for t in inv)
    out = flow_sample(denoiser, inv[0], sig, order=order)
    assert all(t.dtype == torch.float32 for t in out)
    denoiser64, _, x64 = gaussian(5)  # the same solver in float64: only rounding differs
    ref = flow_sample(denoiser64, flow_invert(denoiser64, x64, shifted(4), order=order)[0], shifted(4), order=order)
    assert rel(out[-1].double(), ref[-1]) < 1e-5


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(sigmas=torch.ones(2, 3)), "sigmas: expected a 1-D schedule of at least 2 values, got shape (2, 3)"),
    (dict(sigmas=torch.tensor([0.5])), "sigmas: expected a 1-D schedule of at least 2 values, got shape (1,)"),
    (dict(sigmas=torch.tensor([float("nan"), 0.0])), "sigmas: contains NaN or inf"),
    (dict(sigmas=torch.tensor([0.2, 0.5, 0.0])), "sigmas: must be strictly descending"),
    (dict(sigmas=torch.tensor([0.5, 0.5, 0.0])), "sigmas: must be strictly descending"),
    (dict(sigmas=torch.tensor([14.6, 1.0, 0.03])), "sigmas: rectified-flow sigmas lie in [0, 1], got 0.03 to 14.6"),
    (dict(sigmas=torch.tensor([1.0, 0.5, -0.1])), "sigmas: rectified-flow sigmas lie in [0, 1], got -0.1 to 1"),
    (dict(order=3), "order: must be 1 (Euler) or 2 (FireFlow midpoint), got 3"),
    (dict(order=1.5), "order: must be an integer, got 1.5"),
    (dict(order=True), "order: must be an integer, got True"),
    (dict(x=[[0.0]]), "{x}: expected a torch.Tensor latent, got list"),
    (dict(x=torch.zeros(1, 4, dtype=torch.long)), "{x}: expected a floating-point latent, got torch.int64"),
    (dict(denoiser=None), "denoiser: expected a callable denoiser(x, sigma) -> denoised, got NoneType"),
])
@pytest.mark.parametrize("fn, name", [(flow_invert, "x0"), (flow_sample, "x")])
def test_bad_inputs_name_the_input(kwargs, fragment, fn, name):
    args = dict(denoiser=lambda x, s: x, x=torch.zeros(1, 4), sigmas=torch.tensor([1.0, 0.5, 0.0]), order=1)
    args.update(kwargs)
    with pytest.raises(ZStarError) as info:
        fn(args["denoiser"], args["x"], args["sigmas"], order=args["order"])
    assert fragment.format(x=name) in str(info.value)
