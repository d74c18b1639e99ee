"""Card images for the templates menu: a 256 px diagram of each example graph (Pillow, which
ComfyUI already has), nodes as boxes and links as lines, Z* nodes in orange."""
from __future__ import annotations

from pathlib import Path

from workflow_format import FRONTEND_ONLY, Graph

CATEGORY_COLORS = {"ZStar": (214, 120, 40), "Load": (90, 98, 120), "Image": (60, 120, 170), "Canny": (60, 120, 170),
                   "ControlNet": (130, 80, 160), "VAE": (70, 140, 90), "CLIP": (150, 140, 60), "Save": (40, 150, 110)}
SHORT = {"CheckpointLoaderSimple": "Model", "LoadImage": "Image", "ImageScale": "Scale", "VAEEncode": "Encode", "VAEDecode": "Decode", "CLIPTextEncode": "Prompt", "SaveImage": "Save",
         "Canny": "Canny", "ControlNetLoader": "CNet", "ControlNetApplyAdvanced": "Apply",
         "ZStarDDIMInversion": "Invert", "ZStarAttentionPatch": "Patch", "ZStarSampler": "Z*",
         "ZStarStyleMix": "Mix", "ZStarStyleRecord": "Record", "ZStarStyleMap": "Map", "ZStarSaveStyle": "Save",
         "ZStarLoadStyle": "Load", "SolidMask": "Mask", "MaskComposite": "Mask", "PreviewImage": "Preview",
         "UNETLoader": "Model", "DualCLIPLoader": "CLIP", "TripleCLIPLoader": "CLIP", "VAELoader": "VAE",
         "FluxGuidance": "Guide", "ZStarFlowInversion": "Invert", "CLIPLoader": "CLIP",
         "ModelSamplingAuraFlow": "Shift"}


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
