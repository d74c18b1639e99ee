"""The rectified-flow model files of checkpoint.py through ComfyUI's stock loaders and nodes.

Chroma and Qwen-Image too: each random file of the real layout (UNETLoader) is detected as its
family by the host, samples one plain KSampler step, and runs Z* (flow inversion, patch, sampler).

ComfyUI must take each random file for the family it imitates, by its own detection: the Flux.1-dev
diffusion model (UNETLoader) as comfy.supported_models.Flux with the guidance embedding, the
SD3.5-Medium-like checkpoint (CheckpointLoaderSimple) as comfy.supported_models.SD3 with its MMDiT-X
blocks and 16-channel VAE, both on flow (CONST) sampling; the VAE (VAELoader) with 16 latent
channels; CLIP-L (CLIPLoader) as an SD1 text encoder. Then one plain KSampler step each, as a
workflow runs them: CLIPTextEncode → (FluxGuidance) → KSampler on EmptySD3LatentImage → VAEDecode.
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
from comfy.ldm.models.autoencoder import AutoencoderKL, AutoencodingEngine
from comfy_extras.nodes_flux import FluxGuidance
from comfy_extras.nodes_sd3 import EmptySD3LatentImage

import checkpoint
from zstar_fixtures import _inference_mode, one_step_zstar_nodes  # noqa: F401 (pytest fixture)

SIZE = 64  # pixels: an 8 × 8 latent, 4 × 4 patches


def out(result):
    """A node's outputs, from a classic node's tuple or a V3 node's NodeOutput."""
    return getattr(result, "args", result)


@pytest.fixture(scope="module")
def files():
    return {"diffusion_models": checkpoint.flux_diffusion_model(), "checkpoints": checkpoint.sd35_checkpoint(),
            "vae": checkpoint.flux_vae(), "text_encoders": checkpoint.clip_l()}


@pytest.fixture(scope="module")
def family_files(files):
    """The Chroma and Qwen-Image files, in the diffusion-model folder beside the Flux file."""
    paths = {"chroma": checkpoint.chroma_diffusion_model(), "qwen_image": checkpoint.qwen_image_diffusion_model()}
    assert {p.parent for p in paths.values()} == {files["diffusion_models"].parent}
    return paths


