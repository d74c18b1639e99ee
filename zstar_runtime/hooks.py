"""The Z* attention hooks, installed by a family into a clone of the MODEL: each dispatches every
call of a chosen layer to the core's reweighted attention for the situation at hand.

Which core function runs (zstar_attention's module map has the details):
- no Z* run in progress, outside the step window, or a fast-mode recording: the host's own attention;
- paper path (content and style rows stacked in the batch): zstar_batch_attention;
- fast mode (content rows only, the style from a Style Record): recorded_style_attention.
A region mask and several styles are arguments of both. A hook is handed its family object, so
nothing on the sampling path looks a family up by name. The transformer blocks' hook is
joint_patch.ZStarBlock.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..zstar_attention import ZStarError, recorded_style_attention, zstar_batch_attention
from . import host

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

    def __init__(self, config: ZStarConfig, family):
        self.config = config
        self.family = family  # the families.ModelFamily that installed this hook


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
