"""Row bookkeeping for a Z* batch: which rows are content, which are style, and who reads whom.

The sampler stacks content rows first and style rows after them, and ComfyUI may run that
stack once per CFG half ("chunk") in one call or in several calls. Keeping the layout in one
small object lets the attention patch split any call correctly without assuming
[cond | uncond].
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ZStarError


@dataclass(frozen=True)
class RowLayout:
    """Content rows, then `groups` blocks of one row per style.

    groups == 1: every content row reads the same style rows (style rows do not depend on
    the content, i.e. λ_style is off). groups == n_content: content row i has its own style
    rows (the official code's style row is reweighted against its content, λ_style > 0).
    """

    n_content: int
    n_styles: int
    groups: int = 1

    def __post_init__(self):
        if self.n_content < 1 or self.n_styles < 1:
            raise ZStarError(f"RowLayout: need at least one content and one style row, got {self.n_content} and {self.n_styles}")
        if self.groups not in (1, self.n_content):
            raise ZStarError(f"RowLayout: groups must be 1 or n_content ({self.n_content}), got {self.groups}")

    @property
    def n_style_rows(self) -> int:
        return self.n_styles * self.groups

    @property
    def rows(self) -> int:
        return self.n_content + self.n_style_rows

    def group_of(self, content_row: int) -> int:
        return content_row if self.groups > 1 else 0

    def style_row(self, group: int, style: int) -> int:
        """Index of a style row inside one chunk."""
        return self.n_content + group * self.n_styles + style


@dataclass
class ZStarRun:
    """Per-run state the attention patch reads. Created fresh by the sampler for every run.

    It lives in the run's transformer_options by reference (ComfyUI copies dicts, not the
    objects in them), so one run can never leak into another.
    """

    layout: RowLayout
    style_scales: tuple[float, ...]
    style_self_scale: float
    step: int = -1
    reweight: bool = False  # this step is inside the reweighting window
    stacked: bool = False  # this step's batch carries the style rows after the content rows
    query_mask: object = None  # optional (n_content, H, W) bool mask in latent space
    record: object = None  # optional fast-mode StyleRecord to read from or write to
    extra: dict = field(default_factory=dict)
