"""SD3 / SD3.5 (MMDiT, MMDiT-X): joint blocks, some with a second, image-only attention.

Layers: joint blocks 0…N−1 (each block's [text ; image] attention), then the image-only
attention of every MMDiT-X block (SD3.5 Medium: blocks 0-12) as N, N+1, … in block order.
SD3.5 Large: 0-37; SD3.5 Medium: 0-23 joint, 24-36 image-only.

"auto": no published injection preset exists for SD3.5. We transfer the Flux rule of FireFlow
and RF-Solver-Edit (inject in the later half of the network, where appearance rather than
layout is formed) to the joint blocks: the second half, N//2…N−1 (Large: 19-37, Medium:
12-23). Our choice, not tuned on trained weights here; the layer string overrides it.
"""
from __future__ import annotations

from .dit import FlowFamily

SD35_LARGE_DEPTH = 38


def sd3_keys(depth: int, image_blocks=()) -> tuple:
    return tuple(("double_block", i, "joint") for i in range(depth)) + \
        tuple(("double_block", i, "image") for i in image_blocks)


class _SD3(FlowFamily):
    def read_layer_keys(self, model):
        from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

        net = model.get_model_object("diffusion_model")
        if not isinstance(net, MMDiT):
            return None
        blocks = net.joint_blocks
        return sd3_keys(len(blocks), [i for i, b in enumerate(blocks) if b.x_block.x_block_self_attn])

    def default_layers_for(self, keys):
        joint = sum(1 for k in keys if k[2] == "joint")
        return f"{joint // 2}-{joint - 1}"

    def key_label(self, key):
        _, index, attention = key
        return f"joint block {index}" + ("" if attention == "joint" else " image attention")


SD3 = _SD3(
    name="sd3", label="SD3.5", layer_keys=sd3_keys(SD35_LARGE_DEPTH), default_layers="19-37",
    default_source="our choice: the second half of the joint blocks (FireFlow's Flux rule transferred)",
    config_names=("SD3",), numbering="joint blocks, then the MMDiT-X image-only attentions")
