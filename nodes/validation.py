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

import torch
from comfy_api.latest import io

from ..zstar_attention import ARCHITECTURES, ZStarError, ddim_timesteps, parse_layers, sigmas_from_table

AUTO_LAYERS = ("", "auto", "paper")
MAX_LAYERS = max(len(arch.keys) for arch in ARCHITECTURES.values())
MIN_LATENT = 8  # 64 px: below it the U-Net's coarsest levels shrink to single pixels (GroupNorm fails)
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


def check_layer_syntax(layers: str | None, name: str = "layers"):
    """The layer string without a model: it parses, and names no layer past the largest
    supported model. Whether the model has the layer is checked at execution."""
    if layers is None or layers.strip().lower() in AUTO_LAYERS:
        return
    every_model = f"(SD1.5/SD2.x: layers 0-15, SDXL: 0-{MAX_LAYERS - 1})"
    try:
        parse_layers(layers, MAX_LAYERS, name=name)
    except ZStarError as e:
        if "out of range" not in str(e):  # a syntax error: name the ranges of every model, not just the largest
            raise ZStarError(str(e).replace(f"(layers 0-{MAX_LAYERS - 1})", every_model)) from None
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
                 end_step=None):
    check_widgets(node_cls, style_strength=style_strength, style_self_strength=style_self_strength,
                  layers=layers, start_step=start_step, end_step=end_step)
    check_layer_syntax(layers)
    check_step_order(start_step, end_step)


def record_inputs(node_cls, cfg=None, layers=None, start_step=None, end_step=None):
    check_widgets(node_cls, cfg=cfg, layers=layers, start_step=start_step, end_step=end_step)
    check_layer_syntax(layers)
    check_step_order(start_step, end_step)


def inversion_inputs(node_cls, steps=None):
    check_widgets(node_cls, steps=steps)
    check_steps(steps)


# -- execution: checks that need the model or the tensors

def check_latent(model, samples, name: str = "latent"):
    """A LATENT's samples fit the model: (B, C, H, W) with the model's channels, finite."""
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ZStarError(f"{name}: expected image latents of shape (batch, channels, height, width), got {shape}")
    channels = model.model.latent_format.latent_channels
    if samples.shape[1] != channels and samples.abs().sum() != 0:  # an empty latent is fixed by ComfyUI
        raise ZStarError(f"{name}: has {samples.shape[1]} channels but this MODEL's latents have {channels}; "
                         "encode the image with this checkpoint's VAE")
    if samples.shape[0] < 1:
        raise ZStarError(f"{name}: holds no image, shape {tuple(samples.shape)}")
    if min(samples.shape[2:]) < MIN_LATENT:
        raise ZStarError(f"{name}: {samples.shape[2]}×{samples.shape[3]} is too small; Z* needs images of at least "
                         f"{8 * MIN_LATENT}×{8 * MIN_LATENT} pixels (latents of {MIN_LATENT}×{MIN_LATENT})")
    if not torch.isfinite(samples).all():
        raise ZStarError(f"{name}: contains NaN or infinite values; check the VAE Encode before it")


def check_inversion(inv, name: str):
    """An Inversion is internally consistent (matters for inversions loaded from files or edited)."""
    steps = len(inv.sigmas) - 1
    shape = tuple(inv.trajectory[0].shape)
    if len(inv.trajectory) != steps + 1 or any(tuple(t.shape) != shape for t in inv.trajectory):
        raise ZStarError(f"{name}: the inversion is inconsistent: {len(inv.trajectory)} latents of shapes "
                         f"{sorted({tuple(t.shape) for t in inv.trajectory})} for {steps} steps; "
                         "invert the image again")
    emb = inv.uncond_embeddings
    if emb is not None:
        if len(emb) != steps:
            raise ZStarError(f"{name}: has null-text embeddings for {len(emb)} steps but the inversion has {steps}; "
                             "run Z* Null-Text Optimization on this inversion")
        if any(e.shape[0] != shape[0] for e in emb):
            raise ZStarError(f"{name}: has null-text embeddings for {emb[0].shape[0]} image(s) but the inversion "
                             f"holds {shape[0]}; run Z* Null-Text Optimization on this inversion")


def check_inversion_model(info, inv, name: str):
    """The inversion was made with this kind of model, on the schedule this model samples with
    (a Model Sampling node between inversion and sampler changes the schedule)."""
    if inv.arch != info.arch or inv.model_type != info.type_name:
        raise ZStarError(f"{name}: inverted with a {inv.model_type} model but this MODEL is {info.type_name}; "
                         "invert with the same model")
    expected = sigmas_from_table(info.sigma_table, inv.timesteps).float()
    if not torch.equal(expected, inv.sigmas.float().cpu()):
        raise ZStarError(f"{name}: inverted on a different noise schedule than this MODEL's "
                         f"(σ_max {inv.sigmas[0].item():.4g} vs {expected[0].item():.4g}); invert with the "
                         "same model and model-sampling settings the sampler uses")


def check_mask(mask, batch: int, latent_shape: tuple, name: str = "mask"):
    """MASK (B, H, W) or (H, W): 1 or `batch` masks, the content's aspect ratio, not empty."""
    if not isinstance(mask, torch.Tensor):
        raise ZStarError(f"{name}: expected a MASK tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] not in (1, batch):
        raise ZStarError(f"{name}: expected 1 or {batch} masks of shape (H, W), got {tuple(mask.shape)}")
    h, w = latent_shape[-2:]
    mh, mw = mask.shape[1:]
    if mh < 1 or mw < 1 or abs(mh * w - mw * h) > max(mh, mw):  # off by more than one latent cell
        raise ZStarError(f"{name}: {mh}×{mw} does not have the content's aspect ratio (latent {h}×{w}, "
                         f"image {8 * h}×{8 * w}); use a mask of the content image's size")
    return mask
