"""Null-text optimisation: per-step unconditional embeddings so CFG reconstructs the content.

The official content path for CFG > 1 (Mokady et al.'s null-text inversion, as the Z* code
runs it): for every step, Adam on the unconditional embedding (≤ N iterations, lr
1e-2·(1 − i/100), early stop at loss < 1e-5 + i·2e-5) so that one CFG DDIM step from the
current latent lands on the inversion's next latent. The model's weights are never touched:
gradients flow only into the embedding, which ComfyUI's apply_model wrapper feeds to the
unconditional rows. As in the official code, the conditional prediction does not depend on
the embedding, so it is computed once per step (without gradients) and only the
unconditional half runs in every Adam iteration.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

import comfy.patcher_extension

from ..zstar_attention import PAPER_PRESET, ZStarError
from ..zstar_attention.style_types import Inversion
from . import checks, host
from .families import describe
from .wrappers import COND_CACHE_KEY, NullTextState, cached_cond_wrapper, install_nulltext


class GradSafeTensors(torch.overrides.TorchFunctionMode):
    """While the optimisation records gradients, every inference tensor an op receives enters
    as a normal copy, so autograd may save it for the backward pass.

    ComfyUI's executor runs nodes under torch.inference_mode, so the U-Net's weights (and the
    conditionings) are inference tensors, which autograd refuses to save. Whether the host hands
    a layer its parameter itself, a cached cast, or a fresh cast ("dynamic VRAM", lowvram,
    manual cast) is the host's business: this mode works at the op boundary, after whatever the
    host did, so the gradient path does not depend on it. Gradients still flow only into the
    embedding; nothing is written back, and in-place ops keep their own target.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if torch.is_grad_enabled():
            name = getattr(func, "__name__", "")
            if name != "__get__":
                keep = 1 if (name.endswith("_") and not name.endswith("__")) or name == "__setitem__" else 0
                args = (*args[:keep], *(_normal(a) for a in args[keep:]))
                if kwargs:
                    kwargs = {k: _normal(v) for k, v in kwargs.items()}
        return func(*args, **(kwargs or {}))


def _normal(value):
    """An inference tensor (also inside a list or tuple) as a normal copy, detached; anything else as is.

    Detached because an inference tensor is a constant of the optimisation, yet it may be a leaf that
    requires grad: hosts before 0.33 leave the U-Net's parameters requires_grad=True, so a plain
    clone would route the gradient into every weight (a .grad per parameter kept on the model, and
    with fp8 weights a crash when autograd accumulates into them: no fp8 add)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone() if value.is_inference() else value
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_normal(v) for v in value)
    return value


def check_cfg(cfg) -> None:
    """At cfg 1 ComfyUI never evaluates the unconditional half (samplers.py, the cfg-1 shortcut),
    so the embedding could not change any result and its loss reaches no gradient: a named
    refusal instead of autograd's bare RuntimeError."""
    if cfg is not None and math.isclose(cfg, 1.0):
        raise ZStarError("cfg: null-text optimisation needs cfg > 1: at cfg 1 the sampler never uses the "
                         "unconditional embedding, so there is nothing to optimise; set the cfg the Z* Sampler "
                         "will use (the paper: 7.5), or leave this node out when sampling at cfg 1")


def plain_uncond(negative) -> torch.Tensor:
    if not negative or len(negative) != 1:
        raise ZStarError("negative: null-text optimisation needs exactly one plain conditioning "
                         f"(e.g. CLIP Text Encode with an empty prompt), got {len(negative or [])} entries")
    return negative[0][0]


def nulltext_optimise(model, inversion: Inversion, positive, negative, cfg=PAPER_PRESET.cfg_nulltext,
                      iterations=PAPER_PRESET.nulltext_iterations, lr=PAPER_PRESET.nulltext_lr,
                      progress=True, log=None) -> Inversion:
    check_cfg(cfg)
    info = describe(model)
    info.require("nulltext", "Z* Null-Text Optimization")
    checks.check_inversion_model(info, inversion, "inversion")
    uncond = plain_uncond(negative)
    state = NullTextState()
    clone = model.clone()
    install_nulltext(clone, state)
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, COND_CACHE_KEY, cached_cond_wrapper)
    nc, steps = inversion.batch, inversion.steps
    found = []

    def optimise(denoiser, like, sigmas, **_):
        cb = host.step_callback(model, steps, preview=progress)
        traj = [t.to(like) for t in inversion.trajectory]
        x = traj[0]
        emb = uncond.to(like.device, torch.float32).expand(nc, *uncond.shape[1:]).clone()
        with torch.inference_mode(False), torch.enable_grad(), GradSafeTensors():
            x, sigmas = x.clone(), sigmas.clone()  # normal tensors: autograd may save them
            for i in range(steps):
                sigma, sigma_next = sigmas[i], sigmas[i + 1]
                scale = info.family.clean_scale(sigma_next)
                target = (traj[i + 1] / scale).clone()
                state.cond_out = None  # a new x and σ: the conditional half is computed anew
                emb = emb.detach().clone().requires_grad_(True)
                optimizer = torch.optim.Adam([emb], lr=lr * (1.0 - i / 100.0))
                threshold = 1e-5 + i * 2e-5
                for j in range(iterations):
                    host.check_interrupt()
                    state.current = emb
                    prev = info.family.step(x, denoiser(x, sigma), sigma, sigma_next)
                    # per-image MSE in the official VP scale, summed so images optimise independently
                    loss = ((prev / scale - target) ** 2).flatten(1).mean(1)
                    optimizer.zero_grad()
                    loss.sum().backward()
                    optimizer.step()
                    if log is not None:
                        log.append((i, j, loss.detach().max().item()))
                    if loss.max().item() < threshold:
                        break
                emb = emb.detach()
                found.append(host.to_storage(emb))
                with torch.no_grad():
                    state.current = emb
                    denoised = denoiser(x, sigma)
                    x = info.family.step(x, denoised, sigma, sigma_next).detach()
                cb(i, denoised, x)
        state.current = state.cond_out = None
        return x / info.family.clean_scale(sigmas[-1])

    shape = (nc, *inversion.latent_shape)
    host.run_sampler_function(clone, optimise, inversion.sigmas, positive, negative, cfg, shape, {})
    return replace(inversion, uncond_embeddings=tuple(found), nulltext_cfg=float(cfg))


