"""DDIM inversion/sampling in ComfyUI's sigma space against the official VP-space loops.

The reference loops below transcribe null-text inversion's next_step and diffusers' DDIM
step (η = 0, set_alpha_to_one = False, so the clean end sits at ᾱ₀) in float64 on the VP
latent, with an arbitrary deterministic ε(x_vp, t). Our functions only see a ComfyUI-style
denoiser (VE latent x at σ). Trajectories are compared after x_ve = x_vp·vp_scale(σ).
"""
import math

import pytest
import torch

from zstar_attention import (
    ZStarError, ddim_invert, ddim_sample, ddim_sigmas, ddim_step, ddim_timesteps, scaled_linear_alphas_cumprod,
    vp_scale,
)

AC = scaled_linear_alphas_cumprod()
SIGMA_TABLE = ((1 - AC) / AC).sqrt()
SHAPE = (2, 4, 8, 8)
TOL = 1e-10  # relative to the trajectory's scale, float64


def make_eps(seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    b = torch.randn(SHAPE, generator=gen, dtype=torch.float64)

    def eps(x_vp, t):
        return 0.8 * torch.tanh(a * x_vp + 0.003 * t * b) + 0.1 * x_vp

    return eps


def comfy_denoiser(eps_fn, seen=None):
    """VE denoiser in ComfyUI's convention for the VP eps-model eps_fn(x_vp, t)."""

    def denoiser(x, sigma):
        assert sigma.shape == (x.shape[0],) and bool((sigma == sigma[0]).all())
        s = float(sigma[0])
        t = int(torch.argmin((SIGMA_TABLE - s).abs()))
        assert abs(float(SIGMA_TABLE[t]) - s) <= 1e-12 * s, "sigma is not a table entry"
        if seen is not None:
            seen.append(t)
        x_vp = x / vp_scale(s)
        return x - s * eps_fn(x_vp, t)

    return denoiser


def alpha_below(t, stride):
    prev = t - stride
    return float(AC[prev]) if prev >= 0 else float(AC[0])  # final_alpha_cumprod = ᾱ₀


def official_invert(eps_fn, x_vp, steps):
    """null-text inversion's ddim_loop/next_step; returns VP latents at ᾱ₀, ᾱ(1), …, ᾱ(t_top)."""
    ts = ddim_timesteps(steps)
    stride = 1000 // steps
    out = [x_vp]
    for t in reversed(ts):  # 1, 1+stride, …
        a_low, a_up = alpha_below(t, stride), float(AC[t])
        eps = eps_fn(x_vp, t)  # model at the UPPER timestep on the LOWER latent
        x0 = (x_vp - math.sqrt(1 - a_low) * eps) / math.sqrt(a_low)
        x_vp = math.sqrt(a_up) * x0 + math.sqrt(1 - a_up) * eps
        out.append(x_vp)
    return out[::-1]  # index i at ts[i], last at ᾱ₀, like ddim_invert


def official_sample(eps_fn, x_vp, steps):
    ts = ddim_timesteps(steps)
    stride = 1000 // steps
    for t in ts:
        a_t, a_prev = float(AC[t]), alpha_below(t, stride)
        eps = eps_fn(x_vp, t)
        x0 = (x_vp - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        x_vp = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x_vp


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("steps", [1, 7, 30])
def test_invert_matches_official_vp_loop(steps):
    eps_fn = make_eps(steps)
    x0_vp = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sig = ddim_sigmas(steps)
    seen, calls = [], []
    traj = ddim_invert(comfy_denoiser(eps_fn, seen), x0_vp * vp_scale(sig[-1]), sig,
                       callback=lambda i, n, x: calls.append((i, n)))
    ref = official_invert(eps_fn, x0_vp, steps)
    assert len(traj) == steps + 1 == len(ref)
    for i in range(steps + 1):
        assert rel(traj[i], ref[i] * vp_scale(sig[i])) < TOL, f"trajectory point {i}"
    assert seen == sorted(ddim_timesteps(steps))  # upper timestep of each interval, bottom up
    assert calls == [(i, steps) for i in range(1, steps + 1)]


@pytest.mark.parametrize("steps", [1, 7, 30])
def test_sample_matches_official_vp_loop(steps):
    eps_fn = make_eps(100 + steps)
    sig = ddim_sigmas(steps)
    xT_vp = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    seen, calls = [], []
    out = ddim_sample(comfy_denoiser(eps_fn, seen), xT_vp * vp_scale(sig[0]), sig,
                      callback=lambda i, n, x: calls.append((i, n)))
    ref = official_sample(eps_fn, xT_vp, steps)
    assert rel(out, ref * vp_scale(sig[-1])) < TOL
    assert seen == ddim_timesteps(steps)
    assert calls == [(i, steps) for i in range(1, steps + 1)]


def test_invert_keeps_input_and_sigma_dtype_follows_x():
    x = torch.randn(1, 4, 4, 4)
    got = []

    def denoiser(x_in, sigma):
        got.append((sigma.dtype, sigma.shape))
        return torch.zeros_like(x_in)

    traj = ddim_invert(denoiser, x, ddim_sigmas(3))
    assert traj[-1] is x and all(t.dtype == torch.float32 for t in traj)
    assert got == [(torch.float32, (1,))] * 3


def test_ddim_step():
    x, d = torch.tensor([3.0]), torch.tensor([1.0])
    assert torch.equal(ddim_step(x, d, 2.0, 0.5), torch.tensor([1.5]))


def test_gaussian_inversion_reconstruction_converges(capsys):
    """x0 ~ N(μ, s²I) has the exact denoiser D(x,σ) = μ + s²/(s²+σ²)(x−μ).

    DDIM inversion then DDIM sampling over the same sigmas must return to x0, with an error
    that falls as the step count grows (first order: error·steps stays bounded).
    """
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 4, 1, 1, generator=gen, dtype=torch.float64)
    s = 0.6
    x0 = mu + s * torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)

    def denoiser(x, sigma):
        return mu + (s * s / (s * s + sigma.view(-1, 1, 1, 1) ** 2)) * (x - mu)

    rows = []
    for steps in (10, 20, 50, 100, 250):
        sig = ddim_sigmas(steps)
        rec = ddim_sample(denoiser, ddim_invert(denoiser, x0, sig)[0], sig)
        rows.append((steps, float((rec - x0).norm() / x0.norm())))
    table = "\n".join(["steps  relative L2 error  error*steps"]
                      + [f"{n:5d}  {e:17.3e}  {e * n:11.3f}" for n, e in rows])
    print("\nGaussian DDIM inversion -> reconstruction error\n" + table)
    errors = [e for _, e in rows]
    assert all(a > b for a, b in zip(errors, errors[1:])), table
    assert errors[-1] < 1e-2, table
    assert all(e * n < 2.0 for n, e in rows), table


