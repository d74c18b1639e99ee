"""What Z* relies on in the host, made explicit (issue 11): every test here fails without its fix.

- one Z* patch at a time: a second Attention Patch replaces the first completely;
- a foreign attn1 replacement applied after the patch stops the sampler with the layers named;
- run state survives any copying of the model's options (a clone during the run);
- null-text gradients do not depend on how the host casts weights;
- every Z* attention call goes through the host's attention with the layer's precision;
- every place that splits the sampling batch by rows raises the pack's error;
- cached Z* objects report their size to the host; fast mode's records are put on the load
  device before the model is loaded.
"""
from __future__ import annotations

import copy

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch

import comfy.patcher_extension
import comfy.supported_models

import models
from models import rel
from zstar_fixtures import _inference_mode, empty, inv, invert, model, unpatched_twin  # noqa: F401 (pytest fixtures)

harness.load_pack()
from comfyui_zstar.zstar_runtime.nulltext import GradSafeTensors, nulltext_optimise  # noqa: E402
from comfyui_zstar.zstar_runtime.wrappers import NullTextState, nulltext_wrapper  # noqa: E402
from comfyui_zstar.zstar_runtime.families import family  # noqa: E402
from comfyui_zstar.zstar_runtime.hooks import RUN_KEY, ZStarAttn1, ZStarConfig  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import patch_model  # noqa: E402
from comfyui_zstar.zstar_attention import recorded_style_attention  # noqa: E402
from comfyui_zstar.zstar_runtime.record import record_style  # noqa: E402
from comfyui_zstar.zstar_runtime.wrappers import RecordsOnDevice, apply_model_wrapper  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402
from comfyui_zstar.nodes.style_map import ZStarStyleMap  # noqa: E402
from comfyui_zstar.zstar_runtime.style_map import style_map  # noqa: E402
from comfyui_zstar.nodes.sampler import ZStarSampler  # noqa: E402
from comfyui_zstar.zstar_attention import RowLayout, ZStarError, ZStarRun  # noqa: E402

STEPS = 6
START = 2


def sample(model, inv, empty, **kwargs):
    return zstar_sample(model, inv[2], inv[3], empty, empty, progress=False, **kwargs)[0]


def zstar_keys(model) -> set:
    attn1 = model.model_options["transformer_options"].get("patches_replace", {}).get("attn1", {})
    return {k for k, p in attn1.items() if isinstance(p, ZStarAttn1)}


# ------------------------------------------------------------------ one Z* patch at a time


def test_a_second_patch_replaces_the_first(model, empty, inv):
    first = patch_model(model, 1.2, 1.5, "10-15", START, STEPS)
    second = patch_model(first, 1.4, 0.0, "13-15", START + 1, STEPS)
    direct = patch_model(model, 1.4, 0.0, "13-15", START + 1, STEPS)
    assert zstar_keys(second) == zstar_keys(direct) == {("output", b, 0) for b in (9, 10, 11)}
    assert zstar_keys(first) == {("output", b, 0) for b in range(6, 12)}  # the input MODEL is unchanged
    assert torch.equal(sample(second, inv, empty), sample(direct, inv, empty))
    # fast mode with the second patch's layers: the first patch's layers would find no record
    record = record_style(model, inv[3], empty, empty, 1.0, "13-15", START + 1, STEPS, progress=False)
    fast, _ = zstar_sample(second, inv[2], record, empty, empty, progress=False)
    assert torch.equal(fast, zstar_sample(direct, inv[2], record, empty, empty, progress=False)[0])


def test_a_foreign_attn1_replace_after_the_patch_stops_the_sampler(model, empty, inv):
    patched = patch_model(model, 1.2, 1.5, "auto", START, STEPS)
    other = patched.clone()
    other.set_model_attn1_replace(lambda q, k, v, extra: q, "output", 9, 0)  # layer 13
    other.set_model_attn1_replace(lambda q, k, v, extra: q, "output", 11, 0)  # layer 15
    with pytest.raises(ZStarError) as e:
        sample(other, inv, empty)
    assert str(e.value).startswith("model: Z* layers 13 (output 9.0), 15 (output 11.0) no longer carry the Z* attention")
    with pytest.raises(ZStarError, match="no longer carry the Z"):
        style_map(other, inv[2], inv[3], empty, empty, progress=False)
    # replaced BEFORE the patch: the patch takes the layer over (with a warning) and the run goes on
    early = model.clone()
    early.set_model_attn1_replace(lambda q, k, v, extra: q, "output", 9, 0)
    assert torch.equal(sample(patch_model(early, 1.2, 1.5, "auto", START, STEPS), inv, empty),
                       sample(patched, inv, empty))


# ------------------------------------------------------------------ run state and clones


