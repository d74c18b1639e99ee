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
frontends read to tell a user which pack a missing node comes from. Node inputs and outputs
below mirror ComfyUI's /object_info; the ComfyUI test tier checks them against running servers.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def pack_identity() -> dict:
    """{'cnr_id', 'ver'} of this pack, from pyproject.toml (the registry id and version)."""
    import re

    text = (REPO / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    name = re.search(r'^name\s*=\s*"([^"]+)"', project, re.M).group(1)
    version = re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)
    return {"cnr_id": name, "ver": version}


PACK = pack_identity()

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
EXAMPLE_IMAGE = "example.png"  # ships in ComfyUI/input, so a fresh install can run the graph as is

# Multi-type inputs, as /object_info names them (the types a link may bring, comma-separated).
ONE_STYLE = "ZSTAR_INVERSION,ZSTAR_STYLE_RECORD"
ANY_STYLE = "ZSTAR_INVERSION,ZSTAR_STYLE_RECORD,ZSTAR_STYLES"

# type: (link inputs [(name, type, optional)], outputs [(name, type)], widgets [name], extra UI-only widget values)
SPECS = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], ["ckpt_name"], []),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")], ["image"], ["image"]),
    "ImageScale": ([("image", "IMAGE", False)], [("IMAGE", "IMAGE")],
                   ["upscale_method", "width", "height", "crop"], []),
    "VAEEncode": ([("pixels", "IMAGE", False), ("vae", "VAE", False)], [("LATENT", "LATENT")], [], []),
    "VAEDecode": ([("samples", "LATENT", False), ("vae", "VAE", False)], [("IMAGE", "IMAGE")], [], []),
    "CLIPTextEncode": ([("clip", "CLIP", False)], [("CONDITIONING", "CONDITIONING")], ["text"], []),
    "SaveImage": ([("images", "IMAGE", False)], [], ["filename_prefix"], []),
    "Canny": ([("image", "IMAGE", False)], [("IMAGE", "IMAGE")], ["low_threshold", "high_threshold"], []),
    "ControlNetLoader": ([], [("CONTROL_NET", "CONTROL_NET")], ["control_net_name"], []),
    "ControlNetApplyAdvanced": ([("positive", "CONDITIONING", False), ("negative", "CONDITIONING", False),
                                 ("control_net", "CONTROL_NET", False), ("image", "IMAGE", False),
                                 ("vae", "VAE", True)],
                                [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                ["strength", "start_percent", "end_percent"], []),
    "ZStarDDIMInversion": ([("model", "MODEL", False), ("latent", "LATENT", False),
                            ("conditioning", "CONDITIONING", True), ("clip", "CLIP", True)],
                           [("inversion", "ZSTAR_INVERSION"), ("noise_latent", "LATENT")], ["steps"], []),
    "ZStarAttentionPatch": ([("model", "MODEL", False)], [("MODEL", "MODEL")],
                            ["style_strength", "style_self_strength", "layers", "start_step", "end_step",
                             "style_positions"], []),
    # issue 13: the rectified-flow transformers
    "UNETLoader": ([], [("MODEL", "MODEL")], ["unet_name", "weight_dtype"], []),
    "DualCLIPLoader": ([], [("CLIP", "CLIP")], ["clip_name1", "clip_name2", "type", "device"], []),
    "TripleCLIPLoader": ([], [("CLIP", "CLIP")], ["clip_name1", "clip_name2", "clip_name3"], []),
    "VAELoader": ([], [("VAE", "VAE")], ["vae_name"], []),
    "FluxGuidance": ([("conditioning", "CONDITIONING", False)], [("CONDITIONING", "CONDITIONING")], ["guidance"], []),
    "ZStarFlowInversion": ([("model", "MODEL", False), ("latent", "LATENT", False),
                            ("conditioning", "CONDITIONING", True), ("clip", "CLIP", True)],
                           [("inversion", "ZSTAR_INVERSION"), ("noise_latent", "LATENT")],
                           ["steps", "solver", "guidance"], []),
    "ZStarSampler": ([("model", "MODEL", False), ("content", "ZSTAR_INVERSION", False),
                      ("style", ANY_STYLE, False), ("positive", "CONDITIONING", False),
                      ("negative", "CONDITIONING", False), ("mask", "MASK", True)],
                     [("stylized", "LATENT"), ("style_branch", "LATENT")],
                     ["cfg", "content_anchor", "style_mode"], []),
    # issue 6: several styles, fast mode, regions, style bank, style map
    "ZStarStyleMix": ([("style_1", ONE_STYLE, False), ("style_2", ONE_STYLE, True), ("style_3", ONE_STYLE, True),
                       ("style_4", ONE_STYLE, True)], [("styles", "ZSTAR_STYLES")],
                      ["strength_1", "strength_2", "strength_3", "strength_4"], []),
    "ZStarStyleRecord": ([("model", "MODEL", False), ("style", "ZSTAR_INVERSION", False),
                          ("positive", "CONDITIONING", False), ("negative", "CONDITIONING", False)],
                         [("style_record", "ZSTAR_STYLE_RECORD"), ("info", "STRING")],
                         ["cfg", "layers", "start_step", "end_step"], []),
    "ZStarStyleMap": ([("model", "MODEL", False), ("content", "ZSTAR_INVERSION", False), ("style", ANY_STYLE, False),
                       ("positive", "CONDITIONING", False), ("negative", "CONDITIONING", False), ("mask", "MASK", True)],
                      [("style_map", "IMAGE"), ("stylized", "LATENT"), ("share", "MASK")],
                      ["cfg", "content_anchor", "style_mode", "layers", "start_step", "end_step"], []),
    "ZStarSaveStyle": ([("inversion", "ZSTAR_INVERSION", True), ("record", "ZSTAR_STYLE_RECORD", True)],
                       [("saved", "ZSTAR_STYLE_FILE")], ["name", "if_exists"], []),
    "ZStarLoadStyle": ([("saved", "ZSTAR_STYLE_FILE", True)],
                       [("inversion", "ZSTAR_INVERSION"), ("record", "ZSTAR_STYLE_RECORD"), ("info", "STRING")],
                       ["style"], []),
    "SolidMask": ([], [("MASK", "MASK")], ["value", "width", "height"], []),
    "MaskComposite": ([("destination", "MASK", False), ("source", "MASK", False)], [("MASK", "MASK")],
                      ["x", "y", "operation"], []),
    "PreviewImage": ([("images", "IMAGE", False)], [], [], []),
    "MarkdownNote": ([], [], ["text"], []),  # frontend-only: not in /object_info, not in the API twin
}
FRONTEND_ONLY = {"MarkdownNote", "Note"}
SIZES = {"CheckpointLoaderSimple": (315, 98), "LoadImage": (274, 314), "ImageScale": (270, 130),
         "VAEEncode": (210, 46), "VAEDecode": (210, 46), "CLIPTextEncode": (300, 100),
         "SaveImage": (300, 330), "Canny": (270, 82), "ControlNetLoader": (330, 58),
         "ControlNetApplyAdvanced": (300, 186), "ZStarDDIMInversion": (270, 118),
         "ZStarAttentionPatch": (290, 178), "ZStarSampler": (290, 198), "MarkdownNote": (400, 260),
         "ZStarStyleMix": (290, 250), "ZStarStyleRecord": (290, 200), "ZStarStyleMap": (290, 290),
         "ZStarSaveStyle": (290, 106), "ZStarLoadStyle": (290, 106), "SolidMask": (270, 106),
         "MaskComposite": (270, 130), "PreviewImage": (300, 330), "UNETLoader": (315, 82),
         "DualCLIPLoader": (315, 130), "TripleCLIPLoader": (315, 106), "VAELoader": (315, 58),
         "FluxGuidance": (270, 58), "ZStarFlowInversion": (270, 142)}


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
GRID_X, GRID_Y = 340, 150


