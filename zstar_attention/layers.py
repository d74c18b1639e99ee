"""Layer strings and step windows: which of a model's attention layers Z* reweights, and when.

A model family (zstar_runtime/families) lists its attention layers in execution order; a
layer string ("10-15", "10,12,14", "all") picks layers by their position in that list, and
the step window picks the sampling steps (start ≤ i < end).
"""
from __future__ import annotations

import re
from typing import Sequence

from .errors import ZStarError, as_int

Key = tuple[str, int, int]

__all__ = ["LayerStringError", "parse_layers", "select_attn1_keys", "step_window"]

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_NUMBER = re.compile(r"^\d+$")


class LayerStringError(ZStarError):
    """A bad layer string. `out_of_range` tells a layer past the model's last from a string that
    does not parse; `with_allowed(text)` is the message with another account of the allowed
    layers than this model's range (the nodes name every model's ranges before one is known)."""

    def __init__(self, before: str, allowed: str, after: str = "", out_of_range: bool = False):
        self.before, self.after, self.out_of_range = before, after, out_of_range
        super().__init__(before + allowed + after)

    def with_allowed(self, allowed: str) -> str:
        return self.before + allowed + self.after


def parse_layers(spec: str, num_layers: int, name: str = "layers") -> tuple[int, ...]:
    """Parse "10-15", "10,12,14", "0-3, 10-15" or "all" into sorted unique layer numbers.

    Layers are 0-based and ranges inclusive; whitespace is ignored. `name` is the input's
    name used in error messages, which are LayerStringErrors.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ZStarError(f"num_layers: must be a positive integer, got {num_layers!r}")
    allowed = f"(layers 0-{num_layers - 1})"
    hint = "use e.g. '10-15' or '10,12,14' "
    if not isinstance(spec, str):
        raise LayerStringError(f"{name}: expected a string, got {type(spec).__name__}; {hint}", allowed)
    text = spec.strip()
    if not text:
        raise LayerStringError(f"{name}: is empty; {hint}", allowed, " or 'all'")
    if text.lower() == "all":
        return tuple(range(num_layers))

    chosen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise LayerStringError(f"{name}: '{spec}' has an empty item between commas; {hint}", allowed)
        m = _RANGE.match(part)
        if m:
            lo, hi = _layer_number(m.group(1), name, allowed), _layer_number(m.group(2), name, allowed)
            if lo > hi:
                raise LayerStringError(f"{name}: range '{part}' is reversed; write '{hi}-{lo}' ", allowed)
        elif _NUMBER.match(part):
            lo = hi = _layer_number(part, name, allowed)
        else:
            raise LayerStringError(f"{name}: '{part}' is not a layer number; {hint}", allowed)
        for n in (lo, hi):
            if n >= num_layers:
                raise LayerStringError(f"{name}: layer {n} is out of range ", allowed, out_of_range=True)
        chosen.update(range(lo, hi + 1))
    return tuple(sorted(chosen))


def _layer_number(digits: str, name: str, allowed: str) -> int:
    """int() of a digit run, refusing runs too long for any model (and for int(): > 4300 digits raise)."""
    if len(digits) > 6:
        raise LayerStringError(f"{name}: layer {digits[:6]}… is out of range ", allowed, out_of_range=True)
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
