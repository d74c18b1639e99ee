"""The rectified-flow transformer families (Flux.1, Flux.2, Chroma, Qwen-Image, Z-Image, SD3.5): what they share.

Their attention is joint (text and image tokens in one sequence) inside blocks that ComfyUI
lets a node replace through `patches_replace["dit"][(block kind, index)]`; Z* replaces a chosen
block by a call of the ORIGINAL block whose options carry an attention override for that call
only (zstar_runtime/joint_patch.py). Z-Image's blocks cannot be replaced: its adapter overrides
install() with a model-level override that finds the layers by the host's block index. They
sample with CONST (flow) model sampling, so the inversion is the flow ODE (zstar_attention/flow.py) on the model's own σ, shift included.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...zstar_attention import ZStarError, flow_invert, flow_step
from ..joint_patch import ZStarBlock
from .base import ModelFamily
from .unet import sampling_name

@dataclass(frozen=True)
class FlowFamily(ModelFamily):
    """A joint-attention transformer on a rectified-flow schedule.

    config_names: ComfyUI model-config classes (comfy/supported_models.py) of this family.
    layer keys are (block kind, block index, attention): 'joint' is the block's [text ; image]
    attention, 'image' the image-only second attention of SD3.5's MMDiT-X blocks.
    """

    config_names: tuple = ()
    has_rope: bool = False
    patch_size: int = 2  # latent pixels per image token along each side (Flux.1, SD3.5: 2×2 patches)
    # the order of a block's attention calls, by layer-key kind (SD3.5's MMDiT-X blocks: the joint
    # attention first, then the image-only one; Flux's blocks make one call)
    call_order: tuple = ("joint", "image")
    inversion: str = "flow"
    numbering: str = "blocks in execution order"  # how its layer string counts, for tooltips
    # the RoPE index the host gives a first reference latent placed by "index" (Flux Kontext,
    # Qwen-Image-Edit: 1; Flux.2: its ref_index_scale, 10), where `reference_latent` puts the style
    reference_index: float = 1.0
    rope_embedder: str = "pe_embedder"  # the network's EmbedND attribute (Z-Image's NextDiT: rope_embedder)
    features: frozenset = frozenset()  # fast mode, null-text and the style map are U-Net only for now

    def default_layers_for(self, keys: tuple) -> str:
        raise NotImplementedError

    def unknown_message(self, type_name, keys):
        return f"this MODEL ({type_name}) has {self.label}'s network but is a variant Z* does not know"

    def matches(self, model, layer_keys):
        return type(getattr(model.model, "model_config", None)).__name__ in self.config_names

    def check_sampling(self, model, type_name):
        import comfy.model_sampling as ms

        sampling = model.get_model_object("model_sampling")
        if not isinstance(sampling, ms.CONST) or not hasattr(sampling, "sigmas"):
            raise ZStarError(f"model: Z* takes {self.label} on its rectified-flow (CONST) sampling; "
                             f"this MODEL ({type_name}) samples with {sampling_name(sampling)}")

    def check_model(self, model):
        """Raise ZStarError for a model of this family that Z* cannot patch as it is."""
        size = getattr(model.get_model_object("diffusion_model"), "patch_size", self.patch_size)
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if sizes != (self.patch_size, self.patch_size):
            raise ZStarError(f"model: this {self.label} model uses {size} patches; Z* knows the "
                             f"{self.patch_size}×{self.patch_size} patches of the released models")

    # -- the hook: one block replacement per block that holds a chosen layer

    @staticmethod
    def blocks_of(keys) -> dict:
        """{(block kind, index): {'joint' | 'image': key}}: the chosen layers grouped by the block that holds them."""
        blocks = {}
        for key in keys:
            blocks.setdefault(key[:2], {})[key[2]] = key
        return blocks

    def install(self, patched, config, keys):
        rope = self.rope_of(patched) if self.has_rope else None
        for (kind, index), calls in self.blocks_of(keys).items():
            patched.set_model_patch_replace(ZStarBlock(config, self, calls, rope), "dit", kind, index)

    def installed(self, model):
        dit = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        found = {}
        for (kind, index), hook in dit.items():
            calls = hook.calls.values() if isinstance(hook, ZStarBlock) else [(kind, index, a) for a in ("joint", "image")]
            for key in calls:
                found[key] = hook
        return found

    def remove(self, patched, keys):
        to = patched.model_options.setdefault("transformer_options", {})
        dit = to.get("patches_replace", {}).get("dit", {})
        blocks = {key[:2] for key in keys}
        if any(b in dit for b in blocks):  # copy on write, as the host's own setters do
            to["patches_replace"] = {**to["patches_replace"], "dit": {b: p for b, p in dit.items() if b not in blocks}}

    def key_label(self, key) -> str:
        kind, index, attention = key
        name = f"{kind.replace('_', ' ')} {index}"
        return name if attention == "joint" else f"{name} image attention"

    def rope_of(self, model):
        """(axes_dim, theta) of the model's rotary embedding: its `rope_embedder` attribute, the EmbedND
        of comfy/ldm/flux/layers.py that Flux.1/2, Chroma, Qwen-Image and Z-Image all build their positions with."""
        embed = getattr(model.get_model_object("diffusion_model"), self.rope_embedder)
        return tuple(int(a) for a in embed.axes_dim), float(embed.theta)

    def style_key_offsets(self, mode: str, grid: tuple) -> tuple:
        """(index, row, column) added to the style's image-key positions for a `positions` mode, on a
        content token grid (h, w); patch.POSITIONS says where each placement comes from.
        reference_latent: index + reference_index on the content's own grid (how ComfyUI places a
        first reference latent by "index": Flux Kontext, Qwen-Image-Edit, Flux.2). shifted: index +1
        and beside the image along its shorter side, never on the content's grid (AlignedGen's ShiftPE)."""
        h, w = grid
        if mode == "reference_latent":
            return float(self.reference_index), 0.0, 0.0
        return (1.0, 0.0, float(w)) if h > w else (1.0, float(h), 0.0)

    def takes_guidance(self, model) -> bool:
        """Whether the model embeds a guidance value (Flux.1-dev's FluxGuidance), which the flow
        inversion then sets (Z* Flow Inversion's `guidance`); real-CFG models do not."""
        return False

    # -- noise parameterisation: the flow ODE on the model's own σ

    def sigma_table(self, model):
        return model.get_model_object("model_sampling").sigmas.detach().float().cpu()

    def schedule(self, sigma_table, steps):
        """ComfyUI's 'simple' scheduler (comfy/samplers.py simple_scheduler), the one its Flux and
        SD3.5 templates use, read off the model's σ table (shift included), ending at σ = 0."""
        if steps > len(sigma_table):
            raise ZStarError(f"steps: {steps} is more than the model's {len(sigma_table)} noise levels")
        stride = len(sigma_table) / steps
        index = tuple(len(sigma_table) - 1 - int(x * stride) for x in range(steps))
        sigmas = torch.tensor([float(sigma_table[i]) for i in index] + [0.0], dtype=torch.float32)
        return sigmas, index

    def step(self, x, denoised, sigma, sigma_next):
        return flow_step(x, denoised, sigma, sigma_next)

    def invert(self, denoiser, x0, sigmas, callback=None, order: int = 1, start_velocity=None):
        return flow_invert(denoiser, x0, sigmas, order=order, callback=callback, start_velocity=start_velocity)

    def clean_scale(self, sigma_min):
        """x_σ = (1−σ)·x₀ + σ·ε: at the schedule's last σ the clean latent is scaled by 1−σ (1 at σ = 0)."""
        return 1.0 - float(sigma_min)

    def token_grid(self, latent_shape) -> tuple:
        """(h, w) of the image tokens for a latent (C, H, W), or (C, 1, H, W) for the video-VAE
        latents of Qwen-Image: patch_size × patch_size patches, padded up."""
        h, w = latent_shape[-2:]
        p = self.patch_size
        return (h + p - 1) // p, (w + p - 1) // p
