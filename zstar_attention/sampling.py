"""The Z* denoising loop, host-agnostic: any `denoiser(x, sigma) -> denoised` drives it.

Official behaviour (see the method sheet): denoising starts from the content's x_T; before
every step the style rows are replaced by the style inversion latent of that step
("replay") and the content rows are anchored, x ← (1-a)·x + a·x_inv (a = 0.01). Outside the
reweighting window the style rows influence nothing, so in replay mode they are not
evaluated there at all.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .ddim import ddim_step
from .errors import ZStarError
from .rows import RowLayout, ZStarRun

STYLE_MODES = ("replay", "alongside")


def _stack_style_rows(style_trajs, step: int, layout: RowLayout, like: torch.Tensor) -> torch.Tensor:
    one_set = torch.cat([traj[step].to(like) for traj in style_trajs], dim=0)
    return one_set.repeat(layout.groups, *([1] * (one_set.ndim - 1)))


def zstar_denoise(denoiser: Callable, content_traj: Sequence[torch.Tensor], style_trajs,
                  sigmas: torch.Tensor, window: Sequence[bool], run: ZStarRun, *,
                  anchor: float = 0.01, style_mode: str = "replay", with_style_rows: bool = True,
                  callback: Callable | None = None, step: Callable = ddim_step):
    """Denoise the content rows from content_traj[0] with Z* attention.

    content_traj: S+1 latents (n_content, C, H, W) at sigmas[0..S] (from ddim_invert).
    style_trajs: one trajectory per style, each S+1 latents (1, C, H, W).
    window[i]: whether step i reweights. `run` is mutated (step, reweight) so the attention
    patch knows what each model call holds. with_style_rows=False: the style rows are not
    stacked at all (fast mode, where a record supplies the style keys and values). step: the
    model family's deterministic step (DDIM for the U-Nets).
    Returns (content latent at sigmas[-1], the style rows' output of the last step that
    evaluated them, or None).
    """
    if style_mode not in STYLE_MODES:
        raise ZStarError(f"style_mode: '{style_mode}' is not one of {', '.join(STYLE_MODES)}")
    steps = len(sigmas) - 1
    if len(content_traj) != steps + 1 or any(len(t) != steps + 1 for t in style_trajs):
        raise ZStarError(f"Z* sampler: trajectories must hold {steps + 1} latents for {steps} steps")
    if len(window) != steps:
        raise ZStarError(f"Z* sampler: step window has {len(window)} entries for {steps} steps")
    layout = run.layout
    x = content_traj[0].clone()
    nc = layout.n_content
    style_rows = _stack_style_rows(style_trajs, 0, layout, x) if with_style_rows else None
    style_out = None
    for i in range(steps):
        if anchor:
            x = (1.0 - anchor) * x + anchor * content_traj[i].to(x)
        if with_style_rows and style_mode == "replay":
            style_rows = _stack_style_rows(style_trajs, i, layout, x)
        stack = with_style_rows and (window[i] or style_mode == "alongside")
        run.step = i
        run.reweight = bool(window[i])
        run.stacked = stack
        batch = torch.cat([x, style_rows], dim=0) if stack else x
        denoised = denoiser(batch, sigmas[i])
        nxt = step(batch, denoised, sigmas[i], sigmas[i + 1])
        x = nxt[:nc]
        if stack:
            style_out = nxt[nc:]
            if style_mode == "alongside":
                style_rows = style_out
        if callback is not None:
            callback(i, denoised[:nc], x)
    run.reweight = run.stacked = False
    return x, style_out
