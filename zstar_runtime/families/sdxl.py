"""SDXL: a U-Net family with a layer map of our own choosing.

SDXL, 70 layers (one per BasicTransformerBlock, execution order; grid at 1024 px):

    layers  0– 1  input 4, index 0–1    (64²)      layers 34–43  output 0, index 0–9  (32²)
    layers  2– 3  input 5, index 0–1    (64²)      layers 44–53  output 1, index 0–9  (32²)
    layers  4–13  input 7, index 0–9    (32²)      layers 54–63  output 2, index 0–9  (32²)
    layers 14–23  input 8, index 0–9    (32²)      layers 64–65  output 3, index 0–1  (64²)
    layers 24–33  middle 0, index 0–9   (32²)      layers 66–67  output 4, index 0–1  (64²)
                                                   layers 68–69  output 5, index 0–1  (64²)

SDXL default (SDXL_PAPER_LAYERS = "34-69"; the paper only used SD1.5, so this is a choice,
not a reproduction): apply the SD1.5 rule "all decoder self-attention at the two finest
resolutions that have attention". SDXL has no attention at full latent resolution; its two
finest attention levels are 64² (output 3–5, 6 keys) and 32² (output 0–2, 30 keys), i.e.
output blocks 0–5, 36 keys. Matching by token grid instead (64² tokens, like SD1.5's output
9–11 at 512 px) would give the lighter "64-69"; users can pick any set with the layers string.
"""
from __future__ import annotations

from .unet import UNetFamily

SDXL_LAYER_KEYS = tuple(
    (block, block_id, index)
    for block, block_id, depth in (
        ("input", 4, 2), ("input", 5, 2), ("input", 7, 10), ("input", 8, 10),
        ("middle", 0, 10),
        ("output", 0, 10), ("output", 1, 10), ("output", 2, 10),
        ("output", 3, 2), ("output", 4, 2), ("output", 5, 2),
    )
    for index in range(depth)
)

SDXL = UNetFamily(name="sdxl", label="SDXL", layer_keys=SDXL_LAYER_KEYS, default_layers="34-69",
                  default_source="our choice (the paper used SD1.5 only): SD1.5's rule, every decoder "
                                 "self-attention at the two finest attention resolutions")
