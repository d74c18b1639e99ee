"""Z* nodes on real ComfyUI code: faithfulness invariants, batching, cleanliness, schedule."""
from __future__ import annotations

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch

import comfy.patcher_extension
import comfy.sample
import comfy.samplers

import models
from models import rel
from zstar_fixtures import _inference_mode, empty, invert, model, unpatched_twin  # noqa: F401 (pytest fixtures)

pack = harness.load_pack()
from comfyui_zstar.zstar_runtime import host  # noqa: E402
from comfyui_zstar.zstar_runtime.inversion import invert_latent  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import patch_model  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402
from comfyui_zstar.zstar_attention import ddim_sample, vp_scale  # noqa: E402

STEPS = 30


def plain_reconstruction(model, inv, cond, cfg=1.0):
    """Plain DDIM from the inversion's x_T with the unpatched model, through ComfyUI."""
    def fn(denoiser, like, sigmas, **_):
        x = ddim_sample(denoiser, inv.trajectory[0].to(like), sigmas)
        return x / vp_scale(sigmas[-1])
    return host.run_sampler_function(model, fn, inv.sigmas, cond, cond, cfg, inv.trajectory[0].shape, {})


@pytest.fixture(scope="module")
def inversions(model, empty):
    return {"content": invert(model, 2, empty, STEPS), "style": invert(model, 3, empty, STEPS)}


def test_alongside_self_style_reproduces_plain_reconstruction(model, empty, inversions):
    """Spec: style = content, λ = λ_style = 1, anchor 0, style denoised alongside ⇒ plain DDIM."""
    content = inversions["content"]
    plain = plain_reconstruction(model, content, empty)
    patched = patch_model(model, 1.0, 1.0, "auto", 0, STEPS)
    out, style_branch = zstar_sample(patched, content, content, empty, empty, 1.0, anchor=0.0,
                                     style_mode="alongside", progress=False)
    err = rel(out, plain)
    print(f"\nalongside(style=content, λ=λ_style=1) vs plain DDIM reconstruction: rel err {err:.2e}")
    assert err <= 1e-4
    assert rel(style_branch, plain) <= 1e-4


def test_replay_self_style_stays_within_inversion_error(model, empty, inversions):
    content = inversions["content"]
    source = models.latent(2)["samples"]
    plain = plain_reconstruction(model, content, empty)
    inversion_error = rel(plain, source)
    patched = patch_model(model, 1.0, 1.0, "auto", 0, STEPS)
    out, _ = zstar_sample(patched, content, content, empty, empty, 1.0, anchor=0.0, style_mode="replay",
                          progress=False)
    err = rel(out, plain)
    print(f"\nreplay(style=content) vs plain reconstruction: {err:.2e}; inversion error {inversion_error:.2e}")
    assert 0 < err <= inversion_error


def test_inversion_reconstruction_converges_with_steps(model, empty):
    source = models.latent(2)["samples"]
    errors = {}
    for steps in (10, 30, 100):
        inv = invert(model, 2, empty, steps)
        assert inv.trajectory[-1].shape == source.shape
        errors[steps] = rel(plain_reconstruction(model, inv, empty), source)
    print("\nsteps  inversion+reconstruction rel err\n" + "\n".join(f"{s:5d}  {e:.4f}" for s, e in errors.items()))
    assert errors[10] > errors[30] > errors[100]
    assert errors[100] < 0.5 * errors[10]


def test_style_transfer_changes_content_only_through_patch(model, empty, inversions):
    """The paper preset moves the result away from the plain reconstruction (the patch acts)."""
    patched = patch_model(model, 1.2, 1.5, "auto", 5, STEPS)
    out, _ = zstar_sample(patched, inversions["content"], inversions["style"], empty, empty, 1.0, progress=False)
    plain = plain_reconstruction(model, inversions["content"], empty)
    assert torch.isfinite(out).all()
    assert rel(out, plain) > 1e-3


