"""Checks before anything is queued: a server that lacks a node or a model would fail every job."""
from __future__ import annotations

from .client import ComfyClient
from .errors import ServerDown, ZStarBatchError
from .printer import Printer
from .workflow import is_link

# Inputs whose value must be one of the server's files, and the folder ComfyUI lists them from.
MODEL_INPUTS = {"ckpt_name": "checkpoints", "control_net_name": "controlnet", "vae_name": "vae",
                "lora_name": "loras", "unet_name": "diffusion_models", "clip_name": "text_encoders"}


def combo_options(spec) -> list | None:
    """The allowed values of an /object_info input spec, if it is a combo (old or V3 style)."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1].get("options")
    return None


def preflight(client: ComfyClient, prompt: dict) -> list[str]:
    """Problems that would make every job fail on this server: missing nodes or models."""
    info = client.object_info()
    problems = []
    types = sorted({n["class_type"] for n in prompt.values()})
    missing = [t for t in types if t not in info]
    if missing:
        zstar = [t for t in missing if t.startswith("ZStar")]
        hint = (" — the Z* nodes are not loaded: clone comfyui-zstar into ComfyUI/custom_nodes, restart ComfyUI "
                "and look for 'IMPORT FAILED' in its log" if zstar else " — install the custom nodes that provide them")
        problems.append(f"{client.name} has no node type(s) {', '.join(missing)}{hint}")
    for nid, node in prompt.items():
        spec_all = info.get(node["class_type"], {}).get("input", {})
        specs = {**spec_all.get("required", {}), **spec_all.get("optional", {})}
        for name, folder in MODEL_INPUTS.items():
            value = node["inputs"].get(name)
            if value is None or is_link(value) or name not in specs:
                continue
            options = combo_options(specs[name])
            if options is not None and value not in options:
                have = ", ".join(options[:12]) + (" …" if len(options) > 12 else "") if options else "none"
                flag = " (choose one with --checkpoint)" if name == "ckpt_name" else " (change it with --set)"
                problems.append(f"{client.name}: {name} '{value}' is not in its models/{folder} folder{flag}; "
                                f"it has: {have}")
    return problems


def connect(urls: list[str], workflow: dict, say: Printer) -> list[ComfyClient]:
    """Clients for the servers that answer and can run the workflow; errors if none can."""
    clients, down, problems = [], [], []
    for url in dict.fromkeys(urls):
        client = ComfyClient(url)
        try:
            client.ping()
            found = preflight(client, workflow)
        except ServerDown as e:
            down.append(str(e))
            continue
        if found:
            problems.extend(found)
        else:
            clients.append(client)
    for text in down + problems:
        say.error(("warning: " if clients else "error: ") + text)
    if not clients:
        if down and not problems:
            raise ZStarBatchError("no ComfyUI server answered. Start ComfyUI (python main.py) or let this script "
                                  "start it: --comfyui /path/to/ComfyUI")
        raise ZStarBatchError("no server can run the workflow (see the errors above)")
    return clients
