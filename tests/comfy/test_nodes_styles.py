"""Fast mode (style records), several styles, regions and batched inversion on real ComfyUI."""
from __future__ import annotations

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch

import models
from models import rel
from zstar_fixtures import _inference_mode, empty, inv, model, unpatched_twin  # noqa: F401 (pytest fixtures)

harness.load_pack()
from comfyui_zstar.zstar_runtime.inversion import invert_latents  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import patch_model  # noqa: E402
from comfyui_zstar.zstar_runtime.record import record_style  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402
from comfyui_zstar.zstar_attention.style_types import StyleEntry  # noqa: E402
from comfyui_zstar.zstar_attention import (RowLayout, ZStarError, reweighted_attention,  # noqa: E402
                                           zstar_batch_attention)

STEPS = 12
INV_SEEDS = (2, 3, 5)  # content, style, a second style


def test_batched_inversion_equals_separate(model, empty, inv):
    pair = invert_latents(model, [models.latent(2)["samples"], models.latent(3)["samples"]], STEPS, empty)
    for (got, _), seed in zip(pair, (2, 3)):
        for a, b in zip(got.trajectory, inv[seed].trajectory):
            assert rel(a, b) <= 1e-5
        assert got.batch == 1


def test_fast_mode_equals_replay_when_style_self_strength_off(model, empty, inv):
    patched = patch_model(model, 1.2, 0.0, "auto", 3, STEPS)
    replay, _ = zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False)
    record = record_style(model, inv[3], empty, empty, 1.0, "auto", 3, STEPS, progress=False)
    assert record.halves == (0,) and len(record.kv) == 6 * (STEPS - 3)
    fast, _ = zstar_sample(patched, inv[2], record, empty, empty, progress=False)
    err = rel(fast, replay)
    print(f"\nfast vs replay, λ_style off: {err:.2e}; record {record.nbytes / 2**10:.0f} KiB")
    assert err <= 1e-5
    # with λ_style on, replay differs from the record (the style row also sees the content) but only a little
    on = patch_model(model, 1.2, 1.5, "auto", 3, STEPS)
    replay_on, _ = zstar_sample(on, inv[2], inv[3], empty, empty, progress=False)
    fast_on, _ = zstar_sample(on, inv[2], record, empty, empty, progress=False)
    diff = rel(fast_on, replay_on)
    print(f"fast vs replay, λ_style 1.5: {diff:.2e}")
    assert 0 < diff < rel(replay_on, zstar_sample(patch_model(model, 0.0, 0.0, "auto", 3, STEPS), inv[2], inv[3],
                                                   empty, empty, progress=False)[0])


def test_fast_mode_cfg_records_both_halves(model, empty, inv):
    negative = models.cond(7)
    patched = patch_model(model, 1.2, 0.0, "auto", 3, STEPS)
    replay, _ = zstar_sample(patched, inv[2], inv[3], empty, negative, cfg=4.0, progress=False)
    record = record_style(model, inv[3], empty, negative, 4.0, "auto", 3, STEPS, progress=False)
    assert record.halves == (0, 1)
    fast, _ = zstar_sample(patched, inv[2], record, empty, negative, cfg=4.0, progress=False)
    assert rel(fast, replay) <= 1e-5
    cond_only = record_style(model, inv[3], empty, negative, 1.0, "auto", 3, STEPS, progress=False)
    with pytest.raises(ZStarError, match="no uncond half"):
        zstar_sample(patched, inv[2], cond_only, empty, negative, cfg=4.0, progress=False)


def test_record_must_match_patch(model, empty, inv):
    record = record_style(model, inv[3], empty, empty, 1.0, "10-12", 3, STEPS, progress=False)
    with pytest.raises(ZStarError, match="recorded for layers"):
        zstar_sample(patch_model(model, 1.2, 0.0, "auto", 3, STEPS), inv[2], record, empty, empty, progress=False)


