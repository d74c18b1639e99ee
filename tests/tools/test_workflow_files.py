"""The committed example workflows are what workflows/build.py writes (no ComfyUI needed).

Their nodes, links and execution against a real server are in tests/comfy/test_workflows.py.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"


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
            f"{path.relative_to(REPO)} is out of date: run python workflows/build.py"


def test_every_ui_workflow_has_a_thumbnail_and_an_api_twin():
    from PIL import Image

    ui_files = sorted(WORKFLOWS.glob("*.json"))
    api_files = sorted((WORKFLOWS / "api").glob("*.json"))
    assert {p.stem for p in ui_files} >= {"zstar_basic", "zstar_controlnet", "zstar_batch"}
    assert {p.name for p in ui_files} == {p.name for p in api_files}, "each UI workflow needs workflows/api/<name>.json"
    for ui_path in ui_files:
        ui = json.loads(ui_path.read_text())
        assert ui.get("version") == 0.4 and {"nodes", "links", "last_node_id", "last_link_id"} <= set(ui)
        thumb = ui_path.with_suffix(".jpg")
        assert thumb.is_file(), f"{thumb.name} missing (python workflows/build.py writes it)"
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
