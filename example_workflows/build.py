#!/usr/bin/env python3
"""Builds the example workflows: each graph is described once below and written as

    example_workflows/<name>.json       UI format (what ComfyUI's frontend saves and its templates menu opens)
    example_workflows/<name>.jpg        card image for the templates menu (a diagram of the graph)
    example_workflows/api/<name>.json   API format (what POST /prompt and scripts/zstar_batch.py take)

so the two formats never drift. Run it after changing a graph:

    python example_workflows/build.py            # rewrite the files
    python example_workflows/build.py --check    # exit 1 if a committed .json differs from what it would write

Needs only the standard library (Pillow too for the thumbnails, which ComfyUI already has).
ComfyUI lists a node pack's `example_workflows/*.json` (one level deep; the folder name every
host since 0.3 accepts without a rename warning) in its templates menu and serves the folder
statically, `<name>.jpg` being the card image; the API twins live in `api/` so the menu does
not list them. The pack's nodes carry the node-pack identity (`cnr_id`, `ver`) that newer
frontends read to tell a user which pack a missing node comes from. The two formats and the
nodes' inputs and outputs (mirroring ComfyUI's /object_info, which the ComfyUI test tier checks
against running servers) are in workflow_format.py, the card images in workflow_thumbnails.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # the graph format and the card images live beside this script
    sys.path.insert(0, str(HERE))

from workflow_format import Graph, Node, Out  # noqa: E402
from workflow_thumbnails import thumbnail  # noqa: E402


SD15_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
SD15_URL = ("https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
            "v1-5-pruned-emaonly-fp16.safetensors?download=true")
CANNY_CONTROLNET = "control_v11p_sd15_canny_fp16.safetensors"
CANNY_URL = ("https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/"
             "control_v11p_sd15_canny_fp16.safetensors?download=true")
# Flux.1-dev and SD3.5 Medium: the files ComfyUI's own templates and examples load for these families.
FLUX_MODEL = "flux1-dev.safetensors"
FLUX_URL = "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors"
FLUX_VAE = "ae.safetensors"
FLUX_VAE_URL = "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors"
CLIP_L = "clip_l.safetensors"
CLIP_L_URL = "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"
T5XXL = "t5xxl_fp16.safetensors"
T5XXL_URL = "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"
CLIP_G = "clip_g.safetensors"
CLIP_G_URL = "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/text_encoders/clip_g.safetensors"
SD35_CHECKPOINT = "sd3.5_medium.safetensors"
SD35_URL = "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/resolve/main/sd3.5_medium.safetensors"
# Chroma and Qwen-Image: the files their ComfyUI templates load (Chroma1-HD: lodestones' release,
# with Flux's T5-XXL and VAE; Qwen-Image: Comfy-Org's repackaged split files)
CHROMA_MODEL = "Chroma1-HD.safetensors"
CHROMA_URL = "https://huggingface.co/lodestones/Chroma1-HD/resolve/main/Chroma1-HD.safetensors"
QWEN_REPO = "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/"
QWEN_MODEL = "qwen_image_fp8_e4m3fn.safetensors"
QWEN_URL = QWEN_REPO + "diffusion_models/" + QWEN_MODEL
QWEN_TEXT = "qwen_2.5_vl_7b_fp8_scaled.safetensors"
QWEN_TEXT_URL = QWEN_REPO + "text_encoders/" + QWEN_TEXT
QWEN_VAE = "qwen_image_vae.safetensors"
QWEN_VAE_URL = QWEN_REPO + "vae/" + QWEN_VAE
QWEN_SHIFT = 3.1  # ComfyUI's Qwen-Image template: ModelSamplingAuraFlow shift 3.1
# Flux.2 dev and Z-Image Turbo: the files of ComfyUI's own templates (image_flux2_text_to_image,
# image_z_image_turbo); Z-Image's VAE is Flux.1's ae.safetensors
FLUX2_REPO = "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/"
FLUX2_MODEL = "flux2_dev_fp8mixed.safetensors"
FLUX2_URL = FLUX2_REPO + "diffusion_models/" + FLUX2_MODEL
FLUX2_TEXT = "mistral_3_small_flux2_bf16.safetensors"
FLUX2_TEXT_URL = FLUX2_REPO + "text_encoders/" + FLUX2_TEXT
FLUX2_VAE = "flux2-vae.safetensors"
FLUX2_VAE_URL = FLUX2_REPO + "vae/" + FLUX2_VAE
FLUX2_GUIDANCE = 4.0  # ComfyUI's Flux.2 template: FluxGuidance 4
Z_IMAGE_REPO = "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/"
Z_IMAGE_MODEL = "z_image_turbo_bf16.safetensors"
Z_IMAGE_URL = Z_IMAGE_REPO + "diffusion_models/" + Z_IMAGE_MODEL
Z_IMAGE_TEXT = "qwen_3_4b.safetensors"
Z_IMAGE_TEXT_URL = Z_IMAGE_REPO + "text_encoders/" + Z_IMAGE_TEXT
Z_IMAGE_VAE_URL = Z_IMAGE_REPO + "vae/" + FLUX_VAE
Z_IMAGE_SHIFT = 3.0  # ComfyUI's Z-Image Turbo template: ModelSamplingAuraFlow shift 3
EXAMPLE_IMAGE = "example.png"  # ships in ComfyUI/input, so a fresh install can run the graph as is

def paper_preset():
    """zstar_attention/presets.py's PAPER_PRESET, loaded by file path: the package's __init__
    imports torch, and this script needs only the standard library."""
    name = "zstar_workflows_presets"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "zstar_attention" / "presets.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name].PAPER_PRESET


# The paper preset as widget values. layers "auto" is the preset's layers on SD1.5 (10-15) and
# their equivalent on SD2.x/SDXL; the sampler runs CFG 1 with the empty prompt and replays the
# style branch, as the authors' code does.
PRESET = paper_preset()
PAPER = {"steps": PRESET.steps, "style_strength": PRESET.style_scale, "style_self_strength": PRESET.style_self_scale,
         "layers": "auto", "start_step": PRESET.start_step, "end_step": PRESET.end_step, "cfg": 1.0,
         "content_anchor": PRESET.anchor, "style_mode": "replay", "style_positions": "auto",
         "solver": "euler", "guidance": 1.0}


# --------------------------------------------------------------------------- the graphs

NOTE_COLOR = ("#432", "#653")
LOADER_COLOR = ("#322", "#533")


def common(g: Graph, note: str):
    """Checkpoint, empty prompt, style image; returns the pieces every Z* graph shares."""
    g.add("MarkdownNote", -1.35, 0, color=NOTE_COLOR, text=note)
    ckpt = g.add("CheckpointLoaderSimple", 0, 0, title="Load Checkpoint (SD1.5)", color=LOADER_COLOR,
                 models=[{"name": SD15_CHECKPOINT, "url": SD15_URL, "directory": "checkpoints"}],
                 ckpt_name=SD15_CHECKPOINT)
    empty = g.add("CLIPTextEncode", 1, 0.9, title="Empty prompt", clip=ckpt.out("CLIP"), text="")
    return ckpt, empty


def scale(g: Graph, image: Out, col, row, title) -> Node:
    return g.add("ImageScale", col, row, title=title, image=image, upscale_method="lanczos",
                 width=512, height=512, crop="center")


def content_and_style(g: Graph) -> tuple[Node, Node]:
    """Content and style Load Image, each scaled to 512×512: returns the two Scale nodes."""
    content = g.add("LoadImage", 0, 2.3, title="Content image", image=EXAMPLE_IMAGE)
    style = g.add("LoadImage", 0, 4.6, title="Style image", image=EXAMPLE_IMAGE)
    return (scale(g, content.out("IMAGE"), 1, 2.3, "Scale content"),
            scale(g, style.out("IMAGE"), 1, 4.6, "Scale style"))


def zstar_core(g: Graph, ckpt: Node, empty: Node, content_pixels: Out, style_pixels: Out,
               positive: Out, negative: Out) -> Node:
    """VAE Encode ×2 → inversions ×2 → patch → sampler → decode → save."""
    enc_c = g.add("VAEEncode", 2, 2.3, title="VAE Encode (content)", pixels=content_pixels, vae=ckpt.out("VAE"))
    enc_s = g.add("VAEEncode", 2, 4.6, title="VAE Encode (style)", pixels=style_pixels, vae=ckpt.out("VAE"))
    inv_c = g.add("ZStarDDIMInversion", 3, 2.3, title="Z* DDIM Inversion (content)", model=ckpt.out("MODEL"),
                  latent=enc_c.out("LATENT"), conditioning=empty.out("CONDITIONING"), steps=PAPER["steps"])
    inv_s = g.add("ZStarDDIMInversion", 3, 4.6, title="Z* DDIM Inversion (style)", model=ckpt.out("MODEL"),
                  latent=enc_s.out("LATENT"), conditioning=empty.out("CONDITIONING"), steps=PAPER["steps"])
    return sample_and_save(g, ckpt, inv_c, inv_s.out("inversion"), positive, negative)


def attention_patch(g: Graph, model: Out) -> Node:
    """Z* Attention Patch on a MODEL, paper preset."""
    return g.add("ZStarAttentionPatch", 3, 0.0, title="Z* Attention Patch", model=model,
                 **{k: PAPER[k] for k in ("style_strength", "style_self_strength", "layers", "start_step", "end_step",
                                          "style_positions")})


def sampler_decode_save(g: Graph, vae: Out, patch: Node, content: Node, style: Out, positive: Out, negative: Out,
                        at: tuple, decode_at: tuple, save_at: tuple, suffix: str = "", node_type: str = "ZStarSampler",
                        title: str = "Z* Sampler", **extra) -> Node:
    """A Z* sampler (or style map) on the patched model, paper preset → VAE Decode → Save Image;
    `extra`: the mask link or the map's widgets; `suffix` numbers the titles of repeated rows."""
    sampler = g.add(node_type, *at, title=title + suffix, model=patch.out("MODEL"), content=content.out("inversion"),
                    style=style, positive=positive, negative=negative,
                    **{k: PAPER[k] for k in ("cfg", "content_anchor", "style_mode")}, **extra)
    decode = g.add("VAEDecode", *decode_at, title="VAE Decode" + suffix, samples=sampler.out("stylized"), vae=vae)
    g.add("SaveImage", *save_at, title="Save Image" + suffix, images=decode.out("IMAGE"), filename_prefix="zstar/zstar")
    return sampler


