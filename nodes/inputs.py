"""Inputs several Z* nodes share, defined once (the Style Map is a drop-in for the Sampler,
the two inversion nodes take the same options)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET, STYLE_MODES
from ..zstar_runtime.families import family_labels
from .types import InversionType, StyleRecordType, StylesType


def sampler_inputs() -> list:
    """The Z* Sampler's inputs; its optional ones (the region mask) last."""
    return [
        io.Model.Input("model", tooltip="The MODEL from Z* Attention Patch."),
        InversionType.Input("content", tooltip=f"Z* DDIM Inversion ({family_labels('ddim')}) or Z* Flow Inversion ({family_labels('flow')}) of the content image(s). A batch is stylized image by image."),
        io.MultiType.Input("style", types=[InversionType, StyleRecordType, StylesType],
                           tooltip="The style: an inversion (paper path; same size, steps and model as the content), a Z* Style Record (fast mode, U-Nets, any size), or a Z* Style Mix of several with a strength each."),
        io.Conditioning.Input("positive", tooltip="Prompt for both rows. The paper uses the empty prompt."),
        io.Conditioning.Input("negative", tooltip="Unconditional prompt (only used when cfg > 1)."),
        io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance. 1 = the paper's result at half the cost when positive and negative are both the empty prompt; use 7.5 with a null-text inversion, as the authors do."),
        io.Float.Input("content_anchor", default=PAPER_PRESET.anchor, min=0.0, max=1.0, step=0.005,
                       tooltip="Before every step the content latent moves this far toward its inversion (official 0.01). Higher keeps more of the photo, 0 = free."),
        io.Combo.Input("style_mode", options=list(STYLE_MODES), default="replay",
                       tooltip="replay (official): the style branch is replaced by its inversion latent every step. alongside: the style branch is denoised together with the content."),
        io.Mask.Input("mask", optional=True,
                      tooltip="Optional region: the style acts where the mask is white (> 0.5); elsewhere the content keeps exactly its own self-attention. Resized to every layer."),
    ]


def inversion_options() -> list:
    """Inputs both inversion nodes share: step count and the prompt (empty by default)."""
    return [
        io.Int.Input("steps", default=PAPER_PRESET.steps, min=1, max=1000,
                     tooltip="DDIM steps. The paper uses 30; the Z* Sampler needs every inversion made with the same count."),
        *prompt_inputs(),
    ]


def prompt_inputs() -> list:
    """Every inversion node's optional prompt: a conditioning, or a clip to encode the empty prompt."""
    return [
        io.Conditioning.Input("conditioning", optional=True,
                              tooltip="Prompt for the inversion. Leave empty to use the empty prompt, as the paper does (needs the clip input)."),
        io.Clip.Input("clip", optional=True,
                      tooltip="Used only to encode the empty prompt when no conditioning is connected."),
    ]
