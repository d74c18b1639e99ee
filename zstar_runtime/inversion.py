"""Inversion through ComfyUI: the whole trajectory of a LATENT, DDIM on the official Z* schedule
for the U-Nets, the flow ODE on the model's own σ for the transformers (first or second order)."""
from __future__ import annotations

import dataclasses

import torch

import comfy.sample
import node_helpers

from ..zstar_attention import ZStarError
from ..zstar_attention.style_types import Inversion
from . import checks, host
from .families import describe


def official_sigmas(info, steps: int) -> tuple[torch.Tensor, tuple]:
    """The family's inversion schedule for this MODEL (U-Nets: the official DDIM one)."""
    return info.family.schedule(info.sigma_table, steps)


def conditioning_or_empty(conditioning, clip):
    """The connected conditioning, or the empty prompt encoded with clip (the paper's choice)."""
    if conditioning is not None:
        return conditioning
    if clip is None:
        raise ZStarError("conditioning: connect a conditioning (e.g. CLIP Text Encode with an empty prompt) "
                         "or a clip so the empty prompt can be encoded")
    return clip.encode_from_tokens_scheduled(clip.tokenize(""))


FLOW_SOLVERS = {"euler": 1, "fireflow": 2}
DDIM_NODE, FLOW_NODE = "Z* DDIM Inversion", "Z* Flow Inversion"


def check_method(info, method: str):
    """The DDIM nodes take U-Nets, the flow node the rectified-flow transformers: say which node to use."""
    if info.family.inversion != method:
        node = FLOW_NODE if info.family.inversion == "flow" else DDIM_NODE
        raise ZStarError(f"model: {info.family.label} is a {'rectified-flow' if info.family.inversion == 'flow' else 'DDPM'} "
                         f"model; invert it with '{node}'")


def with_guidance(model, info, positive, guidance):
    """Flux.1-dev's guidance embedding for the inversion (FluxGuidance's key); (conditioning, value used).
    Models without the embedding (schnell, SD3.5) ignore it, and None is stored."""
    if guidance is None or not info.family.takes_guidance(model):
        return positive, None
    return node_helpers.conditioning_set_values(positive, {"guidance": float(guidance)}), float(guidance)


def invert_latents(model, latents: list, steps: int, positive, progress=True, **method) -> list:
    """Invert several LATENT tensors; those of one shape share a single batched pass."""
    groups = {}
    for i, samples in enumerate(latents):
        groups.setdefault(tuple(samples.shape[1:]), []).append(i)
    results = [None] * len(latents)
    for members in groups.values():
        batch = torch.cat([latents[i] for i in members])
        inv, x_t = invert_latent(model, batch, steps, positive, progress, **method)
        start = 0
        for i in members:
            n = latents[i].shape[0]
            part = dataclasses.replace(inv, trajectory=tuple(t[start:start + n] for t in inv.trajectory))
            results[i] = (part, x_t[start:start + n])
            start += n
    return results


def invert_latent(model, samples: torch.Tensor, steps: int, positive, progress=True, method="ddim",
                  solver="euler", guidance=None):
    """The family's inversion through ComfyUI; returns (Inversion, x_T in LATENT space).

    method: 'ddim' (the DDIM nodes) or 'flow' (Z* Flow Inversion), checked against the model.
    solver/guidance: flow only; solver 'euler' (first order, the DDIM step written for flow) or
    'fireflow' (second order, FireFlow's reused midpoint velocity); guidance: Flux.1-dev's.
    """
    info = describe(model)
    check_method(info, method)
    options = {}
    if method == "flow":
        if solver not in FLOW_SOLVERS:
            raise ZStarError(f"solver: '{solver}' is not one of {', '.join(FLOW_SOLVERS)}")
        options["order"] = FLOW_SOLVERS[solver]
        positive, guidance = with_guidance(model, info, positive, guidance)
    else:
        guidance = None
    checks.check_guidance(positive, "guidance" if guidance is not None else "positive")
    checks.check_latent(model, samples)
    sigmas, timesteps = official_sigmas(info, steps)
    samples = comfy.sample.fix_empty_latent_channels(model, samples)
    start = host.process_latent_in(model, samples.float())
    holder = {}
    if method == "flow" and float(sigmas[-1]) == 0:
        # the reference solvers ask the model at σ = 0, where the host's denoiser returns x itself
        options["start_velocity"] = host.model_velocity(model, start, sigmas, positive)

    def invert(denoiser, _x, sigmas_dev, callback=None):
        x0 = start.to(_x) * info.family.clean_scale(sigmas_dev[-1])
        cb = host.step_callback(model, steps, preview=progress)
        traj = info.family.invert(denoiser, x0, sigmas_dev, callback=lambda i, total, x: cb(i - 1, x, x), **options)
        holder["trajectory"] = tuple(host.to_storage(t) for t in traj)
        return traj[0]

    x_t = host.run_sampler_function(model, invert, sigmas, positive, positive, 1.0, samples.shape, {})
    inv = Inversion(trajectory=holder["trajectory"], sigmas=sigmas.float(), timesteps=timesteps,
                    arch=info.arch, model_type=info.type_name, guidance=guidance)
    return inv, x_t