def sample_and_save(g: Graph, ckpt: Node, content: Node, style: Out, positive: Out, negative: Out, col: float = 4,
                    **kwargs) -> Node:
    """Patch → sampler (or style map) in column `col` → decode → save."""
    return sampler_decode_save(g, ckpt.out("VAE"), attention_patch(g, ckpt.out("MODEL")), content, style, positive, negative,
                               at=(col, 1.4), decode_at=(col + 1, 0.0), save_at=(col + 1, 0.8), **kwargs)


def basic() -> Graph:
    g = Graph("zstar_basic", "Z* style transfer: one content image in the style of one style image (paper preset)")
    ckpt, empty = common(g, (
        "## Z* style transfer (paper preset)\n\n"
        "1. **Load Checkpoint**: an SD1.5 model ([v1-5-pruned-emaonly-fp16]({url}) in `models/checkpoints`).\n"
        "2. **Content image**: your photo. **Style image**: the painting whose style you want.\n"
        "3. Queue. Both images are DDIM-inverted; while the content is denoised again, the last six "
        "self-attention layers let it look at the style's keys and values, style logits × λ.\n\n"
        "**Stronger style**: raise `style_strength` (λ, 1.2 → 1.4). **More of the photo**: lower it "
        "(1.0–1.1) or raise `content_anchor`. Both images are cropped to 512×512; change both Scale "
        "nodes together (sizes must match).").format(url=SD15_URL))
    sc, ss = content_and_style(g)
    zstar_core(g, ckpt, empty, sc.out("IMAGE"), ss.out("IMAGE"), empty.out("CONDITIONING"), empty.out("CONDITIONING"))
    return g


