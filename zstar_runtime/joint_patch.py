"""The Z* hooks for joint-attention transformers: a block replacement, or a layer-indexed override.

ZStarBlock (Flux.1, Flux.2, Chroma, Qwen-Image, SD3.5): ComfyUI calls
`patches_replace["dit"][(kind, index)]` with the block's inputs and the original block. Outside a
Z* run, outside its step window, or on a step without style rows, the hook just calls the
original block, so the model is bit-for-bit the host's. Inside, it calls the ORIGINAL block with
a copy of the options that adds an attention override (the host's `optimized_attention_override`,
which every attention call made through ComfyUI's attention functions goes through) for this
block's chosen attention calls.

LayerOverride (Z-Image's NextDiT, which offers no block replacement): one model-level attention
override. From 0.8.0 the host writes `transformer_options["block_type"]` / `["block_index"]`
before each of its numbered layers and hands the options to the attention call, so the override
knows which layer calls it; the refiner layers that run before the first numbered layer carry no
index (the run's model wrapper clears any stale one) and stay the host's.

Both run joint_zstar_attention with the host's own backend (and any override set before ours).
No class is swapped, nothing global changes.
"""
from __future__ import annotations

from ..zstar_attention import ZStarError, joint_zstar_attention, rope_rotation
from .hooks import RUN_KEY, ZStarHook, query_mask_for

OVERRIDE_KEY = "optimized_attention_override"
BLOCK_POSITION_KEYS = ("block_type", "block_index")  # what the host writes before each numbered layer


class JointHook(ZStarHook):
    """What both joint-attention hooks hold: the chosen layers, the rotary embedding (axes_dim,
    theta) of a model with rotary positions (else None), and the multiple the host pads the image
    tokens to with learnt pad tokens (Z-Image: 32; else 1)."""

    def __init__(self, config, family, calls: dict, rope=None, pad_multiple: int = 1):
        super().__init__(config, family)
        self.calls = dict(calls)
        self.rope = rope
        self.pad_multiple = int(pad_multiple)

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


class ZStarBlock(JointHook):
    """Replacement of one transformer block; `calls` maps 'joint'/'image' to the chosen layer keys."""

    def __call__(self, args, extra):
        original = extra["original_block"]
        options = args.get("transformer_options") or {}
        run = options.get(RUN_KEY)
        if run is None or not run.reweight or not run.stacked:
            return original(args)
        override = JointOverride(self, run, options.get(OVERRIDE_KEY), len(options.get("cond_or_uncond") or [0]))
        return original({**args, "transformer_options": {**options, OVERRIDE_KEY: override}})


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
            return host_call(self.previous, func, *args, **kwargs)
        return zstar_call(self.block, self.run, self.n_chunks, self.previous, func, args, kwargs)


class LayerOverride(JointHook):
    """The model-level attention override of a layer-indexed model (Z-Image): `calls` maps the
    host's block_index to the chosen layer key; calls of `block_type` layers it does not name, and
    every call without an index, go to `previous` (the override set before ours) or the host."""

    def __init__(self, config, family, calls: dict, rope=None, pad_multiple: int = 1, previous=None,
                 block_type: str = "double"):
        super().__init__(config, family, calls, rope, pad_multiple)
        self.previous = previous
        self.block_type = block_type

    def layer_of(self, options):
        """The chosen layer key of the call whose options these are, or None."""
        return self.calls.get(options.get("block_index")) if options.get("block_type") == self.block_type else None

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        run = options.get(RUN_KEY)
        key = self.layer_of(options)
        if run is None or key is None or not run.reweight or not run.stacked:
            return host_call(self.previous, func, *args, **kwargs)
        run.layer_calls += 1
        return zstar_call(self, run, len(options.get("cond_or_uncond") or [0]), self.previous, func, args, kwargs)


def zstar_call(hook: JointHook, run, n_chunks: int, previous, func, args, kwargs):
    """One chosen attention call, reweighted: the host's (q, k, v, heads, mask, …) split into the
    row's text, image and trailing pad tokens (image tokens after the text, the pad after them)."""
    q, k, v = args[:3]
    heads = args[3] if len(args) > 3 else kwargs.pop("heads")
    rest = list(args[4:])
    mask = rest.pop(0) if rest else kwargs.pop("mask", None)
    heads_first = bool(kwargs.get("skip_reshape", False))
    grid = hook.family.token_grid(run.latent_shape)
    n_img = grid[0] * grid[1]
    n_after = (-n_img) % hook.pad_multiple
    n_tok = q.shape[2] if heads_first else q.shape[1]
    if n_tok < n_img + n_after:
        raise ZStarError(f"Z*: a {n_tok}-token attention call cannot hold the content's {n_img + n_after} image tokens")

    def attention(q_, k_, v_, mask=None):
        return host_call(previous, func, q_, k_, v_, heads, mask, *rest, **kwargs)

    return joint_zstar_attention(q, k, v, attention, run.layout, n_chunks, n_tok - n_img - n_after, run.style_scales,
                                 run.style_self_scale, query_mask=query_mask_for(run, grid), heads_first=heads_first,
                                 style_key_rotation=hook.positions(run), n_after=n_after, mask=mask)


def host_call(previous, func, *args, **kwargs):
    if previous is not None:  # another node's override stays in charge of the backend
        return previous(func, *args, **kwargs)
    return func(*args, **kwargs)
