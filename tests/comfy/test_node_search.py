"""Node search words (issue 17): every Z* node carries the words users type, on hosts whose V3
schema has `search_aliases` (0.11+), and the older hosts still load every node without them."""
from __future__ import annotations

import dataclasses

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

from comfy_api.latest import io  # noqa: E402

harness.load_pack()
from comfyui_zstar.nodes import NODES  # noqa: E402

HOST_HAS_ALIASES = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}
# what a user looking for Z* would type; each node answers to at least one of these
EVERYDAY_WORDS = {"style transfer", "reference image", "inversion"}


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.__name__)
def test_every_node_lists_search_words_where_the_host_takes_them(node):
    schema = node.define_schema()  # builds on every host: on older ones no unknown keyword reaches it
    info = node.GET_NODE_INFO_V1()
    if not HOST_HAS_ALIASES:
        assert not info.get("search_aliases"), info.get("search_aliases")
        return
    words = schema.search_aliases
    assert words == info["search_aliases"]
    assert EVERYDAY_WORDS & set(words), f"{node.__name__}: {words}"
    assert len(words) == len(set(words)) and all(w == w.strip().lower() and w for w in words), words


def test_the_server_lists_the_words(comfy_server):
    info = comfy_server.object_info
    for node in NODES:
        listed = info[node.__name__].get("search_aliases") or []
        if HOST_HAS_ALIASES:
            assert listed == node.define_schema().search_aliases
        else:
            assert listed == []