def controlnet() -> Graph:
    g = Graph("zstar_controlnet", "Z* style transfer with a Canny ControlNet on the content: the structure is kept harder")
    ckpt, empty = common(g, (
        "## Z* + ControlNet (structure kept harder)\n\n"
        "The basic Z* graph plus a Canny ControlNet fed with the content's edges. It guides the content "
        "branch only (the style branch replays its inversion untouched), so outlines stay put while the "
        "texture and colour come from the style.\n\n"
        "Models: SD1.5 in `models/checkpoints`, [control_v11p_sd15_canny_fp16]({url}) in `models/controlnet`.\n\n"
        "`strength` 0.5–1.0: higher keeps edges harder but fights the style; lower the Canny thresholds "
        "for more edges.").format(url=CANNY_URL))
    sc, ss = content_and_style(g)
    canny = g.add("Canny", 1, 3.4, title="Canny (content edges)", image=sc.out("IMAGE"),
                  low_threshold=0.4, high_threshold=0.8)
    cn = g.add("ControlNetLoader", 1, 0, title="Load ControlNet (canny)", color=LOADER_COLOR,
               models=[{"name": CANNY_CONTROLNET, "url": CANNY_URL, "directory": "controlnet"}],
               control_net_name=CANNY_CONTROLNET)
    apply = g.add("ControlNetApplyAdvanced", 2, 0, title="Apply ControlNet (content)",
                  positive=empty.out("CONDITIONING"), negative=empty.out("CONDITIONING"),
                  control_net=cn.out("CONTROL_NET"), image=canny.out("IMAGE"),
                  strength=0.8, start_percent=0.0, end_percent=1.0)
    zstar_core(g, ckpt, empty, sc.out("IMAGE"), ss.out("IMAGE"), apply.out("positive"), apply.out("negative"))
    return g


def batch() -> Graph:
    g = Graph("zstar_batch", "Z* style transfer of several content images in one style, in one run")
    ckpt, empty = common(g, (
        "## Z*: several contents in one style\n\n"
        "Three content images are stylized by the same style in one run: the style is inverted "
        "once and every Z* Sampler reads that inversion (ComfyUI keeps it in its cache for the "
        "next run too). Each content keeps its own size. Add more by copying a content row "
        "(Load Image → Scale → VAE Encode → Z* DDIM Inversion → Z* Sampler → VAE Decode → Save).\n\n"
        "For folders of images, use `scripts/zstar_batch.py` (every content × every style)."))
    patch = attention_patch(g, ckpt.out("MODEL"))
    style = g.add("LoadImage", 0, 9.2, title="Style image", image=EXAMPLE_IMAGE)
    inv_s = encode_invert(g, ckpt, empty, scale(g, style.out("IMAGE"), 1, 9.2, "Scale style").out("IMAGE"), 9.2, "style")
    for i in range(1, 4):
        row = 2.3 * i
        content = g.add("LoadImage", 0, row, title=f"Content image {i}", image=EXAMPLE_IMAGE)
        sc = scale(g, content.out("IMAGE"), 1, row, f"Scale content {i}")
        inv_c = encode_invert(g, ckpt, empty, sc.out("IMAGE"), row, f"content {i}")
        sampler_decode_save(g, ckpt.out("VAE"), patch, inv_c, inv_s.out("inversion"), empty.out("CONDITIONING"),
                            empty.out("CONDITIONING"), at=(4, row), decode_at=(5, row), save_at=(6, row), suffix=f" {i}")
    return g


