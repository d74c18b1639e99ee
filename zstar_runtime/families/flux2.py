"""Flux.2 (dev; the Klein models on newer hosts): Flux.1's code (comfy/ldm/flux/model.py) with
patch size 1 on 128-channel latents, four rotary axes (32 each: index, row, column, text
position; θ 2000), shared modulations, and reference latents placed by "index" at steps of 10
(`ref_index_scale`). Text first, padded to 512 tokens (model_base.Flux2), as in Flux.1's blocks.

Layers: double blocks 0…D−1, then single blocks D…D+S−1 (Flux.2 dev: 8 double, 48 single: 0-7,
8-55). "auto": no injection preset has been published for Flux.2; we transfer FireFlow /
RF-Solver-Edit's Flux.1 rule (single blocks 20-37 of 38: the later 18/38 of the single blocks),
keeping its share: single blocks 25-47, layers 33-55 of dev. Our choice, not tuned on trained
weights here; the layer string overrides it. The guidance embedding is read off the network (dev
has one; a model without one samples with real CFG).
"""
from __future__ import annotations

from .flux import _Flux, flux_keys

FLUX2_DOUBLE, FLUX2_SINGLE = 8, 48


FLUX2 = _Flux(  # Flux.1's network class and layer reading; the fields are what differs
   
    name="flux2", label="Flux.2", layer_keys=flux_keys(FLUX2_DOUBLE, FLUX2_SINGLE), default_layers="33-55",
    default_source="our choice: FireFlow's Flux.1 share of the single blocks transferred (dev: single blocks 25-47, layers 33-55)",
    config_names=("Flux2",), numbering="double blocks, then single blocks", has_rope=True, patch_size=1,
    reference_index=10.0, latent_to_pixels=16)  # Flux.2's VAE: 16 pixels per latent cell (128 channels)
