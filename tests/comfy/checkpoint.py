"""Random-weight model files in real layouts, for the tests that load them through ComfyUI's stock loaders.

Full-size SD1.5-layout checkpoint and SD1.5 ControlNet (server tests), plus rectified-flow
transformers kept small where ComfyUI's detection allows (see the second half of this file):
Flux.1-dev diffusion model, SD3.5-Medium-like (MMDiT-X) checkpoint, Flux/SD3 16-channel VAE and
a CLIP-L text encoder.

The key names and shapes come from ComfyUI's own model classes, built on the 'meta' device
(no memory, no download):
- U-Net: comfy's UNetModel with SD1.5's config (models.SD15_LAYOUT, the `SD15` entry of
  comfy/model_detection.py), under 'model.diffusion_model.';
- VAE: comfy's AutoencoderKL with SD's ddconfig (comfy/sd.py), under 'first_stage_model.';
- CLIP-L: comfy's SD1 text encoder, under 'cond_stage_model.transformer.text_model.';
- ControlNet: comfy/cldm/cldm.py's ControlNet with the same config and a 3-channel hint, under
  'control_model.' (the layout of lllyasviel's control_v11*_sd15 files).
Weights are seeded normals scaled by 1/sqrt(fan_in) (activations stay O(1)), norm weights ≈ 1,
biases ≈ 0, stored as fp16 .safetensors written tensor by tensor (low memory).

Files are cached in ZSTAR_TEST_CACHE (default: <repo>/.cache/test-models, git-ignored); the
file name carries a hash of the layout and the generator version, so a ComfyUI whose classes
change gets a fresh file. Needs ComfyUI on sys.path (tests/comfy/conftest.py puts it there).

    python tests/comfy/checkpoint.py DIR   # writes every file into DIR (COMFYUI_PATH must be set)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATOR_VERSION = 1
CACHE_DIR = Path(os.environ.get("ZSTAR_TEST_CACHE") or REPO / ".cache" / "test-models")

CHECKPOINT_NAME = "zstar_random_sd15.safetensors"
CONTROLNET_NAME = "zstar_random_sd15_controlnet.safetensors"

# comfy/sd.py, VAE: the ddconfig of SD1.x/SD2.x checkpoints.
SD_VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                   "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def _shapes(module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def sd15_checkpoint_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of an SD1.5 checkpoint, from ComfyUI's classes on the meta device."""
    import torch
    import comfy.ldm.models.autoencoder
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from models import SD15_LAYOUT

    ops = comfy.ops.disable_weight_init
    with torch.device("meta"):
        unet = UNetModel(**SD15_LAYOUT, operations=ops, device="meta")
        vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(SD_VAE_DDCONFIG), embed_dim=4)
        clip = comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float16)
    layout = {}
    layout.update({"model.diffusion_model." + k: s for k, s in _shapes(unet).items()})
    layout.update({"first_stage_model." + k: s for k, s in _shapes(vae).items()})
    # SD1.5 files carry only the text model (no text_projection / logit_scale).
    layout.update({"cond_stage_model." + k: s for k, s in _shapes(clip).items() if k.startswith("transformer.text_model.")})
    return layout


def sd15_controlnet_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of an SD1.5 ControlNet (.pth layout with the 'control_model.' prefix)."""
    import torch
    import comfy.cldm.cldm
    import comfy.ops

    from models import SD15_LAYOUT

    config = {k: v for k, v in SD15_LAYOUT.items() if k != "out_channels"}
    with torch.device("meta"):
        net = comfy.cldm.cldm.ControlNet(hint_channels=3, **config, operations=comfy.ops.disable_weight_init, device="meta")
    return {"control_model." + k: s for k, s in _shapes(net).items()}


def _layout_hash(layout: dict) -> str:
    text = json.dumps([GENERATOR_VERSION, sorted((k, list(s)) for k, s in layout.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def random_tensor(key: str, shape: tuple[int, ...], seed: int):
    """The value written for `key`: seeded per key, so the file does not depend on key order."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + int(hashlib.md5(key.encode()).hexdigest()[:8], 16))
    if key.endswith("pos_embed"):  # MMDiT's position table (sin-cos in real files): entries of size O(1)
        return 0.7 * torch.randn(shape, generator=gen)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    if key.endswith((".weight", ".scale")):  # GroupNorm / LayerNorm / RMSNorm scales (Flux: '.scale')
        return 1.0 + 0.05 * torch.randn(shape, generator=gen)
    return 0.01 * torch.randn(shape, generator=gen)  # biases


