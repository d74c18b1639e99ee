"""Flux, Qwen-Image and Z-Image rows of the benchmark: Z*'s joint attention at their width, and one
denoiser step (Flux, Qwen-Image).

Qwen-Image's block is as wide as Flux.1's (24 heads × 128); its rows differ in the text length
(N_TXT_QWEN) and, for the step, in the network (tests/comfy/models.py `qwen_image`, one-frame
latents, no pooled vector or guidance), so the same functions run both, the Qwen ones under
variant names prefixed "qwen_". Z-Image's layer (attention only) is 30 heads × 128 = 3840 wide, its
caption padded to a multiple of 32 and its image tokens followed by pad tokens up to one (variants
prefixed "zimage_"; Z* treats the pad tokens as text).

Attention (plain torch, no ComfyUI), one Flux.1 block's call: 24 heads × 128 = 3072 wide,
512 text tokens (T5, as Flux runs) + the image tokens of a latent side (2×2 patches), the
[content, style] batch (2 rows) in Flux's heads-first layout (B, heads, L, d) after RoPE:
  plain   one host attention call over the 2 rows: torch SDPA, then (B, L, heads·d), exactly
          ComfyUI's attention_pytorch with skip_reshape=True (what the unpatched block runs)
  zstar   joint_zstar_attention on the same q, k, v with that backend: paper preset (λ 1.2,
          λ_style 1.5) and the style keys' positions shifted (Flux's 'auto'), i.e. what the
          patched block runs
Time and memory as in attn.py (interleaved best/median; CPU peak in a fresh `dit.py --child`).

Step (needs ComfyUI, pipeline.setup first): a random Flux.1-dev-layout model (tests/comfy/
models.py `flux`) with few blocks, patched with the 'auto' layers, one BaseModel.apply_model on
[content, style] (2 rows) against the unpatched model on the same 2 rows.
"""
from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path

import torch

import attn
from timing import interleaved

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from zstar_attention import RowLayout, joint_zstar_attention, rope_rotation  # noqa: E402
from zstar_attention.presets import PAPER_PRESET  # noqa: E402

HEADS, DIM_HEAD, N_TXT = 24, 128, 512  # Flux.1: 3072 = 24 × 128; T5 length 512
N_TXT_QWEN = 128  # our choice: a prompt of Qwen2.5-VL tokens once ComfyUI drops its template (not padded)
AXES_DIM, THETA = (16, 56, 56), 10000  # Flux.1's rotary axes
STYLE_SCALE, STYLE_SELF_SCALE = PAPER_PRESET.style_scale, PAPER_PRESET.style_self_scale
LAYOUT = RowLayout(1, 1, 1)  # rows [content, style]; λ_style > 0 needs one style row per content row
VARIANTS = ("plain", "zstar")
WARM_SIDE = 8  # warm-up size (latent side)
# Step models: Flux.1's block layout at a CPU-feasible size. 1 double + 2 single blocks; 'auto' keeps
# Flux.1's share of single blocks (20-37 of 38), here the last single block: 1 of 3 blocks (Flux.1: 18 of 57).
STEP_MODELS = {
    "full": {"hidden_size": 3072, "num_heads": 24, "depth": 1, "depth_single_blocks": 2, "axes_dim": list(AXES_DIM)},
    "quick": {"hidden_size": 768, "num_heads": 6, "depth": 1, "depth_single_blocks": 2, "axes_dim": list(AXES_DIM)},
}
GUIDANCE = 3.5  # Flux.1-dev's usual FluxGuidance
# Qwen-Image's block at the same widths, 4 blocks: 'auto' (the second half) patches 2 of 4 (Qwen-Image: 30 of 60)
QWEN_STEP_MODELS = {
    "full": {"num_attention_heads": 24, "attention_head_dim": 128, "layers": 4, "axes_dims_rope": AXES_DIM},
    "quick": {"num_attention_heads": 6, "attention_head_dim": 128, "layers": 4, "axes_dims_rope": AXES_DIM},
}