@pytest.mark.parametrize("sigmas, fragment", [
    (torch.tensor([1.0, 2.0, 0.1]), "sigmas: must be strictly descending"),
    (torch.tensor([2.0, 1.0, 1.0]), "sigmas: must be strictly descending"),
    (torch.tensor([2.0, 1.0, 0.0]), "sigmas: the last value must be > 0 (σ_min, the clean latent at ᾱ₀), got 0.0"),
    (torch.ones(2, 3), "sigmas: expected a 1-D schedule of at least 2 values, got shape (2, 3)"),
    (torch.tensor([1.0]), "sigmas: expected a 1-D schedule of at least 2 values, got shape (1,)"),
    (torch.tensor([float("nan"), 1.0]), "sigmas: contains NaN or inf"),
])
def test_invert_rejects_bad_sigmas(sigmas, fragment):
    with pytest.raises(ZStarError) as info:
        ddim_invert(lambda x, s: x, torch.zeros(1, 4), sigmas)
    assert fragment in str(info.value)


def test_sample_allows_zero_end_but_not_negative():
    x = torch.ones(1, 4)
    out = ddim_sample(lambda x, s: torch.zeros_like(x), x, torch.tensor([2.0, 1.0, 0.0]))
    assert torch.equal(out, torch.zeros(1, 4))
    with pytest.raises(ZStarError) as info:
        ddim_sample(lambda x, s: x, x, torch.tensor([2.0, -1.0]))
    assert "sigmas: the last value must be >= 0, got -1.0" in str(info.value)
