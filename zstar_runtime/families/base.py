"""What a model family adapter must provide. One module per family; everything else asks it.

A family is a ModelFamily instance in its own module (sd.py, sdxl.py: U-Nets over unet.py;
flux.py, sd3.py: rectified-flow transformers over dit.py) registered in families/__init__.py.
The patch, the sampler, the inversion, the style bank and the node validation read everything
family-specific from it.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

Key = tuple  # how the host addresses one attention layer (for U-Nets: (block, block id, depth index))


@dataclass(frozen=True)
class ModelFamily:
    """One family of models Z* supports.

    name: the id stored in inversions, records and style files ("sd15").
    label: how messages name it ("SD1.5").
    layer_keys: every attention layer Z* can reweight, in execution order; a layer string's
        numbers index this tuple ("10-15" = layer_keys[10:16]).
    default_layers: what "auto" means for this family.
    default_source: where that default comes from (the paper, or our own documented choice).
    """

    name: str
    label: str
    layer_keys: tuple
    default_layers: str
    default_source: str

    # -- recognising a ComfyUI MODEL

    def matches(self, model, layer_keys: tuple) -> bool:
        """Whether `model` (a ModelPatcher), whose layers read off its network are
        `layer_keys`, belongs to this family."""
        raise NotImplementedError

    def read_layer_keys(self, model) -> tuple | None:
        """The model's attention layers in execution order, or None if it is not this kind of network."""
        raise NotImplementedError

    def check_sampling(self, model, type_name: str):
        """Raise ZStarError if the model's noise parameterisation is not one Z* can invert."""
        raise NotImplementedError

    def check_model(self, model):
        """Raise ZStarError for a model of this family that Z* cannot patch as it is (nothing to check by default)."""

    # -- the Z* hook

    def install(self, patched, config, keys: tuple):
        """Put the family's Z* hook for `config` on `keys` of `patched` (a clone Z* owns), through
        the host's public mechanism."""
        raise NotImplementedError

    def installed(self, model) -> dict:
        """{key: hook} of the replacements now on the model's attention layers."""
        raise NotImplementedError

    def remove(self, patched, keys: tuple):
        """Take the replacements on `keys` off `patched` (a clone Z* owns)."""
        raise NotImplementedError

    def key_label(self, key) -> str:
        """How messages name one layer key."""
        return " ".join(str(part) for part in key)

    def default_layers_for(self, keys: tuple) -> str:
        """What "auto" means for a model with these layer keys (fixed for the U-Nets)."""
        return self.default_layers

    def unknown_message(self, type_name: str, keys: tuple) -> str:
        """The error for a model of this network class that matches no family."""
        return f"this MODEL ({type_name}) has {len(keys)} attention layers in a layout Z* does not know"

    def layer_of_call(self, extra_options: dict) -> Key:
        """Which layer a hook call is for, from the host's per-call options."""
        raise NotImplementedError

    def token_grid_of_call(self, extra_options: dict) -> tuple:
        """(h, w) of the calling layer's token grid."""
        raise NotImplementedError

    # -- noise parameterisation and the inversion step

    def sigma_table(self, model) -> torch.Tensor:
        """The model's σ for each training timestep (float32, CPU)."""
        raise NotImplementedError

    def schedule(self, sigma_table: torch.Tensor, steps: int) -> tuple[torch.Tensor, tuple]:
        """(sigmas, timesteps) of the family's inversion schedule for `steps` steps, descending."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
        """One deterministic sampler step from σ to σ_next (what the Z* sampling loop runs)."""
        raise NotImplementedError

    def invert(self, denoiser, x0: torch.Tensor, sigmas: torch.Tensor, callback=None) -> list:
        """The whole inversion trajectory of x0 (trajectory[i] at sigmas[i], x0's end last)."""
        raise NotImplementedError

    def clean_scale(self, sigma_min) -> float:
        """Factor between the clean latent and the sampler's latent at the schedule's last σ."""
        raise NotImplementedError

    latent_to_pixels: int = 8
    inversion: str = "ddim"  # which inversion node serves the family: 'ddim' or 'flow' 
    features: frozenset = frozenset({"record", "nulltext", "style_map"})  # what runs beyond the paper path