def capture_attn1(model, store):
    """attn1 outputs of every layer, keyed by (step, block key), through ComfyUI's output patch."""
    def patch(n, extra_options):
        run = extra_options.get("zstar_run")
        block = extra_options["block"]
        store[(run.step, (block[0], block[1], extra_options["block_index"]))] = n.clone()
        return n
    clone = model.clone()
    clone.set_model_attn1_output_patch(patch)
    return clone


def test_outside_chosen_layers_and_steps_is_bit_identical(model, empty, inversions):
    patched = patch_model(model, 1.2, 1.5, "10-15", 5, STEPS)
    unpatched = unpatched_twin(model, patched)  # same run, same batch, but the host's attention everywhere
    got, ref = {}, {}
    zstar_sample(capture_attn1(patched, got), inversions["content"], inversions["style"], empty, empty, progress=False)
    zstar_sample(capture_attn1(unpatched, ref), inversions["content"], inversions["style"], empty, empty, progress=False)
    assert got.keys() == ref.keys()
    keys = [k for s, k in got if s == 0]
    assert len(keys) == 16
    before_window = [(s, k) for (s, k) in got if s < 5]
    assert len(before_window) == 5 * 16
    for key in before_window:
        assert torch.equal(got[key], ref[key]), key
    # In step 5, layers 0-9 run before the first patched layer (10 = output 6): untouched.
    for key in keys[:10]:
        assert torch.equal(got[(5, key)], ref[(5, key)]), key
    assert not torch.equal(got[(5, keys[10])], ref[(5, keys[10])])


def count_model_calls(model, calls):
    def wrapper(executor, x, t, *args, **kwargs):
        calls.append((x.shape[0], t.tolist(), list(args[-1].get("cond_or_uncond", []))))
        return executor(x, t, *args, **kwargs)
    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test", wrapper)
    return clone


def test_official_schedule_is_honoured(model, empty, inversions):
    content = inversions["content"]
    expected = [958 - 33 * i for i in range(30)]
    assert list(content.timesteps) == expected and expected[-1] == 1
    table = model.get_model_object("model_sampling").sigmas
    assert content.sigmas[-1].item() == table[0].item()
    assert 0.0291 < content.sigmas[-1].item() < 0.0293
    calls = []
    patched = patch_model(model, 1.2, 1.5, "auto", 5, STEPS)
    zstar_sample(count_model_calls(patched, calls), content, inversions["style"], empty, empty, progress=False)
    assert len(calls) == 30  # one model call per step: the content row is evaluated 30 times
    assert [c[1][0] for c in calls] == [float(t) for t in expected]
    # content alone before the window, content + style row inside it (the style row is skipped outside)
    assert [c[0] for c in calls] == [1] * 5 + [2] * 25


def test_cond_and_uncond_together_or_apart_agree(model, empty, inversions):
    """ComfyUI batches the CFG halves when their conditionings concatenate and runs them apart
    when they do not (here: a 385-token negative, which is the 77-token one repeated five
    times, so the same conditioning mathematically: duplicated keys leave attention unchanged)."""
    negative = models.cond(7)
    negative_long = [[negative[0][0].repeat(1, 5, 1), {}]]
    patched = patch_model(model, 1.2, 1.5, "auto", 5, STEPS)
    together_calls, apart_calls = [], []
    together, _ = zstar_sample(count_model_calls(patched, together_calls), inversions["content"], inversions["style"],
                               empty, negative, cfg=7.5, progress=False)
    separate, _ = zstar_sample(count_model_calls(patched, apart_calls), inversions["content"],
                               inversions["style"], empty, negative_long, cfg=7.5, progress=False)
    assert {tuple(c[2]) for c in together_calls} in ({(0, 1)}, {(1, 0)})
    assert {tuple(c[2]) for c in apart_calls} == {(0,), (1,)}
    err = rel(separate, together)
    print(f"\ncond/uncond together vs apart: rel diff {err:.2e}")
    assert err <= 1e-5