@pytest.fixture(scope="module")
def loaded(files):
    """Every file loaded by its stock loader node, from model folders that hold only the test files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(folder_paths, "filename_list_cache", {})
        for kind, path in files.items():
            mp.setitem(folder_paths.folder_names_and_paths, kind,
                       ([str(path.parent)], folder_paths.folder_names_and_paths[kind][1]))
        with torch.inference_mode():
            flux_clip_type = checkpoint.flux_text_encoder_type()
            models = {
                "flux": out(comfy_nodes.UNETLoader().load_unet(files["diffusion_models"].name, "default"))[0],
                "sd35": out(comfy_nodes.CheckpointLoaderSimple().load_checkpoint(files["checkpoints"].name)),
                "vae": out(comfy_nodes.VAELoader().load_vae(files["vae"].name))[0],
                "clip_l": out(comfy_nodes.CLIPLoader().load_clip(files["text_encoders"].name, "stable_diffusion"))[0],
                "flux_clip_type": flux_clip_type,
                "flux_clip": out(comfy_nodes.CLIPLoader().load_clip(files["text_encoders"].name, flux_clip_type))[0],
                # Chroma's T5-XXL width: CLIP-L zero-padded to 4096 by SD3's text encoder
                "sd3_clip": out(comfy_nodes.CLIPLoader().load_clip(files["text_encoders"].name, "sd3"))[0],
            }
    yield models
    models.clear()
    gc.collect()
    comfy.model_management.cleanup_models()


def test_file_sizes(files):
    """Small where detection lets them be: the SD3.5 checkpoint with its full-size VAE, 0.2 GB."""
    sizes = {kind: path.stat().st_size for kind, path in files.items()}
    assert sizes["checkpoints"] < 0.25e9 and sizes["diffusion_models"] < 1.2e9, sizes


def test_flux_detected_as_flux_dev(loaded):
    model = loaded["flux"].model
    assert type(model.model_config) is comfy.supported_models.Flux
    assert model.model_config.unet_config["guidance_embed"] is True
    assert isinstance(model.model_sampling, comfy.model_sampling.CONST)
    net = model.diffusion_model
    assert hasattr(net.guidance_in, "in_layer")  # the guidance embedding, not nn.Identity
    assert (net.hidden_size, net.num_heads) == (3072, 24)  # fixed by ComfyUI's Flux detection
    assert (len(net.double_blocks), len(net.single_blocks)) == (checkpoint.FLUX_DEPTH, checkpoint.FLUX_DEPTH_SINGLE)
    assert model.latent_format.latent_channels == 16
    # The text widths match what CLIP-L gives under flux_text_encoder_type() on this host.
    context, pooled = (768, 768) if loaded["flux_clip_type"] == "stable_diffusion" else (4096, 2048)
    assert net.txt_in.weight.shape[1] == context and net.vector_in.in_layer.weight.shape[1] == pooled


def test_sd35_detected_as_sd3_mmdit_x(loaded):
    patcher, clip, vae = loaded["sd35"]
    model = patcher.model
    assert type(model.model_config) is comfy.supported_models.SD3
    assert isinstance(model.model_sampling, comfy.model_sampling.CONST)
    assert model.model_config.unet_config["x_block_self_attn_layers"] == [0, 1]
    net = model.diffusion_model
    assert [i for i, block in enumerate(net.joint_blocks) if block.x_block.x_block_self_attn] == [0, 1]
    assert len(net.joint_blocks) == checkpoint.SD35_DEPTH and net.hidden_size == 64 * checkpoint.SD35_DEPTH
    assert net.context_embedder.in_features == 768 and net.y_embedder.mlp[0].in_features == 768
    assert model.latent_format.latent_channels == 16
    assert clip is None  # no text encoder in the checkpoint: CLIP-L comes from CLIPLoader
    assert vae.latent_channels == 16 and isinstance(vae.first_stage_model, AutoencodingEngine)


def test_vae_and_clip_l_detected(loaded):
    vae = loaded["vae"]
    assert vae.latent_channels == 16 and vae.downscale_ratio == 8
    assert isinstance(vae.first_stage_model, AutoencodingEngine) and not isinstance(vae.first_stage_model, AutoencoderKL)
    cond = out(comfy_nodes.CLIPTextEncode().encode(loaded["clip_l"], "a photo of a cat"))[0]
    assert cond[0][0].shape == (1, 77, 768) and cond[0][1]["pooled_output"].shape == (1, 768)


def sample_and_decode(model, clip, vae, cfg, guidance=None):
    positive = out(comfy_nodes.CLIPTextEncode().encode(clip, "a photo of a cat"))[0]
    negative = out(comfy_nodes.CLIPTextEncode().encode(clip, ""))[0]
    if guidance is not None:
        positive = out(FluxGuidance.execute(positive, guidance))[0]
    latent = out(EmptySD3LatentImage.execute(SIZE, SIZE, 1))[0]
    assert latent["samples"].shape == (1, 16, SIZE // 8, SIZE // 8)
    samples = out(comfy_nodes.KSampler().sample(model, 0, 1, cfg, "euler", "simple", positive, negative, latent, 1.0))[0]
    image = out(comfy_nodes.VAEDecode().decode(vae, samples))[0]
    assert torch.isfinite(samples["samples"]).all() and samples["samples"].std() > 0
    assert image.shape == (1, SIZE, SIZE, 3) and torch.isfinite(image).all()


def test_flux_samples(loaded):
    sample_and_decode(loaded["flux"], loaded["flux_clip"], loaded["vae"], cfg=1.0, guidance=3.5)


def test_sd35_samples(loaded):
    patcher, _, vae = loaded["sd35"]
    sample_and_decode(patcher, loaded["clip_l"], vae, cfg=2.0)


@pytest.fixture(scope="module")
def family_models(loaded, family_files):
    """Chroma and Qwen-Image as UNETLoader loads them (the folder is the one `loaded` points at)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(folder_paths, "filename_list_cache", {})
        mp.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                   ([str(family_files["chroma"].parent)], folder_paths.folder_names_and_paths["diffusion_models"][1]))
        with torch.inference_mode():
            found = {name: out(comfy_nodes.UNETLoader().load_unet(path.name, "default"))[0]
                     for name, path in family_files.items()}
    yield found
    found.clear()
    gc.collect()
    comfy.model_management.cleanup_models()


