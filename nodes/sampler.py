"""ZStarSampler: denoise the content from its inversion while the style branch replays its own."""
from __future__ import annotations

import dataclasses
import logging

import torch
from comfy_api.latest import io

import comfy.model_management
import comfy.patcher_extension

from ..zstar_attention import (PAPER_PRESET, STYLE_MODES, RowLayout, ZStarError, ZStarRun, step_window,
                               vp_scale, zstar_denoise)
from . import host, validation
from .model_info import describe
from .nulltext import NullTextState, install_nulltext
from .patch import CONFIG_KEY, RUN_KEY, check_patch_installed
from .types import (Inversion, InversionType, StyleEntry, StyleRecord, StyleRecordType, StylesType,
                    check_same_schedule)


def style_rows_mask(run: ZStarRun, n_chunks: int) -> torch.Tensor:
    """(n_chunks * rows,) bool: which rows of a stacked model call are style rows, chunk by chunk."""
    rows = run.layout.rows
    is_style = torch.zeros(rows, dtype=torch.bool)
    is_style[run.layout.n_content:] = True
    return is_style.repeat(n_chunks)


def apply_model_wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    """Per-call checks and adjustments Z* needs on top of ComfyUI's conditioning.

    Every call must hold whole chunks of the run's rows at the content's latent size (see
    ZStarRun.check_call). ControlNet guides the content's structure; its residuals are zeroed
    on the style rows so the style's keys and values stay those of the style image.
    """
    run = transformer_options.get(RUN_KEY)
    if run is not None:
        n_chunks = len(transformer_options.get("cond_or_uncond") or [0])
        run.check_call(tuple(x.shape), n_chunks)
        if run.stacked and control:
            keep = (~style_rows_mask(run, n_chunks)).to(x.device)
            control = {name: [None if r is None else r * keep.view(-1, *([1] * (r.ndim - 1))).to(r.dtype)
                              for r in residuals]
                       for name, residuals in control.items()}
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def zstar_config(model):
    config = model.model_options.get("transformer_options", {}).get(CONFIG_KEY)
    if config is None:
        raise ZStarError("model: this MODEL carries no Z* patch; connect it through 'Z* Attention Patch' first")
    check_patch_installed(model, config)
    return config


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
    validation.check_inversion(content, "content")
    validation.check_inversion_model(info, content, "content")
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
            validation.check_inversion(src, name)
            check_same_schedule(name, src, content, "content")
            if src.batch != 1:
                raise ZStarError(f"{name}: the inversion holds {src.batch} images; Z* takes one style image per inversion")
            if src.latent_shape != content.latent_shape:
                raise ZStarError(f"{name}: latent {src.latent_shape} differs from the content's {content.latent_shape}; "
                                 "encode the style at the content's size, or use a Z* Style Record (any size)")
    return fast


def prepare_mask(mask, content: Inversion):
    """MASK (B, H, W) in image pixels → (1 or n_content, H, W) float, checked."""
    if mask is None:
        return None
    mask = validation.check_mask(mask, content.batch, content.latent_shape)
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
    if probe is not None:
        run.extra["probe"] = probe

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
    region = prepare_mask(mask, content)
    holder = {}

    def denoise(denoiser, like, sigmas, **_):
        if nulltext is not None:
            nulltext.embeddings = tuple(e.to(like.device) for e in content.uncond_embeddings)
        if region is not None:
            run.query_mask = region.to(like.device)
        if fast:  # one transfer per run, not one per step and layer
            run.record = tuple(replace_kv(r, like.device) for r in run.record)
        content_traj = [t.to(like) for t in content.trajectory]
        style_trajs = [] if fast else [[t.to(like) for t in e.source.trajectory] for e in entries]
        cb = host.step_callback(model, content.steps, preview=progress)
        x, style_out = zstar_denoise(denoiser, content_traj, style_trajs, sigmas, window, run,
                                     anchor=anchor, style_mode=style_mode, with_style_rows=not fast, callback=cb)
        end_scale = vp_scale(sigmas[-1])
        holder["style"] = None if style_out is None else style_out / end_scale
        return x / end_scale

    shape = (nc if fast else layout.rows, *content.latent_shape)
    out = host.run_sampler_function(patched, denoise, content.sigmas, positive, negative, cfg, shape, {})
    style_out = holder.get("style")
    style_latent = (model.model.process_latent_out(style_out.float()).to(out.device)
                    if style_out is not None else out.new_zeros((0, *out.shape[1:])))
    return out, style_latent


