"""ZStarNullTextOptimization: per-step unconditional embeddings so CFG reconstructs the content (zstar_runtime.nulltext)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET
from ..zstar_runtime.nulltext import nulltext_optimise
from . import validation
from .search import search_aliases
from .types import InversionType


class ZStarNullTextOptimization(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarNullTextOptimization",
            display_name="Z* Null-Text Optimization",
            category="sampling/zstar",
            **search_aliases("null-text inversion", "null text", "cfg inversion", "inversion", "style transfer"),
            description="Optimises one unconditional embedding per step so that CFG sampling reconstructs "
                        "the inverted content (the official Z* content path for CFG 7.5). Slow: up to "
                        "iterations × steps extra passes of the unconditional half, with gradients. "
                        "Not needed with CFG 1.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL the inversion was made with (unpatched). Its weights are not changed."),
                InversionType.Input("inversion", tooltip="The content's Z* DDIM Inversion."),
                io.Conditioning.Input("positive", tooltip="The prompt the Z* Sampler will use (the paper: empty prompt)."),
                io.Conditioning.Input("negative", tooltip="Starting unconditional embedding (the paper: empty prompt)."),
                io.Float.Input("cfg", default=PAPER_PRESET.cfg_nulltext, min=1.0, max=30.0, step=0.1, round=0.01,
                               tooltip="The CFG scale the Z* Sampler will use with this inversion, above 1 (at cfg 1 the unconditional embedding is never used). Paper: 7.5."),
                io.Int.Input("iterations", default=PAPER_PRESET.nulltext_iterations, min=1, max=100,
                             tooltip="Adam iterations per step at most (early stop when the step is reconstructed). Paper: 10."),
            ],
            outputs=[InversionType.Output(display_name="inversion",
                                          tooltip="The inversion with per-step null-text embeddings; use cfg = this cfg in the Z* Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, iterations=None):
        return validation.report(validation.nulltext_inputs, cls, cfg=cfg, iterations=iterations)

    @classmethod
    def execute(cls, model, inversion, positive, negative, cfg, iterations) -> io.NodeOutput:
        validation.nulltext_inputs(cls, cfg=cfg, iterations=iterations)
        return io.NodeOutput(nulltext_optimise(model, inversion, positive, negative, cfg, iterations))
