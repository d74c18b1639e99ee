"""ComfyUI nodes for Z*: thin V3 nodes over `zstar_runtime`, which runs the plain-torch method of
`zstar_attention` through ComfyUI. Inputs are checked in validation.py; NODES is the whole pack."""
from comfy_api.latest import ComfyExtension, io

from .flow_inversion import ZStarFlowInversion
from .inversion import ZStarDDIMInversion, ZStarDDIMInversionPair
from .nulltext import ZStarNullTextOptimization
from .patch import ZStarAttentionPatch
from .record import ZStarStyleRecord
from .sampler import ZStarSampler
from .style_bank import ZStarLoadStyle, ZStarSaveStyle
from .style_map import ZStarStyleMap
from .styles import ZStarStyleMix

NODES = [ZStarDDIMInversion, ZStarDDIMInversionPair, ZStarNullTextOptimization, ZStarAttentionPatch,
         ZStarStyleRecord, ZStarStyleMix, ZStarSampler, ZStarStyleMap, ZStarSaveStyle, ZStarLoadStyle,
         ZStarFlowInversion]


class ZStarExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> ZStarExtension:
    return ZStarExtension()
