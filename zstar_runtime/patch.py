"""Z* Attention Patch's work: a clone of the MODEL with the family's Z* hooks (hooks.py,
joint_patch.py) on the chosen layers and steps, and the style keys' positions on models with
rotary positions.
"""
from __future__ import annotations

import logging

from ..zstar_attention import ZStarError, check_strength
from .families import describe, family, resolve_layers
from .hooks import CONFIG_KEY, RUN_KEY, ZStarAttn1, ZStarConfig, ZStarHook, query_mask_for

# the hooks' names stay importable from here, where they lived before hooks.py
__all__ = ["POSITIONS", "patch_model", "install_patch", "zstar_config", "resolve_positions", "CONFIG_KEY", "RUN_KEY",
           "ZStarAttn1", "ZStarConfig", "ZStarHook", "query_mask_for"]

POSITIONS = ("auto", "as_recorded", "shifted", "reference_latent")
# Where each placement puts the style's image keys on RoPE's (index, row, column) axes is the
# family's (FlowFamily.style_key_offsets, which cites its sources). shifted: index + 1 and beside
# the image (our choice, after AlignedGen's ShiftPE). reference_latent: index + 1 on the content's
# own grid, where the host puts a first reference latent.
MOVED_POSITIONS = ("shifted", "reference_latent")


def resolve_positions(info, positions: str) -> str:
    """'auto' → 'shifted' on a model with rotary positions (Flux.1, Flux.2, Chroma, Qwen-Image, Z-Image), 'as_recorded' elsewhere."""
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
