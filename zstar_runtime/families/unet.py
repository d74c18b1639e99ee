"""The U-Net families (SD1.5, SD2.x, SDXL): what they share.

Their self-attention layers are ComfyUI's attn1 in BasicTransformerBlocks, addressed by
(block name, block id, depth index) and replaced through ModelPatcher.set_model_attn1_replace;
they predict ε or v on a discrete DDPM schedule, so the inversion step is the DDIM update.
"""
from __future__ import annotations

from dataclasses import dataclass


from ...zstar_attention import ZStarError, ddim_invert, ddim_step, ddim_timesteps, sigmas_from_table, vp_scale
from ..hooks import ZStarAttn1
from .base import ModelFamily

SUPPORTED = "Z* supports SD1.5, SD2.x and SDXL U-Net models"


def sampling_name(sampling) -> str:
    """ComfyUI builds model_sampling as a local class `ModelSampling(schedule, prediction)`:
    name its parts (e.g. 'ModelSamplingContinuousEDM + EDM'), not the uninformative local name."""
    cls = type(sampling)
    if cls.__name__ == "ModelSampling" and cls.__bases__:
        return " + ".join(base.__name__ for base in cls.__bases__)
    return cls.__name__


@dataclass(frozen=True)
class UNetFamily(ModelFamily):
    """A U-Net family; `config_prefix` tells apart families with the same layer layout (SD2 vs SD1.5)."""

    config_prefix: str = ""

    def read_layer_keys(self, model):
        from comfy.ldm.modules.attention import SpatialTransformer
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

        unet = model.get_model_object("diffusion_model")
        if not isinstance(unet, UNetModel):
            return None
        keys = []

        def block_keys(name, block_id, block):
            for layer in block or ():
                if isinstance(layer, SpatialTransformer):
                    return [(name, block_id, i) for i in range(len(layer.transformer_blocks))]
            return []

        for block_id, block in enumerate(unet.input_blocks):
            keys += block_keys("input", block_id, block)
        keys += block_keys("middle", 0, unet.middle_block)
        for block_id, block in enumerate(unet.output_blocks):
            keys += block_keys("output", block_id, block)
        return tuple(keys)

    def matches(self, model, layer_keys):
        config_name = type(getattr(model.model, "model_config", None)).__name__
        return layer_keys == self.layer_keys and config_name.startswith(self.config_prefix)

    def check_sampling(self, model, type_name):
        import comfy.model_sampling as ms

        sampling = model.get_model_object("model_sampling")
        if not isinstance(sampling, ms.ModelSamplingDiscrete) or not isinstance(sampling, ms.EPS) or \
                isinstance(sampling, (ms.EDM, ms.X0)):
            raise ZStarError(f"model: {SUPPORTED} with eps or v prediction on a discrete DDPM schedule; "
                             f"this MODEL ({type_name}) samples with {sampling_name(sampling)}")

    def install(self, patched, config, keys):
        hook = ZStarAttn1(config, self)
        for block, block_id, index in keys:
            patched.set_model_attn1_replace(hook, block, block_id, index)

    def installed(self, model):
        to = model.model_options.get("transformer_options", {})
        return dict(to.get("patches_replace", {}).get("attn1", {}))

    def remove(self, patched, keys):
        to = patched.model_options.setdefault("transformer_options", {})
        attn1 = to.get("patches_replace", {}).get("attn1", {})
        if any(k in attn1 for k in keys):  # copy on write, as the host's own setters do
            to["patches_replace"] = {**to["patches_replace"], "attn1": {k: p for k, p in attn1.items() if k not in keys}}

    def key_label(self, key):
        block, block_id, index = key
        return f"{block} {block_id}.{index}"

    def unknown_message(self, type_name, keys):
        return f"{SUPPORTED}; this MODEL ({type_name}) has a U-Net with {len(keys)} self-attention layers in an unknown layout"

    def layer_of_call(self, extra_options):
        block = extra_options["block"]
        return (block[0], block[1], extra_options.get("block_index", 0))

    def token_grid_of_call(self, extra_options):
        _, _, h, w = extra_options["activations_shape"]
        return h, w

    def sigma_table(self, model):
        return model.get_model_object("model_sampling").sigmas.detach().float().cpu()

    def schedule(self, sigma_table, steps):
        """The official DDIM schedule (leading spacing, offset 1: t = 958 … 1 for 30 steps)."""
        timesteps = tuple(ddim_timesteps(steps, num_train_steps=len(sigma_table)))
        return sigmas_from_table(sigma_table, timesteps), timesteps

    def step(self, x, denoised, sigma, sigma_next):
        return ddim_step(x, denoised, sigma, sigma_next)

    def invert(self, denoiser, x0, sigmas, callback=None):
        return ddim_invert(denoiser, x0, sigmas, callback=callback)

    def clean_scale(self, sigma_min):
        """The schedule ends at σ_min > 0 (ᾱ₀ < 1): the VP latent there is the clean one scaled."""
        return vp_scale(sigma_min)
