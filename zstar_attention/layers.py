"""Which self-attention layers (attn1) Z* patches, and on which steps.

ComfyUI addresses an attn1 replacement by (block_name, block_id, transformer_index): the
U-Net block ("input"/"middle"/"output", its index in input_blocks/output_blocks, 0 for the
middle) and the BasicTransformerBlock's depth index inside that block's SpatialTransformer.
The paper counts "layers" as these keys in execution order.

SD1.5 (and SD2.x, same layout), 16 layers, transformer_index always 0:

    layers  0– 1  input 1, 2     (64² tokens at 512 px)
    layers  2– 3  input 4, 5     (32²)
    layers  4– 5  input 7, 8     (16²)
    layer   6     middle 0       (8²)
    layers  7– 9  output 3, 4, 5 (16²)
    layers 10–12  output 6, 7, 8 (32²)
    layers 13–15  output 9–11    (64²)

The paper's layers 10–15 are output blocks 6–11: every decoder self-attention at the two
finest attention resolutions (1/2 and 1/1 of the latent).

SDXL, 70 layers (one per BasicTransformerBlock, execution order; grid at 1024 px):

    layers  0– 1  input 4, index 0–1    (64²)      layers 34–43  output 0, index 0–9  (32²)
    layers  2– 3  input 5, index 0–1    (64²)      layers 44–53  output 1, index 0–9  (32²)
    layers  4–13  input 7, index 0–9    (32²)      layers 54–63  output 2, index 0–9  (32²)
    layers 14–23  input 8, index 0–9    (32²)      layers 64–65  output 3, index 0–1  (64²)
    layers 24–33  middle 0, index 0–9   (32²)      layers 66–67  output 4, index 0–1  (64²)
                                                   layers 68–69  output 5, index 0–1  (64²)

SDXL default (SDXL_PAPER_LAYERS = "34-69"; the paper only used SD1.5, so this is a choice,
not a reproduction): apply the SD1.5 rule "all decoder self-attention at the two finest
resolutions that have attention". SDXL has no attention at full latent resolution; its two
finest attention levels are 64² (output 3–5, 6 keys) and 32² (output 0–2, 30 keys), i.e.
output blocks 0–5, 36 keys. Matching by token grid instead (64² tokens, like SD1.5's output
9–11 at 512 px) would give the lighter "64-69"; users can pick any set with the layers string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .errors import ZStarError, as_int

Key = tuple[str, int, int]

__all__ = [
    "SD15_ATTN1_KEYS", "SD2_ATTN1_KEYS", "SDXL_ATTN1_KEYS", "SD15_PAPER_LAYERS", "SDXL_PAPER_LAYERS",
    "Architecture", "ARCHITECTURES", "parse_layers", "select_attn1_keys", "step_window",
]

SD15_ATTN1_KEYS: tuple[Key, ...] = (
    tuple(("input", i, 0) for i in (1, 2, 4, 5, 7, 8))
    + (("middle", 0, 0),)
    + tuple(("output", i, 0) for i in range(3, 12))
)
SD2_ATTN1_KEYS = SD15_ATTN1_KEYS

SDXL_ATTN1_KEYS: tuple[Key, ...] = tuple(
    (block, block_id, index)
    for block, block_id, depth in (
        ("input", 4, 2), ("input", 5, 2), ("input", 7, 10), ("input", 8, 10),
        ("middle", 0, 10),
        ("output", 0, 10), ("output", 1, 10), ("output", 2, 10),
        ("output", 3, 2), ("output", 4, 2), ("output", 5, 2),
    )
    for index in range(depth)
)

SD15_PAPER_LAYERS = "10-15"
SDXL_PAPER_LAYERS = "34-69"


@dataclass(frozen=True)
class Architecture:
    """attn1 keys of one model family in execution order, and its default layer string.

    Read as attributes (arch.keys) or items (arch["keys"]).
    """

    name: str
    keys: tuple[Key, ...]
    paper_layers: str

    def __getitem__(self, item: str):
        return getattr(self, item)


ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture("SD1.5", SD15_ATTN1_KEYS, SD15_PAPER_LAYERS),
    "sd2": Architecture("SD2.x", SD2_ATTN1_KEYS, SD15_PAPER_LAYERS),
    "sdxl": Architecture("SDXL", SDXL_ATTN1_KEYS, SDXL_PAPER_LAYERS),
}

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_NUMBER = re.compile(r"^\d+$")


def parse_layers(spec: str, num_layers: int, name: str = "layers") -> tuple[int, ...]:
    """Parse "10-15", "10,12,14", "0-3, 10-15" or "all" into sorted unique layer numbers.

    Layers are 0-based and ranges inclusive; whitespace is ignored. `name` is the input's
    name used in error messages.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ZStarError(f"num_layers: must be a positive integer, got {num_layers!r}")
    allowed = f"(layers 0-{num_layers - 1})"
    hint = f"use e.g. '10-15' or '10,12,14' {allowed}"
    if not isinstance(spec, str):
        raise ZStarError(f"{name}: expected a string, got {type(spec).__name__}; {hint}")
    text = spec.strip()
    if not text:
        raise ZStarError(f"{name}: is empty; {hint} or 'all'")
    if text.lower() == "all":
        return tuple(range(num_layers))

    chosen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ZStarError(f"{name}: '{spec}' has an empty item between commas; {hint}")
        m = _RANGE.match(part)
        if m:
            lo, hi = _layer_number(m.group(1), name, allowed), _layer_number(m.group(2), name, allowed)
            if lo > hi:
                raise ZStarError(f"{name}: range '{part}' is reversed; write '{hi}-{lo}' {allowed}")
        elif _NUMBER.match(part):
            lo = hi = _layer_number(part, name, allowed)
        else:
            raise ZStarError(f"{name}: '{part}' is not a layer number; {hint}")
        for n in (lo, hi):
            if n >= num_layers:
                raise ZStarError(f"{name}: layer {n} is out of range {allowed}")
        chosen.update(range(lo, hi + 1))
    return tuple(sorted(chosen))


def _layer_number(digits: str, name: str, allowed: str) -> int:
    """int() of a digit run, refusing runs too long for any model (and for int(): > 4300 digits raise)."""
    if len(digits) > 6:
        raise ZStarError(f"{name}: layer {digits[:6]}… is out of range {allowed}")
    return int(digits)


def select_attn1_keys(spec: str, keys: Sequence[Key], name: str = "layers") -> tuple[Key, ...]:
    """The attn1 replace keys for the layers in `spec` (numbered by position in `keys`)."""
    return tuple(keys[i] for i in parse_layers(spec, len(keys), name=name))


def step_window(steps: int, start: int, end: int) -> tuple[bool, ...]:
    """Per-step on/off flags: True for start <= i < end (0-based, end exclusive).

    The paper preset, start 5 and end 30 of 30 steps, reweights steps 5..29.
    """
    steps, start, end = as_int(steps, "steps"), as_int(start, "start_step"), as_int(end, "end_step")
    if steps < 1:
        raise ZStarError(f"steps: must be at least 1, got {steps}")
    if not 0 <= start < steps:
        raise ZStarError(f"start_step: {start} is out of range; use 0 to {steps - 1} ({steps} steps)")
    if not 1 <= end <= steps:
        raise ZStarError(f"end_step: {end} is out of range; use 1 to {steps} ({steps} steps, end is exclusive)")
    if start >= end:
        raise ZStarError(f"start_step: {start} must be less than end_step {end} ({steps} steps, end is exclusive)")
    return tuple(start <= i < end for i in range(steps))