# -- issue 6: several styles, regions, fast mode, style bank, style map

def encode_invert(g: Graph, ckpt: Node, empty: Node, pixels: Out, row: float, what: str) -> Node:
    enc = g.add("VAEEncode", 2, row, title=f"VAE Encode ({what})", pixels=pixels, vae=ckpt.out("VAE"))
    return g.add("ZStarDDIMInversion", 3, row, title=f"Z* DDIM Inversion ({what})", model=ckpt.out("MODEL"),
                 latent=enc.out("LATENT"), conditioning=empty.out("CONDITIONING"), steps=PAPER["steps"])


def inverted_pair(g: Graph, ckpt: Node, empty: Node) -> tuple[Node, Node]:
    """Content and style images, each scaled, encoded and DDIM-inverted (one row each)."""
    sc, ss = content_and_style(g)
    return (encode_invert(g, ckpt, empty, sc.out("IMAGE"), 2.3, "content"),
            encode_invert(g, ckpt, empty, ss.out("IMAGE"), 4.6, "style"))


def sample_empty_prompt(g: Graph, ckpt: Node, empty: Node, content: Node, style: Out, **kwargs) -> Node:
    """sample_and_save with the empty prompt, in column 5 (column 4 holds the issue-6 nodes)."""
    return sample_and_save(g, ckpt, content, style, empty.out("CONDITIONING"), empty.out("CONDITIONING"), col=5,
                           **kwargs)


def multi_style() -> Graph:
    g = Graph("zstar_multi_style", "Z*: one content image in a mix of two styles, one softmax over both styles' keys")
    ckpt, empty = common(g, (
        "## Z*: two styles at once\n\n"
        "The content attends to both styles in ONE softmax over [λ₁·K₁, λ₂·K₂, K_content] (the paper's "
        "multi-style formula, eq. 18), in one fused attention call. Styles share the attention mass: where "
        "a content region resembles style A more, A wins there.\n\n"
        "**Z* Style Mix**: `strength_1`, `strength_2` are each style's λ; raise one to let it win more "
        "regions. Up to four styles (inversions, or Style Records for fast mode — all of one kind). Every "
        "image is cropped to 512×512 (the paper path needs equal sizes)."))
    content = g.add("LoadImage", 0, 2.3, title="Content image", image=EXAMPLE_IMAGE)
    styles = [g.add("LoadImage", 0, 4.6 + 2.3 * i, title=f"Style image {'AB'[i]}", image=EXAMPLE_IMAGE)
              for i in range(2)]
    inv_c = encode_invert(g, ckpt, empty, scale(g, content.out("IMAGE"), 1, 2.3, "Scale content").out("IMAGE"),
                          2.3, "content")
    inv_s = [encode_invert(g, ckpt, empty, scale(g, st.out("IMAGE"), 1, st.row, f"Scale style {'AB'[i]}").out("IMAGE"),
                           st.row, f"style {'AB'[i]}") for i, st in enumerate(styles)]
    mix = g.add("ZStarStyleMix", 4, 4.6, title="Z* Style Mix", style_1=inv_s[0].out("inversion"),
                style_2=inv_s[1].out("inversion"), **{f"strength_{n}": PAPER["style_strength"] for n in range(1, 5)})
    sample_empty_prompt(g, ckpt, empty, inv_c, mix.out("styles"))
    return g


def regions() -> Graph:
    g = Graph("zstar_regions", "Z* with a region mask: the style acts in the masked region only")
    ckpt, empty = common(g, (
        "## Z*: style in a region only\n\n"
        "The sampler's optional **mask** limits the style: where it is white the content attends to the "
        "style as usual; elsewhere it keeps exactly its own self-attention (the paper's region control, "
        "eqs. 16–17). The mask is resized to every layer.\n\n"
        "Here the mask is built (left half). **To paint one**: right-click the content image → "
        "*Open in MaskEditor*, paint the region, and connect that Load Image's MASK to the sampler's "
        "mask instead. Use a mask of the content image's size (aspect ratio)."))
    inv_c, inv_s = inverted_pair(g, ckpt, empty)
    blank = g.add("SolidMask", 3, 6.9, title="Mask: nothing", value=0.0, width=512, height=512)
    left = g.add("SolidMask", 3, 7.7, title="Mask: left half", value=1.0, width=256, height=512)
    region = g.add("MaskComposite", 4, 6.9, title="Style region (left half)", destination=blank.out("MASK"),
                   source=left.out("MASK"), x=0, y=0, operation="add")
    sample_empty_prompt(g, ckpt, empty, inv_c, inv_s.out("inversion"), mask=region.out("MASK"))
    return g


def style_record(g: Graph, ckpt: Node, empty: Node, inv_s: Node) -> Node:
    return g.add("ZStarStyleRecord", 4, 4.6, title="Z* Style Record (fast mode)", model=ckpt.out("MODEL"),
                 style=inv_s.out("inversion"), positive=empty.out("CONDITIONING"), negative=empty.out("CONDITIONING"),
                 cfg=PAPER["cfg"], layers=PAPER["layers"], start_step=PAPER["start_step"], end_step=PAPER["end_step"])


