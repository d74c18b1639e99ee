"""Reliability on real ComfyUI code (issue 7): bad inputs, interruptions, fuzzed node inputs.

Every bad input is tried through the node's `execute` and, where ComfyUI validates it before
running (widget values), through ComfyUI's own prompt validation (execution.validate_inputs),
asserting the message. Interruptions use ComfyUI's own mechanism: a DIFFUSION_MODEL wrapper on
a clone sets the interrupt flag at its k-th model call, the pack's progress callback raises
InterruptProcessingException, and the next run must equal an uninterrupted one bit for bit
with the models unchanged.
"""
from __future__ import annotations

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import asyncio
import dataclasses
import functools
import inspect
import math
import os

import torch
from comfy_api.latest import io
from hypothesis import HealthCheck, event, given, settings, strategies as st

import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.supported_models
import execution
import nodes as comfy_nodes

import models
import zstar_fixtures
from zstar_fixtures import _inference_mode, empty, model  # noqa: F401 (pytest fixtures)

harness.load_pack()
from comfyui_zstar.nodes import NODES  # noqa: E402
from comfyui_zstar.nodes.inversion import ZStarDDIMInversion, ZStarDDIMInversionPair  # noqa: E402
from comfyui_zstar.nodes.nulltext import ZStarNullTextOptimization  # noqa: E402
from comfyui_zstar.nodes.patch import ZStarAttentionPatch  # noqa: E402
from comfyui_zstar.nodes.record import ZStarStyleRecord  # noqa: E402
from comfyui_zstar.nodes.sampler import ZStarSampler  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import prepare_mask  # noqa: E402
from comfyui_zstar.nodes.styles import ZStarStyleMix  # noqa: E402
from comfyui_zstar.zstar_attention.style_types import StyleEntry  # noqa: E402
from comfyui_zstar.zstar_attention import ZStarError  # noqa: E402

