"""Z* (zero-shot style transfer by attention reweighting) in plain torch. No ComfyUI imports.

Module map (which function runs when):

    attention.py           reweighted_attention: one row's queries over [λ·K_style… ; K_own], one fused call
                           of the host's attention; with_query_mask: the region mask's rule, in one place;
                           attention_over_rows: the same over rows already side by side (no copy)
    batch_attention.py     PAPER PATH: zstar_batch_attention, a stacked [content | style rows] model call,
                           split by RowLayout per CFG chunk (in place when one content row per chunk)
    recorded_attention.py  FAST MODE: recorded_style_attention, content rows only, style K/V from a record
    rows.py                RowLayout (who reads whom), ZStarRun (per-run state), rows_per_chunk (the one
                           batch-split check)
    reference.py           the official materialised formulation, float64, for tests and benchmarks
    style_share.py         where the style went (the style map's share), chunked, no score matrix
    grid.py                a layer's token grid on the latent
    schedule.py, ddim.py   the official DDIM schedule, step, inversion and sampling
    flow.py                rectified-flow (Flux, SD3.5) inversion and sampling: first order and FireFlow second order
    joint_attention.py     JOINT ATTENTION (Flux, SD3.5): joint_zstar_attention over [text ; image] tokens,
                           content image queries reweighted; rope_rotation moves the style keys' positions
    sampling.py            the Z* denoising loop (replay / alongside), any denoiser
    layers.py              layer strings ("10-15") and step windows
    presets.py             the paper preset (the authors' code's settings), read by nodes, workflows, benchmarks
    style_types.py         Inversion, StyleRecord, StyleEntry: what the steps pass on
    style_file.py          the style bank's file format
    errors.py              ZStarError and the shared value checks

Masks and several styles are arguments of every entry (query_mask; lists of style K/V with a λ each).
"""
from .errors import ZStarError, as_int, check_strength
from .attention import attention_over_rows, reweighted_attention, sdpa_attention, with_query_mask
from .reference import reweighted_attention_reference
from .schedule import ddim_sigmas, ddim_timesteps, scaled_linear_alphas_cumprod, sigmas_from_table, vp_scale
from .ddim import ddim_invert, ddim_sample, ddim_step
from .flow import FlowTrajectory, flow_invert, flow_sample, flow_step, flow_velocity
from .layers import parse_layers, select_attn1_keys, step_window
from .presets import PAPER_PRESET, ZStarPreset

from .rows import RowLayout, SharedRunState, ZStarRun, rows_per_chunk
from .batch_attention import zstar_batch_attention
from .recorded_attention import recorded_style_attention
from .joint_attention import joint_zstar_attention, rope_rotation, rotate_keys
from .grid import token_grid
from .sampling import STYLE_MODES, zstar_denoise

__all__ = [
    "ZStarError", "as_int", "check_strength",
    "reweighted_attention", "attention_over_rows", "sdpa_attention", "with_query_mask", "reweighted_attention_reference",
    "scaled_linear_alphas_cumprod", "ddim_timesteps", "sigmas_from_table", "ddim_sigmas", "vp_scale",
    "ddim_step", "ddim_invert", "ddim_sample",
    "FlowTrajectory", "flow_step", "flow_velocity", "flow_invert", "flow_sample",
    "parse_layers", "select_attn1_keys", "step_window",
    "ZStarPreset", "PAPER_PRESET",
    "RowLayout", "SharedRunState", "ZStarRun", "rows_per_chunk", "zstar_batch_attention",
    "recorded_style_attention", "joint_zstar_attention", "rope_rotation", "rotate_keys", "token_grid", "STYLE_MODES", "zstar_denoise",
]
