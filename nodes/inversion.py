"""ZStarDDIMInversion: DDIM-invert a LATENT on the official Z* schedule."""
from __future__ import annotations

import dataclasses

import torch
from comfy_api.latest import io

import comfy.sample

from ..zstar_attention import PAPER_PRESET, ZStarError, ddim_invert, ddim_timesteps, sigmas_from_table, vp_scale
from . import host, validation
from .model_info import describe
from .types import Inversion, InversionType


def official_sigmas(info, steps: int) -> tuple[torch.Tensor, tuple]:
    timesteps = tuple(ddim_timesteps(steps, num_train_steps=len(info.sigma_table)))
    return sigmas_from_table(info.sigma_table, timesteps), timesteps


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
    """Plain DDIM inversion through ComfyUI; returns (Inversion, x_T in LATENT space)."""
    info = describe(model)
    validation.check_latent(model, samples)
    sigmas, timesteps = official_sigmas(info, steps)
    samples = comfy.sample.fix_empty_latent_channels(model, samples)
    start = host.process_latent_in(model, samples.float())
    holder = {}

    def invert(denoiser, _x, sigmas_dev, callback=None):
        x0 = start.to(_x) * vp_scale(sigmas_dev[-1])
        cb = host.step_callback(model, steps, preview=progress)
        traj = ddim_invert(denoiser, x0, sigmas_dev,
                           callback=lambda i, total, x: cb(i - 1, x, x))
        holder["trajectory"] = tuple(host.to_storage(t) for t in traj)
        return traj[0]

    x_t = host.run_sampler_function(model, invert, sigmas, positive, positive, 1.0, samples.shape, {})
    inv = Inversion(trajectory=holder["trajectory"], sigmas=sigmas.float(), timesteps=timesteps,
                    arch=info.arch, model_type=info.type_name)
    return inv, x_t


def inversion_options() -> list:
    """Inputs both inversion nodes share: step count and the prompt (empty by default)."""
    return [
        io.Int.Input("steps", default=PAPER_PRESET.steps, min=1, max=1000,
                     tooltip="DDIM steps. The paper uses 30; the Z* Sampler needs every inversion made with the same count."),
        io.Conditioning.Input("conditioning", optional=True,
                              tooltip="Prompt for the inversion. Leave empty to use the empty prompt, as the paper does (needs the clip input)."),
        io.Clip.Input("clip", optional=True,
                      tooltip="Used only to encode the empty prompt when no conditioning is connected."),
    ]


class ZStarDDIMInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarDDIMInversion",
            display_name="Z* DDIM Inversion",
            category="sampling/zstar",
            description="DDIM-inverts an image latent on the official Z* schedule (t = 958…1, "
                        "ending at σ_min) and keeps the whole trajectory. Use it for the content "
                        "and for the style image.",
            inputs=[
                io.Model.Input("model", tooltip="The checkpoint's MODEL (SD1.5, SD2.x or SDXL). Invert content and style with the same model."),
                io.Latent.Input("latent", tooltip="The image to invert, from VAE Encode."),
                *inversion_options(),
            ],
            outputs=[
                InversionType.Output(display_name="inversion", tooltip="The inversion trajectory for the Z* sampler."),
                io.Latent.Output(display_name="noise_latent", tooltip="The inverted latent x_T."),
            ],
        )

    @classmethod
    def validate_inputs(cls, steps=None):
        return validation.report(validation.inversion_inputs, cls, steps)

    @classmethod
    def execute(cls, model, latent, steps, conditioning=None, clip=None) -> io.NodeOutput:
        validation.inversion_inputs(cls, steps)
        conditioning = conditioning_or_empty(conditioning, clip)
        inv, x_t = invert_latent(model, latent["samples"], steps, conditioning)
        out = latent.copy()
        out["samples"] = x_t
        return io.NodeOutput(inv, out)


class ZStarDDIMInversionPair(io.ComfyNode):
    """Content and style in one node: one batched model pass per step when their sizes match."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarDDIMInversionPair",
            display_name="Z* DDIM Inversion (content + style)",
            category="sampling/zstar",
            description="Inverts the content and the style latents together: when they have the same size "
                        "they share each model pass (one batched inversion instead of two).",
            inputs=[
                io.Model.Input("model", tooltip="The checkpoint's MODEL (SD1.5, SD2.x or SDXL)."),
                io.Latent.Input("content", tooltip="The content image(s), from VAE Encode."),
                io.Latent.Input("style", tooltip="The style image, from VAE Encode."),
                *inversion_options(),
            ],
            outputs=[
                InversionType.Output(display_name="content_inversion", tooltip="The content's inversion for the Z* Sampler."),
                InversionType.Output(display_name="style_inversion", tooltip="The style's inversion for the Z* Sampler or a Style Record."),
            ],
        )

    @classmethod
    def validate_inputs(cls, steps=None):
        return validation.report(validation.inversion_inputs, cls, steps)

    @classmethod
    def execute(cls, model, content, style, steps, conditioning=None, clip=None) -> io.NodeOutput:
        validation.inversion_inputs(cls, steps)
        conditioning = conditioning_or_empty(conditioning, clip)
        (content_inv, _), (style_inv, _) = invert_latents(model, [content["samples"], style["samples"]], steps, conditioning)
        return io.NodeOutput(content_inv, style_inv)
