"""Qwen-Image: 60 dual-stream MMDiT blocks (comfy/ldm/qwen_image/model.py), text tokens first,
MSRoPE positions (image ids centred on the grid, text ids after them on the diagonal), real CFG,
latents of the Wan 2.1 VAE ((B, 16, 1, H, W): one frame).

Layers: blocks 0-59, each one joint [text ; image] attention, addressed by the host as
("double_block", i). "auto": no injection preset has been published for Qwen-Image; as for
SD3.5 we transfer FireFlow's Flux rule (inject in the later half of the network, where
appearance rather than layout is formed): blocks 30-59. Our choice, not tuned on trained
weights here; the layer string overrides it. Qwen-Image-Edit's reference latents are refused
by name (their image tokens follow the content's in the same stream).
"""
from __future__ import annotations

from .dit import FlowFamily

QWEN_IMAGE_DEPTH = 60


def qwen_keys(depth: int) -> tuple:
    return tuple(("double_block", i, "joint") for i in range(depth))


class _QwenImage(FlowFamily):
    def read_layer_keys(self, model):
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

        net = model.get_model_object("diffusion_model")
        if not isinstance(net, QwenImageTransformer2DModel):
            return None
        return qwen_keys(len(net.transformer_blocks))

    def default_layers_for(self, keys):
        return f"{len(keys) // 2}-{len(keys) - 1}"

    def key_label(self, key):
        return f"block {key[1]}"


QWEN_IMAGE = _QwenImage(
    name="qwen_image", label="Qwen-Image", layer_keys=qwen_keys(QWEN_IMAGE_DEPTH), default_layers="30-59",
    default_source="our choice: the second half of the blocks (FireFlow's Flux rule transferred)",
    config_names=("QwenImage",), numbering="its blocks in order", has_rope=True)
