"""comfyui-zstar: Z* zero-shot style transfer (attention reweighting) for ComfyUI.

ComfyUI imports this package from custom_nodes/ and calls `comfy_entrypoint()`.
"""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
