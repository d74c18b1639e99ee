"""The example workflows against a real ComfyUI server (see zstar_server.py).

- every UI workflow: node types exist in /object_info, every link joins matching types, widget
  values fit the inputs, and it converts to exactly its API twin;
- every API workflow runs (3 steps, 64×64 images) with a full-size random SD1.5 checkpoint and
  saves finite, non-constant images;
- ComfyUI's templates menu lists the workflows with their thumbnails;
- re-running with only style_strength changed takes both inversions from ComfyUI's cache.
"""
from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import pytest

from harness import COMFYUI_PATH, REPO, SKIP_REASON

if not COMFYUI_PATH:
    pytest.skip(SKIP_REASON, allow_module_level=True)

import zstar_server  # noqa: E402
from zstar_server import SIZE, runner, small_prompt  # noqa: E402

WORKFLOWS = REPO / "example_workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
FRONTEND_ONLY = runner.FRONTEND_ONLY
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def api_twin(ui_path: Path) -> Path:
    return WORKFLOWS / "api" / ui_path.name


# --------------------------------------------------------------------------- /object_info helpers


def input_specs(info: dict) -> list[tuple[str, list, bool]]:
    """[(name, spec, optional)] in the order the frontend builds slots and widgets."""
    inputs = info["input"]
    order = info.get("input_order") or {k: list(v) for k, v in inputs.items()}
    return [(name, inputs[section][name], section == "optional")
            for section in ("required", "optional") for name in order.get(section, [])]


def spec_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def spec_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput")


def widget_layout(info: dict) -> list[tuple[str, list | None]]:
    """The frontend's widgets_values layout: (input name, spec), plus (name, None) for the extra
    value some widgets store (control_after_generate, the image upload button)."""
    layout = []
    for name, spec, _ in input_specs(info):
        if is_widget(spec):
            layout.append((name, spec))
            if spec_options(spec).get("control_after_generate"):
                layout.append((name + ":control_after_generate", None))
    for name, spec, _ in input_specs(info):
        if spec_options(spec).get("image_upload"):
            layout.append(("upload", None))
    return layout


def types_match(out_type: str, in_type: str) -> bool:
    """LiteGraph's rule: '*' takes anything, 'A,B' accepts A or B, case does not matter."""
    if "*" in (out_type, in_type):
        return True
    outs = {t.strip().upper() for t in out_type.split(",")}
    ins = {t.strip().upper() for t in in_type.split(",")}
    return bool(outs & ins)


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """What the frontend's graphToPrompt makes of a UI workflow (no widget-to-input conversions)."""
    links = {l[0]: l for l in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        info = object_info[node["type"]]
        inputs = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        for (name, spec), value in zip(widget_layout(info), node.get("widgets_values", [])):
            if spec is not None and name not in inputs:
                inputs[name] = value
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


# --------------------------------------------------------------------------- the random models


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_random_checkpoints_are_detected_as_sd15():
    """ComfyUI's own loaders take the generated files for an SD1.5 checkpoint and an SD1.5
    ControlNet, with no missing or left-over keys."""
    import checkpoint
    import comfy.controlnet
    import comfy.sd
    import comfy.supported_models

    root, seen = logging.getLogger(), _Records()
    old_level = root.level
    root.addHandler(seen)
    root.setLevel(logging.DEBUG)
    try:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(checkpoint.sd15_checkpoint()),
                                                                    output_vae=True, output_clip=True)
        assert type(model.model.model_config) is comfy.supported_models.SD15
        assert clip is not None and vae is not None
        assert type(clip.cond_stage_model).__name__ == "SD1ClipModel"
        assert model.model.diffusion_model.in_channels == 4
        cn = comfy.controlnet.load_controlnet(str(checkpoint.sd15_controlnet()))
        assert type(cn) is comfy.controlnet.ControlNet
        del model, clip, vae, cn
    finally:
        root.removeHandler(seen)
        root.setLevel(old_level)
        gc.collect()
    # Warnings for missing/unexpected weights, and the debug lines for keys nobody took. (ComfyUI
    # logs the text encoder's absent logit_scale/text_projection at debug level for real SD1.5 files too.)
    def bad(record):
        text = record.getMessage().lower()
        if record.levelno >= logging.WARNING and any(w in text for w in ("missing", "unexpected")):
            return True
        return any(w in text for w in ("left over keys", "leftover vae keys", "clip unexpected", "unet unexpected"))
    problems = [r.getMessage()[:300] for r in seen.records if bad(r)]
    assert not problems, problems


