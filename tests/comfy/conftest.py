"""ComfyUI tier: real ComfyUI code from COMFYUI_PATH, small random-weight models built here.

Makes this folder importable (harness, models) under pytest's importlib mode and prepares
ComfyUI before any test module imports it. Modules skip themselves without COMFYUI_PATH.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402,F401  (sets ComfyUI up when COMFYUI_PATH is set)

# Session fixtures `comfy_server` (a real ComfyUI server on 127.0.0.1 serving this repo) and
# `test_images` (small uploaded images); see zstar_server.py. They skip without COMFYUI_PATH.
from zstar_server import comfy_server, test_images  # noqa: E402,F401