def fast_mode() -> Graph:
    g = Graph("zstar_fast_mode", "Z* fast mode: record the style's keys and values once, then sample content rows only")
    ckpt, empty = common(g, (
        "## Z* fast mode (style record)\n\n"
        "**Z* Style Record** runs the style's inversion through the model once and keeps its self-attention "
        "keys and values for every reweighted step and layer. The sampler then evaluates the content only "
        "(about half the work per step), and ComfyUI's cache keeps the record while you tune λ.\n\n"
        "The record must use the patch's `layers`, `start_step`, `end_step` and the sampler's `cfg`. It is "
        "exact with the patch's `style_self_strength` at 0; at the paper's 1.5 the official style branch "
        "also looks at the content, which a record cannot (a small difference). A record may come from a "
        "style image of any size."))
    inv_c, inv_s = inverted_pair(g, ckpt, empty)
    sample_empty_prompt(g, ckpt, empty, inv_c, style_record(g, ckpt, empty, inv_s).out("style_record"))
    return g


def style_bank() -> Graph:
    g = Graph("zstar_style_bank", "Z* style bank: save a style (inversion + record) to a file and load it back")
    ckpt, empty = common(g, (
        "## Z* style bank\n\n"
        "**Z* Save Style** writes the style's inversion and its fast-mode record to "
        "`output/zstar_styles/my_style.safetensors`; share that file and the style travels without its "
        "source image. **Z* Load Style** reads it back (safetensors only, every tensor checked).\n\n"
        "Here Load Style takes the file from Save Style's `saved` output. In another workflow, pick the "
        "file in Load Style's `style` list (refresh the page to list new files; files in "
        "`models/zstar_styles` are listed too) and connect its `inversion` (paper path, same image size "
        "and steps) or `record` (fast mode) to the sampler.\n\n"
        "Saving over an existing name stops with an error; set `if_exists` to overwrite to replace it."))
    inv_c, inv_s = inverted_pair(g, ckpt, empty)
    record = style_record(g, ckpt, empty, inv_s)
    save = g.add("ZStarSaveStyle", 4, 6.2, title="Z* Save Style", inversion=inv_s.out("inversion"),
                 record=record.out("style_record"), name="my_style", if_exists="stop")
    load = g.add("ZStarLoadStyle", 4, 7.2, title="Z* Load Style", saved=save.out("saved"), style="none")
    sample_empty_prompt(g, ckpt, empty, inv_c, load.out("inversion"))
    return g


def style_map() -> Graph:
    g = Graph("zstar_style_map", "Z* Style Map: the stylized image and a heatmap of where the style went")
    ckpt, empty = common(g, (
        "## Z*: where did the style go?\n\n"
        "**Z* Style Map** is the Z* Sampler plus a heatmap: per pixel, the share of self-attention mass "
        "the content put on the style's keys (dark: the content kept its own look; bright: it took the "
        "style), averaged over heads and over the chosen `layers` and steps.\n\n"
        "Raise `style_strength` (λ) on the patch and watch the bright regions grow. `layers` 'all' = every "
        "patched layer, or e.g. '13-15' for the finest ones; `start_step`/`end_step` pick the steps to "
        "average. With a region mask the map is 0 outside it."))
    inv_c, inv_s = inverted_pair(g, ckpt, empty)
    smap = sample_empty_prompt(g, ckpt, empty, inv_c, inv_s.out("inversion"), node_type="ZStarStyleMap",
                           title="Z* Style Map", layers="all", start_step=0, end_step=1000)
    g.add("PreviewImage", 6, 3.2, title="Style map", images=smap.out("style_map"))
    return g


def flow_core(g: Graph, model: Out, vae: Out, empty: Node, positive: Out):
    """Content and style → VAE Encode → Z* Flow Inversion ×2 → patch → sampler → decode → save."""
    sc, ss = content_and_style(g)
    invs = []
    for pixels, row, what in ((sc.out("IMAGE"), 2.3, "content"), (ss.out("IMAGE"), 4.6, "style")):
        enc = g.add("VAEEncode", 2, row, title=f"VAE Encode ({what})", pixels=pixels, vae=vae)
        invs.append(g.add("ZStarFlowInversion", 3, row, title=f"Z* Flow Inversion ({what})", model=model,
                          latent=enc.out("LATENT"), conditioning=empty.out("CONDITIONING"),
                          **{k: PAPER[k] for k in ("steps", "solver", "guidance")}))
    return sampler_decode_save(g, vae, attention_patch(g, model), invs[0], invs[1].out("inversion"), positive,
                               empty.out("CONDITIONING"), at=(4, 1.4), decode_at=(5, 0.0), save_at=(5, 0.8))