# --------------------------------------------------------------------------- against the server


def test_templates_menu_lists_the_workflows(comfy_server):
    """ComfyUI lists <pack>/example_workflows/*.json (not api/) and serves <name>.jpg as the card image."""
    listed = comfy_server.client.get_json("/workflow_templates")
    assert sorted(listed.get(zstar_server.PACK_NAME, [])) == sorted(p.stem for p in UI_FILES)
    for ui_path in UI_FILES:
        base = f"/api/workflow_templates/{zstar_server.PACK_NAME}/{ui_path.stem}"
        assert json.loads(comfy_server.client._request("GET", base + ".json")) == load(ui_path)
        assert comfy_server.client._request("GET", base + ".jpg")[:3] == b"\xff\xd8\xff"


def test_no_workflow_uses_a_node_the_host_deprecates(comfy_server):
    """Where the host marks a node deprecated (e.g. ImageBatch, LatentBatch on 0.8.0), the examples
    do without it, so they open without deprecation badges on every host they load on."""
    info = comfy_server.object_info
    for ui_path in UI_FILES:
        used = {n["type"] for n in load(ui_path)["nodes"] if n["type"] in info}
        deprecated = sorted(t for t in used if info[t].get("deprecated"))
        assert not deprecated, f"{ui_path.name} uses node(s) this ComfyUI marks deprecated: {deprecated}"


@pytest.mark.parametrize("ui_path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_and_links_match_object_info(comfy_server, ui_path):
    if zstar_server.host_lacks(ui_path.stem):
        pytest.skip(zstar_server.host_lacks(ui_path.stem))
    info = comfy_server.object_info
    ui = load(ui_path)
    nodes = {n["id"]: n for n in ui["nodes"]}
    unknown = sorted({n["type"] for n in ui["nodes"] if n["type"] not in info and n["type"] not in FRONTEND_ONLY})
    assert not unknown, f"{ui_path.name}: node types not on the server: {unknown}"
    assert ui["last_node_id"] >= max(nodes) and ui["last_link_id"] >= max(l[0] for l in ui["links"])

    for link_id, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        s, d = nodes[src], nodes[dst]
        s_info, d_info = info[s["type"]], info[d["type"]]
        out_type = s_info["output"][src_slot]
        assert out_type == link_type, f"link {link_id}: {s['type']} output {src_slot} is {out_type}, link says {link_type}"
        assert s["outputs"][src_slot]["type"] == out_type and link_id in (s["outputs"][src_slot]["links"] or [])
        slot = d["inputs"][dst_slot]
        assert slot["link"] == link_id, f"link {link_id}: {d['type']} input {dst_slot} does not point back"
        specs = {name: spec for name, spec, _ in input_specs(d_info)}
        assert slot["name"] in specs, f"{d['type']} has no input {slot['name']}"
        in_type = spec_type(specs[slot["name"]])
        assert types_match(link_type, in_type), (f"link {link_id}: {s['type']}.{s_info['output_name'][src_slot]} ({out_type}) → "
                                      f"{d['type']}.{slot['name']} ({in_type})")

    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        n_info = info[node["type"]]
        # The files carry each node's outputs as the oldest tested frontend saves them. A newer
        # host may append outputs (0.33.0's SaveImage passes its IMAGE through); the frontend adds
        # those from the node definition on load (test_frontend.py checks it), so a stored list
        # is the host's list or a prefix of it, never a different one.
        stored = node["outputs"]
        assert [o["type"] for o in stored] == n_info["output"][:len(stored)], f"{node['type']}: output types differ"
        assert [o["name"] for o in stored] == n_info["output_name"][:len(stored)], f"{node['type']}: output names differ"
        if node["type"].startswith("ZStar"):  # ours: every output, on every host
            assert len(stored) == len(n_info["output"]), f"{node['type']}: stores {len(stored)} outputs"
        connected = {s["name"] for s in node["inputs"] if s.get("link") is not None}
        for name, spec, optional in input_specs(n_info):
            if not optional and not is_widget(spec):
                assert name in connected, f"{ui_path.name}: {node['type']} (id {node['id']}) input {name} is not connected"
        layout = widget_layout(n_info)
        values = node.get("widgets_values", [])
        assert len(values) == len(layout), (f"{ui_path.name}: {node['type']} stores {len(values)} widget values, "
                                            f"the server's inputs make {len(layout)}: {[n for n, _ in layout]}")
        for (name, spec), value in zip(layout, values):
            if spec is None:
                continue
            opts = spec_options(spec)
            kind = spec_type(spec)
            if kind == "COMBO":
                options = spec[0] if isinstance(spec[0], list) else opts.get("options", [])
                assert value in options, f"{node['type']}.{name} = {value!r} not in {options[:10]}"
            elif kind in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool)
                assert opts.get("min", value) <= value <= opts.get("max", value), f"{node['type']}.{name} = {value} out of range"
            elif kind == "STRING":
                assert isinstance(value, str)

    assert ui_to_api(ui, info) == strip_meta(load(api_twin(ui_path))), \
        f"{ui_path.name} and its API twin differ (run python example_workflows/build.py)"


