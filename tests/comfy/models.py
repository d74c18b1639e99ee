"""Random-weight models with real ComfyUI architectures, built in memory for the tests."""
from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.supported_models

SMALL_CONTEXT = 64


def sd15_unet_config(model_channels=32, context_dim=SMALL_CONTEXT, num_heads=2):
    """SD1.5's exact block layout (16 attn1 layers) at toy width."""
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": model_channels,
        "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
        "context_dim": context_dim, "num_heads": num_heads, "num_head_channels": -1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


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


def small_sd15(seed: int = 0, config_cls=comfy.supported_models.SD15, out_scale: float = 0.05):
    """A ModelPatcher around a random SD1.5-layout U-Net (eps prediction, SD1.5 schedule).

    out_scale shrinks the last conv so the random ε stays small and smooth, as a trained
    model's is: DDIM inversion then reconstruction errs by ~3% at 30 steps (a random ε of
    full size errs by >100% at any step count, which would hide every real discrepancy).
    """
    model_config = config_cls(sd15_unet_config())
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_random(model.diffusion_model, seed)
    with torch.no_grad():
        model.diffusion_model.out[-1].weight.mul_(out_scale)
        model.diffusion_model.out[-1].bias.mul_(out_scale)
    model.diffusion_model.to(torch.float32)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def cond(seed: int, tokens: int = 77, dim: int = SMALL_CONTEXT):
    """A CONDITIONING as ComfyUI's text encoders produce it."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, dim, generator=gen), {}]]


def latent(seed: int, batch: int = 1, size: int = 16):
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, 4, size, size, generator=gen) * 5.0}


def rel(a, b) -> float:
    """Relative L2 difference ‖a − b‖ / ‖b‖."""
    return ((a - b).norm() / b.norm()).item()
