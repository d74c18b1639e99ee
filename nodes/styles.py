"""ZStarStyleMix: several styles in one softmax (the paper's multi-style concatenation, eq. 18)."""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET
from . import validation
from ..zstar_attention.style_types import StyleEntry
from .types import InversionType, StyleRecordType, StylesType
from .search import search_aliases

MAX_STYLES = 4


class ZStarStyleMix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = []
        for n in range(1, MAX_STYLES + 1):
            optional = n > 1
            inputs.append(io.MultiType.Input(
                f"style_{n}", types=[InversionType, StyleRecordType], optional=optional,
                tooltip=f"Style {n}: a Z* DDIM Inversion or a Z* Style Record (all of one kind)." + (" Optional." if optional else "")))
            inputs.append(io.Float.Input(
                f"strength_{n}", default=PAPER_PRESET.style_scale, min=0.0, max=10.0, step=0.05,
                tooltip=f"λ for style {n}: how strongly its keys compete in the shared softmax. Styles share the attention mass."))
        return io.Schema(
            node_id="ZStarStyleMix",
            display_name="Z* Style Mix",
            category="sampling/zstar",
            **search_aliases("mix styles", "multiple styles", "style blend", "reference images", "style transfer"),
            description="Mixes up to four styles: the content attends to all of them in ONE softmax over "
                        "[λ₁·K₁, λ₂·K₂, …, K_content], each scaled by its own strength (paper eq. 18).",
            inputs=inputs,
            outputs=[StylesType.Output(display_name="styles", tooltip="Connect to the Z* Sampler's style input.")],
        )

    @classmethod
    def validate_inputs(cls, strength_1=None, strength_2=None, strength_3=None, strength_4=None):
        return validation.report(validation.check_widgets, cls, strength_1=strength_1, strength_2=strength_2,
                                 strength_3=strength_3, strength_4=strength_4)

    @classmethod
    def execute(cls, **kwargs) -> io.NodeOutput:
        validation.check_widgets(cls, **{k: v for k, v in kwargs.items() if k.startswith("strength_")})
        entries = tuple(StyleEntry(kwargs[f"style_{n}"], float(kwargs[f"strength_{n}"]))
                        for n in range(1, MAX_STYLES + 1) if kwargs.get(f"style_{n}") is not None)
        return io.NodeOutput(entries)
