"""The words users type in the node search, given to hosts whose V3 schema takes them.

`io.Schema.search_aliases` exists from ComfyUI 0.11; older hosts (0.3.64, 0.8.0) have no such
field and would refuse the keyword, so the aliases go in only where the schema has it.
"""
from __future__ import annotations

import dataclasses

from comfy_api.latest import io

SUPPORTED = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}


def search_aliases(*words: str) -> dict:
    """`io.Schema(..., **search_aliases("style transfer", …))`: the words where the host lists them."""
    return {"search_aliases": list(words)} if SUPPORTED else {}
