"""The Z* attention hook: installed into a clone of the MODEL, it dispatches every call of a
chosen layer to the core's reweighted attention for the situation at hand.

Which core function runs (zstar_attention's module map has the details):
- no Z* run in progress, outside the step window, or a fast-mode recording: the host's own attention;
- paper path (content and style rows stacked in the batch): zstar_batch_attention;
- fast mode (content rows only, the style from a Style Record): recorded_style_attention.
A region mask and several styles are arguments of both.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..zstar_attention import ZStarError, check_strength, recorded_style_attention, zstar_batch_attention
from . import host
from .families import ModelFamily, describe, family, resolve_layers

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
    positions: str = "as_recorded"  # rotary positions of the style keys (Flux): see POSITIONS


class ZStarHook:
    """What every Z* hook is (U-Net attn1 replacement, transformer block replacement): the
    patch's config, and exactly the host's computation whenever no Z* run is reweighting."""

    def __init__(self, config: ZStarConfig):
        self.config = config
        self.family: ModelFamily = family(config.arch)


class ZStarAttn1(ZStarHook):
    """The hook on a U-Net family's self-attention layers. Without a Z* run in progress (or
    outside its window) it is exactly the host's attention, so a patched model in any other
    sampler behaves as unpatched."""

    def __call__(self, q, k, v, extra_options):
        attention = host.host_attention(extra_options)
        heads = extra_options["n_heads"]
        run = extra_options.get(RUN_KEY)
        if run is None:
            return attention(q, k, v, heads)
        key = self.family.layer_of_call(extra_options)
        if run.sink is not None:  # recording a style for fast mode
            run.sink(run.step, key, extra_options["cond_or_uncond"], k, v)
            return attention(q, k, v, heads)
        if not run.reweight:
            return attention(q, k, v, heads)
        mask = query_mask_for(run, self.family.token_grid_of_call(extra_options))
        probe = _probe(run, key, extra_options)
        if run.stacked:
            return zstar_batch_attention(q, k, v, heads, run.layout, len(extra_options["cond_or_uncond"]),
                                         run.style_scales, run.style_self_scale, attention=attention,
                                         query_mask=mask, probe=probe)
        if run.record is not None:
            halves = extra_options["cond_or_uncond"]
            return recorded_style_attention(q, k, v, heads, run.layout.n_content,
                                            [recorded_halves(r, run.step, key, halves) for r in run.record],
                                            run.style_scales, query_mask=mask, attention=attention, probe=probe)
        return attention(q, k, v, heads)


def recorded_halves(record, step: int, key, halves) -> list:
    """The record's (k, v) for each CFG chunk of a call, or the error that says which half is missing."""
    found = []
    for half in halves:
        entry = record.kv.get((step, key, half))
        if entry is None:
            raise ZStarError(f"style: the record has no {'uncond' if half else 'cond'} half for step {step}; "
                             "record the style with the sampler's cfg")
        found.append(entry)
    return found


def _probe(run, key, extra_options):
    probe = run.probe
    if probe is None:
        return None
    return lambda q, k, style_keys, scales: probe(run.step, key, q, k, style_keys, scales, extra_options["n_heads"])


def query_mask_for(run, grid: tuple):
    """The region mask resized to a layer's (h, w) token grid, (n_content, h*w) bool, cached per grid."""
    if run.query_mask is None:
        return None
    h, w = grid
    cache = run.mask_cache
    if (h, w) not in cache:
        m = torch.nn.functional.interpolate(run.query_mask[:, None].float(), size=(h, w), mode="area")[:, 0]
        m = (m > 0.5).reshape(m.shape[0], h * w)
        cache[(h, w)] = m.expand(run.layout.n_content, h * w)
    return cache[(h, w)]