def write_safetensors(layout: dict[str, tuple[int, ...]], path: Path, seed: int, metadata: dict | None = None):
    """Write fp16 random tensors as .safetensors, one tensor at a time (peak memory: one tensor)."""
    import torch

    header, offset = {}, 0
    for key, shape in layout.items():
        size = 2 * math.prod(shape)
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for key, shape in layout.items():
            t = random_tensor(key, shape, seed).to(torch.float16).contiguous()
            f.write(t.numpy().tobytes())
    os.replace(tmp, path)  # atomic: a half-written file is never picked up


def _cached(name: str, layout: dict, seed: int, directory: Path | None) -> Path:
    directory = Path(directory or CACHE_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    stem, ext = os.path.splitext(name)
    path = directory / f"{stem}-{_layout_hash(layout)}-s{seed}{ext}"
    if not path.is_file():
        write_safetensors(layout, path, seed, {"zstar_test": "random weights, not a trained model"})
    return path


def sd15_checkpoint(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random SD1.5 checkpoint (~2.1 GB fp16), generated on first use."""
    return _cached(CHECKPOINT_NAME, sd15_checkpoint_layout(), seed, directory)


def sd15_controlnet(directory: Path | None = None, seed: int = 1) -> Path:
    """Path of the cached random SD1.5 ControlNet (~0.7 GB fp16), generated on first use."""
    return _cached(CONTROLNET_NAME, sd15_controlnet_layout(), seed, directory)


# --- Rectified-flow transformers (Flux.1-dev, SD3.5 Medium), their VAE and CLIP-L ----------------
#
# These files are what ComfyUI's stock loaders take: UNETLoader (Flux), CheckpointLoaderSimple (the
# SD3.5 checkpoint: model + VAE, no text encoder), VAELoader (the 16-channel VAE) and CLIPLoader
# (CLIP-L). Each layout is built from ComfyUI's own classes on the meta device and checked against
# ComfyUI's own detection (comfy/model_detection.py) before anything is written, so a host that
# would not take the file fails here, with the reason, rather than in the loader.
#
# Widths: detection reads most sizes from the tensors' shapes, which lets the transformers be small;
# what it does not read it fixes, and the file must then use the real size:
# - Flux: every host fixes 24 heads and rope axes (16, 56, 56), so the width is 24 × 128 = 3072, as
#   in flux1-dev; the file is small by depth (1 double + 1 single block, real: 19 + 38). Hosts that
#   read the text width from txt_in (ComfyUI 0.8) get context_in_dim = vec_in_dim = 768, so CLIP-L
#   alone conditions it (CLIPLoader type "stable_diffusion"); ComfyUI 0.3.x fixes context_in_dim at
#   T5-XXL's 4096, so there the file has vec_in_dim 2048 and CLIP-L conditions it through SD3's text
#   encoder (CLIPLoader type "sd3": CLIP-L zero-padded to 4096, pooled 768 + 1280 zeros). See
#   flux_text_encoder_type().
# - SD3.5 (MMDiT): width = 64 × depth and heads = depth, both read from the shapes; depth 4 here
#   (real: 24), MMDiT-X self-attention on blocks 0 and 1 (real: 0-12), qk RMSNorm as in SD3.5.

CLIP_L_WIDTH = 768
FLUX_NAME = "zstar_random_flux1_dev.safetensors"
SD35_NAME = "zstar_random_sd35m.safetensors"
FLUX_VAE_NAME = "zstar_random_flux_ae.safetensors"
CLIP_L_NAME = "zstar_random_clip_l.safetensors"
CHROMA_NAME = "zstar_random_chroma.safetensors"
QWEN_IMAGE_NAME = "zstar_random_qwen_image.safetensors"
FLUX2_NAME = "zstar_random_flux2_klein.safetensors"
Z_IMAGE_NAME = "zstar_random_z_image.safetensors"
T5XXL_WIDTH, QWEN25_7B_WIDTH = 4096, 3584  # the text widths Chroma and Qwen-Image are conditioned with
QWEN3_4B_WIDTH = 2560  # Qwen3-4B's hidden width: Z-Image reads its last layer, Flux.2 Klein 4B three layers (7680)
Z_IMAGE_WIDTH = 30 * 128  # ComfyUI tells Z-Image from Lumina 2 by this width (3840, 30 heads)

# Flux.1-dev at depth 1 + 1 (the guidance embedding present, so ComfyUI takes it for dev, not schnell).
FLUX_DEPTH, FLUX_DEPTH_SINGLE = 1, 1
# ComfyUI's Flux detection fixes the heads (24) and the rope axes (16 + 56 + 56 = 128 per head).
FLUX_WIDTH = 24 * 128
# SD3.5-Medium-like MMDiT-X, as comfy/model_detection.py reports an SD3.5 Medium file (minus the sizes).
SD35_DEPTH = 4  # width 64 × 4 = 256, 4 heads of 64
SD35_LAYOUT = {
    "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": SD35_DEPTH, "input_size": None,
    "adm_in_channels": CLIP_L_WIDTH,
    "context_embedder_config": {"target": "torch.nn.Linear",
                                "params": {"in_features": CLIP_L_WIDTH, "out_features": 64 * SD35_DEPTH}},
    "num_patches": 64 * 64, "pos_embed_max_size": 64,  # up to 1024 × 1024 pixels (real: 384, 6144 px)
    "qk_norm": "rms", "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [0, 1],
}
# comfy/sd.py, VAE: a 16-channel AutoencodingEngine (Flux's ae.safetensors, SD3's VAE): no quant convs.
FLUX_VAE_DDCONFIG = {**SD_VAE_DDCONFIG, "z_channels": 16}


def _meta_state_dict(layout: dict[str, tuple[int, ...]]):
    import torch

    return {k: torch.empty(s, dtype=torch.float16, device="meta") for k, s in layout.items()}


def detected_model_config(layout: dict[str, tuple[int, ...]], prefix: str = ""):
    """What this host's ComfyUI makes of a diffusion model with these keys and shapes (its keys
    under `prefix`): the supported_models config object (its .unet_config is detect_unet_config's
    result), or None."""
    import comfy.model_detection

    sd = _meta_state_dict(layout)
    unet_config = comfy.model_detection.detect_unet_config(sd, prefix)
    if unet_config is None:
        return None
    return comfy.model_detection.model_config_from_unet_config(unet_config, sd)


def _expect_detected(layout, prefix: str, config_cls, unet_config: dict, what: str):
    found = detected_model_config(layout, prefix)
    if type(found) is not config_cls:
        raise RuntimeError(f"{what}: this ComfyUI detects {type(found).__name__ if found else 'nothing'}, "
                           f"not {config_cls.__name__}")
    differ = {k: (v, found.unet_config.get(k)) for k, v in unet_config.items() if found.unet_config.get(k) != v}
    if differ:
        raise RuntimeError(f"{what}: this ComfyUI reads other sizes from the file ((written, read): {differ})")


def flux_unet_config() -> dict:
    """The Flux.1-dev config this host detects for the small Flux file: what detect_unet_config
    returns for the keys it reads (img_in, txt_in, vector_in, guidance_in, block counts)."""
    import comfy.model_detection

    def detect(vec_in_dim):
        probe = {"img_in.weight": (FLUX_WIDTH, 16 * 2 * 2),  # 16 latent channels, 2x2 patches
                 "txt_in.weight": (FLUX_WIDTH, CLIP_L_WIDTH),
                 "vector_in.in_layer.weight": (FLUX_WIDTH, vec_in_dim),
                 "guidance_in.in_layer.weight": (FLUX_WIDTH, 256)}
        probe.update({f"double_blocks.{i}.img_attn.norm.key_norm.scale": (128,) for i in range(FLUX_DEPTH)})
        probe.update({f"single_blocks.{i}.norm.key_norm.scale": (128,) for i in range(FLUX_DEPTH_SINGLE)})
        return comfy.model_detection.detect_unet_config(_meta_state_dict(probe), "")

    config = detect(CLIP_L_WIDTH)
    if config["context_in_dim"] != CLIP_L_WIDTH:
        # This host fixes the text width at T5-XXL's 4096 (ComfyUI 0.3.x): take CLIP-L through SD3's
        # text encoder, whose pooled output is CLIP-L's and CLIP-G's (zeros) concatenated.
        config = detect(CLIP_L_WIDTH + 1280)
    if config["hidden_size"] != config["num_heads"] * sum(config["axes_dim"]):
        raise RuntimeError(f"Flux: this ComfyUI's detection gives inconsistent widths: {config}")
    return config


def flux_text_encoder_type() -> str:
    """The CLIPLoader `type` under which CLIP-L conditions this host's Flux file: "stable_diffusion"
    (context 77 × 768, pooled 768) where the file reads context_in_dim 768, else "sd3"."""
    return "stable_diffusion" if flux_unet_config()["context_in_dim"] == CLIP_L_WIDTH else "sd3"


def flux_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of a Flux.1-dev diffusion model file (flux1-dev.safetensors' keys, no prefix)."""
    import torch
    import comfy.ldm.flux.model
    import comfy.ops
    import comfy.supported_models

    return _checked_layout(comfy.ldm.flux.model.Flux, flux_unet_config(), comfy.supported_models.Flux, "Flux file")


def sd35_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of the small SD3.5-Medium-like MMDiT-X, no prefix."""
    import torch
    import comfy.ops
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper

    with torch.device("meta"):
        net = OpenAISignatureMMDITWrapper(**SD35_LAYOUT, operations=comfy.ops.disable_weight_init, device="meta")
    layout = _shapes(net)
    _expect_detected(layout, "", comfy.supported_models.SD3, SD35_LAYOUT, "SD3.5 model")
    return layout


def _detected_config(probe: dict[str, tuple[int, ...]], image_model: str) -> dict:
    """detect_unet_config's result for the few keys it reads (a probe), checked to name `image_model`."""
    import comfy.model_detection

    config = comfy.model_detection.detect_unet_config(_meta_state_dict(probe), "")
    if config is None or config.get("image_model") != image_model:
        raise RuntimeError(f"{image_model}: this ComfyUI detects {config and config.get('image_model')} for the probe")
    return config


def _checked_layout(network_cls, config: dict, config_cls, what: str) -> dict[str, tuple[int, ...]]:
    """{key: shape} of `network_cls(**config)` built on the meta device, after checking that this
    host's detection takes those keys as `config_cls` with `config`'s sizes."""
    import torch
    import comfy.ops

    with torch.device("meta"):
        net = network_cls(**config, operations=comfy.ops.disable_weight_init, device="meta")
    layout = _shapes(net)
    _expect_detected(layout, "", config_cls, config, what)
    return layout


def chroma_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of a Chroma diffusion model (Chroma1-HD's keys, no prefix): 1 double + 1 single
    block (real: 19 + 38) at the width every host fixes (24 heads × 128 = 3072, the approximator's
    5 layers of 5120), text width T5-XXL's 4096 (CLIP-L through CLIPLoader "sd3" pads to it)."""
    import torch
    import comfy.ldm.chroma.model
    import comfy.ops
    import comfy.supported_models

    probe = {"img_in.weight": (FLUX_WIDTH, 64), "txt_in.weight": (FLUX_WIDTH, T5XXL_WIDTH),
             "distilled_guidance_layer.norms.0.scale": (5120,),
             "double_blocks.0.img_attn.norm.key_norm.scale": (128,), "single_blocks.0.norm.key_norm.scale": (128,)}
    config = _detected_config(probe, "chroma")
    return _checked_layout(comfy.ldm.chroma.model.Chroma, config, comfy.supported_models.Chroma, "Chroma file")


def qwen_image_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of a Qwen-Image diffusion model (qwen_image's keys, no prefix): 1 block (real:
    60) at the widths every host fixes (24 heads × 128 = 3072, text 3584 from Qwen2.5-VL-7B)."""
    import torch
    import comfy.ldm.qwen_image.model
    import comfy.ops
    import comfy.supported_models

    probe = {"txt_norm.weight": (QWEN25_7B_WIDTH,), "img_in.weight": (FLUX_WIDTH, 64),
             "transformer_blocks.0.attn.to_q.weight": (FLUX_WIDTH, FLUX_WIDTH)}
    config = _detected_config(probe, "qwen_image")
    return _checked_layout(comfy.ldm.qwen_image.model.QwenImageTransformer2DModel, config,
                           comfy.supported_models.QwenImage, "Qwen-Image file")


def flux2_layout() -> dict[str, tuple[int, ...]] | None:
    """{key: shape} of a Flux.2 Klein 4B diffusion model (flux-2-klein-4b's keys, no prefix): 1 double +
    1 single block (real: 5 + 20) at 24 heads × 128 = 3072, text 3 × 2560 from Qwen3-4B, no guidance
    embedding; or None on a host whose detection fixes Flux.2's heads at dev's 48 (ComfyUI 0.8.0:
    it takes a 3072-wide file for 48 heads of 64, which its rotary axes of 128 refuse), where only a
    6144-wide dev file (3 GB even at one block each) would load."""
    import comfy.ldm.flux.model
    import comfy.supported_models

    probe = {"img_in.weight": (FLUX_WIDTH, 128), "txt_in.weight": (FLUX_WIDTH, 3 * QWEN3_4B_WIDTH),
             "double_stream_modulation_img.lin.weight": (6 * FLUX_WIDTH, FLUX_WIDTH),
             "double_blocks.0.img_attn.norm.key_norm.scale": (128,), "single_blocks.0.norm.key_norm.scale": (128,)}
    config = _detected_config(probe, "flux2")
    if config["hidden_size"] != config["num_heads"] * sum(config["axes_dim"]):
        return None
    return _checked_layout(comfy.ldm.flux.model.Flux, config, comfy.supported_models.Flux2, "Flux.2 file")


def z_image_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of a Z-Image diffusion model (z_image_turbo's keys, no prefix): 1 numbered layer
    (real: 30) beside the 2 + 2 refiner layers every host builds, at the width that makes it Z-Image
    (3840 in 30 heads), caption width Qwen3-4B's 2560, the pad tokens of Turbo."""
    import comfy.ldm.lumina.model
    import comfy.supported_models

    probe = {"cap_embedder.1.weight": (Z_IMAGE_WIDTH, QWEN3_4B_WIDTH), "cap_pad_token": (1, Z_IMAGE_WIDTH),
             "noise_refiner.0.attention.k_norm.weight": (128,),
             "layers.0.attention.qkv.weight": (3 * Z_IMAGE_WIDTH, Z_IMAGE_WIDTH)}
    config = _detected_config(probe, "lumina2")
    return _checked_layout(comfy.ldm.lumina.model.NextDiT, config, comfy.supported_models.ZImage, "Z-Image file")


def flux2_diffusion_model(directory: Path | None = None, seed: int = 0) -> Path | None:
    """Path of the cached random Flux.2 Klein diffusion model (flux2_layout; ~1.1 GB fp16) for
    UNETLoader, or None where this host cannot load a Klein-sized Flux.2 (see flux2_layout). No text
    encoder of its width runs here (Qwen3-4B): condition it with tensors of that width."""
    layout = flux2_layout()
    return None if layout is None else _cached(FLUX2_NAME, layout, seed, directory)


def z_image_diffusion_model(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random Z-Image diffusion model (z_image_layout; ~1.8 GB fp16) for UNETLoader;
    condition it with tensors of Qwen3-4B's width (its text encoder cannot run here)."""
    return _cached(Z_IMAGE_NAME, z_image_layout(), seed, directory)


def chroma_diffusion_model(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random Chroma diffusion model (chroma_layout; ~1.3 GB fp16) for UNETLoader;
    condition it with clip_l() loaded as CLIPLoader type "sd3" (77 × 4096)."""
    return _cached(CHROMA_NAME, chroma_layout(), seed, directory)


def qwen_image_diffusion_model(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random Qwen-Image diffusion model (qwen_image_layout; ~0.8 GB fp16) for
    UNETLoader. No text encoder of its 3584 width can run here (Qwen2.5-VL-7B): condition it with
    tensors of that width."""
    return _cached(QWEN_IMAGE_NAME, qwen_image_layout(), seed, directory)


def flux_vae_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of a 16-channel Flux / SD3 VAE (ae.safetensors' keys: encoder.*, decoder.*)."""
    import torch
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    with torch.device("meta"):
        vae = AutoencodingEngine(
            regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
            encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": dict(FLUX_VAE_DDCONFIG)},
            decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": dict(FLUX_VAE_DDCONFIG)})
    return _shapes(vae)


def sd35_checkpoint_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of the SD3.5 checkpoint: the MMDiT-X under 'model.diffusion_model.', the
    16-channel VAE under 'first_stage_model.', no text encoders (condition it with clip_l())."""
    import comfy.supported_models

    layout = {"model.diffusion_model." + k: s for k, s in sd35_layout().items()}
    layout.update({"first_stage_model." + k: s for k, s in flux_vae_layout().items()})
    _expect_detected(layout, "model.diffusion_model.", comfy.supported_models.SD3, SD35_LAYOUT, "SD3.5 checkpoint")
    return layout


def clip_l_layout() -> dict[str, tuple[int, ...]]:
    """{key: shape} of clip_l.safetensors: comfy's SD1 text encoder, keys text_model.* and text_projection.weight."""
    import torch
    import comfy.sd1_clip

    with torch.device("meta"):
        clip = comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float16)
    prefix = "transformer."
    return {k[len(prefix):]: s for k, s in _shapes(clip).items() if k.startswith(prefix)}


def flux_diffusion_model(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random Flux.1-dev diffusion model (1 double + 1 single block at width
    3072, guidance embedding; ~1.1 GB fp16) for UNETLoader. Its text width depends on the host:
    condition it with clip_l() loaded as flux_text_encoder_type()."""
    return _cached(FLUX_NAME, flux_layout(), seed, directory)


def sd35_checkpoint(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random SD3.5-Medium-like checkpoint (MMDiT-X depth 4, width 256, plus the
    16-channel VAE; ~0.2 GB fp16) for CheckpointLoaderSimple, which gives no CLIP for it:
    condition it with clip_l() loaded as CLIPLoader type "stable_diffusion"."""
    return _cached(SD35_NAME, sd35_checkpoint_layout(), seed, directory)


def flux_vae(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random 16-channel Flux/SD3 VAE (~0.17 GB fp16) for VAELoader."""
    return _cached(FLUX_VAE_NAME, flux_vae_layout(), seed, directory)


def clip_l(directory: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached random CLIP-L text encoder (~0.25 GB fp16) for CLIPLoader."""
    return _cached(CLIP_L_NAME, clip_l_layout(), seed, directory)


if __name__ == "__main__":
    if not os.environ.get("COMFYUI_PATH") or len(sys.argv) != 2:
        sys.exit("usage: COMFYUI_PATH=/path/to/ComfyUI python tests/comfy/checkpoint.py OUTPUT_DIR")
    import harness  # noqa: F401  (ComfyUI on sys.path, in CPU mode without a GPU, as models.py needs)
    out = Path(sys.argv[1])
    for make in (sd15_checkpoint, sd15_controlnet, flux_diffusion_model, sd35_checkpoint, flux_vae, clip_l):
        print(make(out))
