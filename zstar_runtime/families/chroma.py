"""Chroma: Flux.1-schnell's blocks (19 double-stream, 38 single-stream) without the guidance
embedding, modulated by a distilled approximator instead; real CFG (comfy/ldm/chroma/model.py).

Its blocks are Flux.1's classes called through the same `patches_replace["dit"]` keys with the
same [text ; image] token order and RoPE, so this adapter is Flux's with another network class:
the same layer numbering and the same "auto" (FireFlow / RF-Solver-Edit's single blocks 20-37,
transferred: no injection preset has been published for Chroma; not tuned on trained weights
here). Chroma Radiance (pixel space, its own config class) is not this family.
"""
from __future__ import annotations

from .flux import FLUX1_DOUBLE, FLUX1_SINGLE, _Flux, flux_keys


class _Chroma(_Flux):
    def network_class(self):
        from comfy.ldm.chroma.model import Chroma

        return Chroma

    def takes_guidance(self, model) -> bool:
        return False  # the host feeds its approximator a guidance of 0; the sampler's cfg guides


CHROMA = _Chroma(
    name="chroma", label="Chroma", layer_keys=flux_keys(FLUX1_DOUBLE, FLUX1_SINGLE), default_layers="39-56",
    default_source="Flux.1's FireFlow / RF-Solver-Edit rule on Chroma's identical blocks: single blocks 20-37 (layers 39-56)",
    config_names=("Chroma",), numbering="double blocks, then single blocks", has_rope=True)
