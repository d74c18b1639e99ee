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
from comfyui_zstar.nodes.inversion import invert_latent  # noqa: E402


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
