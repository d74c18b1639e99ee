"""API workflows: load one, find its image slots, apply the command line's settings, fill in a job."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ZStarBatchError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = REPO / "example_workflows" / "api" / "zstar_basic.json"
# Frontend-only node types that may appear in UI workflows but never in API prompts.
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def moved_example(path: Path) -> Path:
    """The pack's example workflows moved from workflows/ to example_workflows/ (the folder name
    ComfyUI expects); a path into the old folder that no longer exists is read from the new one."""
    path = Path(path)
    parts = path.parts
    if not path.exists() and "workflows" in parts:
        i = len(parts) - 1 - parts[::-1].index("workflows")
        candidate = REPO / "example_workflows" / Path(*parts[i + 1:]) if i + 1 < len(parts) else None
        if candidate is not None and candidate.is_file():
            return candidate
    return path


def load_workflow(path: Path) -> dict:
    """An API-format workflow ({node id: {class_type, inputs}}), as ComfyUI's 'Export (API)' writes."""
    path = moved_example(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ZStarBatchError(f"cannot read workflow {path}: {e}") from None
    if "nodes" in data and "links" in data:
        raise ZStarBatchError(f"{path} is a UI workflow; use its API twin (example_workflows/api/) or "
                              "ComfyUI's Workflow → Export (API)")
    if not data or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise ZStarBatchError(f"{path} is not an API-format workflow")
    return data


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def upstream(prompt: dict, node_id: str, input_name: str | None = None) -> set[str]:
    """Node ids that feed node_id (through input_name only, if given), transitively."""
    seen, todo = set(), []
    inputs = prompt[node_id]["inputs"]
    for name, value in inputs.items():
        if (input_name is None or name == input_name) and is_link(value):
            todo.append(value[0])
    while todo:
        nid = todo.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        todo.extend(v[0] for v in prompt[nid]["inputs"].values() if is_link(v))
    return seen


def zstar_samplers(prompt: dict) -> list[str]:
    """Ids of the Z* nodes that take a content and a style (the Z* Sampler, the Style Map, …)."""
    return sorted((nid for nid, n in prompt.items()
                   if n["class_type"].startswith("ZStar") and is_link(n["inputs"].get("content"))
                   and is_link(n["inputs"].get("style"))), key=lambda k: (len(k), k))


def image_slots(prompt: dict) -> tuple[str, str]:
    """(content Load Image id, style Load Image id): the Load Image nodes upstream of the Z*
    sampler's content and style inputs."""
    samplers = zstar_samplers(prompt)
    if len(samplers) != 1:
        raise ZStarBatchError(f"the workflow needs exactly one Z* sampler (a Z* node with content and style "
                              f"inputs), it has {len(samplers)}")
    sid = samplers[0]
    found = {}
    for role in ("content", "style"):
        loads = sorted(n for n in upstream(prompt, sid, role) if prompt[n]["class_type"] == "LoadImage")
        if role == "style":
            loads = [n for n in loads if n != found["content"]]
        if len(loads) != 1:
            raise ZStarBatchError(f"the workflow needs one Load Image feeding the sampler's {role} input, it has {len(loads)}")
        found[role] = loads[0]
    return found["content"], found["style"]


def parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class Settings:
    """What the command line changes in the workflow (None = keep the workflow's value)."""
    checkpoint: str | None = None
    steps: int | None = None
    size: tuple[int, int] | None = None
    zstar: dict = field(default_factory=dict)  # input name -> value, on every ZStar* node that has it
    sets: list = field(default_factory=list)   # [(node id or class_type, input, value)]


def apply_settings(prompt: dict, s: Settings) -> dict:
    prompt = copy.deepcopy(prompt)
    zstar_values = dict(s.zstar)
    if s.steps is not None:
        zstar_values["steps"] = s.steps
        # The paper preset reweights to the end (end_step = steps); keep "to the end" when the
        # step count changes, and keep start_step inside the window.
        for node in prompt.values():
            ins = node["inputs"]
            if node["class_type"].startswith("ZStar") and "end_step" in ins and "end_step" not in s.zstar:
                if not is_link(ins["end_step"]):
                    zstar_values.setdefault("end_step", s.steps)
            if node["class_type"].startswith("ZStar") and "start_step" in ins and "start_step" not in s.zstar:
                if not is_link(ins["start_step"]) and ins["start_step"] >= zstar_values.get("end_step", s.steps):
                    zstar_values["start_step"] = max(0, zstar_values.get("end_step", s.steps) - 1)
    for node in prompt.values():
        ins = node["inputs"]
        if node["class_type"].startswith("ZStar"):
            for name, value in zstar_values.items():
                if name in ins and not is_link(ins[name]):
                    ins[name] = value
        if s.checkpoint is not None and "ckpt_name" in ins and not is_link(ins["ckpt_name"]):
            ins["ckpt_name"] = s.checkpoint
        if s.size is not None and node["class_type"] == "ImageScale":
            ins["width"], ins["height"] = s.size
    for target, name, value in s.sets:
        hits = [n for nid, n in prompt.items() if nid == target or n["class_type"] == target
                or n.get("_meta", {}).get("title") == target]
        if not hits:
            raise ZStarBatchError(f"--set {target}.{name}: no node with that id, class or title in the workflow")
        for n in hits:
            n["inputs"][name] = value
    return prompt


def fill_job(prompt: dict, content_value: str, style_value: str, prefix: str) -> dict:
    prompt = copy.deepcopy(prompt)
    content_id, style_id = image_slots(prompt)
    prompt[content_id]["inputs"]["image"] = content_value
    prompt[style_id]["inputs"]["image"] = style_value
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = prefix
    return prompt