N_TXT_ZIMAGE = 128  # our choice: a Qwen3-4B caption, as Z-Image pads it (to a multiple of 32)
# per variant prefix: (heads, text tokens, rotary axes, θ, the multiple the image tokens are padded to)
ATTN_SPECS = {"": (HEADS, N_TXT, AXES_DIM, THETA, 1), "qwen_": (HEADS, N_TXT_QWEN, AXES_DIM, THETA, 1),
              "zimage_": (30, N_TXT_ZIMAGE, (32, 48, 48), 256.0, 32)}
FAMILY_PREFIX = {"flux": "", "qwen_image": "qwen_", "z_image": "zimage_"}


def spec_of(variant: str) -> tuple:
    return ATTN_SPECS[variant[:variant.index("_") + 1] if variant.startswith(("qwen_", "zimage_")) else ""]


def n_txt_of(variant: str) -> int:
    return spec_of(variant)[1]


def image_tokens(side: int) -> int:
    return ((side + 1) // 2) ** 2


def pad_tokens(variant: str, side: int) -> int:
    return (-image_tokens(side)) % spec_of(variant)[4]


def make_inputs(variant: str, side: int, device, dtype, seed: int = 0) -> tuple:
    """q, k, v (2, heads, text + image (+ pad) tokens, d): one [content, style] call; same for every
    variant; then the image side in tokens and the pad tokens' count (what the patched layer knows
    from the run's latent)."""
    gen = torch.Generator().manual_seed(seed)
    heads, pad = spec_of(variant)[0], pad_tokens(variant, side)
    shape = (LAYOUT.rows, heads, n_txt_of(variant) + image_tokens(side) + pad, DIM_HEAD)
    return tuple(torch.randn(shape, generator=gen).to(device, dtype) for _ in range(3)) + ((side + 1) // 2, pad)


def sdpa_heads_first(q, k, v):
    """ComfyUI's attention_pytorch(q, k, v, heads, skip_reshape=True): SDPA, then (B, L, heads·d)."""
    b, heads, _, d = q.shape
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(b, -1, heads * d)


@functools.cache
def style_rotation(grid: int, axes: tuple = AXES_DIM, theta: float = THETA) -> torch.Tensor:
    """The 'shifted' positions' rotation for a grid × grid image, as JointHook.positions builds it (cached per run there)."""
    return rope_rotation((1.0, float(grid), 0.0), axes, theta)


def call(variant: str, t: tuple):
    q, k, v, grid, n_after = t
    base = variant.split("_")[-1]
    _, n_txt, axes, theta, _ = spec_of(variant)
    if base == "plain":
        return sdpa_heads_first(q, k, v)
    if base == "zstar":
        return joint_zstar_attention(q, k, v, sdpa_heads_first, LAYOUT, 1, n_txt, (STYLE_SCALE,), STYLE_SELF_SCALE,
                                     heads_first=True, style_key_rotation=style_rotation(grid, tuple(axes), theta),
                                     n_after=n_after)
    raise ValueError(variant)


def peak_memory(variant: str, side: int, device, dtype) -> dict:
    if torch.device(device).type == "cuda":
        return attn.cuda_peak(call, make_inputs, variant, side, device, dtype)
    return attn.cpu_peak(__file__, variant, side, dtype)


def run_attention(sides, reps: int, device, dtype, log=print, family: str = "flux") -> list[dict]:
    """One dict per latent side: times (s per repetition) and peak memory per variant ('plain',
    'zstar'); family 'qwen_image' runs them with Qwen-Image's text length."""
    prefix = FAMILY_PREFIX[family]
    results = []
    mem_ok = torch.device(device).type == "cuda" or attn.cpu_memory_supported()
    for side in sides:
        n_img, n_txt = image_tokens(side) + pad_tokens(prefix, side), n_txt_of(prefix)
        log(f"{family} attention {side}² ({n_txt} + {n_img} tokens): timing {', '.join(VARIANTS)} × {reps}")
        with torch.inference_mode():
            for v in VARIANTS:  # warm-up (kernels, thread pool) at a small size
                call(prefix + v, make_inputs(prefix + v, WARM_SIDE, device, dtype))
            inputs = make_inputs(prefix + "plain", side, device, dtype)  # both variants read the same q, k, v
            times = interleaved({v: functools.partial(call, prefix + v, inputs) for v in VARIANTS}, reps, device)
            del inputs
        mem = {}
        if mem_ok:
            for v in VARIANTS:
                log(f"{family} attention {side}²: peak memory of {v}")
                mem[v] = peak_memory(prefix + v, side, device, dtype)
        results.append({"side": side, "n_img": n_img, "n_txt": n_txt, "times": times, "mem": mem})
    return results


# ---- one denoiser step through ComfyUI -----------------------------------------------------

def flux_call(patcher, rows: int, side: int, cond, run=None, family: str = "flux"):
    """One model evaluation of `rows` rows (cond only, cfg 1) through BaseModel.apply_model at
    mid-schedule σ, with the run state the sampler sets on a reweighting step. Flux gets its pooled
    vector and guidance; Qwen-Image its one-frame latents (B, 16, 1, H, W) and the text alone."""
    import comfy.model_management
    import pipeline

    comfy.model_management.load_models_gpu([patcher])
    device = patcher.load_device
    gen = torch.Generator().manual_seed(rows)
    frames = (1,) if family == "qwen_image" else ()
    x = torch.randn(rows, 16, *frames, side, side, generator=gen).to(device)
    ctx = cond[0][0].to(device).expand(rows, -1, -1)
    extra = {}
    if family == "flux":
        extra = {"y": cond[0][1]["pooled_output"].to(device).expand(rows, -1),
                 "guidance": torch.full((rows,), GUIDANCE, device=device)}
    sigmas = patcher.model.model_sampling.sigmas
    sigma = torch.full((rows,), float(sigmas[len(sigmas) // 2]), device=device)
    opts = pipeline._options(patcher, run)
    opts["sigmas"] = sigma

    def fn():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=opts, **extra)

    return fn


def run_step(models, width: str, side: int, reps: int, device, log=print, family: str = "flux") -> dict:
    """Patched (Z*, 'auto' layers, paper preset) vs unpatched model call on [content, style]."""
    import pipeline

    nodes = pipeline.nodes
    spec = (QWEN_STEP_MODELS if family == "qwen_image" else STEP_MODELS)[width]
    log(f"building the {width} {family} step model {spec}")
    if family == "qwen_image":
        model = models.qwen_image(0, joint_attention_dim=models.SMALL_CONTEXT, **spec)
    else:
        model = models.flux(0, **spec)
    patched = nodes.patch.patch_model(model, STYLE_SCALE, STYLE_SELF_SCALE, "auto",
                                      PAPER_PRESET.start_step, PAPER_PRESET.end_step)
    config = patched.model_options["transformer_options"][nodes.patch.CONFIG_KEY]
    run = nodes.ZStarRun(LAYOUT, (STYLE_SCALE,), STYLE_SELF_SCALE)
    run.reweight = run.stacked = True
    run.step = PAPER_PRESET.start_step
    qwen = family == "qwen_image"
    run.latent_shape = (16, 1, side, side) if qwen else (16, side, side)
    n_txt = n_txt_of("qwen_" if qwen else "")
    cond = models.flow_cond(1, tokens=n_txt)
    calls = {"unpatched": flux_call(model, LAYOUT.rows, side, cond, family=family),
             "patched": flux_call(patched, LAYOUT.rows, side, cond, run, family=family)}
    with torch.inference_mode():
        outs = {name: fn() for name, fn in calls.items()}  # warm-up; Z* must change the output
        log(f"{family} step {side}²: patched vs unpatched, interleaved × {reps}")
        times = interleaved(calls, reps, device)
    net = model.model.diffusion_model
    blocks = (len(net.transformer_blocks), 0) if qwen else (len(net.double_blocks), len(net.single_blocks))
    width_info = ({"hidden_size": spec["num_attention_heads"] * spec["attention_head_dim"],
                   "num_heads": spec["num_attention_heads"]} if qwen else spec)
    res = {"times": times, "side": side, "layers": config.layers, "keys": config.keys, "positions": config.positions,
           "blocks": blocks, "width": width_info, "family": family, "n_txt": n_txt,
           "params": sum(p.numel() for p in net.parameters()),
           "diff": pipeline.rel(outs["patched"], outs["unpatched"])}
    del model, patched, calls, outs
    gc.collect()
    return res


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    attn.child_peak(call, make_inputs, sys.argv[2], int(sys.argv[3]), sys.argv[4], warm=WARM_SIDE)
