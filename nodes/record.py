"""ZStarStyleRecord: fast mode. Record the style's keys/values once, reuse them for every run.

With λ_style off the style row's self-attention never sees the content, so its keys and
values at step i depend only on the style inversion latent at that step: recording them once
(at the sampler's own timesteps) gives exactly the replayed style row, and the sampler then
evaluates content rows only. The record does not depend on λ, so ComfyUI's cache keeps it
while an artist tunes the strength.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..zstar_attention import PAPER_PRESET, RowLayout, ZStarError, ZStarRun, rows_per_chunk, step_window
from . import host, validation
from .model_info import describe, resolve_layers
from .patch import RUN_KEY, ZStarConfig, install_patch
from .types import Inversion, InversionType, StyleRecord, StyleRecordType


def record_style(model, style: Inversion, positive, negative, cfg=1.0, layers="auto",
                 start_step=PAPER_PRESET.start_step, end_step=PAPER_PRESET.end_step, progress=True) -> StyleRecord:
    info = describe(model)
    validation.check_inversion_model(info, style, "style")
    if style.batch != 1:
        raise ZStarError(f"style: the inversion holds {style.batch} images; record one style image at a time")
    chosen = resolve_layers(info, layers)
    keys = tuple(info.attn1_keys[i] for i in chosen)
    window = step_window(style.steps, start_step, end_step)
    config = ZStarConfig(0.0, 0.0, chosen, keys, start_step, end_step, info.arch)
    clone = install_patch(model, config)
    run = ZStarRun(RowLayout(1, 1), (0.0,), 0.0)
    kv = {}

    def sink(step, key, labels, k, v):
        rows = rows_per_chunk(k.shape[0], len(labels), 1)
        for chunk, half in enumerate(labels):
            sl = slice(chunk * rows, chunk * rows + 1)
            kv[(step, key, half)] = (k[sl].detach().clone(), v[sl].detach().clone())

    run.extra["sink"] = sink
    clone.model_options["transformer_options"][RUN_KEY] = run
    steps = [i for i in range(style.steps) if window[i]]

    def record(denoiser, like, sigmas, **_):
        cb = host.step_callback(model, len(steps), preview=False) if progress else None
        for n, i in enumerate(steps):
            run.step = i
            denoiser(style.trajectory[i].to(like), sigmas[i])
            if cb is not None:
                cb(n, None, None)
        return like[:1] * 0

    host.run_sampler_function(clone, record, style.sigmas, positive, negative, cfg, (1, *style.latent_shape), {})
    storage = {k: (host.to_storage_like(a), host.to_storage_like(b)) for k, (a, b) in kv.items()}
    halves = tuple(sorted({half for (_, _, half) in kv}))
    return StyleRecord(kv=storage, layers=chosen, keys=keys, start_step=start_step, end_step=end_step,
                       sigmas=style.sigmas, arch=style.arch, model_type=style.model_type, halves=halves,
                       latent_shape=style.latent_shape)


class ZStarStyleRecord(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarStyleRecord",
            display_name="Z* Style Record (fast mode)",
            category="sampling/zstar",
            description="Records the style's self-attention keys and values once per step and layer. "
                        "Feed it to the Z* Sampler's style input: the sampler then evaluates only the "
                        "content rows. Exact when the patch's style_self_strength (λ_style) is 0; with "
                        "λ_style on, the official style row also looks at the content, which a record "
                        "cannot (the difference is small). The record survives λ changes in ComfyUI's cache.",
            inputs=[
                io.Model.Input("model", tooltip="The checkpoint's MODEL, unpatched (the record does not depend on λ)."),
                InversionType.Input("style", tooltip="Z* DDIM Inversion of the style image."),
                io.Conditioning.Input("positive", tooltip="The Z* Sampler's positive prompt (the paper: empty)."),
                io.Conditioning.Input("negative", tooltip="The Z* Sampler's negative prompt; recorded only when cfg > 1."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Use the Z* Sampler's cfg: at 1 only the conditional half is recorded (half the memory)."),
                io.String.Input("layers", default="auto", tooltip="Must match the Z* Attention Patch's layers ('auto' = the paper's)."),
                io.Int.Input("start_step", default=PAPER_PRESET.start_step, min=0, max=1000,
                             tooltip="Must match the Z* Attention Patch's start_step."),
                io.Int.Input("end_step", default=PAPER_PRESET.end_step, min=1, max=1000,
                             tooltip="Must match the Z* Attention Patch's end_step."),
            ],
            outputs=[
                StyleRecordType.Output(display_name="style_record", tooltip="Connect to the Z* Sampler's style input."),
                io.String.Output(display_name="info", tooltip="What was recorded and its memory."),
            ],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, layers=None, start_step=None, end_step=None):
        return validation.report(validation.record_inputs, cls, cfg, layers, start_step, end_step)

    @classmethod
    def execute(cls, model, style, positive, negative, cfg, layers, start_step, end_step) -> io.NodeOutput:
        validation.record_inputs(cls, cfg, layers, start_step, end_step)
        rec = record_style(model, style, positive, negative, cfg, layers, start_step, end_step)
        return io.NodeOutput(rec, rec.describe())