def test_batch_of_contents_equals_each_alone(model, empty, inversions):
    both = torch.cat([models.latent(2)["samples"], models.latent(4)["samples"]])
    batch_inv = invert_latent(model, both, STEPS, empty, progress=False)[0]
    patched = patch_model(model, 1.2, 1.5, "auto", 5, STEPS)
    batched, _ = zstar_sample(patched, batch_inv, inversions["style"], empty, empty, progress=False)
    for i, seed in enumerate((2, 4)):
        alone_inv = invert(model, seed, empty, STEPS)
        alone, _ = zstar_sample(patched, alone_inv, inversions["style"], empty, empty, progress=False)
        err = rel(batched[i:i + 1], alone)
        print(f"\nbatch row {i} vs alone: rel diff {err:.2e}")
        assert err <= 1e-5


def ksampler(model, cond):
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(11))
    return comfy.sample.sample(model, noise, 6, 5.0, "euler", "normal", cond, models.cond(9),
                               torch.zeros_like(noise), seed=11, disable_pbar=True)


def test_original_model_untouched_by_zstar_run(model, empty, inversions):
    before_options = repr(model.model_options)
    before = ksampler(model, empty)
    patched = patch_model(model, 1.2, 1.5, "auto", 5, STEPS)
    zstar_sample(patched, inversions["content"], inversions["style"], empty, empty, progress=False)
    assert repr(model.model_options) == before_options
    assert "zstar" not in model.model_options.get("transformer_options", {})
    assert torch.equal(ksampler(model, empty), before)
    # the patched model in a plain sampler, with no Z* run, is the plain model bit for bit
    assert torch.equal(ksampler(patched, empty), before)


def test_other_patches_still_act(model, empty, inversions):
    content, style = inversions["content"], inversions["style"]
    plain_before = ksampler(model, empty)
    base, _ = zstar_sample(patch_model(model, 1.2, 1.5, "auto", 5, STEPS), content, style, empty, empty,
                           progress=False)
    # an attn2 (cross-attention) replacement on a block Z* also patches
    called = []
    with_attn2 = model.clone()

    def attn2(q, k, v, extra_options):
        called.append(extra_options["block"])
        return host.host_attention(extra_options)(q, k, v, extra_options["n_heads"]) * 0.5
    with_attn2.set_model_attn2_replace(attn2, "output", 11)
    out, _ = zstar_sample(patch_model(with_attn2, 1.2, 1.5, "auto", 5, STEPS), content, style, empty, empty,
                          progress=False)
    assert len(called) == 30 and rel(out, base) > 1e-4
    # a LoRA-style weight patch equals the same weights baked into a fresh model
    key = "diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.weight"
    weight = model.model.state_dict()[key]
    delta = 0.2 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(5))
    lora = model.clone()
    lora.add_patches({key: (delta,)}, 1.0)
    out_lora, _ = zstar_sample(patch_model(lora, 1.2, 1.5, "auto", 5, STEPS), content, style, empty, empty,
                               progress=False)
    baked = models.sd15(seed=0)
    baked.model.state_dict()[key].add_(delta)
    out_baked, _ = zstar_sample(patch_model(baked, 1.2, 1.5, "auto", 5, STEPS), content, style, empty, empty,
                                progress=False)
    assert rel(out_lora, base) > 1e-4
    assert rel(out_lora, out_baked) <= 1e-5
    assert torch.equal(ksampler(model, empty), plain_before)  # ComfyUI unpatched the LoRA for the original


