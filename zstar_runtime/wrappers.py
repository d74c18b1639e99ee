"""The model wrappers Z* puts on its clones, through ComfyUI's wrapper mechanism.

- apply_model_wrapper (APPLY_MODEL): every model call of a Z* run is checked against the run's
  rows and latent size; ControlNet residuals are kept off the style rows; Flux's style rows get
  their inversion's guidance; a layer-indexed model (Z-Image) starts without a stale layer index
  and must have reached its Z* layers through the host's index.
- RecordsOnDevice (PREPARE_SAMPLING): fast mode's style records are memory the host must see.
- nulltext_wrapper (APPLY_MODEL): the unconditional rows get the null-text embedding of the step.
- cached_cond_wrapper (CALC_COND_BATCH): during null-text optimisation, the conditional half
  once per step.

Per-run state (ZStarRun, NullTextState) reaches them through transformer_options and survives
any copying of those (SharedRunState).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

import comfy.model_management
import comfy.patcher_extension

from ..zstar_attention import SharedRunState, ZStarError, ZStarRun, rows_per_chunk
from ..zstar_attention.style_types import StyleRecord
from . import host
from .hooks import RUN_KEY
from .joint_patch import BLOCK_POSITION_KEYS, OVERRIDE_KEY, LayerOverride

NULLTEXT_KEY = "zstar_nulltext"
COND_CACHE_KEY = "zstar_nulltext_cond_cache"


def style_rows_mask(run: ZStarRun, n_chunks: int) -> torch.Tensor:
    """(n_chunks * rows,) bool: which rows of a stacked model call are style rows, chunk by chunk."""
    rows = run.layout.rows
    is_style = torch.zeros(rows, dtype=torch.bool)
    is_style[run.layout.n_content:] = True
    return is_style.repeat(n_chunks)


def style_rows_guidance(run: ZStarRun, guidance: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """Flux's per-row guidance with the style rows set to their inversions' guidance."""
    rows = guidance.reshape(n_chunks, run.layout.rows).clone()
    rows[:, run.layout.n_content:] = torch.tensor(run.style_guidance, dtype=rows.dtype, device=rows.device)
    return rows.reshape(guidance.shape)


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
        if kwargs.get("ref_latents") is not None:
            raise ZStarError("conditioning: carries reference latents (ReferenceLatent, Flux Kontext, Qwen-Image-Edit), whose image "
                             "tokens Z* cannot tell from the content's; use plain conditionings")
        if run.stacked and kwargs.get("guidance") is not None and run.style_guidance:
            kwargs["guidance"] = style_rows_guidance(run, kwargs["guidance"], n_chunks)
        if run.stacked and control:
            keep = (~style_rows_mask(run, n_chunks)).to(x.device)
            control = {name: [None if r is None else r * keep.view(-1, *([1] * (r.ndim - 1))).to(r.dtype)
                              for r in residuals]
                       for name, residuals in control.items()}
        if run.stacked and run.reweight and isinstance(transformer_options.get(OVERRIDE_KEY), LayerOverride):
            return layer_indexed_call(executor, run, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def layer_indexed_call(executor, run, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    """A reweighted model call of a layer-indexed model (Z-Image). The options start without a layer
    index, so layers that attend before the host writes one (NextDiT's refiners) can never read a
    stale one; afterwards, at least one call must have been found by the index, or this host does
    not write it and the result would silently be the plain model's."""
    options = {k: v for k, v in transformer_options.items() if k not in BLOCK_POSITION_KEYS}
    before = run.layer_calls
    out = executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
    if run.layer_calls == before:
        raise ZStarError("model: this ComfyUI does not tell attention calls which layer they belong to "
                         "(transformer_options 'block_index', written by ComfyUI 0.8.0 and later), so Z* cannot find "
                         "its layers in this model; update ComfyUI")
    return out


def replace_kv(record: StyleRecord, device) -> StyleRecord:
    return dataclasses.replace(record, kv={k: (a.to(device), b.to(device)) for k, (a, b) in record.kv.items()})


class RecordsOnDevice:
    """PREPARE_SAMPLING wrapper for fast mode: the style records are memory the host must see.

    A record is large (about 1.1 GiB per 512 px style in float32). Before ComfyUI loads the
    model for sampling, this asks the host to free room for the records on the load device
    (model_management.free_memory, which unloads other models if needed; with dynamic VRAM as a
    dynamic model's memory, see host.free_memory_options) and moves them there, so the model's
    own load then plans around memory that is really taken. This is the run's one transfer of
    the records. On a CPU load device they already live where they are read.
    """

    def __init__(self, run: ZStarRun):
        self.run = run

    def __call__(self, executor, model, *args, **kwargs):
        device = model.load_device
        records = self.run.record
        moving = sum(r.nbytes for r in records if any(t.device != device for kv in r.kv.values() for t in kv))
        if moving and not comfy.model_management.is_device_cpu(device):
            host.free_device_memory(model, moving, device)
        self.run.record = tuple(replace_kv(r, device) for r in records)
        return executor(model, *args, **kwargs)


@dataclass(eq=False)
class NullTextState(SharedRunState):
    """Which unconditional embedding the uncond rows get now (per run; shared by every copy
    of the model's options, see SharedRunState)."""

    embeddings: tuple | None = None  # per step, (n_content, tokens, dim), when replaying
    current: torch.Tensor | None = None  # set while optimising
    step: int = 0
    cond_out: torch.Tensor | None = None  # while optimising: this step's conditional prediction


def _row_embeddings(state: NullTextState, rows: int, run) -> torch.Tensor:
    emb = state.current if state.current is not None else state.embeddings[run.step if run else state.step]
    if run is None or rows == run.layout.n_content:
        return emb[:rows] if emb.shape[0] >= rows else emb.expand(rows, *emb.shape[1:])
    layout = run.layout
    index = list(range(layout.n_content)) + [layout.group_of(g) for g in range(layout.groups)
                                              for _ in range(layout.n_styles)]
    return emb[index]


def nulltext_wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
    """Give the unconditional rows the null-text embedding of the current step."""
    state = transformer_options.get(NULLTEXT_KEY)
    which = transformer_options.get("cond_or_uncond", [])
    if state is not None and 1 in which and c_crossattn is not None:
        run = transformer_options.get(RUN_KEY)
        rows = rows_per_chunk(x.shape[0], len(which), run.rows_in_call() if run is not None else None)
        emb = _row_embeddings(state, rows, run)
        tokens = c_crossattn.shape[1]
        if tokens % emb.shape[1]:
            raise ZStarError(f"negative: the null-text embedding has {emb.shape[1]} tokens, the batch {tokens}")
        emb = emb.repeat(1, tokens // emb.shape[1], 1).to(c_crossattn)
        parts = list(c_crossattn.split(rows))
        for chunk, kind in enumerate(which):
            if kind == 1:
                parts[chunk] = emb
        c_crossattn = torch.cat(parts)
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def install_nulltext(model, state: NullTextState):
    """On a clone: feed the state's embeddings to the unconditional rows."""
    model.model_options["transformer_options"][NULLTEXT_KEY] = state
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, NULLTEXT_KEY, nulltext_wrapper)


def cached_cond_wrapper(executor, model, conds, x_in, timestep, model_options):
    """CALC_COND_BATCH wrapper for the optimisation: the conditional half once per step.

    Within one step x and σ are fixed and only the unconditional embedding changes, so the
    conditional prediction is computed on the step's first call (no gradients: it does not
    depend on the embedding) and reused; every call evaluates the unconditional half only.
    """
    state = model_options.get("transformer_options", {}).get(NULLTEXT_KEY)
    if state is None or state.current is None or len(conds) != 2 or conds[0] is None or conds[1] is None:
        return executor(model, conds, x_in, timestep, model_options)
    if state.cond_out is None:
        with torch.no_grad():
            state.cond_out = executor(model, [conds[0], None], x_in, timestep, model_options)[0].detach()
    uncond_out = executor(model, [None, conds[1]], x_in, timestep, model_options)[1]
    return [state.cond_out, uncond_out]


