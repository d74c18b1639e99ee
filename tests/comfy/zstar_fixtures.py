"""Fixtures and helpers the ComfyUI-tier test modules share: import them into a module to use them there.

    from zstar_fixtures import _inference_mode, model, empty, inv  # noqa: F401 (pytest fixtures)

`inv` inverts the importing module's INV_SEEDS (default 2: content, 3: style) with its STEPS;
`invert` is the one way the tests invert a test latent.
"""
from __future__ import annotations

import pytest
import torch

import harness
import models

harness.load_pack()
from comfyui_zstar.zstar_runtime import host  # noqa: E402
from comfyui_zstar.zstar_runtime.inversion import invert_latent  # noqa: E402
from comfyui_zstar.zstar_runtime.families import FLUX, family  # noqa: E402
from comfyui_zstar.zstar_runtime.joint_patch import OVERRIDE_KEY, LayerOverride, ZStarBlock, host_call  # noqa: E402
from comfyui_zstar.zstar_runtime.hooks import CONFIG_KEY, RUN_KEY, ZStarAttn1  # noqa: E402


class HostAttention(ZStarAttn1):
    """A Z* layer that always runs the host's plain attention (the reference for 'untouched')."""

    def __call__(self, q, k, v, extra_options):
        return host.host_attention(extra_options)(q, k, v, extra_options["n_heads"])


def unpatched_twin(model, patched):
    """`model` set up for the same Z* run and batch as `patched`, with the host's attention in
    every layer: the patch's config rides along and its layers hold HostAttention (so the
    sampler's check that the Z* layers are still installed passes)."""
    config = patched.model_options["transformer_options"][CONFIG_KEY]
    twin = model.clone()
    for block, block_id, index in config.keys:
        twin.set_model_attn1_replace(HostAttention(config, family(config.arch)), block, block_id, index)
    twin.model_options["transformer_options"][CONFIG_KEY] = config
    return twin


class HostBlock(ZStarBlock):
    """A Z* block that always runs the original block: the reference for 'untouched' on Flux."""

    def __call__(self, args, extra):
        return extra["original_block"](args)


class HostLayers(LayerOverride):
    """Z-Image's Z* override that always runs the host's attention (it still counts the layers it
    finds, as the run's check of the host's layer index expects)."""

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        run = options.get(RUN_KEY)
        if run is not None and self.layer_of(options) is not None:
            run.layer_calls += 1
        return host_call(self.previous, func, *args, **kwargs)


def unpatched_flow_twin(model, patched):
    """unpatched_twin for the transformers: the same Z* run as `patched`, every Z* block running
    the host's block (Z-Image: every Z* layer the host's attention)."""
    config = patched.model_options["transformer_options"][CONFIG_KEY]
    twin = model.clone()
    if config.arch == "z_image":
        twin.model_options["transformer_options"][OVERRIDE_KEY] = HostLayers(config, family(config.arch),
                                                                              {k[1]: k for k in config.keys})
        twin.model_options["transformer_options"][CONFIG_KEY] = config
        return twin
    for (kind, index), calls in FLUX.blocks_of(config.keys).items():
        twin.set_model_patch_replace(HostBlock(config, FLUX, calls), "dit", kind, index)
    twin.model_options["transformer_options"][CONFIG_KEY] = config
    return twin


def one_step_zstar_nodes(model, content: dict, style: dict, cond, strengths=(0.0, 1.5)) -> dict:
    """{λ: stylized samples} of Z* Flow Inversion (content, style) → Z* Attention Patch → Z* Sampler,
    one step each, through the node classes: how the tests run Z* on a stock-loaded file."""
    from comfyui_zstar.nodes.flow_inversion import ZStarFlowInversion
    from comfyui_zstar.nodes.patch import ZStarAttentionPatch
    from comfyui_zstar.nodes.sampler import ZStarSampler

    def out(result):
        return getattr(result, "args", result)
    inv_c = out(ZStarFlowInversion.execute(model, content, 1, "euler", 1.0, cond))[0]
    inv_s = out(ZStarFlowInversion.execute(model, style, 1, "euler", 1.0, cond))[0]
    runs = {}
    for strength in strengths:
        patched = out(ZStarAttentionPatch.execute(model, strength, 0.0, "auto", 0, 1))[0]
        runs[strength] = out(ZStarSampler.execute(patched, inv_c, inv_s, cond, cond, 1.0, 0.0, "replay"))[0]["samples"]
    return runs


def invert(model, seed: int, cond, steps: int, batch: int = 1, size: int = models.LATENT_SIZE):
    """The Inversion of models.latent(seed, batch, size), as the nodes make it (no progress bar)."""
    with torch.inference_mode():
        return invert_latent(model, models.latent(seed, batch, size)["samples"], steps, cond, progress=False)[0]


@pytest.fixture(autouse=True)
def _inference_mode():
    """ComfyUI's executor runs every node under inference_mode; so do the tests."""
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def model():
    return models.sd15(seed=0)


@pytest.fixture(scope="module")
def empty():
    return models.cond(1)


@pytest.fixture(scope="module")
def inv(request, model, empty):
    seeds = getattr(request.module, "INV_SEEDS", (2, 3))
    return {seed: invert(model, seed, empty, request.module.STEPS) for seed in seeds}
