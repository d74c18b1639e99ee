"""Deterministic rectified-flow (Flux, SD3.5) inversion and sampling on ComfyUI's denoiser interface.

ComfyUI runs these models with CONST model sampling: x_σ = (1−σ)·x₀ + σ·ε, σ in [0, 1], and
`denoiser(x, sigma) -> denoised` (sigma a (B,) tensor) returns x₀̂ = x − σ·v_model, so the
model's own shift is used. The flow ODE in σ is dx/dσ = v(x, σ) = (x − x₀̂)/σ (= ε̂ − x₀̂).

Solvers (one code path for both directions; inversion runs the schedule backwards):
- order 1: Euler, the velocity taken at the point the step starts from (the lower σ when
  inverting, as RF-Solver and FireFlow invert). It equals flow_step, the DDIM step written
  for flow.
- order 2: FireFlow (Deng et al., arXiv 2412.07517): the midpoint method, x' = x + h·v(x + h/2·v₀,
  σ + h/2), where the start velocity v₀ of step i+1 is NOT a new model call but the midpoint
  velocity of step i, v(x_mid_i, σ_i + h_i/2), reused. Second order at one call per step after
  the first (RF-Solver, arXiv 2411.04746, spends two).

At σ = 0 the denoiser returns x itself (x₀̂ = x − 0·v) and carries no velocity. FireFlow's and
RF-Solver's reference code (`denoise_fireflow`, `denoise` in FireFlow's src/flux/sampling.py)
asks the model there, and so does the inversion here: the caller passes that velocity as
`start_velocity` (zstar_runtime/host.model_velocity gets it through the host). A caller that
has only a denoiser gets the exact limit v(x, 0) = E[ε − x₀ | x₀ = x] = −x (the noise is
independent of the data), which the reference never uses.
"""
from __future__ import annotations

import torch

from .errors import ZStarError, as_int
from .schedule import Callback, Denoiser, check_descending, schedule_values, sigma_batch

__all__ = ["FlowTrajectory", "flow_step", "flow_velocity", "flow_invert", "flow_sample"]

ORDERS = (1, 2)


class FlowTrajectory(list):
    """Latents at each sigma (traj[i] at sigmas[i]), plus `evaluations`: how many model calls made them."""

    def __init__(self, latents, evaluations: int):
        super().__init__(latents)
        self.evaluations = evaluations


def flow_velocity(x: torch.Tensor, denoised: torch.Tensor, sigma) -> torch.Tensor:
    """dx/dσ of the flow ODE: v = (x − x₀̂)/σ, which is ε̂ − x₀̂ for ε̂ = (x − (1−σ)·x₀̂)/σ."""
    return (x - denoised) / sigma