POSITIONS = ("auto", "as_recorded", "shifted", "reference_latent")
# Where each placement puts the style's image keys on RoPE's (index, row, column) axes; the grid
# sides are filled in per image. shifted: index + 1 and beside the image along its shorter side
# (our choice: AlignedGen's ShiftPE moves reference positions beside the image so they do not
# collide, plus the index step Kontext gives a reference). reference_latent: index + 1 on the
# content's own grid, where ComfyUI's ReferenceLatent ("offset", comfy/ldm/flux/model.py) puts a
# first reference image.
MOVED_POSITIONS = ("shifted", "reference_latent")


def resolve_positions(info, positions: str) -> str:
    """'auto' → 'shifted' on a model with rotary positions (Flux), 'as_recorded' elsewhere."""
    if positions not in POSITIONS:
        raise ZStarError(f"style_positions: '{positions}' is not one of {', '.join(POSITIONS)}")
    rope = getattr(info.family, "has_rope", False)
    if positions == "auto":
        return "shifted" if rope else "as_recorded"
    if positions in MOVED_POSITIONS and not rope:
        raise ZStarError(f"style_positions: {info.family.label} has no rotary positions to shift (its attention sees "
                         f"no positions, or they are added to the tokens before the blocks), so '{positions}' does not "
                         "apply; use 'auto' or 'as_recorded'")
    return positions


def patch_model(model, style_scale, style_self_scale, layers, start_step, end_step, positions="auto"):
    """A clone of `model` with Z* on the chosen layers and steps (what Z* Attention Patch returns)."""
    check_strength(style_scale, "style_strength")
    check_strength(style_self_scale, "style_self_strength")
    if not 0 <= start_step < end_step:
        raise ZStarError(f"start_step/end_step: need 0 ≤ start_step < end_step, got {start_step} and {end_step}")
    info = describe(model)
    chosen = resolve_layers(info, layers)
    keys = tuple(info.layer_keys[i] for i in chosen)
    config = ZStarConfig(style_scale=float(style_scale), style_self_scale=float(style_self_scale),
                         layers=chosen, keys=keys, start_step=int(start_step), end_step=int(end_step),
                         arch=info.arch, positions=resolve_positions(info, positions))
    patched = install_patch(model, config)
    patched.model_options.setdefault("transformer_options", {})[CONFIG_KEY] = config
    return patched


def install_patch(model, config: ZStarConfig):
    """A clone of model with the family's Z* hook on config.keys (ZStarAttn1 for U-Nets).

    One Z* patch at a time: the Z* layers of an earlier patch on this MODEL are removed first,
    so a second Attention Patch replaces the first completely instead of adding to it.
    """
    fam = family(config.arch)
    patched = model.clone()
    existing = fam.installed(patched)
    earlier = tuple(k for k, p in existing.items() if isinstance(p, ZStarHook))
    fam.remove(patched, earlier)
    foreign = [k for k in config.keys if k in existing and k not in earlier]
    if foreign:
        logging.warning("Z*: replacing another node's attn1 patch on %s", foreign)
    patched.model_options.setdefault("transformer_options", {}).pop(CONFIG_KEY, None)
    fam.install(patched, config, config.keys)
    return patched


def zstar_config(model) -> ZStarConfig:
    """The MODEL's Z* patch, checked to be still in place."""
    config = model.model_options.get("transformer_options", {}).get(CONFIG_KEY)
    if config is None:
        raise ZStarError("model: this MODEL carries no Z* patch; connect it through 'Z* Attention Patch' first")
    check_patch_installed(model, config)
    return config


def check_patch_installed(model, config: ZStarConfig):
    """Every layer the config names must still run a Z* hook in this MODEL; a node applied
    after the patch that replaced some of them would otherwise give a silently plain run."""
    fam = family(config.arch)
    hooks = fam.installed(model)
    lost = [(n, key) for n, key in zip(config.layers, config.keys) if not isinstance(hooks.get(key), ZStarHook)]
    if lost:
        names = ", ".join(f"{n} ({fam.key_label(key)})" for n, key in lost)
        raise ZStarError(f"model: Z* layers {names} no longer carry the Z* attention: a node applied after "
                         "'Z* Attention Patch' replaced their self-attention. Apply that node before the patch, "
                         "or leave those layers out of the patch's layers")
