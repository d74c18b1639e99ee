"""The socket types Z* nodes pass between them (the data itself: zstar_attention.style_types)."""
from __future__ import annotations

from comfy_api.latest import io

InversionType = io.Custom("ZSTAR_INVERSION")
StyleRecordType = io.Custom("ZSTAR_STYLE_RECORD")
StylesType = io.Custom("ZSTAR_STYLES")
StyleFileType = io.Custom("ZSTAR_STYLE_FILE")