def flow_step(x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """The DDIM step written for flow: ε̂ = (x − (1−σ)·x₀̂)/σ; x' = (1−σ')·x₀̂ + σ'·ε̂.

    The same point as the Euler step x + (σ'−σ)·(x − x₀̂)/σ: expand (1−σ')x₀̂ + σ'ε̂ =
    [(1−σ)x₀̂ + σε̂] + (σ'−σ)(ε̂ − x₀̂) = x + (σ'−σ)·v. Inverts when σ' > σ.
    """
    eps = (x - (1 - sigma) * denoised) / sigma
    return (1 - sigma_next) * denoised + sigma_next * eps


def _check(denoiser, x, name: str, sigmas, order) -> tuple[list[float], int]:
    if not callable(denoiser):
        raise ZStarError(f"denoiser: expected a callable denoiser(x, sigma) -> denoised, got {type(denoiser).__name__}")
    if not isinstance(x, torch.Tensor):
        raise ZStarError(f"{name}: expected a torch.Tensor latent, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ZStarError(f"{name}: expected a floating-point latent, got {x.dtype}")
    values = schedule_values(sigmas)
    check_descending(values, "a Flux or SD3 model's sigmas from 1 to 0")
    if values[0] > 1 or values[-1] < 0:
        raise ZStarError(
            f"sigmas: rectified-flow sigmas lie in [0, 1], got {values[-1]:g} to {values[0]:g}; "
            "pass the schedule of a model with CONST (flow) model sampling"
        )
    order = as_int(order, "order")
    if order not in ORDERS:
        raise ZStarError(f"order: must be 1 (Euler) or 2 (FireFlow midpoint), got {order}")
    return values, order


def _solve(denoiser: Denoiser, x: torch.Tensor, path: list[float], order: int, callback: Callback,
           start_velocity: torch.Tensor | None = None) -> FlowTrajectory:
    """Integrate dx/dσ = v from path[0] to path[-1] (either direction); the latents in path order.
    start_velocity: the model's v(x, path[0]), asked by the caller (counted as a model call)."""
    calls = 0

    def velocity(x: torch.Tensor, sigma: float, first: bool = False) -> torch.Tensor:
        nonlocal calls
        if first and start_velocity is not None:
            calls += 1
            return start_velocity.to(x)
        if sigma == 0:
            return -x  # exact limit; the denoiser returns x here (module docstring)
        calls += 1
        return flow_velocity(x, denoiser(x, sigma_batch(x, sigma)), sigma)

    if start_velocity is not None and tuple(start_velocity.shape) != tuple(x.shape):
        raise ZStarError(f"start_velocity: shape {tuple(start_velocity.shape)} differs from the latent's {tuple(x.shape)}")
    out, total, reused = [x], len(path) - 1, None
    for i in range(total):
        s, s_next = path[i], path[i + 1]
        h = s_next - s
        if order == 1:
            x = x + h * velocity(x, s, first=i == 0)
        else:  # FireFlow: the previous step's midpoint velocity stands in for v(x, s)
            v0 = velocity(x, s, first=True) if reused is None else reused
            reused = velocity(x + (h / 2) * v0, s + h / 2)
            x = x + h * reused
        out.append(x)
        if callback is not None:
            callback(i + 1, total, x)
    return FlowTrajectory(out, calls)


def flow_invert(denoiser: Denoiser, x0: torch.Tensor, sigmas, order: int = 1,
                callback: Callback = None, start_velocity: torch.Tensor | None = None) -> FlowTrajectory:
    """Invert the clean latent x0 (at sigmas[-1]) up to sigmas[0]; keep the whole trajectory.

    sigmas is the DENOISING schedule (descending in [0, 1], e.g. a Flux BasicScheduler's, ending
    at 0 or above); it is walked upwards. Returns S+1 latents ordered as ddim_invert's: traj[i]
    at sigmas[i], traj[-1] is x0 itself, traj[0] the latent at σ_max, so denoising step i can
    replay traj[i]. start_velocity: the model's velocity at (x0, sigmas[-1]), which the caller
    asks the model for where the denoiser cannot give it (σ = 0); without it a schedule ending at
    0 starts from the exact limit −x0. traj.evaluations counts model calls, start_velocity's
    included: order 1 makes S, order 2 S+1 (each one fewer when the exact limit stands in).
    callback(i_done, S, x).
    """
    values, order = _check(denoiser, x0, "x0", sigmas, order)
    up = _solve(denoiser, x0, values[::-1], order, callback, start_velocity)
    return FlowTrajectory(up[::-1], up.evaluations)


def flow_sample(denoiser: Denoiser, x: torch.Tensor, sigmas, order: int = 1,
                callback: Callback = None) -> FlowTrajectory:
    """Run the same solver down from x at sigmas[0] to sigmas[-1] (e.g. to reconstruct an inversion).

    Returns the trajectory, traj[i] at sigmas[i], so traj[-1] is the sample; traj.evaluations
    is S for order 1, S+1 for order 2. callback(i_done, S, x) after each step.
    """
    values, order = _check(denoiser, x, "x", sigmas, order)
    return _solve(denoiser, x, values, order, callback)
