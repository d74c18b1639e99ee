"""SD2.x and SDXL layouts end to end, and a clear refusal of models Z* does not support.

Each supported architecture is built as a random-weight model through ComfyUI's own classes
(models.sd2 / models.sdxl: comfy.supported_models.SD20 / SDXL, i.e. the BaseModel / SDXL
model_base wrappers ComfyUI loads a checkpoint into) with that family's exact block layout and
shrunken widths, then run through inversion, 'auto' patch and sampler.
"""
from __future__ import annotations

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch

import comfy.model_detection
import comfy.model_sampling
import comfy.supported_models

import models
from zstar_fixtures import _inference_mode, invert, unpatched_twin  # noqa: F401 (pytest fixture)
from test_nodes_zstar import capture_attn1, plain_reconstruction, rel

harness.load_pack()
from comfyui_zstar.zstar_runtime.families import describe  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import ZStarAttn1, patch_model  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402
from comfyui_zstar.zstar_attention import ZStarError  # noqa: E402
from comfyui_zstar.zstar_runtime.families import family  # noqa: E402

STEPS = 6
START = 2
TOKENS = 8  # prompt tokens (real: 77); the count does not matter to self-attention

# The paper-equivalent 'auto' layers, written out by hand (not read from the tables under test).
SD2_AUTO_KEYS = [("output", i, 0) for i in range(6, 12)]  # layers 10-15, as SD1.5
SDXL_AUTO_KEYS = ([("output", b, i) for b in (0, 1, 2) for i in range(10)]
                  + [("output", b, i) for b in (3, 4, 5) for i in range(2)])  # layers 34-69

ARCH_CASES = {
    "sd2": dict(build=lambda: models.sd2(seed=0), cond=lambda: models.cond(1, TOKENS),
                keys=SD2_AUTO_KEYS, type_name="BaseModel/SD20", first_patched=10),
    "sdxl": dict(build=lambda: models.sdxl(seed=0), cond=lambda: models.sdxl_cond(1, TOKENS),
                 keys=SDXL_AUTO_KEYS, type_name="SDXL/SDXL", first_patched=34),
}


def test_small_layouts_are_the_real_ones():
    """With the real widths, ComfyUI's own detection picks SD15, SD20 and SDXL for these layouts."""
    sd15 = comfy.model_detection.model_config_from_unet_config(dict(models.SD15_LAYOUT))
    sd2 = comfy.model_detection.model_config_from_unet_config(dict(models.SD2_LAYOUT))
    sdxl = comfy.model_detection.model_config_from_unet_config(dict(models.SDXL_LAYOUT))
    assert type(sd15) is comfy.supported_models.SD15
    assert type(sd2) is comfy.supported_models.SD20
    assert type(sdxl) is comfy.supported_models.SDXL


@pytest.fixture(scope="module", params=list(ARCH_CASES))
def arch(request):
    """Model, inversions and the two runs several tests read: the 'auto' patch (paper preset,
    attn1 outputs captured, reweighted layers probed) and the same run unpatched."""
    case = ARCH_CASES[request.param]
    with torch.inference_mode():
        model, cond = case["build"](), case["cond"]()
        content, style = invert(model, 2, cond, STEPS), invert(model, 3, cond, STEPS)
        patched = patch_model(model, 1.2, 1.5, "auto", START, STEPS)
        unpatched = unpatched_twin(model, patched)  # same run and batch, the host's attention everywhere
        got, ref, probed = {}, {}, set()
        styled, _ = zstar_sample(capture_attn1(patched, got), content, style, cond, cond, progress=False,
                                 probe=lambda step, key, *_: probed.add((step, key)))
        zstar_sample(capture_attn1(unpatched, ref), content, style, cond, cond, progress=False)
    return dict(case, name=request.param, model=model, cond=cond, content=content, style=style, patched=patched,
                got=got, ref=ref, probed=probed, styled=styled)


def test_describe_names_the_architecture(arch):
    info = describe(arch["model"])
    assert info.arch == arch["name"]
    assert info.type_name == arch["type_name"]
    assert info.layer_keys == family(arch["name"]).layer_keys
    assert len(info.layer_keys) == {"sd2": 16, "sdxl": 70}[arch["name"]]
    assert arch["content"].arch == arch["name"]


def test_auto_patches_exactly_the_paper_equivalent_keys(arch):
    transformer_options = arch["patched"].model_options["transformer_options"]
    assert list(transformer_options["zstar"].keys) == arch["keys"]
    replaced = transformer_options["patches_replace"]["attn1"]
    assert sorted(k for k, p in replaced.items() if isinstance(p, ZStarAttn1)) == sorted(arch["keys"])
    # and those are the layers the sampler actually reweighted, on the window's steps only
    assert arch["probed"] == {(s, k) for s in range(START, STEPS) for k in arch["keys"]}