@dataclass(frozen=True)
class Out:
    node: "Node"
    slot: int


@dataclass
class Node:
    id: int
    type: str
    col: float
    row: float
    values: dict
    title: str | None = None
    models: list = field(default_factory=list)
    color: tuple | None = None

    def out(self, name_or_slot) -> Out:
        outputs = SPECS[self.type][1]
        if isinstance(name_or_slot, int):
            return Out(self, name_or_slot)
        return Out(self, [n for n, _ in outputs].index(name_or_slot))

    @property
    def pos(self):
        return [round(self.col * GRID_X), round(self.row * GRID_Y)]


class Graph:
    def __init__(self, name: str, description: str):
        self.name, self.description = name, description
        self.nodes: list[Node] = []

    def add(self, type_: str, col: float, row: float, title: str | None = None, models=(), color=None, **values) -> Node:
        if type_ not in SPECS:
            raise KeyError(f"{type_}: add its inputs/outputs to SPECS")
        link_names = {n for n, _, _ in SPECS[type_][0]}
        widget_names = set(SPECS[type_][2])
        unknown = set(values) - link_names - widget_names
        if unknown:
            raise KeyError(f"{type_}: unknown inputs {sorted(unknown)}")
        node = Node(len(self.nodes) + 1, type_, col, row, values, title, list(models), color)
        self.nodes.append(node)
        return node

    # -- derived
    def links(self) -> list[tuple]:
        """[(link id, src node, src slot, dst node, dst slot, type)] in input order."""
        result = []
        for node in self.nodes:
            for slot, (name, type_, _) in enumerate(SPECS[node.type][0]):
                value = node.values.get(name)
                if isinstance(value, Out):
                    src_type = SPECS[value.node.type][1][value.slot][1]
                    if src_type not in type_.split(","):  # a multi-type input lists what it takes
                        raise TypeError(f"{self.name}: {value.node.type}.{value.slot} ({src_type}) → "
                                        f"{node.type}.{name} ({type_})")
                    result.append((len(result) + 1, value.node.id, value.slot, node.id, slot, src_type))
        return result

    def order(self) -> dict[int, int]:
        """Topological execution order, as the frontend stores it in 'order'."""
        deps = {n.id: {v.node.id for v in n.values.values() if isinstance(v, Out)} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = [n.id for n in self.nodes if n.id not in done and deps[n.id] <= done]
            if not ready:
                raise ValueError(f"{self.name}: the graph has a cycle")
            for nid in ready:
                order[nid] = len(order)
                done.add(nid)
        return order

    def ui(self) -> dict:
        links = self.links()
        order = self.order()
        nodes = []
        for node in self.nodes:
            link_inputs, outputs, widgets, extra = SPECS[node.type]
            inputs = []
            for slot, (name, type_, optional) in enumerate(link_inputs):
                link = next((l[0] for l in links if l[3] == node.id and l[4] == slot), None)
                entry = {"name": name, "type": type_, "link": link}
                if optional:
                    entry["shape"] = 7
                inputs.append(entry)
            outs = []
            for slot, (name, type_) in enumerate(outputs):
                ids = [l[0] for l in links if l[1] == node.id and l[2] == slot]
                outs.append({"name": name, "type": type_, "slot_index": slot, "links": ids or None})
            props = {} if node.type in FRONTEND_ONLY else {"Node name for S&R": node.type}
            if node.type.startswith("ZStar"):
                props.update(PACK)
            if node.models:
                props["models"] = node.models
            item = {"id": node.id, "type": node.type, "pos": node.pos, "size": list(SIZES[node.type]),
                    "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outs}
            if node.title:
                item["title"] = node.title
            item["properties"] = props
            item["widgets_values"] = [node.values[w] for w in widgets] + list(extra)
            if node.color:
                item["color"], item["bgcolor"] = node.color
            nodes.append(item)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-zstar/workflows/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": [list(l) for l in links],
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [60, 40]}},
            "version": 0.4,
        }

    def api(self) -> dict:
        prompt = {}
        for node in self.nodes:
            if node.type in FRONTEND_ONLY:
                continue
            link_inputs, _, widgets, _ = SPECS[node.type]
            inputs = {}
            for name, _, _ in link_inputs:
                value = node.values.get(name)
                if isinstance(value, Out):
                    inputs[name] = [str(value.node.id), value.slot]
            for w in widgets:
                inputs[w] = node.values[w]
            # ComfyUI orders inputs as /object_info does: the spec order of links and widgets mixed;
            # order is irrelevant to the API, sorted by the node's declared order for readability.
            declared = [n for n, _, _ in link_inputs] + widgets
            prompt[str(node.id)] = {"inputs": {k: inputs[k] for k in declared if k in inputs},
                                    "class_type": node.type,
                                    "_meta": {"title": node.title or node.type}}
        return prompt


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
    unet = g.add("UNETLoader", 0, 0, title="Load Diffusion Model (Flux.1-dev)", color=LOADER_COLOR,
                 models=[{"name": FLUX_MODEL, "url": FLUX_URL, "directory": "diffusion_models"}],
                 unet_name=FLUX_MODEL, weight_dtype="default")
    clip = g.add("DualCLIPLoader", 0, 0.75, title="Load CLIP (Flux)", color=LOADER_COLOR,
                 models=[{"name": CLIP_L, "url": CLIP_L_URL, "directory": "text_encoders"},
                         {"name": T5XXL, "url": T5XXL_URL, "directory": "text_encoders"}],
                 clip_name1=CLIP_L, clip_name2=T5XXL, type="flux", device="default")
    vae = g.add("VAELoader", 1, 0, title="Load VAE (Flux)", color=LOADER_COLOR,
                models=[{"name": FLUX_VAE, "url": FLUX_VAE_URL, "directory": "vae"}], vae_name=FLUX_VAE)
    empty = g.add("CLIPTextEncode", 1, 0.9, title="Empty prompt", clip=clip.out("CLIP"), text="")
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


