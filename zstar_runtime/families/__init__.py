"""The model families Z* supports, one adapter module each, and how a MODEL finds its family.

    sd.py     SD1.5 and SD2.x (the paper's family)
    sdxl.py   SDXL
    flux.py   Flux.1 (dev, schnell)
    flux2.py  Flux.2 (dev, Klein)
    chroma.py Chroma (Flux.1's blocks, real CFG)
    qwen_image.py  Qwen-Image
    z_image.py  Z-Image (Turbo, Base; Lumina 2's NextDiT, found by the host's layer index)
    sd3.py    SD3 / SD3.5 (MMDiT, MMDiT-X)
    unet.py   what the U-Net families share (attn1 replacement, DDIM on a DDPM schedule)
    dit.py    what the transformer families share (block replacement + attention override, flow ODE)
    base.py   what an adapter must provide

`describe(model)` names the family of a ComfyUI MODEL, or stops with an error that names the
model and what Z* takes, so a model we do not know is never patched at the wrong places.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...zstar_attention import ZStarError, parse_layers
from .base import ModelFamily
from .chroma import CHROMA
from .flux import FLUX
from .flux2 import FLUX2
from .qwen_image import QWEN_IMAGE
from .sd import SD2, SD15
from .sd3 import SD3
from .sdxl import SDXL
from .z_image import Z_IMAGE
from .unet import SUPPORTED

__all__ = ["FAMILIES", "family_labels", "auto_layers_summary", "numbering_summary", "SD2", "SD15", "SDXL", "FLUX", "FLUX2", "CHROMA", "QWEN_IMAGE", "Z_IMAGE", "SD3", "ModelFamily", "ModelInfo", "describe", "family", "layer_tables",
           "resolve_layers", "AUTO_LAYERS", "MAX_LAYERS"]

FAMILIES: tuple[ModelFamily, ...] = (SD2, SD15, SDXL, FLUX, FLUX2, CHROMA, QWEN_IMAGE, Z_IMAGE, SD3)  # SD2 before SD1.5: same layout, told apart by config
AUTO_LAYERS = ("", "auto", "paper")


def family(name: str) -> ModelFamily:
    for f in FAMILIES:
        if f.name == name:
            return f
    raise ZStarError(f"model family '{name}' is not one of {', '.join(f.name for f in FAMILIES)}")


def family_labels(inversion: str | None = None, rope: bool | None = None) -> str:
    """The supported families' labels for messages and tooltips ("SD1.5, SD2.x, …"), optionally only
    those inverted by 'ddim' or 'flow', or only those with (or without) rotary positions."""
    return ", ".join(f.label for f in FAMILIES if (inversion is None or f.inversion == inversion)
                     and (rope is None or getattr(f, "has_rope", False) == rope))


def auto_layers_summary() -> str:
    """What 'auto' layers means per family, for the patch node's tooltip."""
    return "; ".join(f"{f.label} {f.default_layers}" for f in FAMILIES)


def numbering_summary() -> str:
    """How each transformer family numbers its layers, for the patch node's tooltip."""
    return "; ".join(f"{f.label}: {f.numbering}" for f in FAMILIES if f.inversion == "flow")


def layer_tables() -> dict:
    """{family name: its layer keys}, for data (style files) that name layers by number."""
    return {f.name: f.layer_keys for f in FAMILIES}


MAX_LAYERS = max(len(f.layer_keys) for f in FAMILIES)


@dataclass(frozen=True)
class ModelInfo:
    """What Z* knows about one MODEL: its family and the values read off it."""

    family: ModelFamily
    sigma_table: torch.Tensor  # ComfyUI's σ(t) for t = 0..T-1 (float32, cpu)
    type_name: str
    layer_keys: tuple  # this model's attention layers in the family's numbering
    default_layers: str  # what "auto" means for this model
    shift: float | None = None  # the flow sampling's shift (ModelSamplingSD3/Flux set it), for messages

    @property
    def arch(self) -> str:
        return self.family.name

    def require(self, feature: str, what: str):
        """Stop with a clear error where a Z* feature does not exist for this family yet."""
        if feature not in self.family.features:
            raise ZStarError(f"model: {what} is not available for {self.family.label} yet (U-Net models only: "
                             "SD1.5, SD2.x, SDXL); use the paper path (Z* Sampler with a style inversion)")


def model_type_name(model) -> str:
    inner = model.model
    config = getattr(inner, "model_config", None)
    name = f"{type(inner).__name__}/{type(config).__name__}" if config is not None else type(inner).__name__
    prediction = getattr(getattr(inner, "model_type", None), "name", "EPS")
    return name if prediction == "EPS" else f"{name} ({prediction.lower()})"


def sampling_shift(model) -> float | None:
    """The `shift` of a MODEL's flow sampling (ModelSamplingDiscreteFlow: the σ shift; ModelSamplingFlux:
    its μ), or None where the model samples without one."""
    shift = getattr(model.get_model_object("model_sampling"), "shift", None)
    return float(shift) if isinstance(shift, (int, float)) and not isinstance(shift, bool) else None


def describe(model) -> ModelInfo:
    """ModelInfo for a MODEL, or a ZStarError naming what the model is and what Z* takes."""
    type_name = model_type_name(model)
    network = None
    for f in FAMILIES:
        keys = f.read_layer_keys(model)
        if keys is None:
            continue
        network = network or (f, keys)  # the first family with this network names it (Flux.1 before Flux.2)
        f.check_sampling(model, type_name)
        if f.matches(model, keys):
            f.check_model(model)
            return ModelInfo(family=f, sigma_table=f.sigma_table(model), type_name=type_name,
                             layer_keys=keys, default_layers=f.default_layers_for(keys), shift=sampling_shift(model))
    if network is None:
        inner = type(model.get_model_object("diffusion_model")).__name__
        raise ZStarError(f"model: {SUPPORTED}, and the {family_labels('flow')} transformers; this MODEL is "
                         f"{type_name} ({inner})")
    f, keys = network
    raise ZStarError(f"model: {f.unknown_message(type_name, keys)}")


def resolve_layers(info: ModelInfo, layers: str) -> tuple:
    """Layer numbers for a user's layer string; 'auto' (or empty) = the family's default."""
    spec = info.default_layers if layers.strip().lower() in AUTO_LAYERS else layers
    return parse_layers(spec, len(info.layer_keys))
