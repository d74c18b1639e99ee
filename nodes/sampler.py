"""ZStarSampler: denoise the content from its inversion while the style branch replays its own."""
from __future__ import annotations

import torch
from comfy_api.latest import io

import comfy.patcher_extension

from ..zstar_attention import (PAPER_PRESET, STYLE_MODES, RowLayout, ZStarError, ZStarRun, step_window,
                               vp_scale, zstar_denoise)
from . import host
from .model_info import describe
from .nulltext import NullTextState, install_nulltext
from .patch import CONFIG_KEY, RUN_KEY
from .types import Inversion, InversionType, check_same_schedule


def style_rows_mask(run: ZStarRun, batch: int) -> torch.Tensor:
    """(batch,) bool: which rows of a stacked model call are style rows, chunk by chunk."""
    rows = run.layout.rows
    is_style = torch.zeros(rows, dtype=torch.bool)
    is_style[run.layout.n_content:] = True
    return is_style.repeat(batch // rows)


def apply_model_wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    """Per-call adjustments Z* needs on top of ComfyUI's conditioning.

    ControlNet guides the content's structure; its residuals are zeroed on the style rows so
    the style's keys and values stay those of the style image.
    """
    run = transformer_options.get(RUN_KEY)
    if run is not None and run.stacked and control:
        keep = (~style_rows_mask(run, x.shape[0])).to(x.device)
        control = {name: [None if r is None else r * keep.view(-1, *([1] * (r.ndim - 1))).to(r.dtype) for r in residuals]
                   for name, residuals in control.items()}
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def zstar_config(model):
    config = model.model_options.get("transformer_options", {}).get(CONFIG_KEY)
    if config is None:
        raise ZStarError("model: this MODEL carries no Z* patch; connect it through 'Z* Attention Patch' first")
    return config


def check_inputs(info, config, content: Inversion, style: Inversion):
    check_same_schedule("style", style, content, "content")
    if content.arch != info.arch:
        raise ZStarError(f"content: inverted with a {content.arch} model but the sampler's model is {info.arch}")
    if config.end_step > content.steps:
        raise ZStarError(f"end_step: {config.end_step} is past the inversions' {content.steps} steps; "
                         f"set end_step ≤ {content.steps}")
    if style.batch != 1:
        raise ZStarError(f"style: the inversion holds {style.batch} images; Z* takes one style image per inversion")
    if style.latent_shape != content.latent_shape:
        raise ZStarError(f"style: latent {style.latent_shape} differs from the content's {content.latent_shape}; "
                         "encode the style image at the content's size")


def zstar_sample(model, content: Inversion, style: Inversion, positive, negative, cfg=1.0,
                 anchor=PAPER_PRESET.anchor, style_mode="replay", progress=True):
    """The whole Z* run; returns (stylized LATENT samples, style-branch LATENT samples)."""
    config = zstar_config(model)
    info = describe(model)
    check_inputs(info, config, content, style)
    window = step_window(content.steps, config.start_step, config.end_step)
    nc = content.batch
    per_content = config.style_self_scale > 0 or (content.uncond_embeddings is not None and nc > 1)
    layout = RowLayout(nc, 1, nc if per_content else 1)
    run = ZStarRun(layout, (config.style_scale,), config.style_self_scale)

    patched = model.clone()
    patched.model_options["transformer_options"][RUN_KEY] = run
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "zstar", apply_model_wrapper)
    nulltext = None
    if content.uncond_embeddings is not None:
        nulltext = NullTextState()
        install_nulltext(patched, nulltext)
    holder = {}

    def denoise(denoiser, like, sigmas, **_):
        if nulltext is not None:
            nulltext.embeddings = tuple(e.to(like.device) for e in content.uncond_embeddings)
        content_traj = [t.to(like) for t in content.trajectory]
        style_trajs = [[t.to(like) for t in style.trajectory]]
        cb = host.step_callback(model, content.steps, preview=progress)
        x, style_out = zstar_denoise(denoiser, content_traj, style_trajs, sigmas, window, run,
                                     anchor=anchor, style_mode=style_mode, callback=cb)
        end_scale = vp_scale(sigmas[-1])
        holder["style"] = None if style_out is None else style_out / end_scale
        return x / end_scale

    shape = (layout.rows, *content.latent_shape)
    out = host.run_sampler_function(patched, denoise, content.sigmas, positive, negative, cfg, shape, {})
    style_out = holder.get("style")
    style_latent = (model.model.process_latent_out(style_out.float()).to(out.device)
                    if style_out is not None else out.new_zeros((0, *out.shape[1:])))
    return out, style_latent


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
                InversionType.Input("style", tooltip="Z* DDIM Inversion of the style image, same model and step count."),
                io.Conditioning.Input("positive", tooltip="Prompt for both rows. The paper uses the empty prompt."),
                io.Conditioning.Input("negative", tooltip="Unconditional prompt (only used when cfg > 1)."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance. 1 = the paper's result at half the cost when positive and negative are both the empty prompt; use 7.5 with a null-text inversion, as the authors do."),
                io.Float.Input("content_anchor", default=PAPER_PRESET.anchor, min=0.0, max=1.0, step=0.005,
                               tooltip="Before every step the content latent moves this far toward its inversion (official 0.01). Higher keeps more of the photo, 0 = free."),
                io.Combo.Input("style_mode", options=list(STYLE_MODES), default="replay",
                               tooltip="replay (official): the style branch is replaced by its inversion latent every step. alongside: the style branch is denoised together with the content."),
            ],
            outputs=[
                io.Latent.Output(display_name="stylized", tooltip="The stylized latent; decode it with VAE Decode."),
                io.Latent.Output(display_name="style_branch", tooltip="The style branch's last output, for inspection."),
            ],
        )

    @classmethod
    def execute(cls, model, content, style, positive, negative, cfg, content_anchor, style_mode) -> io.NodeOutput:
        samples, style_samples = zstar_sample(model, content, style, positive, negative, cfg, content_anchor, style_mode)
        return io.NodeOutput({"samples": samples}, {"samples": style_samples})
