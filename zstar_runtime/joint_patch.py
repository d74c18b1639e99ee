"""The Z* hook for joint-attention transformers (Flux.1, Chroma, Qwen-Image, SD3.5): a block replacement.

ComfyUI calls `patches_replace["dit"][(kind, index)]` with the block's inputs and the original
block. Outside a Z* run, outside its step window, or on a step without style rows, the hook
just calls the original block, so the model is bit-for-bit the host's. Inside, it calls the
ORIGINAL block with a copy of the options that adds an attention override (the host's
`optimized_attention_override`, which every attention call made through ComfyUI's attention
functions goes through); the override runs joint_zstar_attention for this block's chosen
attention calls with the host's own backend. No class is swapped, nothing global changes.
"""
from __future__ import annotations

from ..zstar_attention import ZStarError, joint_zstar_attention, rope_rotation
from .hooks import RUN_KEY, ZStarHook, query_mask_for

OVERRIDE_KEY = "optimized_attention_override"


class ZStarBlock(ZStarHook):
    """Replacement of one transformer block; `calls` maps 'joint'/'image' to the chosen layer keys.

    rope: (axes_dim, theta) of a model with rotary positions (Flux, Chroma, Qwen-Image), else None.
    """

    def __init__(self, config, family, calls: dict, rope=None):
        super().__init__(config, family)
        self.calls = dict(calls)
        self.rope = rope

    def __call__(self, args, extra):
        original = extra["original_block"]
        options = args.get("transformer_options") or {}
        run = options.get(RUN_KEY)
        if run is None or not run.reweight or not run.stacked:
            return original(args)
        override = JointOverride(self, run, options.get(OVERRIDE_KEY), len(options.get("cond_or_uncond") or [0]))
        return original({**args, "transformer_options": {**options, OVERRIDE_KEY: override}})

    def positions(self, run):
        """The rotation that moves the style's image keys, or None ('as_recorded', or no RoPE)."""
        mode = self.config.positions
        if self.rope is None or mode == "as_recorded":
            return None
        cache = run.rope_rotation
        key = (self.rope, mode)
        if key not in cache:
            axes_dim, theta = self.rope
            offsets = self.family.style_key_offsets(mode, self.family.token_grid(run.latent_shape))
            cache[key] = rope_rotation(offsets + (0.0,) * (len(axes_dim) - 3), axes_dim, theta)
        return cache[key]


class JointOverride:
    """The attention override for one block call: its n-th attention call is layer
    calls[family.call_order[n]]."""

    def __init__(self, block: ZStarBlock, run, previous, n_chunks: int):
        self.block, self.run, self.previous, self.n_chunks = block, run, previous, n_chunks
        self.count = 0

    def __call__(self, func, *args, **kwargs):
        n, self.count = self.count, self.count + 1
        order = self.block.family.call_order
        attention_kind = order[n] if n < len(order) else None
        if attention_kind not in self.block.calls:
            return self._host(func, *args, **kwargs)
        q, k, v = args[:3]
        heads = args[3] if len(args) > 3 else kwargs.pop("heads")
        rest = args[4:]
        if kwargs.get("mask") is not None:
            raise ZStarError("conditioning: this model call carries an attention mask, which Z* does not support in "
                             f"{self.block.family.label} blocks; use plain conditionings")
        heads_first = bool(kwargs.get("skip_reshape", False))
        run = self.run
        grid = self.block.family.token_grid(run.latent_shape)
        n_img = grid[0] * grid[1]
        n_tok = q.shape[2] if heads_first else q.shape[1]
        if n_tok < n_img:
            raise ZStarError(f"Z*: a {n_tok}-token attention call cannot hold the content's {n_img} image tokens")

        def attention(q_, k_, v_):
            return self._host(func, q_, k_, v_, heads, *rest, **kwargs)

        return joint_zstar_attention(q, k, v, attention, run.layout, self.n_chunks, n_tok - n_img, run.style_scales,
                                     run.style_self_scale, query_mask=query_mask_for(run, grid),
                                     heads_first=heads_first, style_key_rotation=self.block.positions(run))

    def _host(self, func, *args, **kwargs):
        if self.previous is not None:  # another node's override stays in charge of the backend
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)
