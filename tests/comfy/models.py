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
        net = model.diffusion_model
        last = net.out[-1] if hasattr(net, "out") else net.proj_out if hasattr(net, "proj_out") \
            else net.final_layer.linear  # U-Net | Qwen-Image | Flux, Chroma, MMDiT
        with torch.no_grad():
            last.weight.mul_(out_scale)
            if last.bias is not None:  # Flux.2's layers have none
                last.bias.mul_(out_scale)
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


# Flux.1's layout (comfy/model_detection.py, the "flux" entry) shrunk: 2 double + 3 single blocks,
# width 64 in 2 heads of 32 with rotary axes 8+12+12 (real: 19 + 38 blocks, 3072 in 24 heads of 128, 16+56+56).
FLUX_SMALL = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": POOLED,
    "context_in_dim": SMALL_CONTEXT, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2,
    "depth_single_blocks": 3, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True, "guidance_embed": True,
}
FLOW_OUT_SCALE = 0.3  # a velocity of a third of the latent's scale: a real, curved flow the solvers must follow


def flux(seed: int | None = 0, **overrides):
    """Flux.1-dev's layout (comfy.supported_models.Flux, with the guidance embedding) shrunk; condition
    it with flux_cond. overrides change FLUX_SMALL entries (e.g. guidance_embed=False for schnell)."""
    import inspect
    import comfy.ldm.flux.model

    unet = {**FLUX_SMALL, **overrides}
    if "txt_ids_dims" in inspect.signature(comfy.ldm.flux.model.FluxParams).parameters:  # newer hosts
        unet.setdefault("txt_ids_dims", [])
    cls = comfy.supported_models.Flux if unet["guidance_embed"] else comfy.supported_models.FluxSchnell
    return patcher(cls(unet), seed, out_scale=FLOW_OUT_SCALE)


# Chroma's random approximator modulates its toy blocks more strongly than Flux's embeddings do: a
# smaller output keeps its flow as curved as the Flux toy's (reconstruction errors of the same size)
CHROMA_OUT_SCALE = 0.1


def chroma(seed: int | None = 0, **overrides):
    """Chroma's layout (comfy.supported_models.Chroma: Flux.1 blocks, no guidance embedding, the
    distilled modulation approximator) shrunk as FLUX_SMALL; condition it with flow_cond (real CFG)."""
    import inspect
    import comfy.ldm.chroma.model

    unet = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "patch_size": 2,
            "context_in_dim": SMALL_CONTEXT, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2,
            "depth_single_blocks": 3, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
            "in_dim": 64, "out_dim": 64, "hidden_dim": 64, "n_layers": 2, **overrides}
    fields = inspect.signature(comfy.ldm.chroma.model.ChromaParams).parameters
    if "txt_ids_dims" in fields:  # newer hosts
        unet.setdefault("txt_ids_dims", [])
        unet.setdefault("vec_in_dim", None)
    return patcher(comfy.supported_models.Chroma(unet), seed, out_scale=CHROMA_OUT_SCALE)


def qwen_image(seed: int | None = 0, layers: int = 3, **overrides):
    """Qwen-Image's layout (comfy.supported_models.QwenImage: dual-stream blocks, MSRoPE 16+56+56,
    Wan 2.1 latents (B, 16, 1, H, W)) shrunk: `layers` blocks of width 64 in 2 heads of 32, rotary
    axes 8+12+12, text width SMALL_CONTEXT (real: 60 blocks, 3072 in 24 heads of 128, text 3584)."""
    unet = {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "patch_size": 2,
            "num_layers": layers, "attention_head_dim": 32, "num_attention_heads": 2,
            "joint_attention_dim": SMALL_CONTEXT, "axes_dims_rope": (8, 12, 12), **overrides}
    return patcher(comfy.supported_models.QwenImage(unet), seed, out_scale=FLOW_OUT_SCALE)


def flux2(seed: int | None = 0, **overrides):
    """Flux.2-dev's layout (comfy/model_detection.py, the "flux2" entry: patch size 1 on 128-channel
    latents, four rotary axes, shared modulations, no biases, guidance embedding) shrunk as
    FLUX_SMALL: 2 double + 3 single blocks, width 64 in 2 heads of 32, axes 8×4 (real: 8 + 48
    blocks, 6144 in 48 heads of 128, 32×4). Condition it with flow_cond(guidance=…)."""
    unet = {"image_model": "flux2", "in_channels": 128, "out_channels": 128, "patch_size": 1, "vec_in_dim": None,
            "context_in_dim": SMALL_CONTEXT, "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 2, "depth": 2,
            "depth_single_blocks": 3, "axes_dim": [8, 8, 8, 8], "theta": 2000, "qkv_bias": False,
            "guidance_embed": True, "txt_ids_dims": [3], "global_modulation": True, "mlp_silu_act": True,
            "ops_bias": False, "default_ref_method": "index", "ref_index_scale": 10.0, **overrides}
    return patcher(comfy.supported_models.Flux2(unet), seed, out_scale=FLOW_OUT_SCALE)


