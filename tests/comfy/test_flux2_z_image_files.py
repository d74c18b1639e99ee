"""Flux.2 and Z-Image: random files of the real layout through ComfyUI's stock UNETLoader.

Each file (checkpoint.py) is detected by the host as its family, samples one plain KSampler
step, and runs Z* (flow inversion → attention patch → sampler). Their text encoders (Qwen3-4B;
Mistral for Flux.2 dev) cannot run on this CPU: the conditionings are tensors of their widths.
ComfyUI 0.3.64 has neither family; 0.8.0 detects Flux.2 at dev's width only (48 heads), so the
Klein-sized Flux.2 file loads from the hosts after it (skipped by name on 0.8.0).
"""
from __future__ import annotations

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import gc

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.supported_models
import folder_paths
import nodes as comfy_nodes

import checkpoint
from zstar_fixtures import _inference_mode, one_step_zstar_nodes  # noqa: F401 (pytest fixture)

if not hasattr(comfy.supported_models, "ZImage"):
    pytest.skip("this ComfyUI has no Flux.2 or Z-Image models (they came with ComfyUI 0.8.0)", allow_module_level=True)

harness.load_pack()
from comfyui_zstar.zstar_runtime.families import FLUX2, Z_IMAGE, describe  # noqa: E402

LATENT = 8  # an 8 × 8 latent: Z-Image 4 × 4 patches (padded to 32 tokens), Flux.2 64 tokens
KLEIN_ON_0_8 = "ComfyUI 0.8.0 detects Flux.2 at dev's width only (48 heads × 128: a 3 GB file even at one block each)"


def out(result):
    return getattr(result, "args", result)


@pytest.fixture(scope="module")
def loaded():
    """{name: MODEL} as UNETLoader loads each file, from a folder that holds only the test files."""
    paths = {"flux2": checkpoint.flux2_diffusion_model(), "z_image": checkpoint.z_image_diffusion_model()}
    paths = {name: p for name, p in paths.items() if p is not None}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(folder_paths, "filename_list_cache", {})
        mp.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                   ([str(paths["z_image"].parent)], folder_paths.folder_names_and_paths["diffusion_models"][1]))
        with torch.inference_mode():
            found = {name: out(comfy_nodes.UNETLoader().load_unet(p.name, "default"))[0] for name, p in paths.items()}
    yield found
    found.clear()
    gc.collect()
    comfy.model_management.cleanup_models()


def model_of(loaded, name):
    if name not in loaded:
        pytest.skip(KLEIN_ON_0_8)
    return loaded[name]


def conditioning(name: str, seed: int):
    """What the family's text encoder hands the sampler: Qwen3-4B's last layer (Z-Image, 2560 wide)
    or three of its layers stacked (Flux.2 Klein, 7680)."""
    width = 3 * checkpoint.QWEN3_4B_WIDTH if name == "flux2" else checkpoint.QWEN3_4B_WIDTH
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 8, width, generator=gen), {}]]


def latent(model, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(1, model.model.latent_format.latent_channels, LATENT, LATENT, generator=gen)}


def test_z_image_file_detected(loaded):
    model = loaded["z_image"]
    assert type(model.model.model_config) is comfy.supported_models.ZImage
    assert isinstance(model.model.model_sampling, comfy.model_sampling.CONST)
    net = model.model.diffusion_model
    assert (net.dim, net.n_heads, len(net.layers), len(net.noise_refiner), len(net.context_refiner)) == \
        (checkpoint.Z_IMAGE_WIDTH, 30, 1, 2, 2)
    assert net.pad_tokens_multiple == 32 and tuple(net.rope_embedder.axes_dim) == (32, 48, 48)
    info = describe(model)
    assert info.family is Z_IMAGE and info.default_layers == "0-0" and info.shift == 3.0


def test_flux2_file_detected(loaded):
    model = model_of(loaded, "flux2")
    assert type(model.model.model_config) is comfy.supported_models.Flux2
    assert isinstance(model.model.model_sampling, comfy.model_sampling.CONST)
    net = model.model.diffusion_model
    assert (net.hidden_size, net.num_heads, net.patch_size, len(net.double_blocks), len(net.single_blocks)) == \
        (3072, 24, 1, 1, 1)
    assert model.model.latent_format.latent_channels == 128 and net.params.ref_index_scale == 10.0
    info = describe(model)
    assert info.family is FLUX2 and info.default_layers == "1-1" and not FLUX2.takes_guidance(model)


@pytest.mark.parametrize("name", ["z_image", "flux2"])
def test_samples_and_runs_zstar(loaded, name):
    """One plain KSampler step, then Z* Flow Inversion (content, style) → Z* Attention Patch → Z*
    Sampler on the stock-loaded file, one step: a stylized latent of the content's shape, finite,
    and not what λ = 0 gives."""
    model = model_of(loaded, name)
    cond, negative = conditioning(name, 1), conditioning(name, 2)
    content, style = latent(model, 0), latent(model, 1)
    plain = out(comfy_nodes.KSampler().sample(model, 0, 1, 1.0, "euler", "simple", cond, negative, content, 1.0))[0]
    assert torch.isfinite(plain["samples"]).all() and plain["samples"].std() > 0
    runs = one_step_zstar_nodes(model, content, style, cond)
    assert runs[1.5].shape == content["samples"].shape and torch.isfinite(runs[1.5]).all()
    assert not torch.equal(runs[1.5], runs[0.0])
