"""The paper preset: the settings of the authors' public code (SD1.5, diffusers 0.15).

One frozen object so the nodes, the tests and the docs cannot drift apart. Read fields as
attributes (PAPER_PRESET.steps) or items (PAPER_PRESET["steps"]); dict(PAPER_PRESET) and
PAPER_PRESET.as_dict() give a plain dict.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["ZStarPreset", "PAPER_PRESET"]


@dataclass(frozen=True)
class ZStarPreset:
    steps: int = 30                  # DDIM steps, leading spacing + offset 1: t = 958 … 1
    style_scale: float = 1.2         # λ on the style logits of content rows
    style_self_scale: float = 1.5    # λ_style: the style row reweighted against the content
    layers: str = "10-15"            # SD1.5 layers = output blocks 6–11
    start_step: int = 5              # reweighting on steps start_step <= i < end_step
    end_step: int = 30
    anchor: float = 0.01             # content row <- 0.99·current + 0.01·inversion latent
    cfg_nulltext: float = 7.5        # CFG scale the null-text optimisation targets
    nulltext_iterations: int = 10    # Adam iterations per step (early stop inside)
    nulltext_lr: float = 1e-2        # Adam lr, decayed as lr·(1 − i/100)

    def __getitem__(self, name: str):
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def as_dict(self) -> dict:
        return asdict(self)


PAPER_PRESET = ZStarPreset()
