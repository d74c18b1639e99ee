"""DDIM inversion through ComfyUI: the whole trajectory of a LATENT on the official Z* schedule."""
from __future__ import annotations

import dataclasses

import torch

import comfy.sample

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


def invert_latents(model, latents: list, steps: int, positive, progress=True) -> list:
    """Invert several LATENT tensors; those of one shape share a single batched pass."""
    groups = {}
    for i, samples in enumerate(latents):
        groups.setdefault(tuple(samples.shape[1:]), []).append(i)
    results = [None] * len(latents)
    for members in groups.values():
        batch = torch.cat([latents[i] for i in members])
        inv, x_t = invert_latent(model, batch, steps, positive, progress)
        start = 0
        for i in members:
            n = latents[i].shape[0]
            part = dataclasses.replace(inv, trajectory=tuple(t[start:start + n] for t in inv.trajectory))
            results[i] = (part, x_t[start:start + n])
            start += n
    return results


def invert_latent(model, samples: torch.Tensor, steps: int, positive, progress=True):
    """The family's inversion (U-Nets: DDIM) through ComfyUI; returns (Inversion, x_T in LATENT space)."""
    info = describe(model)
    checks.check_latent(model, samples)
    sigmas, timesteps = official_sigmas(info, steps)
    samples = comfy.sample.fix_empty_latent_channels(model, samples)
    start = host.process_latent_in(model, samples.float())
    holder = {}

    def invert(denoiser, _x, sigmas_dev, callback=None):
        x0 = start.to(_x) * info.family.clean_scale(sigmas_dev[-1])
        cb = host.step_callback(model, steps, preview=progress)
        traj = info.family.invert(denoiser, x0, sigmas_dev, callback=lambda i, total, x: cb(i - 1, x, x))
        holder["trajectory"] = tuple(host.to_storage(t) for t in traj)
        return traj[0]

    x_t = host.run_sampler_function(model, invert, sigmas, positive, positive, 1.0, samples.shape, {})
    inv = Inversion(trajectory=holder["trajectory"], sigmas=sigmas.float(), timesteps=timesteps,
                    arch=info.arch, model_type=info.type_name)
    return inv, x_t