# the random NextDiT's time modulation (time_scale 1000) bends its flow more than the Flux toy's: a smaller
# output keeps the reconstruction errors of the same size (as CHROMA_OUT_SCALE)
Z_IMAGE_OUT_SCALE = 0.1


def z_image(seed: int | None = 0, layers: int = 3, config_cls=None, **overrides):
    """Z-Image's layout (comfy/model_detection.py, the Lumina 2 entry at dim 3840: NextDiT with
    Z-Image's modulation, 2 context + 2 noise refiner layers, image and caption tokens padded to
    multiples of 32 with learnt pad tokens, RoPE θ 256) shrunk: `layers` numbered layers of width
    256 (its least: the modulation reads a 256-wide time embedding) in 8 heads of 32, axes 8+12+12,
    caption width SMALL_CONTEXT (real: 30 layers, 3840 in 30 heads of 128, axes 32+48+48, caption 2560)."""
    unet = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": SMALL_CONTEXT,
            "n_layers": layers, "qk_norm": True, "n_heads": 8, "n_kv_heads": 8, "axes_dims": [8, 12, 12],
            "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
            "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32, **overrides}
    config = (config_cls or comfy.supported_models.ZImage)(unet)
    if seed is None:
        return patcher(config, load_device=CPU)
    return patcher(config, seed, out_scale=Z_IMAGE_OUT_SCALE)


def qwen_latent(seed: int, batch: int = 1, size: int = LATENT_SIZE):
    """A Qwen-Image LATENT as its VAE encodes an image: (B, 16, 1, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, 16, 1, size, size, generator=gen)}


def sd3(seed: int | None = None, depth: int = 2, x_self_attn=(0,), **options):
    """SD3.5's MMDiT-X layout (comfy.supported_models.SD3, RMS q/k norms, an image-only second
    attention in the blocks `x_self_attn`, as SD3.5 Medium's 0-12) shrunk: `depth` joint blocks
    of width 64·depth. Without a seed the weights stay as allocated (enough for refusals)."""
    config = comfy.supported_models.SD3({
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": depth, "input_size": None,
        "adm_in_channels": POOLED, "pos_embed_scaling_factor": None, "pos_embed_max_size": 16, "num_patches": 256,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": SMALL_CONTEXT,
                                                                             "out_features": 64 * depth}},
        "qk_norm": "rms", "x_block_self_attn_layers": list(x_self_attn),
    })
    if seed is None:
        return patcher(config, load_device=CPU, **options)
    model = patcher(config, seed, out_scale=FLOW_OUT_SCALE, **options)
    # pos_embed is a buffer (ComfyUI fills it from the checkpoint), allocated uninitialised: seed it too,
    # or the model reads whatever memory it got (NaN now and then)
    net = model.model.diffusion_model
    with torch.no_grad():
        net.pos_embed.copy_(torch.randn(net.pos_embed.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return model


def auraflow(**options):
    """A tiny AuraFlow: a rectified-flow MMDiT Z* has no adapter for (no random weights needed)."""
    config = comfy.supported_models.AuraFlow({"max_seq": 16, "cond_seq_dim": SMALL_CONTEXT, "n_layers": 2,
                                              "n_double_layers": 1, "dim": 64, "n_heads": 2, "patch_size": 2,
                                              "in_channels": 4})
    return patcher(config, load_device=CPU, **options)


def flow_cond(seed: int, tokens: int = 16, guidance: float | None = None):
    """A Flux / SD3 CONDITIONING: text tokens plus the pooled vector ("y"); guidance as FluxGuidance sets it."""
    gen = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(1, POOLED, generator=gen)}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[torch.randn(1, tokens, SMALL_CONTEXT, generator=gen), extra]]


def flow_latent(seed: int, batch: int = 1, size: int = LATENT_SIZE, channels: int = 16):
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, channels, size, size, generator=gen)}


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
