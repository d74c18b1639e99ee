"""ZStarNullTextOptimization: per-step unconditional embeddings so CFG reconstructs the content.

The official content path for CFG > 1 (Mokady et al.'s null-text inversion, as the Z* code
runs it): for every step, Adam on the unconditional embedding (≤ N iterations, lr
1e-2·(1 − i/100), early stop at loss < 1e-5 + i·2e-5) so that one CFG DDIM step from the
current latent lands on the inversion's next latent. The model's weights are never touched:
gradients flow only into the embedding, which ComfyUI's apply_model wrapper feeds to the
unconditional rows. As in the official code, the conditional prediction does not depend on
the embedding, so it is computed once per step (without gradients) and only the
unconditional half runs in every Adam iteration.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from comfy_api.latest import io

import comfy.patcher_extension

from ..zstar_attention import PAPER_PRESET, SharedRunState, ZStarError, ddim_step, rows_per_chunk, vp_scale
from . import host, validation
from .model_info import describe
from .patch import RUN_KEY
from .types import Inversion, InversionType

NULLTEXT_KEY = "zstar_nulltext"
COND_CACHE_KEY = "zstar_nulltext_cond_cache"


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


class GradSafeTensors(torch.overrides.TorchFunctionMode):
    """While the optimisation records gradients, every inference tensor an op receives enters
    as a normal copy, so autograd may save it for the backward pass.

    ComfyUI's executor runs nodes under torch.inference_mode, so the U-Net's weights (and the
    conditionings) are inference tensors, which autograd refuses to save. Whether the host hands
    a layer its parameter itself, a cached cast, or a fresh cast ("dynamic VRAM", lowvram,
    manual cast) is the host's business: this mode works at the op boundary, after whatever the
    host did, so the gradient path does not depend on it. Gradients still flow only into the
    embedding; nothing is written back, and in-place ops keep their own target.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if torch.is_grad_enabled():
            name = getattr(func, "__name__", "")
            if name != "__get__":
                keep = 1 if (name.endswith("_") and not name.endswith("__")) or name == "__setitem__" else 0
                args = (*args[:keep], *(_normal(a) for a in args[keep:]))
                if kwargs:
                    kwargs = {k: _normal(v) for k, v in kwargs.items()}
        return func(*args, **(kwargs or {}))


def _normal(value):
    """An inference tensor (also inside a list or tuple) as a normal copy; anything else as is."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_normal(v) for v in value)
    return value


def plain_uncond(negative) -> torch.Tensor:
    if not negative or len(negative) != 1:
        raise ZStarError("negative: null-text optimisation needs exactly one plain conditioning "
                         f"(e.g. CLIP Text Encode with an empty prompt), got {len(negative or [])} entries")
    return negative[0][0]


def nulltext_optimise(model, inversion: Inversion, positive, negative, cfg=PAPER_PRESET.cfg_nulltext,
                      iterations=PAPER_PRESET.nulltext_iterations, lr=PAPER_PRESET.nulltext_lr,
                      progress=True, log=None) -> Inversion:
    info = describe(model)
    validation.check_inversion_model(info, inversion, "inversion")
    uncond = plain_uncond(negative)
    state = NullTextState()
    clone = model.clone()
    install_nulltext(clone, state)
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, COND_CACHE_KEY, cached_cond_wrapper)
    nc, steps = inversion.batch, inversion.steps
    found = []

    def optimise(denoiser, like, sigmas, **_):
        cb = host.step_callback(model, steps, preview=progress)
        traj = [t.to(like) for t in inversion.trajectory]
        x = traj[0]
        emb = uncond.to(like.device, torch.float32).expand(nc, *uncond.shape[1:]).clone()
        with torch.inference_mode(False), torch.enable_grad(), GradSafeTensors():
            x, sigmas = x.clone(), sigmas.clone()  # normal tensors: autograd may save them
            for i in range(steps):
                sigma, sigma_next = sigmas[i], sigmas[i + 1]
                scale = vp_scale(sigma_next)
                target = (traj[i + 1] / scale).clone()
                state.cond_out = None  # a new x and σ: the conditional half is computed anew
                emb = emb.detach().clone().requires_grad_(True)
                optimizer = torch.optim.Adam([emb], lr=lr * (1.0 - i / 100.0))
                threshold = 1e-5 + i * 2e-5
                for j in range(iterations):
                    host.check_interrupt()
                    state.current = emb
                    prev = ddim_step(x, denoiser(x, sigma), sigma, sigma_next)
                    # per-image MSE in the official VP scale, summed so images optimise independently
                    loss = ((prev / scale - target) ** 2).flatten(1).mean(1)
                    optimizer.zero_grad()
                    loss.sum().backward()
                    optimizer.step()
                    if log is not None:
                        log.append((i, j, loss.detach().max().item()))
                    if loss.max().item() < threshold:
                        break
                emb = emb.detach()
                found.append(host.to_storage(emb))
                with torch.no_grad():
                    state.current = emb
                    denoised = denoiser(x, sigma)
                    x = ddim_step(x, denoised, sigma, sigma_next).detach()
                cb(i, denoised, x)
        state.current = state.cond_out = None
        return x / vp_scale(sigmas[-1])

    shape = (nc, *inversion.latent_shape)
    host.run_sampler_function(clone, optimise, inversion.sigmas, positive, negative, cfg, shape, {})
    return replace(inversion, uncond_embeddings=tuple(found), nulltext_cfg=float(cfg))


class ZStarNullTextOptimization(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZStarNullTextOptimization",
            display_name="Z* Null-Text Optimization",
            category="sampling/zstar",
            description="Optimises one unconditional embedding per step so that CFG sampling reconstructs "
                        "the inverted content (the official Z* content path for CFG 7.5). Slow: up to "
                        "iterations × steps extra passes of the unconditional half, with gradients. "
                        "Not needed with CFG 1.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL the inversion was made with (unpatched). Its weights are not changed."),
                InversionType.Input("inversion", tooltip="The content's Z* DDIM Inversion."),
                io.Conditioning.Input("positive", tooltip="The prompt the Z* Sampler will use (the paper: empty prompt)."),
                io.Conditioning.Input("negative", tooltip="Starting unconditional embedding (the paper: empty prompt)."),
                io.Float.Input("cfg", default=PAPER_PRESET.cfg_nulltext, min=1.0, max=30.0, step=0.1, round=0.01,
                               tooltip="The CFG scale the Z* Sampler will use with this inversion. Paper: 7.5."),
                io.Int.Input("iterations", default=PAPER_PRESET.nulltext_iterations, min=1, max=100,
                             tooltip="Adam iterations per step at most (early stop when the step is reconstructed). Paper: 10."),
            ],
            outputs=[InversionType.Output(display_name="inversion",
                                          tooltip="The inversion with per-step null-text embeddings; use cfg = this cfg in the Z* Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, cfg=None, iterations=None):
        return validation.report(validation.check_widgets, cls, cfg=cfg, iterations=iterations)

    @classmethod
    def execute(cls, model, inversion, positive, negative, cfg, iterations) -> io.NodeOutput:
        validation.check_widgets(cls, cfg=cfg, iterations=iterations)
        return io.NodeOutput(nulltext_optimise(model, inversion, positive, negative, cfg, iterations))
