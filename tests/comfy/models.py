"""Random-weight models with real ComfyUI architectures, built in memory for the tests and benchmarks.

One builder per family (sd15, sd2, sdxl, sd3), each returning a ModelPatcher around ComfyUI's
own model classes (comfy.supported_models) with that family's exact block layout, so every
test and benchmark runs the same model for the same seed. The layouts are ComfyUI's detection
tables at real widths; the builders shrink them (sd15 also builds the real size for the
benchmark).
"""
from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models

CPU = torch.device("cpu")
SMALL_CONTEXT = 64
LATENT_SIZE = 16
POOLED = 32  # SDXL's pooled CLIP-G width, shrunk (real: 1280)
SDXL_ADM_EXTRA = 6 * 256  # height, width, crop_h, crop_w, target_h, target_w, Timestep(256) each

# comfy/model_detection.py: the SD15, SD21 and SDXL entries (minus dtype), at real widths.
SD15_LAYOUT = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
    "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SD2_LAYOUT = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": True, "context_dim": 1024, "num_head_channels": 64,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SDXL_LAYOUT = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# SD1.5 at the tests' toy width (2 heads, 9M parameters) or as it is (860M, for the benchmark).
SD15_WIDTHS = {"small": {"model_channels": 32, "context_dim": SMALL_CONTEXT, "num_heads": 2}, "full": {}}
# SD2/SDXL shrunk, with 16-channel heads so every attention layer has several heads (2 to 8) as
# the real models do (5 to 20), at a CPU-friendly cost.
SMALL = {"model_channels": 32, "context_dim": SMALL_CONTEXT}
HEAD_CHANNELS = 16


def init_random(module: torch.nn.Module, seed: int):
    """Deterministic weights scaled so activations stay O(1) through the U-Net."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("weight"):  # norms
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def patcher(config, seed: int | None = None, state_dict=None, dtype=torch.float32, out_scale: float = 0.05,
            load_device=None):
    """config's model in a ModelPatcher, as ComfyUI's loaders hand a MODEL to the nodes.

    With a seed the U-Net gets init_random's weights and out_scale shrinks its last conv so the
    random ε stays small and smooth, as a trained model's is: DDIM inversion then reconstruction
    errs by ~3% at 30 steps (a random ε of full size errs by >100% at any step count, which would
    hide every real discrepancy). Without one the weights stay as ComfyUI allocates them: enough
    for models that Z* must refuse before running them. state_dict: the keys ComfyUI reads the
    prediction type and schedule from (e.g. v prediction, EDM).
    """
    config.set_inference_dtype(dtype, None)
    model = config.get_model(state_dict or {}, device=CPU)
    if seed is not None:
        init_random(model.diffusion_model, seed)
        with torch.no_grad():
            model.diffusion_model.out[-1].weight.mul_(out_scale)
            model.diffusion_model.out[-1].bias.mul_(out_scale)
        model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device or comfy.model_management.get_torch_device(),
                                            offload_device=CPU)


def sd15(seed: int | None = 0, width: str = "small", config_cls=comfy.supported_models.SD15, layout=None, **options):
    """SD1.5's exact block layout (16 attn1 layers) at one of SD15_WIDTHS, eps prediction on the
    SD1.5 schedule. config_cls swaps the model class (an SD2.x config over this layout), layout
    overrides entries of the U-Net config; options go to patcher()."""
    return patcher(config_cls({**SD15_LAYOUT, **SD15_WIDTHS[width], **(layout or {})}), seed, **options)


def _shrunk(config_cls, layout: dict, **overrides):
    config = config_cls({**layout, **SMALL, **overrides})
    config.unet_config["num_head_channels"] = HEAD_CHANNELS  # the config class forces 64 in __init__
    return config


def sd2(seed: int | None = 0, **options):
    """SD2.x's layout (comfy.supported_models.SD20, 16 attn1 layers) shrunk; options go to patcher()."""
    return patcher(_shrunk(comfy.supported_models.SD20, SD2_LAYOUT), seed, **options)


def sdxl(seed: int | None = 0, **options):
    """SDXL's layout (comfy.supported_models.SDXL, 70 attn1 layers) shrunk, pooled width POOLED
    (condition it with sdxl_cond); options go to patcher()."""
    config = _shrunk(comfy.supported_models.SDXL, SDXL_LAYOUT, adm_in_channels=POOLED + SDXL_ADM_EXTRA)
    return patcher(config, seed, **options)


def sd3(**options):
    """A one-block SD3 MMDiT: a model family Z* must refuse by name (no random weights needed)."""
    config = comfy.supported_models.SD3({
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 1, "input_size": None,
        "adm_in_channels": 32, "pos_embed_scaling_factor": None, "pos_embed_max_size": 8, "num_patches": 64,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 64}},
    })
    return patcher(config, load_device=CPU, **options)


def cond(seed: int, tokens: int = 77, dim: int = SMALL_CONTEXT):
    """A CONDITIONING as ComfyUI's text encoders produce it."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, dim, generator=gen), {}]]


def sdxl_cond(seed: int, tokens: int = 77):
    """An SDXL CONDITIONING: cross-attention tokens plus the pooled output and size conditioning
    that SDXL.encode_adm turns into the U-Net's "y"."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, SMALL_CONTEXT, generator=gen),
             {"pooled_output": torch.randn(1, POOLED, generator=gen), "width": 128, "height": 128}]]


def latent(seed: int, batch: int = 1, size: int = LATENT_SIZE):
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, 4, size, size, generator=gen) * 5.0}


def rel(a, b) -> float:
    """Relative L2 difference ‖a − b‖ / ‖b‖."""
    return ((a - b).norm() / b.norm()).item()
