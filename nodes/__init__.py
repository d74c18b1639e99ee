"""ComfyUI nodes for Z*: thin V3 wrappers over `zstar_attention`."""
from comfy_api.latest import ComfyExtension, io

from .inversion import ZStarDDIMInversion
from .nulltext import ZStarNullTextOptimization
from .patch import ZStarAttentionPatch
from .sampler import ZStarSampler

NODES = [ZStarDDIMInversion, ZStarNullTextOptimization, ZStarAttentionPatch, ZStarSampler]


class ZStarExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ZStarExtension:
    return ZStarExtension()
