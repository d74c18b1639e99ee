"""Fast mode: Record the style's keys/values once, reuse them for every run.

With λ_style off the style row's self-attention never sees the content, so its keys and
values at step i depend only on the style inversion latent at that step: recording them once
(at the sampler's own timesteps) gives exactly the replayed style row, and the sampler then
evaluates content rows only. The record does not depend on λ, so ComfyUI's cache keeps it
while an artist tunes the strength.
"""
from __future__ import annotations

from ..zstar_attention import PAPER_PRESET, RowLayout, ZStarError, ZStarRun, rows_per_chunk, step_window
from ..zstar_attention.style_types import Inversion, StyleRecord
from . import checks, host
from .families import describe, resolve_layers
from .hooks import RUN_KEY, ZStarConfig
from .patch import install_patch


def record_style(model, style: Inversion, positive, negative, cfg=1.0, layers="auto",
                 start_step=PAPER_PRESET.start_step, end_step=PAPER_PRESET.end_step, progress=True) -> StyleRecord:
    info = describe(model)
    info.require("record", "Z* Style Record (fast mode)")
    checks.check_inversion_model(info, style, "style")
    if style.batch != 1:
        raise ZStarError(f"style: the inversion holds {style.batch} images; record one style image at a time")
    chosen = resolve_layers(info, layers)
    keys = tuple(info.layer_keys[i] for i in chosen)
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

    run.sink = sink
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


