"""The data Z* passes between its steps: inversions, fast-mode style records, style mixes.

Plain dataclasses over torch tensors, importable without ComfyUI (the nodes wrap them in
socket types, nodes/types.py; the style file format reads and writes them, style_file.py).
Each reports its size through get_ram_usage(), which the RAM-pressure cache of ComfyUI 0.8
asks cached outputs for; the cache of later hosts (0.33) weighs only the CPU tensors it finds
in an output's lists and tuples and never calls it, so there a Z* output weighs as little as
an output of unknown size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from .errors import ZStarError


@dataclass(frozen=True, eq=False)
class Inversion:
    """A DDIM (U-Net) or flow (Flux, SD3.5) inversion: everything the sampler needs to replay or denoise an image.

    trajectory[i] is the latent at sigmas[i] in the model's sampling space (after
    process_latent_in, σ-scaled as ComfyUI's samplers keep it); trajectory[-1] is the clean
    image, trajectory[0] its x_T. uncond_embeddings, when set, are the null-text optimised
    unconditional embeddings for each denoising step (the official content path for CFG > 1).
    """

    trajectory: tuple
    sigmas: torch.Tensor
    timesteps: tuple
    arch: str
    model_type: str
    uncond_embeddings: tuple | None = None
    nulltext_cfg: float | None = None
    guidance: float | None = None  # Flux.1-dev: the guidance embedding the inversion ran with

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def batch(self) -> int:
        return self.trajectory[0].shape[0]

    @property
    def latent_shape(self) -> tuple:
        return tuple(self.trajectory[0].shape[1:])

    @property
    def nbytes(self) -> int:
        tensors = [*self.trajectory, self.sigmas, *(self.uncond_embeddings or ())]
        return sum(t.numel() * t.element_size() for t in tensors)

    def get_ram_usage(self) -> int:
        """Bytes held, for ComfyUI's RAM-pressure cache (--cache-ram), which asks cached outputs."""
        return self.nbytes

    def describe(self) -> str:
        c, h, w = self.latent_shape[0], *self.latent_shape[-2:]  # (C, H, W) or (C, 1, H, W) (Qwen-Image)
        return f"{self.batch} image(s), latent {c}×{h}×{w}, {self.steps} steps, {self.arch}"


def check_same_schedule(name: str, inv: Inversion, ref: Inversion, ref_name: str):
    """Both inversions must come from the same model family and the same DDIM schedule."""
    if inv.arch != ref.arch or inv.model_type != ref.model_type:
        raise ZStarError(f"{name}: inverted with a {inv.model_type} model but {ref_name} with {ref.model_type}; "
                         "invert both with the same model")
    if inv.steps != ref.steps:
        raise ZStarError(f"{name}: inverted with {inv.steps} steps but {ref_name} with {ref.steps}; "
                         "use the same step count for every inversion")
    if not torch.equal(inv.sigmas, ref.sigmas):
        raise ZStarError(f"{name}: inverted on a different noise schedule than {ref_name} (same {inv.steps} steps, "
                         "other sigmas); invert both with the same model and model-sampling settings")


@dataclass(frozen=True, eq=False)
class StyleRecord:
    """Fast mode: the style's self-attention keys/values, recorded once per step and layer.

    kv[(step, key, half)] = (k, v), each (1, M, heads*d), half 0 = cond, 1 = uncond. Taken
    from the style inversion at the sampler's own timesteps with plain self-attention, so it
    equals the replayed style row exactly when λ_style is off.
    """

    kv: dict
    layers: tuple
    keys: tuple
    start_step: int
    end_step: int
    sigmas: torch.Tensor
    arch: str
    model_type: str
    halves: tuple
    latent_shape: tuple

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.kv.values() for t in kv)

    def get_ram_usage(self) -> int:
        """Bytes held, for ComfyUI's RAM-pressure cache (--cache-ram), which asks cached outputs."""
        return self.nbytes

    def describe(self) -> str:
        return (f"style record: {len(self.keys)} layers × steps {self.start_step}-{self.end_step - 1} × "
                f"{len(self.halves)} CFG half(s), {self.nbytes / 2**20:.1f} MiB")


@dataclass(frozen=True)
class StyleEntry:
    """One style of a multi-style mix: an inversion (or a fast-mode record) and its λ."""

    source: object  # Inversion or StyleRecord
    strength: float | None  # None: the patch's style_strength