STEPS = 4
SIZE = 8  # latent side: 64 px images, every U-Net level still runs
Interrupted = comfy.model_management.InterruptProcessingException
# ZSTAR_FUZZ_EXAMPLES=2000 runs a long, randomised search instead of the fixed quick one.
DEEP = int(os.environ.get("ZSTAR_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=DEEP or 40, deadline=None, derandomize=not DEEP,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared, busy CPU: one thread is several times faster than contended two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def latent(seed, batch=1, size=SIZE):
    return models.latent(seed, batch, size)


def out(node_output):
    return node_output.args


invert = functools.partial(zstar_fixtures.invert, steps=STEPS, size=SIZE)  # (model, seed, cond, steps=, batch=, size=)


@pytest.fixture(scope="module")
def inv(model, empty):
    return {"content": invert(model, 2, empty), "style": invert(model, 3, empty),
            "steps3": invert(model, 3, empty, steps=3), "batch2": invert(model, 4, empty, batch=2),
            "big": invert(model, 3, empty, size=12)}


def patch(model, strength=1.2, self_strength=1.5, layers="auto", start=1, end=STEPS):
    return out(ZStarAttentionPatch.execute(model, strength, self_strength, layers, start, end))[0]


def sample(model, content, style, empty, cfg=1.0, anchor=0.01, mode="replay", mask=None, negative=None):
    result = ZStarSampler.execute(model, content, style, empty, negative or empty, cfg, anchor, mode, mask=mask)
    return out(result)[0]["samples"]


def raises(fragment, fn, *args, **kwargs):
    with pytest.raises(ZStarError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert fragment in message, message
    print(f"\n  {message}")
    return message


# -------------------------------------------------------------- ComfyUI's own prompt validation

class _Source:
    """An upstream node of one output type; the tests mark it valid, so only RETURN_TYPES matters."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    FUNCTION = "run"


for _node in NODES:  # as ComfyUI registers a V3 extension's nodes
    comfy_nodes.NODE_CLASS_MAPPINGS.setdefault(_node.define_schema().node_id, _node)
for _type in ("FLOAT", "INT", "STRING", "ZSTAR_INVERSION"):
    comfy_nodes.NODE_CLASS_MAPPINGS.setdefault(f"ZStarTestSource{_type}",
                                               type(f"Source{_type}", (_Source,), {"RETURN_TYPES": (_type,)}))
LINK_SOURCES = {"MODEL": ("CheckpointLoaderSimple", 0), "CLIP": ("CheckpointLoaderSimple", 1),
                "CONDITIONING": ("CLIPTextEncode", 0), "LATENT": ("EmptyLatentImage", 0)}


def io_type(spec) -> str:
    return str(spec.get_io_type())


def comfy_validate(node_cls, linked=(), **widgets):
    """ComfyUI's prompt validation of one node: required sockets and the inputs named in `linked`
    come from upstream nodes (marked valid), `widgets` are set, other widgets keep their defaults.
    Returns the errors ComfyUI would show, as 'message: details' (empty: valid)."""
    prompt, inputs = {}, {}
    for spec in node_cls.define_schema().inputs:
        kind = io_type(spec).split(",")[0]
        if spec.id in widgets:
            inputs[spec.id] = widgets[spec.id]
        elif spec.id in linked or (not isinstance(spec, io.WidgetInput) and not spec.optional):
            class_type, slot = LINK_SOURCES.get(kind, (f"ZStarTestSource{kind}", 0))
            prompt[f"src{len(prompt)}"] = {"class_type": class_type, "inputs": {}}
            inputs[spec.id] = [f"src{len(prompt) - 1}", slot]
        elif isinstance(spec, io.WidgetInput) and spec.default is not None:
            inputs[spec.id] = spec.default
    validated = {k: (True, [], k) for k in prompt}
    prompt["node"] = {"class_type": node_cls.define_schema().node_id, "inputs": inputs}
    ok, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "node", validated))
    assert ok == (not errors)
    return [f"{e['message']}: {e['details']}" for e in errors]


def test_comfyui_lets_nan_through_its_own_min_max_checks():
    """Why the pack validates numbers itself: NaN < min and NaN > max are both False, so a
    stock node (KSampler, cfg min 0 max 100) accepts cfg NaN while it rejects -1."""
    def ksampler_errors(cfg):
        prompt = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
                  "text": {"class_type": "CLIPTextEncode", "inputs": {}},
                  "empty": {"class_type": "EmptyLatentImage", "inputs": {}}}
        validated = {k: (True, [], k) for k in prompt}
        prompt["node"] = {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 0, "steps": 3, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["text", 0], "negative": ["text", 0], "latent_image": ["empty", 0], "denoise": 1.0}}
        return asyncio.run(execution.validate_inputs("test", prompt, "node", validated))[1]

    assert ksampler_errors(float("nan")) == []
    assert [e["type"] for e in ksampler_errors(-1.0)] == ["value_smaller_than_min"]


NAN, INF = float("nan"), float("inf")

VALIDATION_CASES = [  # (node, widgets, message fragment): rejected before the prompt runs
    (ZStarAttentionPatch, {"style_strength": NAN}, "style_strength: must be a finite number from 0 to 10, got nan"),
    (ZStarAttentionPatch, {"style_strength": INF}, "style_strength: must be a finite number from 0 to 10, got inf"),
    (ZStarAttentionPatch, {"style_strength": -INF}, "style_strength: must be a finite number from 0 to 10, got -inf"),
    (ZStarAttentionPatch, {"style_strength": -0.5}, "style_strength: must be a finite number from 0 to 10, got -0.5"),
    (ZStarAttentionPatch, {"style_strength": 1e300}, "style_strength: must be a finite number from 0 to 10, got 1e+300"),
    (ZStarAttentionPatch, {"style_self_strength": NAN}, "style_self_strength: must be a finite number from 0 to 10, got nan"),
    (ZStarAttentionPatch, {"style_self_strength": -1.0}, "style_self_strength: must be a finite number from 0 to 10, got -1.0"),
    (ZStarAttentionPatch, {"layers": "ten"}, "layers: 'ten' is not a layer number; use e.g. '10-15' or '10,12,14' (SD1.5/SD2.x: layers 0-15, SDXL: 0-69, Chroma/Flux.1: 0-56, Flux.2: 0-55, Qwen-Image: 0-59, Z-Image: 0-29, SD3.5: 0-37)"),
    (ZStarAttentionPatch, {"layers": "15-10"}, "layers: range '15-10' is reversed; write '10-15'"),
    (ZStarAttentionPatch, {"layers": "10,,12"}, "layers: '10,,12' has an empty item between commas"),
    (ZStarAttentionPatch, {"layers": "-3"}, "layers: '-3' is not a layer number"),
    (ZStarAttentionPatch, {"layers": "99"}, "layers: '99' names a layer that no supported model has (SD1.5/SD2.x: layers 0-15, SDXL: 0-69, Chroma/Flux.1: 0-56, Flux.2: 0-55, Qwen-Image: 0-59, Z-Image: 0-29, SD3.5: 0-37)"),
    (ZStarAttentionPatch, {"start_step": 10, "end_step": 5}, "start_step/end_step: need start_step < end_step (end is exclusive), got 10 and 5"),
    (ZStarAttentionPatch, {"start_step": -1}, "start_step: must be an integer from 0 to 1000, got -1"),
    (ZStarAttentionPatch, {"end_step": 0}, "end_step: must be an integer from 1 to 1000, got 0"),
    (ZStarSampler, {"cfg": NAN}, "cfg: must be a finite number from 0 to 30, got nan"),
    (ZStarSampler, {"cfg": INF}, "cfg: must be a finite number from 0 to 30, got inf"),
    (ZStarSampler, {"content_anchor": NAN}, "content_anchor: must be a finite number from 0 to 1, got nan"),
    (ZStarSampler, {"content_anchor": 1.5}, "content_anchor: must be a finite number from 0 to 1, got 1.5"),
    (ZStarSampler, {"style_mode": "free"}, "style_mode: 'free' is not one of replay, alongside"),
    (ZStarDDIMInversion, {"steps": 0}, "steps: must be an integer from 1 to 1000, got 0"),
    (ZStarDDIMInversion, {"steps": 1000}, "steps: 1000 steps with steps_offset 1 would reach timestep 1000, past the last train step 999; use fewer steps"),
    (ZStarDDIMInversionPair, {"steps": 1000}, "steps: 1000 steps with steps_offset 1 would reach timestep 1000"),
    (ZStarNullTextOptimization, {"cfg": NAN}, "cfg: must be a finite number from 1 to 30, got nan"),
    (ZStarNullTextOptimization, {"cfg": 0.5}, "cfg: must be a finite number from 1 to 30, got 0.5"),
    (ZStarNullTextOptimization, {"iterations": 0}, "iterations: must be an integer from 1 to 100, got 0"),
    (ZStarNullTextOptimization, {"cfg": 1.0}, "cfg: null-text optimisation needs cfg > 1: at cfg 1 the sampler never uses"),
    (ZStarStyleRecord, {"cfg": -INF}, "cfg: must be a finite number from 0 to 30, got -inf"),
    (ZStarStyleRecord, {"layers": "10-"}, "layers: '10-' is not a layer number"),
    (ZStarStyleRecord, {"start_step": 30, "end_step": 30}, "start_step/end_step: need start_step < end_step"),
    (ZStarStyleMix, {"strength_1": NAN}, "strength_1: must be a finite number from 0 to 10, got nan"),
    (ZStarStyleMix, {"strength_2": -1.0}, "strength_2: must be a finite number from 0 to 10, got -1.0"),
]


@pytest.mark.parametrize("node, widgets, fragment", VALIDATION_CASES,
                         ids=[f"{c[0].__name__}-{'-'.join(map(str, c[1].values()))}" for c in VALIDATION_CASES])
def test_bad_widget_values_fail_comfyui_validation(node, widgets, fragment):
    errors = comfy_validate(node, **widgets)
    assert errors and all(fragment in e for e in errors), errors
    print(f"\n  {errors[0]}")
    assert node.validate_inputs(**widgets) == errors[0].split(" - ", 1)[1]


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.__name__)
def test_defaults_and_linked_widgets_pass_validation(node):
    assert comfy_validate(node) == []
    # a widget turned into an input and linked (e.g. from a primitive node) is None at validation
    widgets = [s.id for s in node.define_schema().inputs
               if isinstance(s, io.WidgetInput) and not isinstance(s, io.Combo.Input)]
    assert comfy_validate(node, linked=widgets) == []
    assert node.validate_inputs(**{name: None for name in widgets if name in
                                   inspect.signature(node.validate_inputs).parameters}) is True


def test_bad_widget_values_fail_at_execution_too(model, empty, inv):
    """A value that arrives through a link skips validation; execute applies the same rules."""
    raises("style_strength: must be a finite number from 0 to 10, got nan",
           ZStarAttentionPatch.execute, model, NAN, 1.5, "auto", 1, STEPS)
    raises("style_self_strength: must be a finite number from 0 to 10, got inf",
           ZStarAttentionPatch.execute, model, 1.2, INF, "auto", 1, STEPS)
    raises("layers: layer 16 is out of range (layers 0-15)", ZStarAttentionPatch.execute, model, 1.2, 1.5, "10-16", 1, STEPS)
    raises("layers: '10-99' names a layer that no supported model has", ZStarAttentionPatch.execute, model, 1.2, 1.5, "10-99", 1, STEPS)
    raises("start_step/end_step: need start_step < end_step", ZStarAttentionPatch.execute, model, 1.2, 1.5, "auto", 3, 3)
    patched = patch(model)
    raises("cfg: must be a finite number from 0 to 30, got nan", ZStarSampler.execute, patched, inv["content"],
           inv["style"], empty, empty, NAN, 0.01, "replay")
    raises("content_anchor: must be a finite number from 0 to 1, got -inf", ZStarSampler.execute, patched,
           inv["content"], inv["style"], empty, empty, 1.0, -INF, "replay")
    raises("style_mode: 'sideways' is not one of replay, alongside", ZStarSampler.execute, patched, inv["content"],
           inv["style"], empty, empty, 1.0, 0.01, "sideways")
    raises("steps: must be an integer from 1 to 1000, got 0", ZStarDDIMInversion.execute, model, latent(2), 0, empty)
    raises("steps: 1000 steps with steps_offset 1 would reach timestep 1000", ZStarDDIMInversion.execute, model,
           latent(2), 1000, empty)
    raises("cfg: must be a finite number from 1 to 30, got nan", ZStarNullTextOptimization.execute, model,
           inv["content"], empty, empty, NAN, 3)
    raises("cfg: null-text optimisation needs cfg > 1", ZStarNullTextOptimization.execute, model,
           inv["content"], empty, empty, 1.0, 1)
    from comfyui_zstar.zstar_runtime.nulltext import nulltext_optimise  # the runtime says it too, not autograd
    raises("cfg: null-text optimisation needs cfg > 1", nulltext_optimise, model, inv["content"], empty, empty, 1.0, 1)
    raises("layers: 'x' is not a layer number", ZStarStyleRecord.execute, model, inv["style"], empty, empty, 1.0,
           "x", 1, STEPS)
    raises("strength_2: must be a finite number from 0 to 10, got nan", ZStarStyleMix.execute,
           style_1=inv["style"], strength_1=1.2, style_2=inv["content"], strength_2=NAN)


# -------------------------------------------------------------- bad inputs that need the model or tensors

def test_step_window_outside_the_step_count(model, empty, inv):
    raises("end_step: 30 is past the inversions' 4 steps; set end_step ≤ 4",
           sample, patch(model, start=5, end=30), inv["content"], inv["style"], empty)
    raises("end_step: 5 is past the inversions' 4 steps", sample, patch(model, start=4, end=5), inv["content"],
           inv["style"], empty)
    raises("end_step: 30 is out of range; use 1 to 4 (4 steps, end is exclusive)",
           ZStarStyleRecord.execute, model, inv["style"], empty, empty, 1.0, "auto", 1, 30)
    raises("start_step: 5 is out of range; use 0 to 3 (4 steps)",
           ZStarStyleRecord.execute, model, inv["style"], empty, empty, 1.0, "auto", 5, 30)


def test_inversions_with_other_step_counts_or_schedules(model, empty, inv):
    raises("style: inverted with 3 steps but content with 4; use the same step count for every inversion",
           sample, patch(model), inv["content"], inv["steps3"], empty)
    # a Model Sampling patch (zero-terminal-SNR betas) between the loader and one inversion
    zsnr = model.clone()
    sampling = type("ZSNR", (comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS), {})
    zsnr.add_object_patch("model_sampling", sampling(model.model.model_config, zsnr=True))
    style_zsnr = invert(zsnr, 3, empty)
    raises("style: inverted on a different noise schedule than content (same 4 steps, other sigmas)",
           sample, patch(model), inv["content"], style_zsnr, empty)
    raises("content: inverted on a different noise schedule than this MODEL's",
           sample, patch(model), style_zsnr, style_zsnr, empty)
    raises("content: inverted on a different noise schedule than this MODEL's",
           sample, patch(zsnr), inv["content"], inv["style"], empty)
    raises("inversion: inverted on a different noise schedule than this MODEL's",
           ZStarNullTextOptimization.execute, model, style_zsnr, empty, models.cond(7), 7.5, 2)
    raises("style: inverted on a different noise schedule than this MODEL's",
           ZStarStyleRecord.execute, model, style_zsnr, empty, empty, 1.0, "auto", 1, STEPS)


# SD2.x configs at toy width (two heads instead of 64-channel heads), named as ComfyUI names them
SmallSD20 = type("SD20", (comfy.supported_models.SD20,),
                 {"unet_extra_config": {"num_heads": 2, "num_head_channels": -1, "attn_precision": torch.float32}})
SD20VPrediction = type("SD20", (SmallSD20,),
                       {"model_type": lambda self, state_dict, prefix="": comfy.model_base.ModelType.V_PREDICTION})


def test_content_and_style_from_different_models(model, empty, inv):
    sd2 = models.sd15(seed=1, config_cls=SmallSD20)
    sd2_v = models.sd15(seed=1, config_cls=SD20VPrediction)
    style_sd2 = invert(sd2, 3, empty)
    raises("style: inverted with a BaseModel/SD20 model but content with BaseModel/SD15; invert both with the same model",
           sample, patch(model), inv["content"], style_sd2, empty)
    raises("content: inverted with a BaseModel/SD15 model but this MODEL is BaseModel/SD20; invert with the same model",
           sample, patch(sd2), inv["content"], style_sd2, empty)
    # same family, other prediction type (SD2 512 eps vs SD2 768 v): told apart too
    raises("content: inverted with a BaseModel/SD20 model but this MODEL is BaseModel/SD20 (v_prediction)",
           sample, patch(sd2_v), style_sd2, style_sd2, empty)
    raises("inversion: inverted with a BaseModel/SD15 model but this MODEL is BaseModel/SD20",
           ZStarNullTextOptimization.execute, sd2, inv["content"], empty, models.cond(7), 7.5, 2)
    raises("style: inverted with a BaseModel/SD15 model but this MODEL is BaseModel/SD20",
           ZStarStyleRecord.execute, sd2, inv["style"], empty, empty, 1.0, "auto", 1, STEPS)


def test_inversion_that_does_not_match_the_content(model, empty, inv):
    content = inv["content"]
    # null-text embeddings taken from another content's optimisation
    other = out(ZStarNullTextOptimization.execute(model, inv["batch2"], empty, models.cond(7), 7.5, 1))[0]
    short = out(ZStarNullTextOptimization.execute(model, inv["steps3"], empty, models.cond(7), 7.5, 1))[0]
    raises("content: has null-text embeddings for 2 image(s) but the inversion holds 1",
           sample, patch(model), dataclasses.replace(content, uncond_embeddings=other.uncond_embeddings),
           inv["style"], empty, cfg=7.5, negative=models.cond(7))
    raises("content: has null-text embeddings for 3 steps but the inversion has 4",
           sample, patch(model), dataclasses.replace(content, uncond_embeddings=short.uncond_embeddings),
           inv["style"], empty, cfg=7.5, negative=models.cond(7))
    # trajectories of mismatched batch
    mixed = dataclasses.replace(content, trajectory=inv["batch2"].trajectory[:2] + content.trajectory[2:])
    raises("content: the inversion is inconsistent: 5 latents of shapes [(1, 4, 8, 8), (2, 4, 8, 8)] for 4 steps",
           sample, patch(model), mixed, inv["style"], empty)
    raises("style: the inversion is inconsistent", sample, patch(model), content, mixed, empty)
    raises("style: the inversion holds 2 images; Z* takes one style image per inversion",
           sample, patch(model), content, inv["batch2"], empty)
    raises("style: the inversion holds 2 images; record one style image at a time",
           ZStarStyleRecord.execute, model, inv["batch2"], empty, empty, 1.0, "auto", 1, STEPS)
    raises("style: latent (4, 12, 12) differs from the content's (4, 8, 8); encode the style at the content's size",
           sample, patch(model), content, inv["big"], empty)
    raises("model: this MODEL carries no Z* patch; connect it through 'Z* Attention Patch' first",
           sample, model, content, inv["style"], empty)
    record = out(ZStarStyleRecord.execute(model, inv["style"], empty, empty, 1.0, "auto", 1, STEPS))[0]
    raises("style: mix either style inversions or style records (fast mode), not both",
           sample, patch(model), content, (StyleEntry(record, None), StyleEntry(inv["style"], None)), empty)
    raises("negative: null-text optimisation needs exactly one plain conditioning",
           ZStarNullTextOptimization.execute, model, content, empty, empty + models.cond(7), 7.5, 1)


def test_bad_latents_and_missing_conditioning(model, empty):
    raises("latent: has 16 channels but this MODEL's latents have 4; encode the image with this checkpoint's VAE",
           ZStarDDIMInversion.execute, model, {"samples": torch.randn(1, 16, SIZE, SIZE)}, STEPS, empty)
    bad = torch.randn(1, 4, SIZE, SIZE)
    bad[0, 0, 0, 0] = NAN
    raises("latent: contains NaN or infinite values", ZStarDDIMInversion.execute, model, {"samples": bad}, STEPS, empty)
    raises("latent: expected image latents of shape (batch, channels, height, width), got (1, 4, 2, 8, 8)",
           ZStarDDIMInversion.execute, model, {"samples": torch.randn(1, 4, 2, SIZE, SIZE)}, STEPS, empty)
    raises("latent: 4×8 is too small; Z* needs images of at least 64×64 pixels (latents of 8×8)",
           ZStarDDIMInversion.execute, model, {"samples": torch.randn(1, 4, 4, 8)}, STEPS, empty)
    raises("latent: holds no image, shape (0, 4, 8, 8)",
           ZStarDDIMInversion.execute, model, {"samples": torch.randn(0, 4, 8, 8)}, STEPS, empty)
    raises("conditioning: connect a conditioning", ZStarDDIMInversion.execute, model, latent(2), STEPS)
    raises("latent: has 3 channels", ZStarDDIMInversionPair.execute, model, latent(2),
           {"samples": torch.randn(1, 3, SIZE, SIZE)}, STEPS, empty)


def test_bad_masks(model, empty, inv):
    patched = patch(model)
    args = (patched, inv["content"], inv["style"], empty)
    raises("mask: expected 1 or 1 masks of shape (H, W), got (3, 64, 64)", sample, *args, mask=torch.ones(3, 64, 64))
    raises("mask: expected 1 or 1 masks of shape (H, W), got (1, 1, 64, 64)", sample, *args, mask=torch.ones(1, 1, 64, 64))
    raises("mask: 64×16 does not have the content's aspect ratio (latent 8×8, image 64×64)", sample, *args,
           mask=torch.ones(1, 64, 16))
    raises("mask: the mask is empty (no pixel above 0.5)", sample, *args, mask=torch.zeros(1, 64, 64))
    raises("mask: the mask is empty", sample, *args, mask=torch.full((1, 64, 64), NAN))
    raises("mask: expected a MASK tensor, got list", sample, *args, mask=[[1.0]])
    raises("mask: expected 1 or 2 masks", sample, patched, inv["batch2"], inv["style"], empty,
           mask=torch.ones(3, 64, 64))
    # accepted: one mask or one per content image, at image or latent size, (H, W) alone
    for ok in (torch.ones(64, 64), torch.ones(1, 8, 8), torch.ones(1, 65, 64)):
        assert prepare_mask(ok, inv["content"]) is not None


def flow_sampling(model):
    flow = model.clone()
    sampling = type("Flow", (comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST), {})
    flow.add_object_patch("model_sampling", sampling(model.model.model_config))
    return flow


def unknown_layout_unet():
    """SD1.5's U-Net with a transformer in every output block: a layout no table knows."""
    return models.sd15(seed=None, layout={"transformer_depth_output": [1] * 12}, load_device=models.CPU)


@pytest.mark.parametrize("kind, fragment", [
    ("auraflow", "model: Z* supports SD1.5, SD2.x and SDXL U-Net models, and the Flux.1, Flux.2, Chroma, Qwen-Image, Z-Image, SD3.5 "
                 "transformers; this MODEL is AuraFlow/AuraFlow (flow) (MMDiT)"),
    ("flow", "model: Z* supports SD1.5, SD2.x and SDXL U-Net models with eps or v prediction on a discrete DDPM "
             "schedule; this MODEL (BaseModel/SD15) samples with Flow"),
    ("layout", "has a U-Net with 19 self-attention layers in an unknown layout"),
])
def test_unsupported_models_through_every_node(kind, fragment, model, empty, inv):
    bad = {"auraflow": models.auraflow, "flow": lambda: flow_sampling(model), "layout": unknown_layout_unet}[kind]()
    raises(fragment, ZStarAttentionPatch.execute, bad, 1.2, 1.5, "auto", 1, STEPS)
    raises(fragment, ZStarDDIMInversion.execute, bad, latent(2), STEPS, empty)
    raises(fragment, ZStarDDIMInversionPair.execute, bad, latent(2), latent(3), STEPS, empty)
    raises(fragment, ZStarNullTextOptimization.execute, bad, inv["content"], empty, models.cond(7), 7.5, 1)
    raises(fragment, ZStarStyleRecord.execute, bad, inv["style"], empty, empty, 1.0, "auto", 1, STEPS)
    fake_patch = bad.clone()
    fake_patch.model_options.setdefault("transformer_options", {})["zstar"] = \
        patch(model).model_options["transformer_options"]["zstar"]
    raises(fragment, ZStarSampler.execute, fake_patch, inv["content"], inv["style"], empty, empty, 1.0, 0.01, "replay")


# -------------------------------------------------------------- interruptions

def interrupt_at(model, k: int):
    """A clone whose k-th diffusion-model call sets ComfyUI's interrupt flag (as POST /interrupt does)."""
    calls = []

    def wrapper(executor, *args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            comfy.model_management.interrupt_current_processing(True)
        return executor(*args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test-interrupt", wrapper)
    return clone, calls


def snapshot(model):
    return repr(model.model_options), {k: v.clone() for k, v in model.model.state_dict().items()}


def assert_unchanged(model, snap, allowed=()):
    options, weights = snap
    assert repr(model.model_options) == options
    state = model.model.state_dict()
    assert state.keys() == weights.keys() and all(torch.equal(state[k], weights[k]) for k in weights)
    leftover = [k for k in model.model_options.get("transformer_options", {}) if "zstar" in k and k not in allowed]
    assert not leftover, leftover


def assert_identical(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def interrupted(run, model, k):
    """Run `run(model_clone)` with an interrupt at model call k; the exception must reach the caller."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    clone, calls = interrupt_at(model, k)
    try:
        with pytest.raises(Interrupted):
            run(clone)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert (torch.is_grad_enabled(), torch.is_inference_mode_enabled()) == (grad, inference)
    return len(calls)


@pytest.mark.parametrize("stage", ["inversion", "nulltext", "sampling", "record"])
def test_interrupt_leaves_no_state(stage, model, empty, inv):
    negative = models.cond(7)
    patched = patch(model)
    runs = {
        "inversion": (model, 2, lambda m: out(ZStarDDIMInversion.execute(m, latent(5), STEPS, empty))[0].trajectory),
        "nulltext": (model, 5, lambda m: out(ZStarNullTextOptimization.execute(
            m, inv["content"], empty, negative, 7.5, 3))[0].uncond_embeddings),
        "sampling": (patched, 3, lambda m: sample(m, inv["content"], inv["style"], empty)),
        "record": (model, 2, lambda m: out(ZStarStyleRecord.execute(
            m, inv["style"], empty, negative, 4.0, "auto", 1, STEPS))[0].kv.values()),
    }
    target, k, run = runs[stage]
    base_snap, target_snap = snapshot(model), snapshot(target)
    reference = run(target)
    calls = interrupted(run, target, k)
    assert calls == k  # stopped at the step where the flag was set, not at the end
    again = run(target)
    flat = (lambda r: [t for pair in r for t in pair]) if stage == "record" else (lambda r: r)
    assert_identical(flat(again), flat(reference))
    assert_unchanged(model, base_snap)
    assert_unchanged(target, target_snap, allowed=("zstar",))
    print(f"\n  {stage}: interrupted at model call {k}, rerun identical, models unchanged")


def test_interrupt_then_plain_sampler_matches_fresh(model, empty, inv):
    """After an interrupted null-text run (weight wrappers on a clone) ComfyUI's own sampler on
    the original model is bit-identical to before, and no module keeps a stray weight function."""
    import comfy.sample

    def ksampler():
        noise = torch.randn((1, 4, SIZE, SIZE), generator=torch.Generator().manual_seed(11))
        return comfy.sample.sample(model, noise, 3, 5.0, "euler", "normal", empty, models.cond(9),
                                   torch.zeros_like(noise), seed=11, disable_pbar=True)

    before = ksampler()
    interrupted(lambda m: ZStarNullTextOptimization.execute(m, inv["content"], empty, models.cond(7), 7.5, 3), model, 3)
    assert torch.equal(ksampler(), before)
    stray = [n for n, m in model.model.named_modules() if getattr(m, "weight_function", None)]
    assert not stray, stray[:5]


def test_repeated_runs_keep_no_zstar_objects_alive(model, empty, inv):
    """The server-side RSS check cannot see leaks of KB-sized objects; count them here. After
    each full run (patch, sampler, record) the number of live Z* run objects, patch configs and
    ModelPatchers stays what it was after the first run."""
    import gc

    import comfy.model_patcher
    from comfyui_zstar.zstar_attention import ZStarRun
    from comfyui_zstar.zstar_runtime.wrappers import NullTextState

    watched = {cls: cls.__name__ for cls in (ZStarRun, NullTextState, comfy.model_patcher.ModelPatcher)}

    def live():
        gc.collect()
        counts = dict.fromkeys(watched.values(), 0)
        for o in gc.get_objects():  # type(), not isinstance(): no __class__ properties run
            name = watched.get(type(o))
            if name:
                counts[name] += 1
        return counts

    negative = models.cond(7)
    nulltext = out(ZStarNullTextOptimization.execute(model, inv["content"], empty, negative, 7.5, 1))[0]

    def one_run(strength):
        patched = patch(model, strength=strength)
        sample(patched, nulltext, inv["style"], empty, cfg=7.5, negative=negative)
        out(ZStarStyleRecord.execute(model, inv["style"], empty, empty, 1.0, "auto", 1, STEPS))

    one_run(1.2)
    after_first = live()
    for i in range(3):
        one_run(1.0 + 0.1 * i)
    after_many = live()
    print(f"\n  live objects after 1 run {after_first}, after 4 runs {after_many}")
    assert after_many == after_first
    assert after_many["ZStarRun"] <= 1  # at most the one ComfyUI's loaded-model list still points to


# -------------------------------------------------------------- style bank files (cases test_style_bank.py leaves out)

@pytest.mark.parametrize("kind, name, fragment", [
    ("dir", "dir.safetensors", "not found"),                    # a folder with the extension
    ("fifo", "pipe.safetensors", "not found"),                  # a named pipe: reading it would block the server
    ("devzero", "zero.safetensors", "points outside"),          # a link to an endless device
    ("empty", "empty.safetensors", "not a valid safetensors file"),
    (None, "a\x00b.safetensors", "is not allowed"),            # NUL: os calls would raise a bare ValueError
    (None, "\u202egnp.safetensors", "is not allowed"),          # right-to-left override
    (None, "ok/./x.safetensors", "'.' is not allowed"),
    (None, "x" * 5000 + ".safetensors", "is not allowed"),
    (None, 5, "no style chosen"),
])
def test_style_bank_refuses_special_files(tmp_path, kind, name, fragment):
    import os
    import threading

    import folder_paths
    from comfyui_zstar.zstar_runtime import style_folders as style_bank

    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        folder = tmp_path / style_bank.FOLDER
        folder.mkdir()
        make = {"dir": lambda p: p.mkdir(), "fifo": lambda p: os.mkfifo(p),
                "devzero": lambda p: p.symlink_to("/dev/zero"), "empty": lambda p: p.write_bytes(b"")}
        if kind:
            make[kind](folder / name)
        result = {}

        def load():
            try:
                style_bank.load_style(name)
            except Exception as e:  # noqa: BLE001 (the type is what the test checks)
                result["error"] = e

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), f"loading {name!r} hangs"
        assert isinstance(result.get("error"), ZStarError) and fragment in str(result["error"]), result
    finally:
        folder_paths.set_output_directory(old)


# -------------------------------------------------------------- fuzzing the nodes' inputs

def mostly(good, bad):
    """Three parts plausible values to one part anything: hypothesis starts from the simplest
    values (0, empty), so the mix keeps both the success path and every kind of bad value busy."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else good)


any_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([NAN, INF, -INF, -0.0, -1e-300, 10.000001, 1e308]))
any_int = st.one_of(st.integers(-3, 40), st.integers(-2**70, 2**70), st.sampled_from([10**400, -10**400]))
any_layers = st.one_of(st.from_regex(r"\A[ 0-9,\-]{0,10}\Z"), st.text(max_size=12), st.sampled_from(["16", "70", "0-69"]))
good_layers = st.sampled_from(["auto", "paper", "", "all", " 10 - 15 ", "10,12,14", "0-15", "15"])


def works_or_zstar_error(fn, *args, **kwargs):
    """The contract: a result, or ZStarError with a message; anything else fails the test."""
    try:
        result = fn(*args, **kwargs)
    except ZStarError as e:
        assert str(e).strip()
        event(f"{getattr(fn, '__qualname__', fn)}: ZStarError")
        return None, str(e)
    event(f"{getattr(fn, '__qualname__', fn)}: ran")
    return result, None


@FUZZ
@given(strength=mostly(st.floats(0, 10), any_float), self_strength=mostly(st.floats(0, 10), any_float),
       layers=mostly(good_layers, any_layers), start=mostly(st.integers(0, 2), any_int),
       end=mostly(st.integers(3, 6), any_int))
def test_fuzz_patch_node(model, strength, self_strength, layers, start, end):
    verdict = ZStarAttentionPatch.validate_inputs(style_strength=strength, style_self_strength=self_strength,
                                                  layers=layers, start_step=start, end_step=end)
    assert verdict is True or (isinstance(verdict, str) and verdict)
    result, error = works_or_zstar_error(ZStarAttentionPatch.execute, model, strength, self_strength, layers, start, end)
    if verdict is not True:
        assert error == verdict  # execution says exactly what validation said
    if result is not None:
        config = out(result)[0].model_options["transformer_options"]["zstar"]
        assert 0 <= config.start_step < config.end_step and config.layers
        assert math.isfinite(config.style_scale) and 0 <= config.style_scale <= 10


@pytest.fixture(scope="module")
def fuzz_inv(model, empty):
    return invert(model, 2, empty, steps=2), invert(model, 3, empty, steps=2)


@settings(FUZZ, max_examples=DEEP or 25)
@given(cfg=mostly(st.floats(0, 30), any_float), anchor=mostly(st.floats(0, 1), any_float),
       mode=mostly(st.sampled_from(["replay", "alongside"]), st.text(max_size=8)))
def test_fuzz_sampler_node(model, empty, fuzz_inv, cfg, anchor, mode):
    content, style = fuzz_inv
    patched = patch(model, start=0, end=2)
    verdict = ZStarSampler.validate_inputs(cfg=cfg, content_anchor=anchor, style_mode=mode)
    result, error = works_or_zstar_error(ZStarSampler.execute, patched, content, style, empty, models.cond(7),
                                         cfg, anchor, mode)
    if verdict is not True:
        assert error == verdict
    else:
        assert error is None and torch.isfinite(out(result)[0]["samples"]).all()


@FUZZ
@given(steps=mostly(st.integers(1, 3), any_int), cfg=mostly(st.floats(1, 30), any_float),
       iterations=mostly(st.integers(1, 2), any_int),
       strengths=st.lists(mostly(st.floats(0, 10), any_float), min_size=4, max_size=4))
def test_fuzz_cheap_widgets(model, empty, fuzz_inv, steps, cfg, iterations, strengths):
    """Inversion steps, null-text cfg/iterations, style-mix strengths: validation and execution
    agree; executions that would be long (many steps) are only validated."""
    verdict = ZStarDDIMInversion.validate_inputs(steps=steps)
    if verdict is not True or steps <= 3:
        _, error = works_or_zstar_error(ZStarDDIMInversion.execute, model, latent(2), steps, empty)
        assert error == (None if verdict is True else verdict)
    verdict = ZStarNullTextOptimization.validate_inputs(cfg=cfg, iterations=iterations)
    if verdict is not True or iterations <= 2:
        _, error = works_or_zstar_error(ZStarNullTextOptimization.execute, model, fuzz_inv[0], empty, models.cond(7),
                                        cfg, iterations)
        assert error == (None if verdict is True else verdict)
    mix = {f"strength_{n + 1}": s for n, s in enumerate(strengths)}
    verdict = ZStarStyleMix.validate_inputs(**mix)
    _, error = works_or_zstar_error(ZStarStyleMix.execute, style_1=fuzz_inv[1], style_2=fuzz_inv[1], **mix)
    assert error == (None if verdict is True else verdict)


@FUZZ
@given(size=st.tuples(st.integers(5, 14), st.integers(5, 14)),
       flaw=mostly(st.none(), st.sampled_from(["no batch", "zero height", "1 channel", "16 channels", "3-D", "5-D",
                                               "nan", "inf", "batch 2"])))
def test_fuzz_latents(model, empty, size, flaw):
    h, w = size
    shape = {"no batch": (0, 4, h, w), "zero height": (1, 4, 0, w), "1 channel": (1, 1, h, w),
             "16 channels": (1, 16, h, w), "3-D": (4, h, w), "5-D": (1, 4, 1, h, w), "batch 2": (2, 4, h, w)}
    samples = torch.randn(shape.get(flaw, (1, 4, h, w)))
    if flaw in ("nan", "inf"):
        samples[0, 0, h // 2, w // 2] = NAN if flaw == "nan" else INF
    result, _ = works_or_zstar_error(ZStarDDIMInversion.execute, model, {"samples": samples}, 2, empty)
    if result is not None:
        trajectory = out(result)[0].trajectory
        assert trajectory[0].shape == samples.shape and all(torch.isfinite(t).all() for t in trajectory)


@FUZZ
@given(shape=st.one_of(st.integers(1, 70).map(lambda n: [1, n, n]), st.integers(1, 70).map(lambda n: [n, n]),
                       st.lists(st.integers(0, 70), min_size=0, max_size=4)),
       fill=st.one_of(st.just(1.0), st.sampled_from([0.0, 0.4, 0.6, NAN, INF])))
def test_fuzz_masks(inv, shape, fill):
    mask = torch.full(shape, fill)
    result, _ = works_or_zstar_error(prepare_mask, mask, inv["content"])
    if result is not None:
        assert result.ndim == 3 and result.shape[0] == 1 and (result > 0.5).any()
