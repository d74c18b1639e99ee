"""The style map: a Z* run that also shows, per pixel, how much attention went to the style.

For every reweighted layer and step the sampler's probe hands over the content queries and
keys and the style keys; `style_share` turns them into the share of attention mass the
reweighted softmax put on style keys (averaged over heads). This node keeps the conditional
CFG half only, maps each layer's token grid onto the latent grid (every latent pixel takes the
value of the token it belongs to), averages over the chosen layers and steps, and renders the
result at image resolution.

The map is the share the reweighted attention actually used: where a region mask keeps the
style out, the content attends only to itself and the share is exactly 0.
"""
from __future__ import annotations

import torch

import comfy.patcher_extension

from ..zstar_attention import PAPER_PRESET, SharedRunState, ZStarError, parse_layers
from ..zstar_attention.grid import token_grid
from ..zstar_attention.style_share import style_share
from .families import describe
from .hooks import RUN_KEY, query_mask_for
from .patch import zstar_config
from .sampler import zstar_sample


# A perceptually ordered dark-to-bright ramp (inferno-like): share 0 black, 1 pale yellow.
_RAMP = torch.tensor([[0.0, 0.0, 0.02], [0.26, 0.04, 0.41], [0.58, 0.15, 0.40],
                      [0.87, 0.32, 0.23], [0.99, 0.65, 0.04], [0.99, 1.0, 0.64]])


def colorize(share: torch.Tensor) -> torch.Tensor:
    """(B, H, W) in 0..1 → IMAGE (B, H, W, 3) through _RAMP, linearly interpolated."""
    x = share.clamp(0, 1) * (len(_RAMP) - 1)
    lo = x.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (x - lo).unsqueeze(-1)
    ramp = _RAMP.to(share.device)
    return ramp[lo] * (1 - frac) + ramp[lo + 1] * frac


class ShareAccumulator(SharedRunState):
    """Sums the conditional half's share maps (on the latent grid) over the chosen layers and steps.

    Per-run state reached through the model's wrappers: shared by every copy (SharedRunState)."""

    def __init__(self, keys: set, steps: range, latent_hw: tuple, n_content: int):
        self.keys, self.steps, self.latent_hw, self.n_content = keys, steps, latent_hw, n_content
        self.total = None
        self.count = 0
        self.labels = None  # cond_or_uncond of the model call in progress
        self.run = None

    def apply_model_wrapper(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        self.labels = list(transformer_options.get("cond_or_uncond", [0]))
        self.run = transformer_options.get(RUN_KEY)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def probe(self, step, key, q, k, style_keys, scales, heads):
        if key not in self.keys or step not in self.steps or 0 not in self.labels:
            return
        nc = self.n_content
        rows = slice(self.labels.index(0) * nc, (self.labels.index(0) + 1) * nc)
        h, w = token_grid(q.shape[1], self.latent_hw)
        mask = None
        if self.run is not None and self.run.query_mask is not None:  # exactly the patch's resized mask
            mask = query_mask_for(self.run, (h, w))
        share = style_share(q[rows], k[rows], [s[rows] for s in style_keys], list(scales), heads, query_mask=mask)
        grid = torch.nn.functional.interpolate(share.view(nc, 1, h, w), size=self.latent_hw, mode="nearest")[:, 0]
        self.total = grid if self.total is None else self.total + grid
        self.count += 1

    def mean(self) -> torch.Tensor:
        return self.total / self.count


def chosen_keys(info, config, layers: str) -> set:
    """The patched keys among `layers` ('all' = every patched layer)."""
    if layers.strip().lower() in ("", "all"):
        return set(config.keys)
    chosen = parse_layers(layers, len(info.layer_keys))
    missing = [n for n in chosen if n not in config.layers]
    if missing:
        raise ZStarError(f"layers: {missing} are not reweighted by the patch, which uses layers {list(config.layers)}; "
                         "pick among those or 'all'")
    return {info.layer_keys[n] for n in chosen}


def style_map(model, content, style, positive, negative, cfg=1.0, anchor=PAPER_PRESET.anchor,
              style_mode="replay", layers="all", start_step=0, end_step=1000, mask=None, progress=True):
    """Run the Z* sampler with a share probe; returns (heatmap IMAGE, stylized samples, share MASK)."""
    info = describe(model)
    info.require("style_map", "Z* Style Map")
    config = zstar_config(model)
    keys = chosen_keys(info, config, layers)
    first, last = max(start_step, config.start_step), min(end_step, config.end_step, content.steps)
    if first >= last:
        raise ZStarError(f"start_step/end_step: the window {start_step}-{end_step} holds no step the patch reweights "
                         f"(steps {config.start_step}-{config.end_step - 1})")
    acc = ShareAccumulator(keys, range(first, last), tuple(content.latent_shape[1:]), content.batch)
    observed = model.clone()
    observed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "zstar_style_map",
                                  acc.apply_model_wrapper)
    samples, _ = zstar_sample(observed, content, style, positive, negative, cfg, anchor, style_mode,
                              progress=progress, mask=mask, probe=acc.probe)
    if acc.count == 0:
        raise ZStarError("style map: no conditional model call reached the chosen layers and steps")
    share = torch.nn.functional.interpolate(acc.mean()[:, None].float(), scale_factor=info.family.latent_to_pixels,
                                            mode="nearest")[:, 0].cpu()
    return colorize(share), samples, share


