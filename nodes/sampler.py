"""ZStarSampler: denoise the content from its inversion while the style branch replays its own (zstar_runtime.sampler)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_runtime.sampler import zstar_sample
from . import validation
from .inputs import sampler_inputs
from .search import search_aliases


class ZStarSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarSampler",
            display_name="Z* Sampler",
            category="sampling/zstar",
            **search_aliases("style transfer", "stylize", "reference image", "paint in the style of", "zstar"),
            description="Z* style transfer: denoises the content from its inversion with the patched "
                        "model while the style branch replays the style's inversion, so the content "
                        "attends to the style's keys and values.",
            inputs=sampler_inputs(),
            outputs=[
                io.Latent.Output(display_name="stylized", tooltip="The stylized latent; decode it with VAE Decode."),
                io.Latent.Output(display_name="style_branch", tooltip="The style branch's last output, for inspection."),
            ],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, content_anchor=None, style_mode=None):
        return validation.report(validation.check_widgets, cls, cfg=cfg, content_anchor=content_anchor, style_mode=style_mode)

    @classmethod
    def execute(cls, model, content, style, positive, negative, cfg, content_anchor, style_mode, mask=None) -> io.NodeOutput:
        validation.check_widgets(cls, cfg=cfg, content_anchor=content_anchor, style_mode=style_mode)
        samples, style_samples = zstar_sample(model, content, style, positive, negative, cfg, content_anchor, style_mode,
                                              mask=mask)
        return io.NodeOutput({"samples": samples}, {"samples": style_samples})
