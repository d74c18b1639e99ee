"""Shared set-up for the ComfyUI tier: ComfyUI on sys.path in CPU mode, the pack imported as ComfyUI does.

Without COMFYUI_PATH every module of this tier skips with SKIP_REASON (pytest -rs shows it).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
SKIP_REASON = "ComfyUI tier skipped: COMFYUI_PATH is not set (point it at a ComfyUI checkout to run it)"


def setup_comfyui():
    if not (Path(COMFYUI_PATH) / "comfy" / "model_patcher.py").is_file():
        raise RuntimeError(f"COMFYUI_PATH={COMFYUI_PATH} is not a ComfyUI checkout (no comfy/model_patcher.py)")
    if COMFYUI_PATH not in sys.path:
        sys.path.insert(0, COMFYUI_PATH)
    import torch
    import comfy.cli_args

    if not torch.cuda.is_available():  # what `python main.py --cpu` sets
        comfy.cli_args.args.cpu = True


def load_pack():
    """Import this repo the way ComfyUI imports a custom node package (a package of its own)."""
    name = "comfyui_zstar"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if COMFYUI_PATH:
    setup_comfyui()
