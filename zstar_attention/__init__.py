"""Z* (zero-shot style transfer by attention reweighting) in plain torch.

No ComfyUI imports here: the nodes in ../nodes adapt these functions to ComfyUI.
"""
from .errors import ZStarError
from .attention import attention_over_rows, reweighted_attention, sdpa_attention
from .reference import reweighted_attention_reference
from .schedule import ddim_sigmas, ddim_timesteps, scaled_linear_alphas_cumprod, sigmas_from_table, vp_scale
from .ddim import ddim_invert, ddim_sample, ddim_step
from .layers import (
    ARCHITECTURES,
    SD2_ATTN1_KEYS,
    SD15_ATTN1_KEYS,
    SD15_PAPER_LAYERS,
    SDXL_ATTN1_KEYS,
    SDXL_PAPER_LAYERS,
    Architecture,
    parse_layers,
    select_attn1_keys,
    step_window,
)
from .presets import PAPER_PRESET, ZStarPreset

from .rows import RowLayout, SharedRunState, ZStarRun, rows_per_chunk
from .batch_attention import zstar_batch_attention
from .sampling import STYLE_MODES, zstar_denoise

__all__ = [
    "ZStarError",
    "reweighted_attention", "attention_over_rows", "sdpa_attention", "reweighted_attention_reference",
    "scaled_linear_alphas_cumprod", "ddim_timesteps", "sigmas_from_table", "ddim_sigmas", "vp_scale",
    "ddim_step", "ddim_invert", "ddim_sample",
    "SD15_ATTN1_KEYS", "SD2_ATTN1_KEYS", "SDXL_ATTN1_KEYS", "SD15_PAPER_LAYERS", "SDXL_PAPER_LAYERS",
    "Architecture", "ARCHITECTURES", "parse_layers", "select_attn1_keys", "step_window",
    "ZStarPreset", "PAPER_PRESET",
    "RowLayout", "SharedRunState", "ZStarRun", "rows_per_chunk", "zstar_batch_attention", "STYLE_MODES", "zstar_denoise",
]
