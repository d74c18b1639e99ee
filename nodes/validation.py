"""Input checks for the Z* nodes: one set of rules for ComfyUI's prompt validation and for execution.

ComfyUI validates a prompt before running it (execution.validate_inputs). A V3 node's
`validate_inputs` classmethod receives the widget values it names (a value that arrives
through a link is None there: it is not known yet) and returns True or an error string,
which ComfyUI shows on the node before anything runs. Two facts shape this module:

- ComfyUI's own min/max checks let NaN through (NaN < min and NaN > max are both False), and
  they do not run at all for a value that comes through a link (e.g. from a primitive node).
- Once a node's validate_inputs names an input, ComfyUI skips its min/max and combo checks for
  that input, so `check_widgets` repeats them from the node's own schema (one source of truth).

Every check raises ZStarError (a ValueError) naming the input and what it accepts; `report`
turns that into validate_inputs' string. The nodes call the same functions at the start of
`execute`, so linked values get exactly the same treatment. Checks that need the model or the
tensors (layers the model lacks, step counts of the inversions, schedules, masks) run at
execution, where those exist.
"""
from __future__ import annotations

import math

from comfy_api.latest import io

from ..zstar_attention import ZStarError, ddim_timesteps, parse_layers
from ..zstar_attention.layers import LayerStringError
from ..zstar_runtime.families import AUTO_LAYERS, FAMILIES, MAX_LAYERS
from ..zstar_runtime.nulltext import check_cfg as check_nulltext_cfg

DEFAULT_TRAIN_STEPS = 1000  # every model Z* supports (SD1.5, SD2.x, SDXL) has 1000 train steps


def report(check, *args, **kwargs) -> bool | str:
    """validate_inputs' answer: True, or the ZStarError's message for ComfyUI to show."""
    try:
        check(*args, **kwargs)
    except ZStarError as e:
        return str(e)
    return True


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def widget_specs(node_cls) -> dict:
    """{input id: its io.*.Input} from the node's schema (built fresh: cheap, and class clones
    that ComfyUI makes per execution must not pile up in a cache)."""
    return {spec.id: spec for spec in node_cls.define_schema().inputs}


def check_widgets(node_cls, **values):
    """Each value against its schema entry: numbers finite and within min/max, integers whole,
    combo values among the options. None (a linked input at validation time) is skipped."""
    specs = widget_specs(node_cls)
    for name, value in values.items():
        if value is None:
            continue
        spec = specs[name]
        if isinstance(spec, (io.Float.Input, io.Int.Input)):
            check_number(name, value, spec.min, spec.max, integer=isinstance(spec, io.Int.Input))
        elif isinstance(spec, io.Combo.Input):
            if value not in spec.options:
                raise ZStarError(f"{name}: '{value}' is not one of {', '.join(map(str, spec.options))}")
        elif isinstance(spec, io.String.Input) and not isinstance(value, str):
            raise ZStarError(f"{name}: expected text, got {type(value).__name__}")


def check_number(name: str, value, lo=None, hi=None, integer: bool = False):
    kind = "an integer" if integer else "a finite number"
    if lo is not None and hi is not None:
        allowed = f"{kind} from {_fmt(lo)} to {_fmt(hi)}"
    elif lo is not None:
        allowed = f"{kind} ≥ {_fmt(lo)}"
    else:
        allowed = kind
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and (isinstance(value, int) or math.isfinite(value))  # (no float() of a huge int: it overflows)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        raise ZStarError(f"{name}: must be {allowed}, got {value!r}")


def every_family_layers() -> str:
    """'(SD1.5/SD2.x: layers 0-15, SDXL: 0-69)': each family's layer numbers, for messages."""
    groups = {}
    for f in FAMILIES:
        groups.setdefault(len(f.layer_keys), []).append(f.label)
    parts = [f"{'/'.join(sorted(labels))}: {'layers ' if i == 0 else ''}0-{n - 1}"
             for i, (n, labels) in enumerate(groups.items())]
    return "(" + ", ".join(parts) + ")"


def check_layer_syntax(layers: str | None, name: str = "layers"):
    """The layer string without a model: it parses, and names no layer past the largest
    supported model. Whether the model has the layer is checked at execution."""
    if layers is None or layers.strip().lower() in AUTO_LAYERS:
        return
    every_model = every_family_layers()
    try:
        parse_layers(layers, MAX_LAYERS, name=name)
    except LayerStringError as e:
        if not e.out_of_range:  # a syntax error: name the ranges of every model, not just the largest
            raise ZStarError(e.with_allowed(every_model)) from None
        shown = layers.strip() if len(layers.strip()) <= 20 else layers.strip()[:20] + "…"
        raise ZStarError(f"{name}: '{shown}' names a layer that no supported model has {every_model}; "
                         "use e.g. 'auto' or '10-15'") from None


def check_step_order(start_step, end_step):
    if start_step is not None and end_step is not None and not start_step < end_step:
        raise ZStarError(f"start_step/end_step: need start_step < end_step (end is exclusive), "
                         f"got {start_step} and {end_step}")


def check_steps(steps, train_steps: int = DEFAULT_TRAIN_STEPS):
    """The official DDIM schedule exists for this step count (steps = train steps overshoots)."""
    if steps is not None:
        ddim_timesteps(steps, num_train_steps=train_steps)


# -- per node: the widget checks, shared by validate_inputs and execute

def patch_inputs(node_cls, style_strength=None, style_self_strength=None, layers=None, start_step=None,
                 end_step=None, style_positions=None):
    check_widgets(node_cls, style_strength=style_strength, style_self_strength=style_self_strength,
                  layers=layers, start_step=start_step, end_step=end_step, style_positions=style_positions)
    check_layer_syntax(layers)
    check_step_order(start_step, end_step)


def record_inputs(node_cls, cfg=None, layers=None, start_step=None, end_step=None):
    check_widgets(node_cls, cfg=cfg, layers=layers, start_step=start_step, end_step=end_step)
    check_layer_syntax(layers)
    check_step_order(start_step, end_step)


def nulltext_inputs(node_cls, cfg=None, iterations=None):
    check_widgets(node_cls, cfg=cfg, iterations=iterations)
    check_nulltext_cfg(cfg)


def inversion_inputs(node_cls, steps=None):
    check_widgets(node_cls, steps=steps)
    check_steps(steps)
