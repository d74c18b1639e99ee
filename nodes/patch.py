"""ZStarAttentionPatch: install the λ-reweighted self-attention into chosen U-Net blocks."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from comfy_api.latest import io

from ..zstar_attention import (PAPER_PRESET, ZStarError, reweighted_attention, rows_per_chunk,
                               zstar_batch_attention)
from . import host, validation
from .model_info import describe, resolve_layers

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
        if run is None:
            return attention(q, k, v, heads)
        key = layer_key(extra_options)
        if run.extra.get("sink") is not None:  # recording a style for fast mode
            run.extra["sink"](run.step, key, extra_options["cond_or_uncond"], k, v)
            return attention(q, k, v, heads)
        if not run.reweight:
            return attention(q, k, v, heads)
        mask = query_mask_for(run, extra_options)
        if run.stacked:
            return zstar_batch_attention(
                q, k, v, heads, run.layout, len(extra_options["cond_or_uncond"]), run.style_scales,
                run.style_self_scale, attention=attention, query_mask=mask,
                probe=_probe(run, key, extra_options))
        if run.record is not None:
            return recorded_style_attention(q, k, v, heads, run, key, extra_options, attention, mask)
        return attention(q, k, v, heads)


def layer_key(extra_options) -> tuple:
    block = extra_options["block"]
    return (block[0], block[1], extra_options.get("block_index", 0))


def _probe(run, key, extra_options):
    probe = run.extra.get("probe")
    if probe is None:
        return None
    return lambda q, k, style_keys, scales: probe(run.step, key, q, k, style_keys, scales, extra_options["n_heads"])


def query_mask_for(run, extra_options):
    """The region mask resized to this layer's token grid, (n_content, h*w) bool, cached per grid."""
    if run.query_mask is None:
        return None
    _, _, h, w = extra_options["activations_shape"]
    cache = run.extra.setdefault("mask_cache", {})
    if (h, w) not in cache:
        m = torch.nn.functional.interpolate(run.query_mask[:, None].float(), size=(h, w), mode="area")[:, 0]
        m = (m > 0.5).reshape(m.shape[0], h * w)
        cache[(h, w)] = m.expand(run.layout.n_content, h * w)
    return cache[(h, w)]


def recorded_style_attention(q, k, v, heads, run, key, extra_options, attention, mask):
    """Fast mode: content rows only; the style keys/values come from the record, per CFG half."""
    labels = extra_options["cond_or_uncond"]
    nc = run.layout.n_content
    rows_per_chunk(q.shape[0], len(labels), nc)
    styles_k, styles_v = [], []
    for record in run.record:
        ks, vs = [], []
        for half in labels:
            entry = record.kv.get((run.step, key, half))
            if entry is None:
                raise ZStarError(f"style: the record has no {'uncond' if half else 'cond'} half for step {run.step}; "
                                 "record the style with the sampler's cfg")
            ks.append(entry[0].to(q).expand(nc, -1, -1))
            vs.append(entry[1].to(v).expand(nc, -1, -1))
        styles_k.append(ks[0] if len(ks) == 1 else torch.cat(ks))  # one CFG half: a view, no copy
        styles_v.append(vs[0] if len(vs) == 1 else torch.cat(vs))
    if mask is not None:
        mask = mask.repeat(len(labels), 1)
    probe = _probe(run, key, extra_options)
    if probe is not None:
        probe(q, k, styles_k, run.style_scales)
    return reweighted_attention(q, k, v, styles_k, styles_v, heads, style_scale=list(run.style_scales),
                                query_mask=mask, attention=attention)


def check_strength(name: str, value: float):
    if value is None or not math.isfinite(value) or value < 0:
        raise ZStarError(f"{name}: must be a finite number ≥ 0, got {value}")


def patch_model(model, style_scale, style_self_scale, layers, start_step, end_step):
    check_strength("style_strength", style_scale)
    check_strength("style_self_strength", style_self_scale)
    if not 0 <= start_step < end_step:
        raise ZStarError(f"start_step/end_step: need 0 ≤ start_step < end_step, got {start_step} and {end_step}")
    info = describe(model)
    chosen = resolve_layers(info, layers)
    keys = tuple(info.attn1_keys[i] for i in chosen)
    config = ZStarConfig(style_scale=float(style_scale), style_self_scale=float(style_self_scale),
                         layers=chosen, keys=keys, start_step=int(start_step), end_step=int(end_step),
                         arch=info.arch)
    patched = install_patch(model, config)
    patched.model_options.setdefault("transformer_options", {})[CONFIG_KEY] = config
    return patched


def install_patch(model, config: ZStarConfig):
    """A clone of model with ZStarAttn1 on config.keys, through set_model_attn1_replace.

    One Z* patch at a time: the Z* layers of an earlier patch on this MODEL are removed first,
    so a second Attention Patch replaces the first completely instead of adding to it.
    """
    patched = model.clone()
    to = patched.model_options.setdefault("transformer_options", {})
    existing = to.get("patches_replace", {}).get("attn1", {})
    earlier = [k for k, p in existing.items() if isinstance(p, ZStarAttn1)]
    if earlier:
        kept = {k: p for k, p in existing.items() if not isinstance(p, ZStarAttn1)}
        to["patches_replace"] = {**to["patches_replace"], "attn1": kept}
    foreign = [k for k in config.keys if k in existing and k not in earlier]
    if foreign:
        logging.warning("Z*: replacing another node's attn1 patch on %s", foreign)
    to.pop(CONFIG_KEY, None)
    patch = ZStarAttn1(config)
    for block, block_id, index in config.keys:
        patched.set_model_attn1_replace(patch, block, block_id, index)
    return patched


def check_patch_installed(model, config: ZStarConfig):
    """Every layer the config names must still run ZStarAttn1 in this MODEL; a node applied
    after the patch that replaced some of them would otherwise give a silently plain run."""
    attn1 = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    lost = [(n, key) for n, key in zip(config.layers, config.keys) if not isinstance(attn1.get(key), ZStarAttn1)]
    if lost:
        names = ", ".join(f"{n} ({block} {block_id}.{index})" for n, (block, block_id, index) in lost)
        raise ZStarError(f"model: Z* layers {names} no longer carry the Z* attention: a node applied after "
                         "'Z* Attention Patch' replaced their self-attention. Apply that node before the patch, "
                         "or leave those layers out of the patch's layers")


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
    def validate_inputs(cls, style_strength=None, style_self_strength=None, layers=None, start_step=None, end_step=None):
        return validation.report(validation.patch_inputs, cls, style_strength, style_self_strength, layers, start_step, end_step)

    @classmethod
    def execute(cls, model, style_strength, style_self_strength, layers, start_step, end_step) -> io.NodeOutput:
        validation.patch_inputs(cls, style_strength, style_self_strength, layers, start_step, end_step)
        return io.NodeOutput(patch_model(model, style_strength, style_self_strength, layers, start_step, end_step))
