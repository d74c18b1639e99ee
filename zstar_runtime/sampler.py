"""The Z* run: denoise the content from its inversion while the style branch replays its own."""
from __future__ import annotations

import logging

import torch

import comfy.patcher_extension

from ..zstar_attention import PAPER_PRESET, RowLayout, ZStarError, ZStarRun, step_window, zstar_denoise
from ..zstar_attention.style_types import Inversion, StyleEntry, StyleRecord, check_same_schedule
from . import checks, host
from .families import describe
from .hooks import RUN_KEY
from .patch import zstar_config
from .wrappers import NullTextState, RecordsOnDevice, apply_model_wrapper, install_nulltext


def style_entries(style) -> tuple:
    """Inversion | StyleRecord | tuple[StyleEntry] → tuple[StyleEntry], all of one kind."""
    entries = tuple(style) if isinstance(style, (tuple, list)) else (StyleEntry(style, None),)
    if not entries:
        raise ZStarError("style: the style list is empty")
    kinds = {type(e.source) for e in entries}
    if len(kinds) != 1 or not kinds <= {Inversion, StyleRecord}:
        raise ZStarError("style: mix either style inversions or style records (fast mode), not both")
    return entries


def check_inputs(info, config, content: Inversion, entries) -> bool:
    """Validate the run; returns True for fast mode (style records)."""
    checks.check_inversion(content, "content")
    checks.check_inversion_model(info, content, "content")
    if config.end_step > content.steps:
        raise ZStarError(f"end_step: {config.end_step} is past the inversions' {content.steps} steps; "
                         f"set end_step ≤ {content.steps}")
    fast = isinstance(entries[0].source, StyleRecord)
    for n, entry in enumerate(entries):
        name = "style" if len(entries) == 1 else f"style {n + 1}"
        src = entry.source
        if fast:
            if src.arch != content.arch or src.model_type != content.model_type:
                raise ZStarError(f"{name}: recorded with a {src.model_type} model but the content was inverted with {content.model_type}")
            if src.steps != content.steps or not torch.equal(src.sigmas, content.sigmas):
                raise ZStarError(f"{name}: recorded for {src.steps} steps but the content was inverted with {content.steps}")
            if src.keys != config.keys or (src.start_step, src.end_step) != (config.start_step, config.end_step):
                raise ZStarError(f"{name}: recorded for layers {list(src.layers)}, steps {src.start_step}-{src.end_step}, "
                                 f"but the patch uses layers {list(config.layers)}, steps {config.start_step}-{config.end_step}; "
                                 "give the Style Record node the patch's layers and steps")
        else:
            checks.check_inversion(src, name)
            check_same_schedule(name, src, content, "content")
            if src.batch != 1:
                raise ZStarError(f"{name}: the inversion holds {src.batch} images; Z* takes one style image per inversion")
            if src.latent_shape != content.latent_shape:
                raise ZStarError(f"{name}: latent {src.latent_shape} differs from the content's {content.latent_shape}; "
                                 "encode the style at the content's size, or use a Z* Style Record (any size)")
    return fast


def prepare_mask(mask, content: Inversion, latent_to_pixels: int = 8):
    """MASK (B, H, W) in image pixels → (1 or n_content, H, W) float, checked."""
    if mask is None:
        return None
    mask = checks.check_mask(mask, content.batch, content.latent_shape, latent_to_pixels=latent_to_pixels)
    if not torch.isfinite(mask).all() or not (mask > 0.5).any():
        raise ZStarError("mask: the mask is empty (no pixel above 0.5), so no pixel would take the style")
    return mask.float()


def zstar_sample(model, content: Inversion, style, positive, negative, cfg=1.0,
                 anchor=PAPER_PRESET.anchor, style_mode="replay", progress=True, mask=None, probe=None):
    """The whole Z* run; returns (stylized LATENT samples, style-branch LATENT samples).

    style: an Inversion (paper path: style rows replayed beside the content), a StyleRecord
    (fast mode: content rows only), or a tuple of StyleEntry mixing several of one kind.
    """
    info = describe(model)
    config = zstar_config(model)
    entries = style_entries(style)
    fast = check_inputs(info, config, content, entries)
    checks.check_guidance(positive, "positive")
    checks.check_guidance(negative, "negative")
    if fast:
        info.require("record", "fast mode (a Z* Style Record as the style)")
    if content.nulltext_cfg is not None and cfg != content.nulltext_cfg:
        logging.warning("Z*: the content's null-text embeddings were optimised for cfg %g, this sampler uses cfg %g; "
                        "the reconstruction is only exact at the same cfg", content.nulltext_cfg, cfg)
    if fast and style_mode != "replay":
        raise ZStarError("style_mode: a style record replays the style by construction; use 'replay'")
    if fast and config.style_self_scale > 0:
        logging.info("Z*: fast mode ignores style_self_strength (λ_style %.2f): the recorded style rows used "
                     "plain self-attention", config.style_self_scale)
    window = step_window(content.steps, config.start_step, config.end_step)
    nc = content.batch
    per_content = not fast and (config.style_self_scale > 0 or (content.uncond_embeddings is not None and nc > 1))
    layout = RowLayout(nc, len(entries), nc if per_content else 1)
    scales = tuple(config.style_scale if e.strength is None else float(e.strength) for e in entries)
    run = ZStarRun(layout, scales, 0.0 if fast else config.style_self_scale)
    run.record = tuple(e.source for e in entries) if fast else None
    run.latent_shape = tuple(content.latent_shape)
    run.probe = probe
    if not fast and any(e.source.guidance is not None for e in entries):
        # Flux.1-dev: the style rows replay their inversion, so they run with ITS guidance; the content rows
        # keep the sampler's conditioning (FluxGuidance). One value per style row of a chunk, in layout order.
        run.style_guidance = tuple(e.source.guidance for _ in range(layout.groups) for e in entries)

    patched = model.clone()
    patched.model_options["transformer_options"][RUN_KEY] = run
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "zstar", apply_model_wrapper)
    if fast:
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, "zstar",
                                     RecordsOnDevice(run))
    nulltext = None
    if content.uncond_embeddings is not None:
        nulltext = NullTextState()
        install_nulltext(patched, nulltext)
    region = prepare_mask(mask, content, info.family.latent_to_pixels)
    holder = {}

    def denoise(denoiser, like, sigmas, **_):
        if nulltext is not None:
            nulltext.embeddings = tuple(e.to(like.device) for e in content.uncond_embeddings)
        if region is not None:
            run.query_mask = region.to(like.device)
        content_traj = [t.to(like) for t in content.trajectory]
        style_trajs = [] if fast else [[t.to(like) for t in e.source.trajectory] for e in entries]
        cb = host.step_callback(model, content.steps, preview=progress)
        x, style_out = zstar_denoise(denoiser, content_traj, style_trajs, sigmas, window, run,
                                     anchor=anchor, style_mode=style_mode, with_style_rows=not fast, callback=cb,
                                     step=info.family.step)
        end_scale = info.family.clean_scale(sigmas[-1])
        holder["style"] = None if style_out is None else style_out / end_scale
        return x / end_scale

    shape = (nc if fast else layout.rows, *content.latent_shape)
    out = host.run_sampler_function(patched, denoise, content.sigmas, positive, negative, cfg, shape, {})
    style_out = holder.get("style")
    style_latent = (model.model.process_latent_out(style_out.float()).to(out.device)
                    if style_out is not None else out.new_zeros((0, *out.shape[1:])))
    return out, style_latent


