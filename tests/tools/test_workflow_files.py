"""The committed example workflows are what example_workflows/build.py writes (no ComfyUI needed).

Their nodes, links and execution against a real server are in tests/comfy/test_workflows.py.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "example_workflows"


def _build():
    name = "zstar_workflows_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WORKFLOWS / "build.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_committed_workflows_match_the_builder():
    for path, text in _build().outputs().items():
        assert path.is_file() and path.read_text() == text, \
            f"{path.relative_to(REPO)} is out of date: run python example_workflows/build.py"


def test_every_ui_workflow_has_a_thumbnail_and_an_api_twin():
    from PIL import Image

    ui_files = sorted(WORKFLOWS.glob("*.json"))
    api_files = sorted((WORKFLOWS / "api").glob("*.json"))
    assert {p.stem for p in ui_files} >= {"zstar_basic", "zstar_controlnet", "zstar_batch"}
    assert {p.name for p in ui_files} == {p.name for p in api_files}, "each UI workflow needs example_workflows/api/<name>.json"
    for ui_path in ui_files:
        ui = json.loads(ui_path.read_text())
        assert ui.get("version") == 0.4 and {"nodes", "links", "last_node_id", "last_link_id"} <= set(ui)
        thumb = ui_path.with_suffix(".jpg")
        assert thumb.is_file(), f"{thumb.name} missing (python example_workflows/build.py writes it)"
        with Image.open(thumb) as img:
            assert img.format == "JPEG" and max(img.size) <= 512


def test_api_twins_are_links_and_values_only():
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        prompt = json.loads(path.read_text())
        for nid, node in prompt.items():
            assert nid.isdigit() and set(node) == {"inputs", "class_type", "_meta"}
            for value in node["inputs"].values():
                if isinstance(value, list):  # a link: [source node id, output slot]
                    assert value[0] in prompt and isinstance(value[1], int), (path.name, nid, value)


def test_the_packs_nodes_carry_the_node_pack_identity():
    """Newer frontends read properties.cnr_id / ver to tell a user which pack a missing node is from."""
    import re

    project = (REPO / "pyproject.toml").read_text().split("[project]", 1)[1]
    name = re.search(r'^name = "([^"]+)"', project, re.M).group(1)
    version = re.search(r'^version = "([^"]+)"', project, re.M).group(1)
    for path in sorted(WORKFLOWS.glob("*.json")):
        nodes = json.loads(path.read_text())["nodes"]
        ours = [n for n in nodes if n["type"].startswith("ZStar")]
        assert ours, path.name
        for node in ours:
            assert node["properties"].get("cnr_id") == name == "comfyui-zstar", (path.name, node["type"])
            assert node["properties"].get("ver") == version, (path.name, node["type"])


def test_no_workflows_folder_beside_example_workflows():
    """ComfyUI (0.8.0 and newer) asks packs to use example_workflows/; a second folder would be served twice."""
    assert not (REPO / "workflows").exists()
