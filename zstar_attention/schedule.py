"""The official Z* DDIM schedule, expressed in ComfyUI's sigmas.

The authors' diffusers DDIM uses scaled-linear betas, 1000 train steps, "leading" spacing
with steps_offset = 1 (30 steps: t = 958, 925, …, 34, 1) and set_alpha_to_one = False, so the
clean end of the trajectory sits at ᾱ₀, not ᾱ = 1. ComfyUI's schedulers (ddim_uniform etc.)
give other timesteps, so the pack builds the schedule itself.

ComfyUI parameterisation: σ = sqrt((1−ᾱ)/ᾱ) and the latent x_ve = x_vp/sqrt(ᾱ) =
x_vp·sqrt(1+σ²). The schedule is σ(t_1) > … > σ(t_S) > σ(0) = σ_min (≈ 0.0292 for SD1.5, not
0), and σ_min's latent is the one that gets decoded.

Also the pieces every solver on ComfyUI's denoiser interface shares (DDIM here, rectified flow in
flow.py): the denoiser's type, reading a schedule and the (B,) sigma a denoiser receives.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from .errors import ZStarError, as_int

__all__ = ["scaled_linear_alphas_cumprod", "ddim_timesteps", "sigmas_from_table", "ddim_sigmas", "vp_scale"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[int, int, torch.Tensor], None]]


def scaled_linear_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012,
                                 num_train_steps: int = 1000) -> torch.Tensor:
    """ᾱ_t for diffusers' "scaled_linear" betas (SD1.x/2.x/XL), float64, shape (num_train_steps,)."""
    num_train_steps = as_int(num_train_steps, "num_train_steps")
    if num_train_steps < 2:
        raise ZStarError(f"num_train_steps: must be at least 2, got {num_train_steps}")
    if not (0 < beta_start <= beta_end < 1):
        raise ZStarError(f"beta_start/beta_end: need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def ddim_timesteps(steps: int, num_train_steps: int = 1000, steps_offset: int = 1) -> list[int]:
    """Descending DDIM timesteps with diffusers' "leading" spacing plus steps_offset.

    stride = num_train_steps // steps; t = (arange(steps)·stride)[::-1] + steps_offset.
    30 steps -> [958, 925, …, 34, 1], as the authors' pipeline (offset 1) uses.
    """
    steps = as_int(steps, "steps")
    num_train_steps = as_int(num_train_steps, "num_train_steps")
    steps_offset = as_int(steps_offset, "steps_offset")
    if not 1 <= steps <= num_train_steps:
        raise ZStarError(f"steps: {steps} is out of range; use 1 to {num_train_steps}")
    if steps_offset < 0:
        raise ZStarError(f"steps_offset: must be >= 0, got {steps_offset}")
    stride = num_train_steps // steps
    top = (steps - 1) * stride + steps_offset
    if top > num_train_steps - 1:
        raise ZStarError(
            f"steps: {steps} steps with steps_offset {steps_offset} would reach timestep {top}, past the "
            f"last train step {num_train_steps - 1}; use fewer steps"
        )
    return [i * stride + steps_offset for i in range(steps - 1, -1, -1)]


def sigmas_from_table(sigma_table: torch.Tensor, timesteps: Sequence[int]) -> torch.Tensor:
    """[σ(t) for t in timesteps] + [σ(0)]: the denoising schedule ending at σ_min, not 0.

    sigma_table is indexed by train timestep (ComfyUI's model_sampling.sigmas); the result
    keeps its dtype and device. Timesteps must be strictly descending and >= 1 so that the
    end point σ(0) lies below them.
    """
    if not isinstance(sigma_table, torch.Tensor) or sigma_table.ndim != 1 or sigma_table.numel() < 2:
        raise ZStarError("sigma_table: expected a 1-D tensor of sigmas indexed by train timestep")
    ts = [as_int(t, "timesteps") for t in timesteps]
    if not ts:
        raise ZStarError("timesteps: empty")
    last = sigma_table.numel() - 1
    for t in ts:
        if not 1 <= t <= last:
            raise ZStarError(f"timesteps: {t} is out of range; use 1 to {last} (0 is the end point)")
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise ZStarError(f"timesteps: must be strictly descending, got {ts}")
    index = torch.tensor(ts + [0], dtype=torch.long, device=sigma_table.device)
    return sigma_table[index]


def ddim_sigmas(steps: int, alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """The official Z* DDIM schedule as float64 sigmas (steps+1 values, ending at σ_min)."""
    if alphas_cumprod is None:
        alphas_cumprod = scaled_linear_alphas_cumprod()
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if ac.ndim != 1 or not bool(((ac > 0) & (ac < 1)).all()):  # written so that NaN fails too
        raise ZStarError("alphas_cumprod: expected a 1-D tensor with values in (0, 1)")
    table = ((1 - ac) / ac).sqrt()
    if not bool(torch.isfinite(table).all()):
        raise ZStarError("alphas_cumprod: values so close to 0 that σ = sqrt((1-ᾱ)/ᾱ) overflows")
    return sigmas_from_table(table, ddim_timesteps(steps, num_train_steps=ac.numel()))


def vp_scale(sigma):
    """sqrt(1+σ²) = 1/sqrt(ᾱ): x_ve = x_vp · vp_scale(σ). Works on floats and tensors."""
    if isinstance(sigma, torch.Tensor):
        return torch.sqrt(1 + sigma * sigma)
    return math.sqrt(1.0 + float(sigma) ** 2)


def schedule_values(sigmas) -> list[float]:
    """A schedule (tensor or sequence) as Python floats, so solvers step in exact float64 arithmetic.

    Checks what every solver needs: 1-D, at least 2 values, all finite.
    """
    if not isinstance(sigmas, torch.Tensor):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ZStarError(f"sigmas: expected a 1-D schedule of at least 2 values, got shape {tuple(sigmas.shape)}")
    values = [float(s) for s in sigmas.detach().cpu().tolist()]
    if not all(math.isfinite(s) for s in values):
        raise ZStarError("sigmas: contains NaN or inf")
    return values


def check_descending(values: Sequence[float], example: str) -> None:
    """A denoising schedule runs from noisy to clean: strictly descending."""
    if any(a <= b for a, b in zip(values, values[1:])):
        raise ZStarError(f"sigmas: must be strictly descending (a denoising schedule, e.g. {example})")


def sigma_batch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The (B,) sigma tensor ComfyUI's samplers pass a denoiser, in x's dtype and device."""
    return x.new_ones([x.shape[0]]) * sigma
