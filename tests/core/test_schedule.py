"""The official DDIM schedule: timesteps, sigma table, end point σ_min, and errors."""
import math

import pytest
import torch

from zstar_attention import (
    ZStarError, ddim_sigmas, ddim_timesteps, scaled_linear_alphas_cumprod, sigmas_from_table, vp_scale,
)


def test_alphas_cumprod_scaled_linear():
    ac = scaled_linear_alphas_cumprod()
    assert ac.dtype == torch.float64 and ac.shape == (1000,)
    betas = [(math.sqrt(0.00085) + i * (math.sqrt(0.012) - math.sqrt(0.00085)) / 999) ** 2 for i in range(1000)]
    prod = 1.0
    for i, b in enumerate(betas):
        prod *= 1 - b
        if i in (0, 1, 500, 999):
            assert abs(float(ac[i]) - prod) < 1e-12
    assert abs(float(ac[0]) - (1 - 0.00085)) < 1e-15


def test_thirty_steps_are_the_official_timesteps():
    expected = [1 + 33 * i for i in range(29, -1, -1)]
    assert expected[0] == 958 and expected[1] == 925 and expected[-2] == 34 and expected[-1] == 1
    assert ddim_timesteps(30) == expected


def test_thirty_step_sigmas_end_at_sigma_min():
    sig = ddim_sigmas(30)
    ac = scaled_linear_alphas_cumprod()
    table = ((1 - ac) / ac).sqrt()
    assert sig.dtype == torch.float64 and sig.shape == (31,)
    assert torch.equal(sig[:-1], table[torch.tensor(ddim_timesteps(30))])
    assert float(sig[-1]) == float(table[0])
    assert 0.0291 < float(sig[-1]) < 0.0293  # σ_min of SD1.5, not 0
    assert 11.47 < float(sig[0]) < 11.48  # σ(958); σ(999) ≈ 14.6 is not on this schedule


@pytest.mark.parametrize("steps", [1, 2, 7, 10, 50, 333, 999])
def test_any_step_count_is_strictly_descending(steps):
    ts = ddim_timesteps(steps)
    assert len(ts) == steps and ts[-1] == 1 and all(a > b for a, b in zip(ts, ts[1:]))
    sig = ddim_sigmas(steps)
    assert sig.shape == (steps + 1,) and bool((sig[:-1] > sig[1:]).all()) and float(sig[-1]) > 0


def test_thousand_steps_need_offset_zero():
    # Leading spacing + offset 1 would reach t = 1000, past the table: reject, don't index out.
    with pytest.raises(ZStarError) as info:
        ddim_timesteps(1000)
    assert "steps: 1000 steps with steps_offset 1 would reach timestep 1000, past the last train step 999" in str(info.value)
    assert ddim_timesteps(1000, steps_offset=0) == list(range(999, -1, -1))


def test_sigmas_from_table_keeps_dtype():
    table = torch.linspace(0.03, 14.6, 1000, dtype=torch.float32)
    sig = sigmas_from_table(table, [958, 500, 1])
    assert sig.dtype == torch.float32
    assert sig.tolist() == [table[958].item(), table[500].item(), table[1].item(), table[0].item()]


@pytest.mark.parametrize("call, fragment", [
    (lambda: ddim_timesteps(0), "steps: 0 is out of range; use 1 to 1000"),
    (lambda: ddim_timesteps(1001), "steps: 1001 is out of range; use 1 to 1000"),
    (lambda: ddim_timesteps(2.5), "steps: must be an integer, got 2.5"),
    (lambda: ddim_timesteps(True), "steps: must be an integer, got True"),
    (lambda: sigmas_from_table(torch.ones(1000), []), "timesteps: empty"),
    (lambda: sigmas_from_table(torch.ones(1000), [5, 5]), "timesteps: must be strictly descending"),
    (lambda: sigmas_from_table(torch.ones(1000), [1000]), "timesteps: 1000 is out of range; use 1 to 999"),
    (lambda: sigmas_from_table(torch.ones(1000), [10, 0]), "timesteps: 0 is out of range"),
    (lambda: sigmas_from_table(torch.ones(10, 2), [1]), "sigma_table: expected a 1-D tensor"),
])
def test_schedule_errors(call, fragment):
    with pytest.raises(ZStarError) as info:
        call()
    assert fragment in str(info.value)


def test_vp_scale():
    assert vp_scale(0.0) == 1.0
    assert abs(vp_scale(2.0) - math.sqrt(5)) < 1e-15
    ac = scaled_linear_alphas_cumprod()
    sig = ((1 - ac) / ac).sqrt()
    torch.testing.assert_close(vp_scale(sig), 1 / ac.sqrt(), rtol=1e-12, atol=0)