def test_run_state_is_shared_by_every_copy():
    run, state = ZStarRun(RowLayout(1, 1), (1.2,), 1.5), NullTextState()
    options = {"transformer_options": {RUN_KEY: run, "zstar_nulltext": state}}
    for copied in (copy.deepcopy(options), copy.copy(options["transformer_options"])):
        inner = copied.get("transformer_options", copied)
        assert inner[RUN_KEY] is run and inner["zstar_nulltext"] is state


def deep_copy_options_during_run(model):
    """A clone whose sampling deep-copies the guider's model options as it starts: what
    ModelPatcher.clone() does to model_options, done after Z* has put its run state there."""
    def wrapper(executor, *args, **kwargs):
        guider = executor.class_obj
        guider.model_options = copy.deepcopy(guider.model_options)
        return executor(*args, **kwargs)
    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "test_clone", wrapper)
    return clone


@pytest.mark.parametrize("kind", ["paper", "fast", "nulltext", "style_map"])
def test_a_clone_during_the_run_keeps_the_stylized_result(kind, model, empty, inv):
    patched = patch_model(model, 1.3, 0.0 if kind == "fast" else 1.5, "auto", START, STEPS)
    negative = models.cond(7)
    if kind == "fast":
        style = record_style(model, inv[3], empty, empty, 1.0, "auto", START, STEPS, progress=False)
        run = lambda m: zstar_sample(m, inv[2], style, empty, empty, progress=False)[0]  # noqa: E731
    elif kind == "nulltext":
        content = nulltext_optimise(model, inv[2], empty, negative, cfg=3.0, iterations=2, progress=False)
        run = lambda m: zstar_sample(m, content, inv[3], empty, negative, 3.0, progress=False)[0]  # noqa: E731
    elif kind == "style_map":
        run = lambda m: style_map(m, inv[2], inv[3], empty, empty, progress=False)[2]  # noqa: E731
    else:
        run = lambda m: sample(m, inv, empty)  # noqa: E731
    reference = run(patched)
    if kind == "style_map":
        assert reference.max() > 0  # the style took part
    else:
        assert rel(reference, run(unpatched_twin(model, patched))) > 1e-3  # really stylized
    assert torch.equal(run(deep_copy_options_during_run(patched)), reference)


# ------------------------------------------------------------------ null-text and the host's casts


def test_grad_safe_tensors_lets_autograd_save_inference_weights():
    weight = torch.randn(4, 3)  # made under the executor's inference_mode (autouse fixture)
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.randn(2, 3, requires_grad=True)
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            torch.nn.functional.linear(x, weight)
        with GradSafeTensors():
            y = torch.nn.functional.linear(x, weight)
        y.sum().backward()
    assert torch.allclose(x.grad, weight.sum(0).expand(2, 3))
    assert weight.is_inference()  # the weight itself is untouched


def test_nulltext_does_not_depend_on_how_the_host_casts_weights(empty, inv):
    """The layers' own inference-mode parameters (the default load) and the host's cast path
    (set_model_compute_dtype forces every layer through cast_bias_weight, as lowvram and
    manual-cast models do) give bit-identical embeddings, with no weight wrapper involved."""
    fresh = models.sd15(seed=0)  # built under inference_mode: its weights are inference tensors
    assert all(p.is_inference() for p in fresh.model.diffusion_model.parameters())
    weights = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    negative = models.cond(7)
    own = nulltext_optimise(fresh, inv[2], empty, negative, cfg=7.5, iterations=2, progress=False)
    cast = fresh.clone()
    cast.set_model_compute_dtype(torch.float32)
    cast_run = nulltext_optimise(cast, inv[2], empty, negative, cfg=7.5, iterations=2, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(own.uncond_embeddings, cast_run.uncond_embeddings))
    assert not torch.equal(own.uncond_embeddings[-1], negative[0][0])  # it did optimise
    assert all(torch.equal(v, weights[k]) for k, v in fresh.model.state_dict().items())
    assert not fresh.weight_wrapper_patches and not cast.weight_wrapper_patches


# ------------------------------------------------------------------ the host's attention and precision


def test_zstar_attention_goes_through_the_host_with_the_layers_precision(empty):
    """SD2.x asks for float32 attention (attn_precision). Every call of a Z* layer, the
    reweighted ones over [style ; content] keys included, reaches the host's attention (its
    override hook, which attention backends and packs use) with that precision."""
    sd2, cond = models.sd2(seed=0), models.cond(1, tokens=7)  # 7 prompt tokens: never twice a layer's tokens
    content, style = invert(sd2, 2, cond, STEPS), invert(sd2, 3, cond, STEPS)
    patched = patch_model(sd2, 1.2, 1.5, "auto", START, STEPS)
    reference, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    seen = []

    def override(func, *args, **kwargs):
        q, k = args[0], args[1]
        seen.append((k.shape[-2] if kwargs.get("skip_reshape") else k.shape[1], q.shape[1], kwargs.get("attn_precision")))
        return func(*args, **kwargs)

    hooked = patched.clone()
    hooked.model_options["transformer_options"]["optimized_attention_override"] = override
    out, _ = zstar_sample(hooked, content, style, cond, cond, progress=False)
    assert torch.equal(out, reference)
    reweighted = [s for s in seen if s[0] == 2 * s[1]]  # content queries over [style ; content] keys
    assert len(reweighted) == 2 * 6 * (STEPS - START)  # content and style row, 6 layers, every window step
    assert {p for *_, p in seen} == {torch.float32}