def transformer_loaders(g: Graph, model: tuple, clip: tuple, vae: tuple) -> tuple[Node, Node, Node]:
    """Load Diffusion Model, a text-encoder loader, Load VAE and the empty prompt, each loader naming
    its files and their links for the templates menu: how the Flux, Chroma and Qwen-Image graphs
    open. model and vae: (title, file, url); clip: (node type, title, [(file, url)], its widgets).
    Returns the model and VAE loaders and the empty prompt."""
    def loader(type_, col, row, title, files, directory, **values):
        return g.add(type_, col, row, title=title, color=LOADER_COLOR,
                     models=[{"name": name, "url": url, "directory": directory} for name, url in files], **values)

    title, name, url = model
    unet = loader("UNETLoader", 0, 0, title, [(name, url)], "diffusion_models", unet_name=name, weight_dtype="default")
    clip_type, clip_title, clip_files, widgets = clip
    text = loader(clip_type, 0, 0.75, clip_title, clip_files, "text_encoders", **widgets)
    title, name, url = vae
    vae_node = loader("VAELoader", 1, 0, title, [(name, url)], "vae", vae_name=name)
    empty = g.add("CLIPTextEncode", 1, 0.9, title="Empty prompt", clip=text.out("CLIP"), text="")
    return unet, vae_node, empty


def flux() -> Graph:
    g = Graph("zstar_flux", "Z* style transfer on Flux.1-dev (rectified flow): content photo in the style of a painting")
    g.add("MarkdownNote", -1.35, 0, color=NOTE_COLOR, text=(
        "## Z* on Flux.1-dev\n\n"
        "Models (as ComfyUI's own Flux template): [flux1-dev]({flux}) in `models/diffusion_models`, "
        "[clip_l]({clip_l}) and [t5xxl_fp16]({t5}) in `models/text_encoders`, [ae]({ae}) in `models/vae`.\n\n"
        "Both images are inverted with the flow ODE (**Z\\* Flow Inversion**, guidance 1). While the content "
        "is denoised again, Flux's single blocks 20-37 (FireFlow's and RF-Solver's injection blocks) let the "
        "content's image tokens look at the style's image tokens, style logits × λ; the style's rotary "
        "positions are moved off the content's grid (`style_positions` auto = shifted).\n\n"
        "**Flux Guidance** sets the content's guidance (2.0 here, our choice, not tuned); the style rows "
        "keep their inversion's. These defaults have not been tuned on Flux's trained weights: try "
        "`style_strength` 1.0–1.6 and the layers (0-18 double, 19-56 single blocks).").format(
            flux=FLUX_URL, clip_l=CLIP_L_URL, t5=T5XXL_URL, ae=FLUX_VAE_URL))
    unet, vae, empty = transformer_loaders(
        g, ("Load Diffusion Model (Flux.1-dev)", FLUX_MODEL, FLUX_URL),
        ("DualCLIPLoader", "Load CLIP (Flux)", [(CLIP_L, CLIP_L_URL), (T5XXL, T5XXL_URL)],
         dict(clip_name1=CLIP_L, clip_name2=T5XXL, type="flux", device="default")),
        ("Load VAE (Flux)", FLUX_VAE, FLUX_VAE_URL))
    guide = g.add("FluxGuidance", 2, 0.9, title="Flux Guidance (content)", conditioning=empty.out("CONDITIONING"),
                  guidance=2.0)
    flow_core(g, unet.out("MODEL"), vae.out("VAE"), empty, guide.out("CONDITIONING"))
    return g


def sd35() -> Graph:
    g = Graph("zstar_sd35", "Z* style transfer on SD3.5 (rectified flow): content photo in the style of a painting")
    g.add("MarkdownNote", -1.35, 0, color=NOTE_COLOR, text=(
        "## Z* on SD3.5\n\n"
        "Models (as ComfyUI's SD3.5 examples): [sd3.5_medium]({ckpt}) in `models/checkpoints` (Large works "
        "too), [clip_l]({clip_l}), [clip_g]({clip_g}) and [t5xxl_fp16]({t5}) in `models/text_encoders`.\n\n"
        "Both images are inverted with the flow ODE (**Z\\* Flow Inversion**). While the content is "
        "denoised again, the second half of the joint blocks (`layers` auto; our choice for SD3.5, where no "
        "injection preset is published) let the content's image tokens look at the style's image tokens, "
        "style logits × λ. CFG 1 with the empty prompt, as the paper; raise `cfg` with a negative prompt "
        "if you add a prompt.\n\n"
        "Not tuned on SD3.5's trained weights: try `style_strength` 1.0–1.6 and other layers (Medium: 0-23 "
        "joint blocks, 24-36 the MMDiT-X image-only attentions).").format(
            ckpt=SD35_URL, clip_l=CLIP_L_URL, clip_g=CLIP_G_URL, t5=T5XXL_URL))
    ckpt = g.add("CheckpointLoaderSimple", 0, 0, title="Load Checkpoint (SD3.5)", color=LOADER_COLOR,
                 models=[{"name": SD35_CHECKPOINT, "url": SD35_URL, "directory": "checkpoints"}],
                 ckpt_name=SD35_CHECKPOINT)
    clip = g.add("TripleCLIPLoader", 0, 0.75, title="Load CLIP (SD3.5)", color=LOADER_COLOR,
                 models=[{"name": CLIP_L, "url": CLIP_L_URL, "directory": "text_encoders"},
                         {"name": CLIP_G, "url": CLIP_G_URL, "directory": "text_encoders"},
                         {"name": T5XXL, "url": T5XXL_URL, "directory": "text_encoders"}],
                 clip_name1=CLIP_L, clip_name2=CLIP_G, clip_name3=T5XXL)
    empty = g.add("CLIPTextEncode", 1, 0.9, title="Empty prompt", clip=clip.out("CLIP"), text="")
    flow_core(g, ckpt.out("MODEL"), ckpt.out("VAE"), empty, empty.out("CONDITIONING"))
    return g


