"""ZStarStyleMap: a Z* Sampler that also shows where the style went (zstar_runtime.style_map)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_runtime.style_map import style_map
from . import validation
from .inputs import sampler_inputs
from .search import search_aliases


def check_map_inputs(node_cls, cfg=None, content_anchor=None, style_mode=None, layers=None, start_step=None,
                     end_step=None):
    validation.check_widgets(node_cls, cfg=cfg, content_anchor=content_anchor, style_mode=style_mode, layers=layers,
                             start_step=start_step, end_step=end_step)
    validation.check_layer_syntax(layers)
    validation.check_step_order(start_step, end_step)


class ZStarStyleMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # the sampler's inputs, so the map is a drop-in for it; its optional inputs (the mask) go last
        shared = sampler_inputs()
        required = [i for i in shared if not i.optional]
        optional = [i for i in shared if i.optional]
        return io.Schema(
            node_id="ZStarStyleMap",
            display_name="Z* Style Map",
            category="sampling/zstar",
            **search_aliases("style heatmap", "attention map", "where the style went", "style transfer"),
            description="A Z* Sampler that also renders where the style went: per pixel, the share of "
                        "self-attention mass the content put on the style's keys (0 = only its own "
                        "content, 1 = only style), averaged over heads, the chosen layers and steps (the "
                        "conditional CFG half). Raise λ and the bright regions grow; outside a region mask "
                        "the share is exactly 0.",
            inputs=[
                *required,
                io.String.Input("layers", default="all",
                                tooltip="Which reweighted layers to average, numbered as in the patch ('all' = every patched layer, or e.g. '13-15' for the finest ones)."),
                io.Int.Input("start_step", default=0, min=0, max=1000,
                             tooltip="First step (0-based) to average; steps before the patch's start_step have no style and are skipped."),
                io.Int.Input("end_step", default=1000, min=1, max=1000,
                             tooltip="Step where averaging stops (exclusive); 1000 = to the end."),
                *optional,
            ],
            outputs=[
                io.Image.Output(display_name="style_map", tooltip="Heatmap at image size: dark = the content kept its own attention, bright = attention went to the style."),
                io.Latent.Output(display_name="stylized", tooltip="The stylized latent, the same as the Z* Sampler's."),
                io.Mask.Output(display_name="share", tooltip="The raw share (0..1) per pixel, e.g. to composite or threshold."),
            ],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, content_anchor=None, style_mode=None, layers=None, start_step=None,
                        end_step=None):
        return validation.report(check_map_inputs, cls, cfg, content_anchor, style_mode, layers, start_step, end_step)

    @classmethod
    def execute(cls, model, content, style, positive, negative, cfg, content_anchor, style_mode, layers,
                start_step, end_step, mask=None) -> io.NodeOutput:
        check_map_inputs(cls, cfg, content_anchor, style_mode, layers, start_step, end_step)
        image, samples, share = style_map(model, content, style, positive, negative, cfg, content_anchor, style_mode,
                                          layers, start_step, end_step, mask=mask)
        return io.NodeOutput(image, {"samples": samples}, share)
