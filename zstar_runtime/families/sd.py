"""SD1.5 and SD2.x: the paper's model family.

Which self-attention layers (attn1) Z* can reweight, and how they are numbered.

ComfyUI addresses an attn1 replacement by (block_name, block_id, transformer_index): the
U-Net block ("input"/"middle"/"output", its index in input_blocks/output_blocks, 0 for the
middle) and the BasicTransformerBlock's depth index inside that block's SpatialTransformer.
The paper counts "layers" as these keys in execution order.

SD1.5 (and SD2.x, same layout), 16 layers, transformer_index always 0:

    layers  0– 1  input 1, 2     (64² tokens at 512 px)
    layers  2– 3  input 4, 5     (32²)
    layers  4– 5  input 7, 8     (16²)
    layer   6     middle 0       (8²)
    layers  7– 9  output 3, 4, 5 (16²)
    layers 10–12  output 6, 7, 8 (32²)
    layers 13–15  output 9–11    (64²)

The paper's layers 10–15 are output blocks 6–11: every decoder self-attention at the two
finest attention resolutions (1/2 and 1/1 of the latent).

Default: layers 10-15 (the authors' code, Deng et al., CVPR 2024, arXiv 2311.16491). SD2.x has
the same layout and takes the same default (the paper did not use SD2.x; same rule, same layers).
"""
from __future__ import annotations

from .unet import UNetFamily

SD15_LAYER_KEYS = (
    tuple(("input", i, 0) for i in (1, 2, 4, 5, 7, 8))
    + (("middle", 0, 0),)
    + tuple(("output", i, 0) for i in range(3, 12))
)
PAPER_LAYERS = "10-15"

SD2 = UNetFamily(name="sd2", label="SD2.x", layer_keys=SD15_LAYER_KEYS, default_layers=PAPER_LAYERS,
                 default_source="the paper's SD1.5 layers (same U-Net layout); not tuned by the authors for SD2.x",
                 config_prefix="SD2")
SD15 = UNetFamily(name="sd15", label="SD1.5", layer_keys=SD15_LAYER_KEYS, default_layers=PAPER_LAYERS,
                  default_source="the paper (Deng et al., CVPR 2024) and the authors' code: layers 10-15")
