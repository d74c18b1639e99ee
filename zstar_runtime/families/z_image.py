"""Z-Image (Turbo, Base): Lumina 2's NextDiT at width 3840 (comfy/ldm/lumina/model.py, config
`ZImage`): two context-refiner layers on the caption and two noise-refiner layers on the image,
then 30 layers over ONE stream [caption (padded to 32) ; image tokens ; pad tokens up to a
multiple of 32]. RoPE (3 axes 32+48+48, θ 256: index, row, column; the image's index follows the
caption's) is applied inside the attention module; Flux's latents (16 channels, 2×2 patches).

The network offers no block replacement. From ComfyUI 0.8.0 the host writes
`transformer_options["block_type"] = "double"` and `["block_index"] = i` before numbered layer i
and passes the options to the attention call, so Z* installs one model-level attention override
(joint_patch.LayerOverride) chained after any override already set; the refiners attend before
the host writes an index and are never Z* layers. A host that writes no index is refused by name
at the first reweighted step (wrappers.layer_indexed_call).

Layers: the 30 numbered layers, 0-29. "auto": no injection preset has been published for
Z-Image; as for Qwen-Image we transfer FireFlow's Flux rule (the later half, where appearance
rather than layout forms): layers 15-29. Our choice, not tuned on trained weights here. Turbo
(distilled: few steps, cfg 1) and Base (real CFG) are the same network; no guidance embedding.
"""
from __future__ import annotations

from ..joint_patch import OVERRIDE_KEY, LayerOverride
from .dit import FlowFamily

Z_IMAGE_DEPTH = 30
HOST_BLOCK_TYPE = "double"  # what NextDiT's _forward writes as block_type before its numbered layers


def z_image_keys(depth: int) -> tuple:
    return tuple(("layer", i, "joint") for i in range(depth))


class _ZImage(FlowFamily):
    def read_layer_keys(self, model):
        from comfy.ldm.lumina.model import NextDiT

        net = model.get_model_object("diffusion_model")
        if not isinstance(net, NextDiT):
            return None
        return z_image_keys(len(net.layers))

    def default_layers_for(self, keys):
        return f"{len(keys) // 2}-{len(keys) - 1}"

    def key_label(self, key):
        return f"layer {key[1]}"

    # -- the hook: one model-level attention override instead of block replacements

    def install(self, patched, config, keys):
        options = patched.model_options.setdefault("transformer_options", {})
        net = patched.get_model_object("diffusion_model")
        options[OVERRIDE_KEY] = LayerOverride(
            config, self, {key[1]: key for key in keys}, self.rope_of(patched),
            pad_multiple=getattr(net, "pad_tokens_multiple", None) or 1,
            previous=options.get(OVERRIDE_KEY), block_type=HOST_BLOCK_TYPE)

    def installed(self, model):
        hook = model.model_options.get("transformer_options", {}).get(OVERRIDE_KEY)
        return {key: hook for key in hook.calls.values()} if isinstance(hook, LayerOverride) else {}

    def remove(self, patched, keys):
        options = patched.model_options.setdefault("transformer_options", {})
        hook = options.get(OVERRIDE_KEY)
        if isinstance(hook, LayerOverride):  # the override that was there before ours comes back
            if hook.previous is None:
                options.pop(OVERRIDE_KEY)
            else:
                options[OVERRIDE_KEY] = hook.previous


Z_IMAGE = _ZImage(
    name="z_image", label="Z-Image", layer_keys=z_image_keys(Z_IMAGE_DEPTH), default_layers="15-29",
    default_source="our choice: the second half of the layers (FireFlow's Flux rule transferred)",
    config_names=("ZImage",), numbering="its 30 layers in order (the refiners before them are not counted)",
    has_rope=True, rope_embedder="rope_embedder")