@pytest.mark.parametrize("api_path", API_FILES, ids=lambda p: p.stem)
def test_workflows_use_the_paper_preset(comfy_server, api_path):
    """Every Z* setting in the example workflows is the node's default, i.e. the paper preset."""
    info = comfy_server.object_info
    for nid, node in load(api_path).items():
        if not node["class_type"].startswith("ZStar"):
            continue
        specs = {name: spec for name, spec, _ in input_specs(info[node["class_type"]])}
        for name, value in node["inputs"].items():
            if runner.is_link(value):
                continue
            default = spec_options(specs[name]).get("default")
            assert value == default, f"{api_path.name} node {nid} {node['class_type']}.{name} = {value!r}, default {default!r}"


def test_changing_only_style_strength_reuses_both_inversions(comfy_server, test_images):
    """Issue 3: λ is a patch setting, so ComfyUI's (default) cache keeps both inversions when only
    it changes. (It runs before the workflow runs below, whose basic run then finds the same
    inversions cached: one full inversion pair less for the tier.)"""
    base = load(WORKFLOWS / "api" / "zstar_basic.json")
    prompt = small_prompt(base, test_images["content"][:1], test_images["style"], prefix="tests/cache")
    inversions = sorted(nid for nid, n in prompt.items() if n["class_type"] == "ZStarDDIMInversion")
    patch = next(nid for nid, n in prompt.items() if n["class_type"] == "ZStarAttentionPatch")
    sampler = next(nid for nid, n in prompt.items() if n["class_type"] == "ZStarSampler")
    assert len(inversions) == 2

    prompt[patch]["inputs"]["style_strength"] = 1.25
    comfy_server.run(prompt)
    prompt[patch]["inputs"]["style_strength"] = 1.35
    second = comfy_server.run(prompt)
    assert set(inversions) <= set(second.cached), f"inversions {inversions} re-ran; cached: {second.cached}"
    assert patch not in second.cached and sampler not in second.cached, second.cached
    assert len(second.images) == 1


@pytest.mark.parametrize("api_path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_and_saves_finite_images(comfy_server, test_images, api_path):
    import numpy as np

    if api_path.stem in zstar_server.NOT_RUN:
        pytest.skip(f"{api_path.stem} is not run: {zstar_server.NOT_RUN[api_path.stem]}")
    prompt = small_prompt(load(api_path), test_images["content"], test_images["styles"],
                          prefix=f"tests/{api_path.stem}")
    assert runner.zstar_samplers(prompt), f"{api_path.name} has no Z* node taking a content and a style"
    n_contents = len(zstar_server.image_roles(prompt)[0])
    assert n_contents >= 1
    ran = zstar_server.FRONTEND_RUNS.get(api_path.stem)
    if ran is not None and ran[0] == zstar_server.frontend_small_prompt(load(api_path), test_images, api_path.stem):
        # test_frontend.py queued this very prompt (save names aside) from the page and the server ran
        # it: check that run's outputs rather than run it again
        messages, images = runner.status_messages(ran[1]), runner.output_images(ran[1])
        print(f"\n{api_path.stem}: the run queued from the frontend (test_frontend.py)")
    else:
        result = comfy_server.run(prompt)
        messages, images = result.messages, result.images
    assert any(e == "execution_success" for e, _ in messages), messages
    assert len(images) == n_contents, f"expected one image per content image, got {images}"
    for img_info in images:
        img = comfy_server.image(img_info)
        assert img.format == "PNG" and img.size == (SIZE, SIZE)
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
        assert np.isfinite(pixels).all()
        # NaN latents decode to a constant (black) picture; a real result varies.
        assert pixels.std() > 1.0, f"{img_info['filename']} is constant ({pixels.mean():.1f}): NaN or dead output"