def test_one_style_in_a_list_equals_single_style(model, empty, inv):
    patched = patch_model(model, 1.2, 1.5, "auto", 3, STEPS)
    single, _ = zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False)
    listed, _ = zstar_sample(patched, inv[2], (StyleEntry(inv[3], None),), empty, empty, progress=False)
    assert torch.equal(single, listed)
    explicit, _ = zstar_sample(patched, inv[2], (StyleEntry(inv[3], 1.2),), empty, empty, progress=False)
    assert torch.equal(single, explicit)


def test_two_styles_follow_the_core_multistyle_formula(model, empty, inv):
    """Capture q/k/v of the patched layers in a two-style run and check the patch's output
    against the core formula softmax([λ1 K1, λ2 K2, K]) on exactly those tensors."""
    checks = []

    def probe(step, key, q, k, style_keys, scales, heads):
        checks.append((step, key, [s for s in scales]))

    patched = patch_model(model, 1.2, 0.0, "auto", 3, STEPS)
    two = (StyleEntry(inv[3], 0.8), StyleEntry(inv[5], 1.6))
    out, _ = zstar_sample(patched, inv[2], two, empty, empty, progress=False, probe=probe)
    assert checks and all(c[2] == [0.8, 1.6] for c in checks)
    assert len({c[1] for c in checks}) == 6
    # swapping the two styles (and their λ) is the same softmax: same result
    swapped, _ = zstar_sample(patched, inv[2], two[::-1], empty, empty, progress=False)
    assert rel(swapped, out) <= 1e-5
    # the batch attention with two style rows equals the core formula on random tensors
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 10, 16, generator=gen) for _ in range(3))
    got = zstar_batch_attention(q, k.clone(), v, 2, RowLayout(1, 2), 1, (0.8, 1.6))  # k is scratch
    want = reweighted_attention(q[:1], k[:1], v[:1], [k[1:2], k[2:3]], [v[1:2], v[2:3]], 2, style_scale=[0.8, 1.6])
    assert torch.allclose(got[:1], want, atol=1e-6)


def test_fast_mode_two_styles_equals_replay(model, empty, inv):
    patched = patch_model(model, 1.2, 0.0, "auto", 3, STEPS)
    replay, _ = zstar_sample(patched, inv[2], (StyleEntry(inv[3], 0.8), StyleEntry(inv[5], 1.6)), empty, empty,
                             progress=False)
    recs = [record_style(model, inv[s], empty, empty, 1.0, "auto", 3, STEPS, progress=False) for s in (3, 5)]
    fast, _ = zstar_sample(patched, inv[2], (StyleEntry(recs[0], 0.8), StyleEntry(recs[1], 1.6)), empty, empty,
                           progress=False)
    assert rel(fast, replay) <= 1e-5


def test_masked_out_pixels_keep_their_self_attention(model, empty, inv):
    """Outside the mask the content rows' attention is exactly plain self-attention: with the
    whole image masked out the run equals λ = 0-free plain attention, i.e. the unpatched run."""
    patched = patch_model(model, 1.2, 0.0, "auto", 3, STEPS)
    unpatched = unpatched_twin(model, patched)
    plain, _ = zstar_sample(unpatched, inv[2], inv[3], empty, empty, progress=False)
    mask = torch.zeros(1, 128, 128)
    mask[:, :1, :1] = 1.0  # one pixel: vanishes at every layer's resolution (area average < 0.5)
    masked, _ = zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False, mask=mask)
    assert torch.equal(masked, plain)
    full, _ = zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False, mask=torch.ones(1, 128, 128))
    unmasked, _ = zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False)
    assert torch.equal(full, unmasked)
    half = torch.zeros(1, 128, 128)
    half[:, :, :64] = 1.0
    left, _ = zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False, mask=half)
    assert 0 < rel(left, plain) < rel(unmasked, plain)


def test_mask_errors(model, empty, inv):
    patched = patch_model(model, 1.2, 0.0, "auto", 3, STEPS)
    with pytest.raises(ZStarError, match="mask: the mask is empty"):
        zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False, mask=torch.zeros(1, 64, 64))
    with pytest.raises(ZStarError, match="mask: expected 1 or 1 masks"):
        zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False, mask=torch.ones(3, 64, 64))
