"""What Z* needs to know about a ComfyUI MODEL: its attn1 layers, its sigmas, whether it fits.

The layer list is read off the U-Net itself (SpatialTransformer depth per block, in
execution order), then named by matching the core's tables, so a model we do not know is
refused with its type named instead of being patched at the wrong places.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import comfy.model_sampling
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..zstar_attention import ARCHITECTURES, ZStarError, parse_layers


@dataclass(frozen=True)
class ModelInfo:
    arch: str  # "sd15", "sd2" or "sdxl"
    attn1_keys: tuple  # (block, id, index) in execution order
    paper_layers: str
    sigma_table: torch.Tensor  # ComfyUI's σ(t) for t = 0..T-1 (float32, cpu)
    type_name: str


def model_type_name(model) -> str:
    inner = model.model
    config = getattr(inner, "model_config", None)
    name = f"{type(inner).__name__}/{type(config).__name__}" if config is not None else type(inner).__name__
    prediction = getattr(getattr(inner, "model_type", None), "name", "EPS")
    return name if prediction == "EPS" else f"{name} ({prediction.lower()})"


def unet_attn1_keys(unet: UNetModel) -> tuple:
    """(block, id, index) of every self-attention, in the order the U-Net runs them."""
    keys = []
    for name, blocks in (("input", unet.input_blocks), ("output", unet.output_blocks)):
        if name == "output":
            keys.extend(_block_keys("middle", 0, unet.middle_block))
        for block_id, block in enumerate(blocks):
            keys.extend(_block_keys(name, block_id, block))
    return tuple(keys)


def _block_keys(name, block_id, block):
    if block is None:
        return []
    for layer in block:
        if isinstance(layer, SpatialTransformer):
            return [(name, block_id, i) for i in range(len(layer.transformer_blocks))]
    return []


def sampling_name(sampling) -> str:
    """ComfyUI builds model_sampling as a local class `ModelSampling(schedule, prediction)`:
    name its parts (e.g. 'ModelSamplingContinuousEDM + EDM'), not the uninformative local name."""
    cls = type(sampling)
    if cls.__name__ == "ModelSampling" and cls.__bases__:
        return " + ".join(base.__name__ for base in cls.__bases__)
    return cls.__name__


def describe(model) -> ModelInfo:
    """ModelInfo for a MODEL, or a ZStarError naming what the model is and what Z* takes."""
    type_name = model_type_name(model)
    unet = model.get_model_object("diffusion_model")
    sampling = model.get_model_object("model_sampling")
    supported = "Z* supports SD1.5, SD2.x and SDXL U-Net models"
    if not isinstance(unet, UNetModel):
        raise ZStarError(f"model: {supported}; this MODEL is {type_name} ({type(unet).__name__})")
    if not isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete) or not isinstance(
            sampling, comfy.model_sampling.EPS) or isinstance(
            sampling, (comfy.model_sampling.EDM, comfy.model_sampling.X0)):
        raise ZStarError(f"model: {supported} with eps or v prediction on a discrete DDPM schedule; "
                         f"this MODEL ({type_name}) samples with {sampling_name(sampling)}")
    keys = unet_attn1_keys(unet)
    config_name = type(getattr(model.model, "model_config", None)).__name__
    arch = None
    for name, spec in ARCHITECTURES.items():
        if tuple(spec["keys"]) == keys:
            arch = name
            if name == "sd15" and config_name.startswith("SD2"):
                arch = "sd2"
            break
    if arch is None:
        raise ZStarError(f"model: {supported}; this MODEL ({type_name}) has a U-Net with "
                         f"{len(keys)} self-attention layers in an unknown layout")
    return ModelInfo(arch=arch, attn1_keys=keys, paper_layers=ARCHITECTURES[arch]["paper_layers"],
                     sigma_table=sampling.sigmas.detach().float().cpu(), type_name=type_name)


def resolve_layers(info: ModelInfo, layers: str) -> tuple:
    """Layer indices for a user's layer string; 'auto' (or empty) = the paper's choice for this model."""
    spec = info.paper_layers if layers.strip().lower() in ("", "auto", "paper") else layers
    return parse_layers(spec, len(info.attn1_keys))
