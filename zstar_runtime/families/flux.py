"""Flux.1 (dev and schnell): 19 double-stream blocks, then 38 single-stream blocks.

Layers are numbered over ONE sequence of blocks: double blocks 0…D−1, then single blocks as
D…D+S−1 (Flux.1: 0-18 double, 19-56 single). "auto" is the published rectified-flow injection
choice: single blocks 20-37, FireFlow (arXiv 2412.07517, src/edit.py `--start_layer_index 20
--end_layer_index 37`) and RF-Solver-Edit (arXiv 2411.04746: single blocks with index > 19), i.e.
layers 39-56 of Flux.1. A smaller model of the same layout (tests) keeps the same share of its
single blocks. Not tuned on trained weights here.
"""
from __future__ import annotations

from .dit import FlowFamily

FLUX1_DOUBLE, FLUX1_SINGLE, FIREFLOW_FIRST_SINGLE = 19, 38, 20


def flux_keys(double: int, single: int) -> tuple:
    return tuple(("double_block", i, "joint") for i in range(double)) + \
        tuple(("single_block", i, "joint") for i in range(single))


class _Flux(FlowFamily):
    def network_class(self):
        """The host's network class of this family's diffusion model."""
        from comfy.ldm.flux.model import Flux

        return Flux

    def read_layer_keys(self, model):
        net = model.get_model_object("diffusion_model")
        if not isinstance(net, self.network_class()) or \
                any(getattr(b, "flipped_img_txt", False) for b in net.double_blocks):
            return None
        return flux_keys(len(net.double_blocks), len(net.single_blocks))

    def takes_guidance(self, model) -> bool:
        return bool(getattr(model.get_model_object("diffusion_model").params, "guidance_embed", False))

    def default_layers_for(self, keys):
        double = sum(1 for k in keys if k[0] == "double_block")
        single = len(keys) - double
        first = (FIREFLOW_FIRST_SINGLE * single) // FLUX1_SINGLE
        return f"{double + first}-{double + single - 1}"


FLUX = _Flux(
    name="flux", label="Flux.1", layer_keys=flux_keys(FLUX1_DOUBLE, FLUX1_SINGLE), default_layers="39-56",
    default_source="FireFlow / RF-Solver-Edit: Flux single blocks 20-37 (layers 39-56)",
    config_names=("Flux", "FluxSchnell"), numbering="double blocks, then single blocks", has_rope=True)