def test_nulltext_makes_cfg_reconstruct_the_content(empty):
    """Null-text optimisation (CFG 7.5) reconstructs the content far better than plain DDIM,
    with the model loaded as ComfyUI's executor loads it (inference tensors), weights untouched."""
    from comfyui_zstar.zstar_runtime.nulltext import nulltext_optimise

    steps, negative = 10, models.cond(7)
    model = models.sd15(seed=0)  # built under inference_mode by the autouse fixture
    weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    options = repr(model.model_options)
    source = models.latent(2)["samples"]
    inv = invert(model, 2, empty, steps)
    log = []
    opt = nulltext_optimise(model, inv, empty, negative, cfg=7.5, iterations=10, progress=False, log=log)
    assert len(opt.uncond_embeddings) == steps and opt.uncond_embeddings[0].shape == (1, 77, models.SMALL_CONTEXT)
    identity = patch_model(model, 1.0, 1.0, "auto", 0, steps)  # alongside + λ = 1: plain DDIM through the sampler
    with_nulltext, _ = zstar_sample(identity, opt, opt, empty, negative, 7.5, anchor=0.0, style_mode="alongside",
                                    progress=False)
    without, _ = zstar_sample(identity, inv, inv, empty, negative, 7.5, anchor=0.0, style_mode="alongside",
                              progress=False)
    err_nt, err_plain = rel(with_nulltext, source), rel(without, source)
    print(f"\nCFG 7.5 reconstruction: plain DDIM inversion {err_plain:.3e}, null-text {err_nt:.3e}; "
          f"{len(log)} Adam iterations for {steps} steps")
    assert err_nt < 0.5 * err_plain
    per_step = {}
    for step, _, loss in log:
        per_step.setdefault(step, []).append(loss)
    assert all(losses[-1] < losses[0] for losses in per_step.values())  # Adam lowers every step's loss
    assert all(torch.equal(v, weights[k]) for k, v in model.model.state_dict().items())
    assert repr(model.model_options) == options


def test_nulltext_evaluates_the_conditional_half_once_per_step(empty):
    """As the official code: per step one conditional pass without gradients, then only the
    unconditional half per Adam iteration (and once more for the step itself)."""
    import comfy.patcher_extension
    from comfyui_zstar.zstar_runtime.nulltext import nulltext_optimise

    steps, iterations = 4, 3
    model = models.sd15(seed=0)
    inv = invert(model, 2, empty, steps)
    calls = []

    def count(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        calls.append((tuple(transformer_options["cond_or_uncond"]), torch.is_grad_enabled()))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    counting = model.clone()
    counting.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "count", count)
    log = []
    nulltext_optimise(counting, inv, empty, models.cond(7), cfg=7.5, iterations=iterations, progress=False, log=log)
    runs = [sum(1 for (i, _, _) in log if i == step) for step in range(steps)]
    expected = []
    for n in runs:
        expected += [((0,), False)] + [((1,), True)] * n + [((1,), False)]
    assert calls == expected


def test_controlnet_residuals_do_not_reach_style_rows():
    """ControlNet guides the content's structure; the style rows keep the style's own K/V."""
    from comfyui_zstar.zstar_runtime.patch import RUN_KEY
    from comfyui_zstar.zstar_runtime.wrappers import apply_model_wrapper
    from comfyui_zstar.zstar_attention import RowLayout, ZStarRun

    run = ZStarRun(RowLayout(2, 1), (1.2,), 0.0)
    run.stacked = True
    x = torch.zeros(6, 4, 8, 8)  # two CFG chunks of [content, content, style]
    control = {"output": [torch.ones(6, 3, 8, 8), None], "middle": [torch.ones(6, 3, 4, 4)]}
    seen = {}

    def executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        seen["control"] = control
        return x
    apply_model_wrapper(executor, x, torch.ones(6), None, None, control, {RUN_KEY: run, "cond_or_uncond": [0, 1]})
    kept = seen["control"]["output"][0].flatten(1).amax(1)
    assert kept.tolist() == [1, 1, 0, 1, 1, 0]
    assert seen["control"]["output"][1] is None
    assert seen["control"]["middle"][0].flatten(1).amax(1).tolist() == [1, 1, 0, 1, 1, 0]
    assert torch.equal(control["output"][0], torch.ones(6, 3, 8, 8))  # the caller's tensors are untouched
    run.stacked = False  # content-only steps: control passes through as is
    apply_model_wrapper(executor, x[:2], torch.ones(2), None, None, control, {RUN_KEY: run, "cond_or_uncond": [0]})
    assert seen["control"] is control