GRAPHS = [basic, controlnet, batch, multi_style, regions, fast_mode, style_bank, style_map, flux, sd35]


# --------------------------------------------------------------------------- thumbnails

CATEGORY_COLORS = {"ZStar": (214, 120, 40), "Load": (90, 98, 120), "Image": (60, 120, 170), "Canny": (60, 120, 170),
                   "ControlNet": (130, 80, 160), "VAE": (70, 140, 90), "CLIP": (150, 140, 60), "Save": (40, 150, 110)}
SHORT = {"CheckpointLoaderSimple": "Model", "LoadImage": "Image", "ImageScale": "Scale", "VAEEncode": "Encode", "VAEDecode": "Decode", "CLIPTextEncode": "Prompt", "SaveImage": "Save",
         "Canny": "Canny", "ControlNetLoader": "CNet", "ControlNetApplyAdvanced": "Apply",
         "ZStarDDIMInversion": "Invert", "ZStarAttentionPatch": "Patch", "ZStarSampler": "Z*",
         "ZStarStyleMix": "Mix", "ZStarStyleRecord": "Record", "ZStarStyleMap": "Map", "ZStarSaveStyle": "Save",
         "ZStarLoadStyle": "Load", "SolidMask": "Mask", "MaskComposite": "Mask", "PreviewImage": "Preview",
         "UNETLoader": "Model", "DualCLIPLoader": "CLIP", "TripleCLIPLoader": "CLIP", "VAELoader": "VAE",
         "FluxGuidance": "Guide", "ZStarFlowInversion": "Invert"}


