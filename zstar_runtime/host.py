"""The few places where Z* meets ComfyUI's runtime: attention backend, sampling, progress.

Running our loops as a KSAMPLER through `comfy.sample.sample_custom` lets ComfyUI do what it
does for every sampler: load and patch the model (LoRA, hooks), encode conditionings,
apply ControlNet, batch or split the CFG halves, and clean up afterwards.
"""
from __future__ import annotations

import copy
import inspect

import torch

import comfy.ldm.modules.attention
import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview


def host_attention(extra_options: dict):
    """ComfyUI's own attention (flash/SDPA/xformers/sage/sub-quad, whichever the user runs),
    called exactly as CrossAttention calls it."""
    fn = comfy.ldm.modules.attention.optimized_attention
    precision = extra_options.get("attn_precision")

    def attention(q, k, v, heads, mask=None):
        return fn(q, k, v, heads, mask=mask, attn_precision=precision, transformer_options=extra_options)

    return attention


def free_memory_options(model) -> dict:
    """The keywords of the host's `model_management.free_memory` for memory used alongside `model`.

    Hosts with dynamic VRAM (ComfyUI 0.16+) take `for_dynamic`. Their own loader passes it True
    when every model it loads is a dynamic one (ModelPatcherDynamic: weights streamed and evicted
    on demand), for the model weights and the inference memory alike: dynamic models are then
    not unloaded to make room, since they give VRAM back on demand. Without it free_memory logs
    "Non dynamic memory free called!" and may unload them. So: for_dynamic exactly when `model`
    is dynamic. Hosts before that have neither the keyword nor dynamic patchers (detected by
    signature, not version).
    """
    if "for_dynamic" not in inspect.signature(comfy.model_management.free_memory).parameters:
        return {}
    is_dynamic = getattr(model, "is_dynamic", None)
    return {"for_dynamic": bool(is_dynamic is not None and is_dynamic())}


def free_device_memory(model, nbytes: int, device) -> None:
    """Ask the host to make `nbytes` free on `device` for tensors the coming sampling of `model`
    reads (fast mode's style records), unloading other models if needed, as it does for
    `model`'s own inference memory."""
    comfy.model_management.free_memory(nbytes, device, **free_memory_options(model))


def check_interrupt():
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    comfy.model_management.throw_exception_if_processing_interrupted()


def step_callback(model, steps: int, preview: bool = True):
    """Progress bar + latent preview + interrupt check, called as cb(i, denoised, x)."""
    comfy_cb = latent_preview.prepare_callback(model, steps) if preview else None
    pbar = None if preview else comfy.utils.ProgressBar(steps)

    def callback(i, denoised, x):
        check_interrupt()
        if comfy_cb is not None:
            comfy_cb(i, denoised, x, steps)
        else:
            pbar.update_absolute(i + 1, steps)

    return callback


def run_sampler_function(model, fn, sigmas, positive, negative, cfg, shape, options, seed=0):
    """Run `fn(denoiser, x, sigmas, callback, **options)` inside ComfyUI's sampling machinery.

    fn gets `denoiser(x, sigma_scalar) -> denoised` with CFG, conditioning and model patches
    applied by ComfyUI, and returns a latent in model space; the result comes back in the
    LATENT (VAE) space, on ComfyUI's intermediate device.
    """
    def sampler_function(model_k, x, sigmas_dev, extra_args=None, callback=None, disable=None, **_):
        extra_args = extra_args or {}

        def denoiser(batch, sigma):
            s = sigma * batch.new_ones([batch.shape[0]])
            return model_k(batch, s, **extra_args)

        return fn(denoiser, x, sigmas_dev, **options)

    sampler = comfy.samplers.KSAMPLER(sampler_function)
    zeros = torch.zeros(shape)
    return comfy.sample.sample_custom(model, zeros, cfg, sampler, sigmas, positive, negative, zeros,
                                      disable_pbar=True, seed=seed)


def _model_output(self, sigma, model_output, model_input):
    return model_output


def velocity_model(model):
    """A clone of a flow `model` whose denoiser returns the network's own output, the velocity v,
    instead of x − σ·v: at σ = 0 the host's denoiser gives back x and no velocity, yet FireFlow's
    and RF-Solver's inversions start by asking the model there. The clone's model sampling is a
    copy of the model's in a subclass (an object patch, as Model Sampling nodes make), so the call
    still goes through the host's conditioning, CFG, wrappers and patches."""
    base = model.get_model_object("model_sampling")
    sampling = copy.copy(base)
    sampling.__class__ = type(f"Velocity{type(base).__name__}", (type(base),), {"calculate_denoised": _model_output})
    clone = model.clone()
    clone.add_object_patch("model_sampling", sampling)
    return clone


def model_velocity(model, x: torch.Tensor, sigmas, positive, sigma: float = 0.0) -> torch.Tensor:
    """The flow model's velocity v(x, sigma) (x in model space) through ComfyUI's sampling, CFG 1
    on `positive`, as the inversion asks it; `sigmas` is the run's schedule (for the host's setup)."""
    holder = {}

    def fn(denoiser, like, _sigmas, **_):
        holder["v"] = denoiser(x.to(like), sigma)
        return like

    run_sampler_function(velocity_model(model), fn, sigmas, positive, positive, 1.0, x.shape, {})
    return holder["v"]


def process_latent_in(model, samples: torch.Tensor) -> torch.Tensor:
    return model.model.process_latent_in(samples)


def to_storage(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(comfy.model_management.intermediate_device(), torch.float32)


def to_storage_like(t: torch.Tensor) -> torch.Tensor:
    """Off the GPU between nodes, in the dtype it was computed in."""
    return t.detach().to(comfy.model_management.intermediate_device())
