"""The model family adapters: each family's layer numbering, default and source, and the
contract every adapter keeps (zstar_runtime/families/base.py)."""
from __future__ import annotations

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

harness.load_pack()
import torch  # noqa: E402

from comfyui_zstar.zstar_attention import (ddim_step, ddim_timesteps, parse_layers, scaled_linear_alphas_cumprod,  # noqa: E402
                                           select_attn1_keys, vp_scale)
from comfyui_zstar.zstar_attention import flow_step  # noqa: E402
from comfyui_zstar.zstar_runtime.families import CHROMA, FAMILIES, FLUX, QWEN_IMAGE, SD2, SD3, SD15, SDXL, family, layer_tables  # noqa: E402

UNETS = (SD2, SD15, SDXL)
FLOWS = (FLUX, CHROMA, QWEN_IMAGE, SD3)


def test_sd15_keys_exact():
    assert SD15.layer_keys == (
        ("input", 1, 0), ("input", 2, 0), ("input", 4, 0), ("input", 5, 0), ("input", 7, 0), ("input", 8, 0),
        ("middle", 0, 0),
        ("output", 3, 0), ("output", 4, 0), ("output", 5, 0), ("output", 6, 0), ("output", 7, 0),
        ("output", 8, 0), ("output", 9, 0), ("output", 10, 0), ("output", 11, 0),
    )
    assert SD2.layer_keys == SD15.layer_keys


def test_paper_layers_are_output_blocks_6_to_11():
    assert select_attn1_keys("10-15", SD15.layer_keys) == tuple(("output", i, 0) for i in range(6, 12))
    assert SD15.default_layers == SD2.default_layers == "10-15"


def test_sdxl_keys_count_and_order():
    assert len(SDXL.layer_keys) == 70 and len(set(SDXL.layer_keys)) == 70
    expected = (
        [("input", 4, i) for i in range(2)] + [("input", 5, i) for i in range(2)]
        + [("input", 7, i) for i in range(10)] + [("input", 8, i) for i in range(10)]
        + [("middle", 0, i) for i in range(10)]
        + [("output", b, i) for b in (0, 1, 2) for i in range(10)]
        + [("output", b, i) for b in (3, 4, 5) for i in range(2)]
    )
    assert SDXL.layer_keys == tuple(expected)
    paper = select_attn1_keys(SDXL.default_layers, SDXL.layer_keys)
    assert paper == tuple(k for k in SDXL.layer_keys if k[0] == "output" and k[1] <= 5) and len(paper) == 36



@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_every_family_keeps_the_adapter_contract(fam):
    assert fam.name and fam.label and fam.default_source
    assert len(fam.layer_keys) == len(set(fam.layer_keys)) > 0
    assert parse_layers(fam.default_layers, len(fam.layer_keys))  # "auto" names layers the family has
    assert family(fam.name) is fam and layer_tables()[fam.name] == fam.layer_keys
    assert fam.latent_to_pixels == (16 if fam.name == "flux2" else 8)  # Flux.2's VAE: 16 px per latent cell


def test_families_are_told_apart_by_name():
    assert [f.name for f in FAMILIES] == ["sd2", "sd15", "sdxl", "flux", "flux2", "chroma", "qwen_image", "z_image", "sd3"]
    with pytest.raises(ValueError, match="model family 'flux3' is not one of sd2, sd15, sdxl, flux, flux2, chroma, "
                       "qwen_image, z_image, sd3"):
        family("flux3")


@pytest.mark.parametrize("fam", FLOWS, ids=lambda f: f.name)
def test_flow_families_own_the_flow_parameterisation(fam):
    """The transformer adapters: the host's 'simple' schedule ending at σ = 0, the flow step, no scale."""
    table = torch.linspace(0.0001, 1.0, 1000)
    sigmas, index = fam.schedule(table, 30)
    assert len(sigmas) == 31 and sigmas[0] == 1.0 and sigmas[-1] == 0.0 and index[0] == 999
    assert (sigmas[1:] < sigmas[:-1]).all()
    gen = torch.Generator().manual_seed(0)
    x, d = torch.randn(2, 16, 8, 8, generator=gen), torch.randn(2, 16, 8, 8, generator=gen)
    assert torch.equal(fam.step(x, d, sigmas[3], sigmas[4]), flow_step(x, d, sigmas[3], sigmas[4]))
    assert fam.clean_scale(0.0) == 1.0 and fam.inversion == "flow" and not fam.features
    with pytest.raises(ValueError, match="steps: 1001 is more than the model's 1000 noise levels"):
        fam.schedule(table, 1001)


@pytest.mark.parametrize("fam", UNETS, ids=lambda f: f.name)
def test_unet_families_own_the_official_ddim_parameterisation(fam):
    """The U-Net adapters' schedule, step and clean-latent scale are the official DDIM ones."""
    alphas = scaled_linear_alphas_cumprod().float()
    table = ((1 - alphas) / alphas) ** 0.5  # ComfyUI's discrete σ(t) for the SD schedule
    sigmas, timesteps = fam.schedule(table, 30)
    assert timesteps == tuple(ddim_timesteps(30)) and timesteps[0] == 958 and timesteps[-1] == 1
    assert torch.equal(sigmas[:-1], table[list(timesteps)]) and len(sigmas) == 31
    gen = torch.Generator().manual_seed(0)
    x, d = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    assert torch.equal(fam.step(x, d, sigmas[3], sigmas[4]), ddim_step(x, d, sigmas[3], sigmas[4]))
    assert fam.clean_scale(sigmas[-1]) == vp_scale(sigmas[-1])
