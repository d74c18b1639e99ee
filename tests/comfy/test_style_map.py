"""Z* Style Map on real ComfyUI: a drop-in sampler whose heatmap follows λ, masks, layers, CFG halves."""
from __future__ import annotations

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch

import models
from zstar_fixtures import _inference_mode, empty, inv, model  # noqa: F401 (pytest fixtures)

harness.load_pack()
from comfyui_zstar.zstar_runtime.patch import patch_model  # noqa: E402
from comfyui_zstar.zstar_runtime.record import record_style  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402
from comfyui_zstar.nodes.style_map import ZStarStyleMap  # noqa: E402
from comfyui_zstar.zstar_runtime.style_map import colorize, style_map  # noqa: E402
from comfyui_zstar.zstar_attention import token_grid  # noqa: E402
from comfyui_zstar.zstar_attention import ZStarError  # noqa: E402

STEPS = 6
START = 2
LATENT = 16  # 128 px


def patched(model, lam=1.2):
    return patch_model(model, lam, 0.0, "auto", START, STEPS)


def test_map_is_a_drop_in_sampler(model, empty, inv):
    image, samples, share = style_map(patched(model), inv[2], inv[3], empty, empty, progress=False)
    plain, _ = zstar_sample(patched(model), inv[2], inv[3], empty, empty, progress=False)
    assert torch.equal(samples, plain)  # the probe observes, it changes nothing
    px = LATENT * 8
    assert image.shape == (1, px, px, 3) and image.dtype == torch.float32
    assert share.shape == (1, px, px)
    assert 0 <= image.min() and image.max() <= 1 and 0 < share.min() and share.max() < 1
    assert torch.equal(image, colorize(share))
    # every latent pixel is one 8×8 block of the image
    assert torch.equal(share, share[:, ::8, ::8].repeat_interleave(8, 1).repeat_interleave(8, 2))
    print(f"\nstyle share at λ 1.2: mean {share.mean():.3f}, min {share.min():.3f}, max {share.max():.3f}")


def test_larger_lambda_puts_more_mass_on_the_style(model, empty, inv):
    means = {lam: style_map(patched(model, lam), inv[2], inv[3], empty, empty, progress=False)[2].mean().item()
             for lam in (0.5, 1.2, 3.0)}
    print("\nλ → mean style share: " + ", ".join(f"{lam}: {m:.4f}" for lam, m in means.items()))
    assert means[0.5] < means[1.2] < means[3.0]


def test_masked_out_pixels_have_zero_share(model, empty, inv):
    mask = torch.zeros(1, LATENT * 8, LATENT * 8)
    mask[:, :, :64] = 1.0  # left half: on the token grid of every layer (16², 32²... here 4², 8², 16²)
    _, samples, share = style_map(patched(model), inv[2], inv[3], empty, empty, mask=mask, progress=False)
    masked, _ = zstar_sample(patched(model), inv[2], inv[3], empty, empty, mask=mask, progress=False)
    assert torch.equal(samples, masked)
    print(f"\nmasked map: left half share {share[..., :64].mean():.3f} (min {share[..., :64].min():.3f}), "
          f"right half max {share[..., 64:].max():.1f}")
    assert torch.equal(share[..., 64:], torch.zeros_like(share[..., 64:]))
    assert share[..., :64].min() > 0


def test_layer_and_step_filters(model, empty, inv):
    """'all' averages every patched layer equally, so it is the mean of two halves of them."""
    p = patched(model)
    every = style_map(p, inv[2], inv[3], empty, empty, progress=False)[2]
    coarse = style_map(p, inv[2], inv[3], empty, empty, layers="10-12", progress=False)[2]
    fine = style_map(p, inv[2], inv[3], empty, empty, layers="13-15", progress=False)[2]
    assert torch.allclose(every, (coarse + fine) / 2, atol=1e-6)
    assert not torch.allclose(coarse, fine)
    last = style_map(p, inv[2], inv[3], empty, empty, start_step=STEPS - 1, progress=False)[2]
    assert not torch.allclose(last, every)
    with pytest.raises(ZStarError, match=r"layers: \[0\] are not reweighted by the patch"):
        style_map(p, inv[2], inv[3], empty, empty, layers="0", progress=False)
    with pytest.raises(ZStarError, match="holds no step the patch reweights"):
        style_map(p, inv[2], inv[3], empty, empty, start_step=0, end_step=START, progress=False)


def test_reads_the_conditional_half_however_comfyui_batches_it(model, empty, inv):
    """CFG halves run together in one call, or apart (a 5× repeated negative does not
    concatenate with the 77-token positive); the map must be the conditional half's either way."""
    negative = models.cond(7)
    negative_long = [[negative[0][0].repeat(1, 5, 1), {}]]
    p = patched(model)
    together = style_map(p, inv[2], inv[3], empty, negative, cfg=4.0, progress=False)[2]
    apart = style_map(p, inv[2], inv[3], empty, negative_long, cfg=4.0, progress=False)[2]
    diff = (together - apart).abs().max().item()
    print(f"\ncfg 4, halves together vs apart: max share diff {diff:.1e}")
    assert diff <= 1e-5


def test_fast_mode_map_equals_replay_map(model, empty, inv):
    p = patched(model)
    replay = style_map(p, inv[2], inv[3], empty, empty, progress=False)[2]
    record = record_style(model, inv[3], empty, empty, 1.0, "auto", START, STEPS, progress=False)
    fast = style_map(p, inv[2], record, empty, empty, progress=False)[2]
    assert (fast - replay).abs().max().item() <= 1e-5


def test_token_grid_and_schema():
    assert token_grid(64, (16, 16)) == (8, 8)
    assert token_grid(20, (13, 17)) == (4, 5)  # the U-Net rounds up: 13×17 → 7×9 → 4×5
    with pytest.raises(ZStarError, match="12 tokens"):
        token_grid(12, (13, 17))
    schema = ZStarStyleMap.define_schema()
    assert schema.node_id == "ZStarStyleMap" and schema.category == "sampling/zstar"
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    assert ZStarStyleMap.validate_inputs(cfg=1.0, layers="all", start_step=0, end_step=1000) is True
    assert "layers" in ZStarStyleMap.validate_inputs(layers="ten")
    assert "start_step/end_step" in ZStarStyleMap.validate_inputs(start_step=5, end_step=5)
    assert "cfg" in ZStarStyleMap.validate_inputs(cfg=float("nan"))