def replace_kv(record: StyleRecord, device) -> StyleRecord:
    return dataclasses.replace(record, kv={k: (a.to(device), b.to(device)) for k, (a, b) in record.kv.items()})


class RecordsOnDevice:
    """PREPARE_SAMPLING wrapper for fast mode: the style records are memory the host must see.

    A record is large (about 1.1 GiB per 512 px style in float32). Before ComfyUI loads the
    model for sampling, this asks the host to free room for the records on the load device
    (model_management.free_memory, which unloads other models if needed) and moves them there,
    so the model's own load then plans around memory that is really taken. On a CPU load
    device the records already live where they are read, and nothing changes.
    """

    def __init__(self, run: ZStarRun):
        self.run = run

    def __call__(self, executor, model, *args, **kwargs):
        device = model.load_device
        records = self.run.record
        moving = sum(r.nbytes for r in records if any(t.device != device for kv in r.kv.values() for t in kv))
        if moving and not comfy.model_management.is_device_cpu(device):
            comfy.model_management.free_memory(moving, device)
        self.run.record = tuple(replace_kv(r, device) for r in records)
        return executor(model, *args, **kwargs)


class ZStarSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarSampler",
            display_name="Z* Sampler",
            category="sampling/zstar",
            description="Z* style transfer: denoises the content from its inversion with the patched "
                        "model while the style branch replays the style's inversion, so the content "
                        "attends to the style's keys and values.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from Z* Attention Patch."),
                InversionType.Input("content", tooltip="Z* DDIM Inversion of the content image(s). A batch is stylized image by image."),
                io.MultiType.Input("style", types=[InversionType, StyleRecordType, StylesType],
                                   tooltip="The style: a Z* DDIM Inversion (paper path; same size and steps as the content), a Z* Style Record (fast mode, any size), or a Z* Style Mix of several with a strength each."),
                io.Conditioning.Input("positive", tooltip="Prompt for both rows. The paper uses the empty prompt."),
                io.Conditioning.Input("negative", tooltip="Unconditional prompt (only used when cfg > 1)."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance. 1 = the paper's result at half the cost when positive and negative are both the empty prompt; use 7.5 with a null-text inversion, as the authors do."),
                io.Float.Input("content_anchor", default=PAPER_PRESET.anchor, min=0.0, max=1.0, step=0.005,
                               tooltip="Before every step the content latent moves this far toward its inversion (official 0.01). Higher keeps more of the photo, 0 = free."),
                io.Combo.Input("style_mode", options=list(STYLE_MODES), default="replay",
                               tooltip="replay (official): the style branch is replaced by its inversion latent every step. alongside: the style branch is denoised together with the content."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional region: the style acts where the mask is white (> 0.5); elsewhere the content keeps exactly its own self-attention. Resized to every layer."),
            ],
            outputs=[
                io.Latent.Output(display_name="stylized", tooltip="The stylized latent; decode it with VAE Decode."),
                io.Latent.Output(display_name="style_branch", tooltip="The style branch's last output, for inspection."),
            ],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, content_anchor=None, style_mode=None):
        return validation.report(validation.check_widgets, cls, cfg=cfg, content_anchor=content_anchor, style_mode=style_mode)

    @classmethod
    def execute(cls, model, content, style, positive, negative, cfg, content_anchor, style_mode, mask=None) -> io.NodeOutput:
        validation.check_widgets(cls, cfg=cfg, content_anchor=content_anchor, style_mode=style_mode)
        samples, style_samples = zstar_sample(model, content, style, positive, negative, cfg, content_anchor, style_mode,
                                              mask=mask)
        return io.NodeOutput({"samples": samples}, {"samples": style_samples})