def chroma() -> Graph:
    g = Graph("zstar_chroma", "Z* style transfer on Chroma (rectified flow, real CFG): content photo in the style of a painting")
    g.add("MarkdownNote", -1.35, 0, color=NOTE_COLOR, text=(
        "## Z* on Chroma\n\n"
        "Models: [Chroma1-HD]({chroma}) in `models/diffusion_models`, [t5xxl_fp16]({t5}) in "
        "`models/text_encoders`, [ae]({ae}) (Flux's VAE) in `models/vae`.\n\n"
        "Chroma runs Flux.1's blocks without the guidance embedding, so the layers are Flux's (0-18 double, "
        "19-56 single blocks) and `auto` is FireFlow's Flux choice, single blocks 20-37 (transferred: none is "
        "published for Chroma). Both images are inverted with the flow ODE (**Z\\* Flow Inversion**; its "
        "`guidance` does not apply). CFG 1 with the empty prompt, as the paper; raise `cfg` (Chroma's "
        "template uses 4) with a negative prompt if you add a prompt.\n\n"
        "Not tuned on Chroma's trained weights: try `style_strength` 1.0–1.6 and other layers.").format(
            chroma=CHROMA_URL, t5=T5XXL_URL, ae=FLUX_VAE_URL))
    unet, vae, empty = transformer_loaders(
        g, ("Load Diffusion Model (Chroma)", CHROMA_MODEL, CHROMA_URL),
        ("CLIPLoader", "Load CLIP (T5-XXL)", [(T5XXL, T5XXL_URL)], dict(clip_name=T5XXL, type="chroma", device="default")),
        ("Load VAE (Flux)", FLUX_VAE, FLUX_VAE_URL))
    flow_core(g, unet.out("MODEL"), vae.out("VAE"), empty, empty.out("CONDITIONING"))
    return g


def qwen_image() -> Graph:
    g = Graph("zstar_qwen_image", "Z* style transfer on Qwen-Image (rectified flow, real CFG): content photo in the style of a painting")
    g.add("MarkdownNote", -1.35, 0, color=NOTE_COLOR, text=(
        "## Z* on Qwen-Image\n\n"
        "Models (as ComfyUI's own Qwen-Image template): [qwen_image_fp8_e4m3fn]({model}) in "
        "`models/diffusion_models`, [qwen_2.5_vl_7b_fp8_scaled]({text}) in `models/text_encoders`, "
        "[qwen_image_vae]({vae}) in `models/vae`. **ModelSamplingAuraFlow** shift {shift} as the template; "
        "the inversions and the sampler must share it.\n\n"
        "Both images are inverted with the flow ODE (**Z\\* Flow Inversion**). While the content is denoised "
        "again, blocks 30-59 (`layers` auto: the second half, our choice; no injection preset is published "
        "for Qwen-Image) let the content's image tokens look at the style's image tokens, style logits × λ, "
        "the style's rotary positions moved off the content's grid (`style_positions` auto = shifted). CFG 1 "
        "with the empty prompt, as the paper.\n\n"
        "Qwen-Image-Edit's reference images are not supported with Z* (refused by name). Not tuned on "
        "Qwen-Image's trained weights: try `style_strength` 1.0–1.6 and other layers (0-59).").format(
            model=QWEN_URL, text=QWEN_TEXT_URL, vae=QWEN_VAE_URL, shift=QWEN_SHIFT))
    unet, vae, empty = transformer_loaders(
        g, ("Load Diffusion Model (Qwen-Image)", QWEN_MODEL, QWEN_URL),
        ("CLIPLoader", "Load CLIP (Qwen2.5-VL)", [(QWEN_TEXT, QWEN_TEXT_URL)],
         dict(clip_name=QWEN_TEXT, type="qwen_image", device="default")),
        ("Load VAE (Qwen-Image)", QWEN_VAE, QWEN_VAE_URL))
    shift = g.add("ModelSamplingAuraFlow", 2, 0, title="ModelSamplingAuraFlow", model=unet.out("MODEL"),
                  shift=QWEN_SHIFT)
    flow_core(g, shift.out("MODEL"), vae.out("VAE"), empty, empty.out("CONDITIONING"))
    return g


