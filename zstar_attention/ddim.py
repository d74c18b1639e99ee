"""Deterministic DDIM (η = 0) inversion and sampling on ComfyUI's denoiser interface.

`denoiser(x, sigma) -> denoised` with x = denoised + σ·ε (ComfyUI's k-diffusion convention;
sigma is a (B,) tensor, as ComfyUI's samplers pass it). Working on the denoised prediction
makes EPS and v-prediction models behave alike.

In these sigma (VE) coordinates the DDIM update is x' = denoised + σ'·ε. Inversion follows the
official code (null-text inversion's next_step): each interval σl -> σu is crossed with the
model evaluated at the UPPER sigma on the LOWER latent, so every denoising step t has an
inversion evaluation at the same t. The official code feeds the VP latent x_vp unchanged while
switching the timestep, so the VE input is rescaled to present the model that same VP latent.
"""
from __future__ import annotations

import torch

from .errors import ZStarError
from .schedule import Callback, Denoiser, check_descending, schedule_values, sigma_batch, vp_scale

__all__ = ["ddim_step", "ddim_invert", "ddim_sample"]


def _check_sigmas(sigmas, zero_end: bool = False) -> list[float]:
    """Validate a denoising schedule; return it as Python floats (exact float64 arithmetic)."""
    values = schedule_values(sigmas)
    if values[0] > 1e8:  # σ_max is ~15 for SD models, ~4096 with zero terminal SNR; σ² would overflow a float
        raise ZStarError(f"sigmas: {values[0]:g} is far above any model's σ_max; pass a model's schedule")
    check_descending(values, "ddim_sigmas(30)")
    if values[-1] < 0 and zero_end:
        raise ZStarError(f"sigmas: the last value must be >= 0, got {values[-1]}")
    if values[-1] <= 0 and not zero_end:
        raise ZStarError(
            f"sigmas: the last value must be > 0 (σ_min, the clean latent at ᾱ₀), got {values[-1]}; "
            "DDIM inversion divides by σ"
        )
    return values


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One η = 0 DDIM step in VE coordinates: ε = (x − denoised)/σ; x' = denoised + σ'·ε."""
    eps = (x - denoised) / sigma
    return denoised + sigma_next * eps


def ddim_invert(denoiser: Denoiser, x: torch.Tensor, sigmas, callback: Callback = None) -> list[torch.Tensor]:
    """DDIM-invert the clean latent x (at sigmas[-1]) up to sigmas[0]; keep the trajectory.

    sigmas is the DENOISING schedule (descending, e.g. ddim_sigmas(30)). For i = S−1 … 0 the
    interval σl = sigmas[i+1] -> σu = sigmas[i] is crossed with
        x_in = x·vp_scale(σu)/vp_scale(σl);  ε = (x_in − denoiser(x_in, σu))/σu;
        x   <- x + (σu − σl)·ε
    Returns S+1 latents, traj[i] at sigmas[i] (traj[S] is x, traj[0] is x_T), so denoising
    step i can read traj[i]. callback(i_done, S, x) after each interval, i_done = 1..S.
    """
    values = _check_sigmas(sigmas)
    total = len(values) - 1
    traj: list[torch.Tensor] = [None] * (total + 1)  # type: ignore[list-item]
    traj[total] = x
    for i in range(total - 1, -1, -1):
        s_up, s_low = values[i], values[i + 1]
        x_in = x * (vp_scale(s_up) / vp_scale(s_low))
        denoised = denoiser(x_in, sigma_batch(x, s_up))
        eps = (x_in - denoised) / s_up
        x = x + (s_up - s_low) * eps
        traj[i] = x
        if callback is not None:
            callback(total - i, total, x)
    return traj


def ddim_sample(denoiser: Denoiser, x: torch.Tensor, sigmas, callback: Callback = None) -> torch.Tensor:
    """Plain η = 0 DDIM from x at sigmas[0] down to sigmas[-1]; returns the final latent.

    A final sigma of 0 is allowed here (it returns the last denoised prediction), though the
    Z* schedule ends at σ_min. callback(i_done, S, x) after each step, i_done = 1..S.
    """
    values = _check_sigmas(sigmas, zero_end=True)
    total = len(values) - 1
    for i in range(total):
        denoised = denoiser(x, sigma_batch(x, values[i]))
        x = ddim_step(x, denoised, values[i], values[i + 1])
        if callback is not None:
            callback(i + 1, total, x)
    return x
