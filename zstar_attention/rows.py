"""Row bookkeeping for a Z* batch: which rows are content, which are style, and who reads whom.

The sampler stacks content rows first and style rows after them, and ComfyUI may run that
stack once per CFG half ("chunk") in one call or in several calls. Keeping the layout in one
small object lets the attention patch split any call correctly without assuming
[cond | uncond].
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ZStarError, check_strength


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


class SharedRunState:
    """Per-run state that every copy of the host's options must share, not duplicate.

    The sampler mutates its run object (step, window) while ComfyUI reads the copy that sits in
    the model's options. ModelPatcher.clone() deep-copies model_options, so a clone made after
    the state was put there (another pack's wrapper, a host that clones per sampling) would hold
    a frozen twin and the run would silently go plain. Copying this object, deep or shallow,
    therefore returns the object itself: every clone, however made, points at the one state.
    """

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        memo[id(self)] = self
        return self


@dataclass(eq=False)
class ZStarRun(SharedRunState):
    """Per-run state the attention patch reads. Created fresh by the sampler for every run.

    It lives in the run's transformer_options by reference and survives any copying of them
    (SharedRunState), so the sampler and the patched layers always see the same run; a new
    run creates a new object, so one run can never leak into another.
    """

    layout: RowLayout
    style_scales: tuple[float, ...]
    style_self_scale: float
    step: int = -1
    reweight: bool = False  # this step is inside the reweighting window
    stacked: bool = False  # this step's batch carries the style rows after the content rows
    query_mask: object = None  # optional (n_content, H, W) bool mask in latent space
    record: object = None  # optional fast-mode StyleRecord to read from or write to
    latent_shape: tuple | None = None  # (C, H, W) every model call of the run must have
    sink: object = None  # fast mode's recording: where the style rows' keys and values go
    probe: object = None  # the style map's probe: reads the reweighted attention's weights
    style_guidance: tuple | None = None  # Flux.1-dev: each style row's inversion guidance, in layout order
    mask_cache: dict = field(default_factory=dict)  # query masks resized per token grid (h, w)
    rope_rotation: dict = field(default_factory=dict)  # the style keys' moved positions per (rope, placement)
    layer_calls: int = 0  # reweighted calls found by the host's layer index (Z-Image), counted to catch a host without one

    def rows_in_call(self) -> int:
        """Rows per CFG chunk of this step's model calls: content and style rows, or content only."""
        return self.layout.rows if self.stacked else self.layout.n_content

    def check_call(self, x_shape, n_chunks: int):
        """A model call must hold whole chunks of this step's rows at the run's latent size.

        Area conditioning crops the latent before the model sees it (the region mask and the
        style rows would no longer line up with the content), multi-part conditioning can change
        the rows per call: both stop here with the pack's error instead of a silently wrong image.
        """
        rows_per_chunk(x_shape[0], n_chunks, self.rows_in_call())
        if self.latent_shape is not None and tuple(x_shape[1:]) != tuple(self.latent_shape):
            raise ZStarError(f"conditioning: the model was called on a latent of {tuple(x_shape[1:])} instead of the "
                             f"content's {tuple(self.latent_shape)}; area conditioning (Conditioning Set Area …) "
                             "is not supported by Z*, use plain conditionings")


def rows_per_chunk(total: int, n_chunks: int, expected: int | None = None) -> int:
    """Rows in each CFG chunk of a model call of `total` rows, checked.

    ComfyUI runs the sampling batch once per CFG chunk it puts in the call (cond_or_uncond
    names them). Area or multi-part conditioning can hand a call another number of rows than
    Z*'s layout (content rows, then style rows) per chunk; every place that splits a call by
    rows asks here, so all of them stop with the same clear error instead of a torch one.
    """
    if n_chunks < 1 or total % n_chunks or (expected is not None and total != n_chunks * expected):
        wanted = f"{n_chunks} × {expected}" if expected is not None else f"a multiple of {n_chunks}"
        raise ZStarError(f"Z* batch: got {total} rows for {n_chunks} CFG chunk(s), expected {wanted}; "
                         "the batch was split in a way Z* does not support (area or multi-part conditioning?). "
                         "Give the Z* nodes plain conditionings (one CLIP Text Encode each)")
    return total // n_chunks


def check_stacked_call(layout: RowLayout, total: int, n_chunks, style_self_scale) -> float:
    """What every Z* attention over stacked rows checks first: whole CFG chunks of the layout's
    rows in the call, and λ_style only where each content row has its own style rows.
    Returns λ_style as a float."""
    if isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < 1:
        raise ZStarError(f"Z* batch: n_chunks must be a positive integer (CFG chunks in the call), got {n_chunks!r}")
    style_self_scale = check_strength(style_self_scale, "style_self_scale")
    rows_per_chunk(total, n_chunks, layout.rows)
    if style_self_scale > 0 and layout.groups != layout.n_content:
        raise ZStarError("Z* batch: λ_style > 0 needs one set of style rows per content row (groups == n_content)")
    return style_self_scale


def styles_of_contents(t4, layout: RowLayout, s: int):
    """(n_chunks, rows, …) → (n_chunks·n_content, …): for each content row, style s of its group."""
    n_chunks, nc = t4.shape[0], layout.n_content
    styles = t4[:, nc:].reshape(n_chunks, layout.groups, layout.n_styles, *t4.shape[2:])[:, :, s]
    if layout.groups == 1:
        styles = styles.expand(n_chunks, nc, *styles.shape[2:])
    return styles.reshape(n_chunks * nc, *styles.shape[2:])


def contents_of_styles(t4, layout: RowLayout):
    """(n_chunks, rows, …) → (n_chunks·n_style_rows, …): for each style row, its group's content
    row (λ_style; groups == n_content)."""
    n_chunks, nc = t4.shape[0], layout.n_content
    own = t4[:, :nc].unsqueeze(2).expand(n_chunks, nc, layout.n_styles, *t4.shape[2:])
    return own.reshape(n_chunks * nc * layout.n_styles, *t4.shape[2:])