def test_family_files_detected_as_chroma_and_qwen_image(family_models):
    from comfyui_zstar.zstar_runtime.families import CHROMA, QWEN_IMAGE, describe

    chroma = family_models["chroma"]
    assert type(chroma.model.model_config) is comfy.supported_models.Chroma
    assert isinstance(chroma.model.model_sampling, comfy.model_sampling.CONST)
    net = chroma.model.diffusion_model
    assert (net.hidden_size, net.num_heads, len(net.double_blocks), len(net.single_blocks)) == (3072, 24, 1, 1)
    assert not hasattr(net, "guidance_in") and net.txt_in.weight.shape[1] == checkpoint.T5XXL_WIDTH
    info = describe(chroma)
    assert info.family is CHROMA and info.default_layers == "1-1" and not CHROMA.takes_guidance(chroma)
    qwen = family_models["qwen_image"]
    assert type(qwen.model.model_config) is comfy.supported_models.QwenImage
    assert isinstance(qwen.model.model_sampling, comfy.model_sampling.CONST)
    assert qwen.model.latent_format.latent_dimensions == 3  # Wan 2.1 latents: (B, 16, 1, H, W)
    net = qwen.model.diffusion_model
    assert (net.inner_dim, len(net.transformer_blocks), net.txt_in.weight.shape[1]) == (3072, 1, checkpoint.QWEN25_7B_WIDTH)
    info = describe(qwen)
    assert info.family is QWEN_IMAGE and info.default_layers == "0-0"


def qwen_conditioning(seed: int):
    """What Qwen-Image's text encoder (Qwen2.5-VL-7B, too big for this CPU) hands the sampler: 3584-wide tokens."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 8, checkpoint.QWEN25_7B_WIDTH, generator=gen), {}]]


def test_chroma_samples(loaded, family_models):
    sample_and_decode(family_models["chroma"], loaded["sd3_clip"], loaded["vae"], cfg=2.0)


def test_qwen_image_samples(family_models):
    latent = out(EmptySD3LatentImage.execute(SIZE, SIZE, 1))[0]
    samples = out(comfy_nodes.KSampler().sample(family_models["qwen_image"], 0, 1, 2.0, "euler", "simple",
                                                qwen_conditioning(1), qwen_conditioning(2), latent, 1.0))[0]
    assert samples["samples"].shape == (1, 16, 1, SIZE // 8, SIZE // 8)  # the host's one-frame latent
    assert torch.isfinite(samples["samples"]).all() and samples["samples"].std() > 0


@pytest.mark.parametrize("name", ["chroma", "qwen_image"])
def test_zstar_runs_on_the_loaded_file(loaded, family_models, name):
    """Z* Flow Inversion (content, style) → Z* Attention Patch → Z* Sampler on the stock-loaded file,
    one step (a Chroma call at the real width costs ~3 s on this CPU, most of it the approximator):
    a stylized latent of the content's shape, finite, and not what λ = 0 gives."""
    model = family_models[name]
    if name == "chroma":
        cond = out(comfy_nodes.CLIPTextEncode().encode(loaded["sd3_clip"], ""))[0]
        shape = (1, 16, SIZE // 8, SIZE // 8)
    else:
        cond = qwen_conditioning(1)
        shape = (1, 16, 1, SIZE // 8, SIZE // 8)
    gen = torch.Generator().manual_seed(0)
    content, style = ({"samples": torch.randn(shape, generator=gen)} for _ in range(2))
    runs = one_step_zstar_nodes(model, content, style, cond)
    assert runs[1.5].shape == shape and torch.isfinite(runs[1.5]).all()
    assert not torch.equal(runs[1.5], runs[0.0])
