"""Full-size SD1.5-layout checkpoint and SD1.5 ControlNet with random weights, for the server tests.

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

    python tests/comfy/checkpoint.py DIR   # writes both files into DIR (COMFYUI_PATH must be set)
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
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    if key.endswith(".weight"):  # GroupNorm / LayerNorm scales
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


if __name__ == "__main__":
    if not os.environ.get("COMFYUI_PATH") or len(sys.argv) != 2:
        sys.exit("usage: COMFYUI_PATH=/path/to/ComfyUI python tests/comfy/checkpoint.py OUTPUT_DIR")
    import harness  # noqa: F401  (ComfyUI on sys.path, in CPU mode without a GPU, as models.py needs)
    out = Path(sys.argv[1])
    print(sd15_checkpoint(out))
    print(sd15_controlnet(out))