def test_outside_chosen_layers_and_steps_is_bit_identical(arch):
    got, ref = arch["got"], arch["ref"]
    assert got.keys() == ref.keys()
    order = [k for s, k in got if s == 0]  # execution order of the attn1 layers
    assert order == list(family(arch["name"]).layer_keys)
    first = arch["first_patched"]
    assert order[first] == arch["keys"][0]
    before_window = [(s, k) for (s, k) in got if s < START]
    assert len(before_window) == START * len(order)
    for key in before_window + [(START, k) for k in order[:first]]:
        assert torch.equal(got[key], ref[key]), key
    assert not torch.equal(got[(START, order[first])], ref[(START, order[first])])


def test_alongside_self_style_reproduces_plain_reconstruction(arch):
    """style = content, λ = λ_style = 1, anchor 0, style denoised alongside ⇒ plain DDIM."""
    model, cond, content = arch["model"], arch["cond"], arch["content"]
    plain = plain_reconstruction(model, content, cond)
    identity = patch_model(model, 1.0, 1.0, "auto", 0, STEPS)
    out, _ = zstar_sample(identity, content, content, cond, cond, 1.0, anchor=0.0, style_mode="alongside",
                          progress=False)
    err, moved = rel(out, plain), rel(arch["styled"], plain)
    print(f"\n{arch['name']}: alongside identity vs plain DDIM rel {err:.2e}; paper preset moves it by {moved:.2e}")
    assert err <= 1e-4
    assert moved > 1e-3


def test_sd2_v_prediction():
    """SD2.x 768-v: ComfyUI reads v prediction off the checkpoint (SD20.model_type); Z* runs it
    through the same DDIM on the denoised estimate."""
    model = models.sd2(seed=0, state_dict={"output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.linspace(-1, 1, 64)})
    sampling = model.get_model_object("model_sampling")
    assert isinstance(sampling, comfy.model_sampling.V_PREDICTION)
    assert describe(model).arch == "sd2"
    cond = models.cond(1, TOKENS)
    content = invert(model, 2, cond, STEPS)
    plain = plain_reconstruction(model, content, cond)
    out, _ = zstar_sample(patch_model(model, 1.0, 1.0, "auto", 0, STEPS), content, content, cond, cond, 1.0,
                          anchor=0.0, style_mode="alongside", progress=False)
    err = rel(out, plain)
    print(f"\nsd2 v-prediction: alongside identity vs plain DDIM rel {err:.2e}")
    assert err <= 1e-4


def test_other_transformers_are_refused_naming_them():
    """AuraFlow: an MMDiT-like transformer Z* has no adapter for, refused by name."""
    model = models.auraflow()
    with pytest.raises(ZStarError, match=r"and the Flux.1, Flux.2, Chroma, Qwen-Image, Z-Image, SD3.5 transformers; this MODEL is "
                       r"AuraFlow/AuraFlow.*\(MMDiT\)"):
        describe(model)


def test_video_unet_is_refused_naming_it():
    """Stable Video Diffusion: a U-Net with the SD2 attention layout, but a video model on a
    continuous EDM schedule — refused by name, not patched at SD2's places."""
    config = comfy.supported_models.SVD_img2vid({
        **models.SD2_LAYOUT, **models.SMALL, "in_channels": 8, "adm_in_channels": 768, "use_temporal_attention": True,
        "use_temporal_resblock": True, "extra_ff_mix_layer": True, "use_spatial_context": True,
        "merge_strategy": "learned_with_images", "merge_factor": 0.0, "video_kernel_size": [3, 1, 1],
        "disable_temporal_crossattention": False})
    model = models.patcher(config, load_device=models.CPU)
    with pytest.raises(ZStarError, match=r"SVD_img2vid/SVD_img2vid.* samples with ModelSamplingContinuousEDM"):
        describe(model)


def test_sdxl_edm_variant_is_refused_naming_it():
    """Playground v2.5 has SDXL's layout but an EDM schedule: no DDIM inversion on it."""
    model = models.sdxl(seed=0, state_dict={"edm_mean": torch.zeros(1, 4, 1, 1), "edm_std": torch.ones(1, 4, 1, 1)})
    with pytest.raises(ZStarError, match="SDXL/SDXL.*EDM|EDM.*SDXL/SDXL"):
        describe(model)
