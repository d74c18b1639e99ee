"""Fixtures the ComfyUI-tier test modules share: import them into a module to use them there.

    from zstar_fixtures import _inference_mode, model, empty, inv  # noqa: F401 (pytest fixtures)

`inv` inverts seeds 2 (content) and 3 (style) with the importing module's STEPS.
"""
from __future__ import annotations

import pytest
import torch

import harness
import models

harness.load_pack()
from comfyui_zstar.zstar_runtime import host  # noqa: E402
from comfyui_zstar.zstar_runtime.inversion import invert_latent  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import CONFIG_KEY, ZStarAttn1  # noqa: E402


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
        twin.set_model_attn1_replace(HostAttention(config), block, block_id, index)
    twin.model_options["transformer_options"][CONFIG_KEY] = config
    return twin


@pytest.fixture(autouse=True)
def _inference_mode():
    """ComfyUI's executor runs every node under inference_mode; so do the tests."""
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def model():
    return models.small_sd15(seed=0)


@pytest.fixture(scope="module")
def empty():
    return models.cond(1)


@pytest.fixture(scope="module")
def inv(request, model, empty):
    steps = request.module.STEPS
    with torch.inference_mode():
        return {seed: invert_latent(model, models.latent(seed)["samples"], steps, empty, progress=False)[0]
                for seed in (2, 3)}
