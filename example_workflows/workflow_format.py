"""The example workflows' two file formats, written from one description of a graph: the UI
format (what ComfyUI's frontend saves and its templates menu opens) and the API format (what
POST /prompt takes). SPECS mirrors /object_info for every node the graphs use; the ComfyUI test
tier checks it against running servers. Standard library only (build.py imports it by path).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pack_identity() -> dict:
    """{'cnr_id', 'ver'} of this pack, from pyproject.toml (the registry id and version)."""
    import re

    text = (REPO / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    name = re.search(r'^name\s*=\s*"([^"]+)"', project, re.M).group(1)
    version = re.search(r'^version\s*=\s*"([^"]+)"', project, re.M).group(1)
    return {"cnr_id": name, "ver": version}


PACK = pack_identity()

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
    "CLIPLoader": ([], [("CLIP", "CLIP")], ["clip_name", "type", "device"], []),
    "ModelSamplingAuraFlow": ([("model", "MODEL", False)], [("MODEL", "MODEL")], ["shift"], []),
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
         "FluxGuidance": (270, 58), "ZStarFlowInversion": (270, 142), "CLIPLoader": (315, 106),
         "ModelSamplingAuraFlow": (270, 58)}


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
