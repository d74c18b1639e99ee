"""ZStarAttentionPatch: install the λ-reweighted self-attention into chosen U-Net blocks."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET, ZStarError, parse_layers, zstar_batch_attention
from . import host
from .model_info import describe

CONFIG_KEY = "zstar"
RUN_KEY = "zstar_run"


@dataclass(frozen=True)
class ZStarConfig:
    """What the patch node decided; read by the sampler. Immutable, so clone()'s deepcopy is harmless."""

    style_scale: float
    style_self_scale: float
    layers: tuple
    keys: tuple
    start_step: int
    end_step: int
    arch: str


class ZStarAttn1:
    """attn1 replacement. Without a Z* run in progress (or outside its window) it is exactly
    the host's attention, so a patched model in any other sampler behaves as unpatched."""

    def __init__(self, config: ZStarConfig):
        self.config = config

    def __call__(self, q, k, v, extra_options):
        attention = host.host_attention(extra_options)
        heads = extra_options["n_heads"]
        run = extra_options.get(RUN_KEY)
        if run is None or not (run.reweight and run.stacked):
            return attention(q, k, v, heads)
        mask = run.extra.get("mask_for_tokens")
        return zstar_batch_attention(
            q, k, v, heads, run.layout, len(extra_options["cond_or_uncond"]), run.style_scales,
            run.style_self_scale, attention=attention,
            query_mask=mask(q.shape[1], extra_options) if mask is not None else None)


def check_strength(name: str, value: float):
    if value is None or not math.isfinite(value) or value < 0:
        raise ZStarError(f"{name}: must be a finite number ≥ 0, got {value}")


def patch_model(model, style_scale, style_self_scale, layers, start_step, end_step):
    check_strength("style_strength", style_scale)
    check_strength("style_self_strength", style_self_scale)
    if not 0 <= start_step < end_step:
        raise ZStarError(f"start_step/end_step: need 0 ≤ start_step < end_step, got {start_step} and {end_step}")
    info = describe(model)
    spec = info.paper_layers if layers.strip().lower() in ("", "auto", "paper") else layers
    chosen = parse_layers(spec, len(info.attn1_keys))
    keys = tuple(info.attn1_keys[i] for i in chosen)
    config = ZStarConfig(style_scale=float(style_scale), style_self_scale=float(style_self_scale),
                         layers=chosen, keys=keys, start_step=int(start_step), end_step=int(end_step),
                         arch=info.arch)
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    replaced = [k for k in keys if k in existing]
    if replaced:
        logging.warning("Z*: replacing another node's attn1 patch on %s", replaced)
    patch = ZStarAttn1(config)
    for block, block_id, index in keys:
        patched.set_model_attn1_replace(patch, block, block_id, index)
    patched.model_options.setdefault("transformer_options", {})[CONFIG_KEY] = config
    return patched


class ZStarAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarAttentionPatch",
            display_name="Z* Attention Patch",
            category="sampling/zstar",
            description="Installs Z*'s reweighted self-attention: in the chosen layers and steps the "
                        "content looks at the style's keys and values, with style logits scaled by λ "
                        "inside one softmax. Elsewhere the model is untouched.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL to patch (SD1.5, SD2.x or SDXL). The input model is not changed."),
                io.Float.Input("style_strength", default=PAPER_PRESET.style_scale, min=0.0, max=10.0, step=0.05,
                               tooltip="λ: scales the style logits inside the softmax. Higher = stronger style, lower = more of the content's own look. Paper: 1.2."),
                io.Float.Input("style_self_strength", default=PAPER_PRESET.style_self_scale, min=0.0, max=10.0, step=0.05,
                               tooltip="λ_style: the official code also reweights the style row against the content (1.5). 0 = off (plain self-attention for the style row; needed for exact fast mode)."),
                io.String.Input("layers", default="auto",
                                tooltip="Which self-attention layers to reweight, counted in execution order: 'auto' = the paper's choice for this model (SD1.5/SD2.x: 10-15, the decoder's last six), or e.g. '10-15', '10,12,14'."),
                io.Int.Input("start_step", default=PAPER_PRESET.start_step, min=0, max=1000,
                             tooltip="First step (0-based) that reweights. Earlier steps use plain attention and fix the layout. Paper: 5."),
                io.Int.Input("end_step", default=PAPER_PRESET.end_step, min=1, max=1000,
                             tooltip="Step where reweighting stops (exclusive). Paper: 30 of 30, i.e. to the end."),
            ],
            outputs=[io.Model.Output(tooltip="A patched copy of the model; wire it into the Z* Sampler.")],
        )

    @classmethod
    def execute(cls, model, style_strength, style_self_strength, layers, start_step, end_step) -> io.NodeOutput:
        return io.NodeOutput(patch_model(model, style_strength, style_self_strength, layers, start_step, end_step))
