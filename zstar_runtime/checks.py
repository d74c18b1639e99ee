"""Checks that need the model or the tensors: latents, inversions, masks. Each raises ZStarError
naming the input and what it accepts; the nodes' widget checks are in nodes/validation.py."""
from __future__ import annotations

import torch

from ..zstar_attention import ZStarError

MIN_LATENT = 8  # 64 px: below it the U-Net's coarsest levels shrink to single pixels (GroupNorm fails)


def check_latent(model, samples, name: str = "latent"):
    """A LATENT's samples fit the model: (B, C, H, W) with the model's channels, or (B, C, 1, H, W)
    for a model whose VAE makes video latents (Qwen-Image's Wan 2.1 VAE: one frame), finite."""
    frames = getattr(model.model.latent_format, "latent_dimensions", 2) == 3
    shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
    if not isinstance(samples, torch.Tensor) or samples.ndim not in ((4, 5) if frames else (4,)):
        raise ZStarError(f"{name}: expected image latents of shape (batch, channels, height, width), got {shape}")
    if samples.ndim == 5 and samples.shape[2] != 1:
        raise ZStarError(f"{name}: holds {samples.shape[2]} frames, shape {shape}; Z* stylizes images (one frame)")
    channels = model.model.latent_format.latent_channels
    if samples.shape[1] != channels and samples.abs().sum() != 0:  # an empty latent is fixed by ComfyUI
        raise ZStarError(f"{name}: has {samples.shape[1]} channels but this MODEL's latents have {channels}; "
                         "encode the image with this checkpoint's VAE")
    if samples.shape[0] < 1:
        raise ZStarError(f"{name}: holds no image, shape {shape}")
    h, w = samples.shape[-2:]
    if min(h, w) < MIN_LATENT:
        px = MIN_LATENT * getattr(model.model.latent_format, "spacial_downscale_ratio", 8)  # Flux.2's VAE: 16
        raise ZStarError(f"{name}: {h}×{w} is too small; Z* needs images of at least "
                         f"{px}×{px} pixels (latents of {MIN_LATENT}×{MIN_LATENT})")
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
    expected = info.family.schedule(info.sigma_table, inv.steps)[0].float()
    found = inv.sigmas.float().cpu()
    if not torch.equal(expected, found):
        i = int((expected != found).nonzero()[0, 0]) if expected.shape == found.shape else 0
        shift = info.shift
        raise ZStarError(f"{name}: inverted on a different noise schedule than this MODEL's (they first differ "
                         f"at σ[{i}] of {len(found)}: {found[i].item():.6g} in the inversion, {expected[i].item():.6g} here"
                         f"{'' if shift is None else f'; this MODEL samples with shift {shift:.6g}'}); invert "
                         "with the same model and model-sampling settings (shift, a Model Sampling node) the "
                         "sampler uses")


def check_guidance(conditioning, name: str):
    """No NaN or infinite guidance in a CONDITIONING (FluxGuidance lets any float through, and the
    model then gives a NaN image without a word)."""
    for entry in conditioning or ():
        value = entry[1].get("guidance") if len(entry) > 1 and isinstance(entry[1], dict) else None
        if value is not None and not torch.isfinite(torch.as_tensor(value, dtype=torch.float64)).all():
            raise ZStarError(f"{name}: the conditioning's guidance is {value} (not a finite number); set FluxGuidance's "
                             "guidance to a number such as 3.5")


def check_mask(mask, batch: int, latent_shape: tuple, name: str = "mask", latent_to_pixels: int = 8):
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
                         f"image {latent_to_pixels * h}×{latent_to_pixels * w}); use a mask of the content image's size")
    return mask