# ------------------------------------------------------------------ splitting the batch by rows


def test_every_row_split_raises_the_packs_error():
    run = ZStarRun(RowLayout(1, 1), (1.2,), 0.0)
    run.stacked = True  # 2 rows per chunk
    x = torch.zeros(3, 4, 8, 8)  # 3 rows for 2 chunks
    options = {RUN_KEY: run, "cond_or_uncond": [0, 1]}
    fragment = "Z\\* batch: got 3 rows for 2 CFG chunk\\(s\\)"
    with pytest.raises(ZStarError, match=fragment):
        apply_model_wrapper(lambda *a, **k: None, x, torch.ones(3), None, None, None, options)
    state = NullTextState(current=torch.zeros(1, 77, 8))
    with pytest.raises(ZStarError, match=fragment):
        nulltext_wrapper(lambda *a, **k: None, x, torch.ones(3), None, torch.zeros(3, 77, 8), None,
                         {**options, "zstar_nulltext": state})
    q = torch.zeros(3, 16, 8)
    fast = ZStarRun(RowLayout(1, 1), (1.2,), 0.0)
    with pytest.raises(ZStarError, match=fragment):
        recorded_style_attention(q, q, q, 2, 1, [[(q[:1], q[:1]), (q[:1], q[:1])]], (1.2,))
    run.reweight = True
    patch = ZStarAttn1(ZStarConfig(1.2, 0.0, (13,), (("output", 9, 0),), 0, 6, "sd15"), family("sd15"))
    with pytest.raises(ZStarError, match=fragment):
        patch(q, q, q, {"n_heads": 2, "zstar_run": run, "cond_or_uncond": [0, 1], "block": ("output", 9),
                        "block_index": 0, "attn_precision": None, "activations_shape": [3, 8, 4, 4]})


def test_area_conditioning_is_refused_by_name(model, empty, inv):
    area = [[empty[0][0], {"area": (8, 8, 0, 0), "strength": 1.0, "set_area_to_bounds": False}]]
    patched = patch_model(model, 1.2, 1.5, "auto", START, STEPS)
    with pytest.raises(ZStarError, match=r"conditioning: the model was called on a latent of \(4, 8, 8\) "
                                         r"instead of the content's \(4, 16, 16\); area conditioning"):
        zstar_sample(patched, inv[2], inv[3], area + empty, empty, progress=False)


def test_style_map_schema_is_the_samplers_plus_its_own():
    sampler = [i.id for i in ZStarSampler.define_schema().inputs]
    ids = [i.id for i in ZStarStyleMap.define_schema().inputs]
    assert ids == [*sampler[:-1], "layers", "start_step", "end_step", "mask"] and sampler[-1] == "mask"


# ------------------------------------------------------------------ memory the host can see


def test_cached_objects_report_their_size(model, empty, inv):
    content = inv[2]
    expected = sum(t.numel() * t.element_size() for t in (*content.trajectory, content.sigmas))
    assert content.get_ram_usage() == expected > 0
    record = record_style(model, inv[3], empty, empty, 1.0, "auto", START, STEPS, progress=False)
    assert record.get_ram_usage() == record.nbytes == sum(
        a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in record.kv.values())


def test_fast_mode_puts_records_on_the_load_device_before_loading(model, empty, inv):
    record = record_style(model, inv[3], empty, empty, 1.0, "auto", START, STEPS, progress=False)
    run = ZStarRun(RowLayout(1, 1), (1.2,), 0.0)
    run.record = (record,)
    seen = {}

    def executor(m, *args, **kwargs):
        seen["devices"] = {t.device for r in run.record for kv in r.kv.values() for t in kv}
        return "loaded"

    assert RecordsOnDevice(run)(executor, model, (1, 4, 16, 16), {}) == "loaded"
    assert seen["devices"] == {model.load_device}
    patched = patch_model(model, 1.2, 0.0, "auto", START, STEPS)
    registered = []

    def spy(executor, m, *args, **kwargs):  # the sampler's PREPARE_SAMPLING wrappers, seen from outside
        registered.extend(type(w).__name__ for w in
                          m.wrappers.get(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, {}).get("zstar", []))
        return executor(m, *args, **kwargs)

    spied = patched.clone()
    spied.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, "spy", spy)
    zstar_sample(spied, inv[2], record, empty, empty, progress=False)
    assert registered == ["RecordsOnDevice"]
