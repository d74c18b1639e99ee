"""ZStarStyleRecord: fast mode, the style's keys and values recorded once (zstar_runtime.record)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET
from ..zstar_runtime.record import record_style
from . import validation
from .search import search_aliases
from .types import InversionType, StyleRecordType


class ZStarStyleRecord(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarStyleRecord",
            display_name="Z* Style Record (fast mode)",
            category="sampling/zstar",
            **search_aliases("fast mode", "style cache", "record style", "reference image", "style transfer"),
            description="Records the style's self-attention keys and values once per step and layer. "
                        "Feed it to the Z* Sampler's style input: the sampler then evaluates only the "
                        "content rows. Exact when the patch's style_self_strength (λ_style) is 0; with "
                        "λ_style on, the official style row also looks at the content, which a record "
                        "cannot (the difference is small). The record survives λ changes in ComfyUI's cache.",
            inputs=[
                io.Model.Input("model", tooltip="The checkpoint's MODEL, unpatched (the record does not depend on λ)."),
                InversionType.Input("style", tooltip="Z* DDIM Inversion of the style image."),
                io.Conditioning.Input("positive", tooltip="The Z* Sampler's positive prompt (the paper: empty)."),
                io.Conditioning.Input("negative", tooltip="The Z* Sampler's negative prompt; recorded only when cfg > 1."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Use the Z* Sampler's cfg: at 1 only the conditional half is recorded (half the memory)."),
                io.String.Input("layers", default="auto", tooltip="Must match the Z* Attention Patch's layers ('auto' = the paper's)."),
                io.Int.Input("start_step", default=PAPER_PRESET.start_step, min=0, max=1000,
                             tooltip="Must match the Z* Attention Patch's start_step."),
                io.Int.Input("end_step", default=PAPER_PRESET.end_step, min=1, max=1000,
                             tooltip="Must match the Z* Attention Patch's end_step."),
            ],
            outputs=[
                StyleRecordType.Output(display_name="style_record", tooltip="Connect to the Z* Sampler's style input."),
                io.String.Output(display_name="info", tooltip="What was recorded and its memory."),
            ],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, layers=None, start_step=None, end_step=None):
        return validation.report(validation.record_inputs, cls, cfg, layers, start_step, end_step)

    @classmethod
    def execute(cls, model, style, positive, negative, cfg, layers, start_step, end_step) -> io.NodeOutput:
        validation.record_inputs(cls, cfg, layers, start_step, end_step)
        rec = record_style(model, style, positive, negative, cfg, layers, start_step, end_step)
        return io.NodeOutput(rec, rec.describe())
