"""ZStarDDIMInversion and the content + style pair: DDIM inversion on the official Z* schedule (zstar_runtime.inversion)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_runtime.inversion import conditioning_or_empty, invert_latent, invert_latents
from . import validation
from .inputs import inversion_options
from .search import search_aliases
from .types import InversionType


class ZStarDDIMInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarDDIMInversion",
            display_name="Z* DDIM Inversion",
            category="sampling/zstar",
            **search_aliases("inversion", "ddim inversion", "invert image", "image to noise", "style transfer", "zstar"),
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
            **search_aliases("inversion", "ddim inversion", "invert content and style", "style transfer", "zstar"),
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
