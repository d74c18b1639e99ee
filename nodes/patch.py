"""ZStarAttentionPatch: install the λ-reweighted self-attention into chosen layers (zstar_runtime.patch)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET
from ..zstar_runtime.families import auto_layers_summary, family_labels, numbering_summary
from ..zstar_runtime.patch import POSITIONS, patch_model
from . import validation
from .search import search_aliases


class ZStarAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarAttentionPatch",
            display_name="Z* Attention Patch",
            category="sampling/zstar",
            **search_aliases("style transfer", "reference image", "attention reweighting", "style injection", "attention injection", "zstar"),
            description="Installs Z*'s reweighted self-attention: in the chosen layers and steps the "
                        "content looks at the style's keys and values, with style logits scaled by λ "
                        "inside one softmax. Elsewhere the model is untouched.",
            inputs=[
                io.Model.Input("model", tooltip=f"The MODEL to patch ({family_labels()}). The input model is not changed."),
                io.Float.Input("style_strength", default=PAPER_PRESET.style_scale, min=0.0, max=10.0, step=0.05,
                               tooltip="λ: scales the style logits inside the softmax. Higher = stronger style, lower = more of the content's own look. Paper: 1.2."),
                io.Float.Input("style_self_strength", default=PAPER_PRESET.style_self_scale, min=0.0, max=10.0, step=0.05,
                               tooltip="λ_style: the official code also reweights the style row against the content (1.5). 0 = off (plain self-attention for the style row; needed for exact fast mode)."),
                io.String.Input("layers", default="auto",
                                tooltip="Which self-attention layers to reweight, counted in execution order: 'auto' = the paper's "
                                        f"choice, or a published or our documented one, for this model ({auto_layers_summary()}; smaller "
                                        "variants keep the same share), or e.g. '10-15', '10,12,14'. The transformers count "
                                        f"{numbering_summary()}."),
                io.Int.Input("start_step", default=PAPER_PRESET.start_step, min=0, max=1000,
                             tooltip="First step (0-based) that reweights. Earlier steps use plain attention and fix the layout. Paper: 5."),
                io.Int.Input("end_step", default=PAPER_PRESET.end_step, min=1, max=1000,
                             tooltip="Step where reweighting stops (exclusive). Paper: 30 of 30, i.e. to the end."),
                io.Combo.Input("style_positions", options=list(POSITIONS), default="auto", optional=True,
                               tooltip=f"Models with rotary positions only ({family_labels(rope=True)}): where the style's keys sit for "
                                       "the content's queries. as_recorded: on the content's own grid (a query prefers style tokens at "
                                       "its own position, which can copy the style's layout). shifted: index +1 and beside the image, "
                                       "off the content's grid (our choice, after AlignedGen's ShiftPE). reference_latent: index +1 on "
                                       "the content's grid, where ComfyUI places a first reference latent by index (Kontext, "
                                       "Qwen-Image-Edit). auto = shifted on those models; the others take auto or as_recorded."),
            ],
            outputs=[io.Model.Output(tooltip="A patched copy of the model; wire it into the Z* Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, style_strength=None, style_self_strength=None, layers=None, start_step=None, end_step=None,
                        style_positions=None):
        return validation.report(validation.patch_inputs, cls, style_strength, style_self_strength, layers, start_step,
                                 end_step, style_positions)

    @classmethod
    def execute(cls, model, style_strength, style_self_strength, layers, start_step, end_step,
                style_positions="auto") -> io.NodeOutput:
        validation.patch_inputs(cls, style_strength, style_self_strength, layers, start_step, end_step, style_positions)
        return io.NodeOutput(patch_model(model, style_strength, style_self_strength, layers, start_step, end_step,
                                         style_positions))