def flux2() -> Graph:
    g = Graph("zstar_flux2", "Z* style transfer on Flux.2-dev (rectified flow): content photo in the style of a painting")
    g.add("MarkdownNote", -1.35, 0, color=NOTE_COLOR, text=(
        "## Z* on Flux.2-dev\n\n"
        "Needs ComfyUI 0.8.0 or later. Models (as ComfyUI's own Flux.2 template): [flux2_dev_fp8mixed]({model}) "
        "in `models/diffusion_models`, [mistral_3_small_flux2_bf16]({text}) in `models/text_encoders`, "
        "[flux2-vae]({vae}) in `models/vae`. The Klein models work the same way (Load CLIP: qwen_3_4b).\n\n"
        "Both images are inverted with the flow ODE (**Z\\* Flow Inversion**, guidance 1) on the model's own "
        "schedule ('simple' on its shift, not the template's Flux2Scheduler). While the content is denoised "
        "again, the later single blocks (`layers` auto: dev's 33-55, FireFlow's Flux.1 share transferred, our "
        "choice; none is published for Flux.2) let the content's image tokens look at the style's, style "
        "logits × λ, the style's rotary positions moved off the content's grid.\n\n"
        "**Flux Guidance** {guidance:g} as the template sets the content's guidance; the style rows keep their "
        "inversion's. Reference images (Flux.2's multi-reference editing) are refused with Z*. Not tuned on "
        "Flux.2's trained weights: try `style_strength` 1.0–1.6 and other layers (dev: 0-7 double, 8-55 "
        "single blocks).").format(model=FLUX2_URL, text=FLUX2_TEXT_URL, vae=FLUX2_VAE_URL, guidance=FLUX2_GUIDANCE))
    unet, vae, empty = transformer_loaders(
        g, ("Load Diffusion Model (Flux.2-dev)", FLUX2_MODEL, FLUX2_URL),
        ("CLIPLoader", "Load CLIP (Mistral 3 Small)", [(FLUX2_TEXT, FLUX2_TEXT_URL)],
         dict(clip_name=FLUX2_TEXT, type="flux2", device="default")),
        ("Load VAE (Flux.2)", FLUX2_VAE, FLUX2_VAE_URL))
    guide = g.add("FluxGuidance", 2, 0.9, title="Flux Guidance (content)", conditioning=empty.out("CONDITIONING"),
                  guidance=FLUX2_GUIDANCE)
    flow_core(g, unet.out("MODEL"), vae.out("VAE"), empty, guide.out("CONDITIONING"))
    return g


def z_image() -> Graph:
    g = Graph("zstar_z_image", "Z* style transfer on Z-Image Turbo (rectified flow): content photo in the style of a painting")
    g.add("MarkdownNote", -1.35, 0, color=NOTE_COLOR, text=(
        "## Z* on Z-Image\n\n"
        "Needs ComfyUI 0.8.0 or later (it tells the attention calls their layer). Models (as ComfyUI's own "
        "Z-Image Turbo template): [z_image_turbo_bf16]({model}) in `models/diffusion_models`, "
        "[qwen_3_4b]({text}) in `models/text_encoders`, [ae]({vae}) in `models/vae`. **ModelSamplingAuraFlow** "
        "shift {shift:g} as the template; the inversions and the sampler must share it. Z-Image Base works the "
        "same way (raise `cfg`, with a negative prompt).\n\n"
        "Both images are inverted with the flow ODE (**Z\\* Flow Inversion**). While the content is denoised "
        "again, layers 15-29 (`layers` auto: the second half, our choice; no injection preset is published for "
        "Z-Image; the refiner layers before layer 0 are never touched) let the content's image tokens look at "
        "the style's image tokens, style logits × λ, the style's rotary positions moved off the content's grid. "
        "CFG 1 with the empty prompt, as the paper and as Turbo is run.\n\n"
        "Not tuned on Z-Image's trained weights: try `style_strength` 1.0–1.6 and other layers (0-29).").format(
            model=Z_IMAGE_URL, text=Z_IMAGE_TEXT_URL, vae=Z_IMAGE_VAE_URL, shift=Z_IMAGE_SHIFT))
    unet, vae, empty = transformer_loaders(
        g, ("Load Diffusion Model (Z-Image)", Z_IMAGE_MODEL, Z_IMAGE_URL),
        ("CLIPLoader", "Load CLIP (Qwen3-4B)", [(Z_IMAGE_TEXT, Z_IMAGE_TEXT_URL)],
         dict(clip_name=Z_IMAGE_TEXT, type="lumina2", device="default")),
        ("Load VAE (Z-Image)", FLUX_VAE, Z_IMAGE_VAE_URL))
    shift = g.add("ModelSamplingAuraFlow", 2, 0, title="ModelSamplingAuraFlow", model=unet.out("MODEL"),
                  shift=Z_IMAGE_SHIFT)
    flow_core(g, shift.out("MODEL"), vae.out("VAE"), empty, empty.out("CONDITIONING"))
    return g


GRAPHS = [basic, controlnet, batch, multi_style, regions, fast_mode, style_bank, style_map, flux, sd35, chroma,
          qwen_image, flux2, z_image]


# --------------------------------------------------------------------------- main


def dump(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    files = {}
    for make in GRAPHS:
        g = make()
        files[HERE / f"{g.name}.json"] = dump(g.ui())
        files[HERE / "api" / f"{g.name}.json"] = dump(g.api())
    return files


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only compare the committed .json files, write nothing")
    p.add_argument("--no-thumbnails", action="store_true", help="skip the .jpg thumbnails")
    args = p.parse_args(argv)
    files = outputs()
    if args.check:
        stale = [str(path.relative_to(HERE.parent)) for path, text in files.items()
                 if not path.is_file() or path.read_text() != text]
        if stale:
            print("out of date (run python example_workflows/build.py): " + ", ".join(stale))
            return 1
        print(f"{len(files)} workflow files up to date")
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")
    if not args.no_thumbnails:
        for make in GRAPHS:
            g = make()
            thumbnail(g, HERE / f"{g.name}.jpg")
            print(f"wrote example_workflows/{g.name}.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