def _color(type_: str):
    for prefix, color in CATEGORY_COLORS.items():
        if type_.startswith(prefix):
            return color
    return (110, 110, 110)


def thumbnail(g: Graph, path: Path, size: int = 256):
    """A 256 px diagram of the graph: nodes as boxes, links as lines, Z* nodes in orange."""
    from PIL import Image, ImageDraw, ImageFont

    nodes = [n for n in g.nodes if n.type not in FRONTEND_ONLY]
    img = Image.new("RGB", (size, size), (32, 33, 38))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    title = {"zstar_basic": "Z* style transfer", "zstar_controlnet": "Z* + ControlNet",
             "zstar_batch": "Z* batch", "zstar_multi_style": "Z* two styles", "zstar_regions": "Z* style in a region",
             "zstar_fast_mode": "Z* fast mode", "zstar_style_bank": "Z* style bank",
             "zstar_style_map": "Z* style map"}.get(g.name, g.name)
    draw.text((8, 6), title, fill=(240, 240, 240), font=font)
    xs = [n.col for n in nodes]
    ys = [n.row for n in nodes]
    margin, top = 10, 26
    bw, bh = 38, 16

    def place(n):
        x = margin + (n.col - min(xs)) / max(1e-6, max(xs) - min(xs)) * (size - 2 * margin - bw)
        y = top + (n.row - min(ys)) / max(1e-6, max(ys) - min(ys)) * (size - top - margin - bh)
        return x, y

    centers = {n.id: place(n) for n in nodes}
    dim = {"MODEL", "CLIP", "VAE", "CONDITIONING", "CONTROL_NET"}
    for layer in ("dim", "flow", "zstar"):  # plumbing first, the image flow on top
        for _, src, _, dst, _, type_ in g.links():
            kind = "zstar" if type_.startswith("ZSTAR_") else "dim" if type_ in dim else "flow"
            if kind != layer:
                continue
            (x0, y0), (x1, y1) = centers[src], centers[dst]
            color = {"zstar": (240, 150, 60), "dim": (70, 73, 84), "flow": (150, 155, 170)}[kind]
            xm = (x0 + bw + x1) / 2
            draw.line([(x0 + bw, y0 + bh / 2), (xm, y0 + bh / 2), (xm, y1 + bh / 2), (x1, y1 + bh / 2)],
                      fill=color, width=2 if kind == "zstar" else 1)
    for n in nodes:
        x, y = centers[n.id]
        draw.rounded_rectangle([x, y, x + bw, y + bh], radius=3, fill=_color(n.type), outline=(20, 20, 20))
        label = SHORT.get(n.type, n.type)
        while label and draw.textlength(label, font=font) > bw - 3:
            label = label[:-1]
        draw.text((x + 2, y + 3), label, fill=(255, 255, 255), font=font)
    draw.text((8, size - 14), "comfyui-zstar", fill=(150, 150, 160), font=font)
    img.save(path, "JPEG", quality=88)


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
