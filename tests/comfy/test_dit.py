"""Z* on rectified-flow transformers (Flux.1, Flux.2, Chroma, Qwen-Image, Z-Image, SD3.5) on real ComfyUI code, random weights of the real layouts.

Invariants (issue 13): outside the chosen blocks and steps the model is the host's, bit for bit;
style = content at λ = 1 (style lending all its tokens) denoised alongside is the plain
inversion + reconstruction; reconstruction converges with the steps (table for both solvers);
CFG halves together or apart agree; a batch equals each content alone; guidance reaches the rows
it should; interrupts leave nothing; bad input gets named errors.
"""
from __future__ import annotations

import contextlib
import types

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers

import models
from models import rel
from zstar_fixtures import _inference_mode, unpatched_flow_twin  # noqa: F401 (pytest fixture)

pack = harness.load_pack()
from comfyui_zstar.nodes.flow_inversion import ZStarFlowInversion  # noqa: E402
from comfyui_zstar.nodes.inversion import ZStarDDIMInversion  # noqa: E402
from comfyui_zstar.nodes.patch import ZStarAttentionPatch  # noqa: E402
from comfyui_zstar.zstar_attention import ZStarError, flow_sample  # noqa: E402
from comfyui_zstar.zstar_attention.style_types import StyleEntry  # noqa: E402
from comfyui_zstar.zstar_runtime import host  # noqa: E402
from comfyui_zstar.zstar_runtime.families import CHROMA, FLUX, FLUX2, QWEN_IMAGE, SD3, Z_IMAGE, describe  # noqa: E402
from comfyui_zstar.zstar_runtime.families.flux import flux_keys  # noqa: E402
from comfyui_zstar.zstar_runtime.families.z_image import z_image_keys  # noqa: E402
from comfyui_zstar.zstar_runtime.joint_patch import OVERRIDE_KEY, LayerOverride  # noqa: E402
from comfyui_zstar.zstar_runtime.families.qwen_image import qwen_keys  # noqa: E402
from comfyui_zstar.zstar_runtime.families.sd3 import sd3_keys  # noqa: E402
from comfyui_zstar.zstar_runtime.inversion import invert_latent  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import CONFIG_KEY, patch_model  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402

STEPS = 8
GUIDANCE = 3.5


BUILDERS = {"flux": models.flux, "flux2": models.flux2, "chroma": models.chroma, "qwen_image": models.qwen_image,
            "z_image": models.z_image, "sd3": models.sd3}
GUIDED = ("flux", "flux2")  # the families with a guidance embedding (FluxGuidance), the others use real CFG
# the families a host must be new enough for: (its config class, the host's first version with it)
NEEDS = {"flux2": ("Flux2", "0.8.0"), "z_image": ("ZImage", "0.8.0")}
HOST_LACKS = {name: not hasattr(comfy.supported_models, cls) for name, (cls, _) in NEEDS.items()}


def families(*names):
    """pytest params for these families, each skipped by name on a host that does not have it."""
    return [pytest.param(n, marks=pytest.mark.skipif(HOST_LACKS.get(n, False), reason=(
        f"this ComfyUI has no {NEEDS[n][0]} model (it came with ComfyUI {NEEDS[n][1]})" if n in NEEDS else "")))
        for n in names]


@pytest.fixture(scope="module", params=families(*BUILDERS))
def family_model(request):
    return request.param, BUILDERS[request.param](seed=0)


@pytest.fixture(scope="module", params=families("chroma", "qwen_image", "z_image", "sd3"))
def real_cfg_model(request):
    """The families that guide with real CFG (cond and uncond rows in one model call)."""
    return request.param, BUILDERS[request.param](seed=0)


@pytest.fixture(scope="module", params=families("flux", "flux2", "chroma", "qwen_image", "z_image"))
def rope_model(request):
    """The families with rotary positions, where `style_positions` moves the style's keys."""
    return request.param, BUILDERS[request.param](seed=0)


@pytest.fixture(scope="module")
def z_image_model():
    if HOST_LACKS["z_image"]:
        pytest.skip("this ComfyUI has no ZImage model (it came with ComfyUI 0.8.0)")
    return models.z_image(seed=0)


@pytest.fixture(scope="module")
def flux_model():
    return models.flux(seed=0)


@pytest.fixture(scope="module")
def sd3_model():
    return models.sd3(seed=0)


def cond_for(name, seed=1):
    return models.flow_cond(seed, guidance=GUIDANCE if name in GUIDED else None)


def latent_for(model, seed, batch=1):
    """A LATENT's samples as the model's VAE makes them: (B, C, H, W) (Flux.2: 128 channels), or
    (B, 16, 1, H, W) for Qwen-Image."""
    fmt = model.model.latent_format
    if fmt.latent_dimensions == 3:
        return models.qwen_latent(seed, batch)["samples"]
    return models.flow_latent(seed, batch, channels=fmt.latent_channels)["samples"]


def invert(model, seed, cond, steps=STEPS, solver="euler", batch=1):
    return invert_latent(model, latent_for(model, seed, batch), steps, cond, progress=False,
                         method="flow", solver=solver, guidance=1.0)[0]


@contextlib.contextmanager
def style_lends_all_tokens():
    """The identity invariant's switch, in the test only: the Z* block's joint attention runs with
    every token counted as an image token (n_txt = 0), so the style row lends its text keys too.
    With the style row equal to the content row and λ = 1 every key is then doubled beside its
    own value, and attention is the plain one exactly."""
    from comfyui_zstar.zstar_attention import joint_zstar_attention
    from comfyui_zstar.zstar_runtime import joint_patch

    def all_tokens(q, k, v, attention, layout, n_chunks, n_txt, *args, **kwargs):
        return joint_zstar_attention(q, k, v, attention, layout, n_chunks, 0, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(joint_patch, "joint_zstar_attention", all_tokens)
        yield


def plain_reconstruction(model, inv, cond, order=1, cfg=1.0, negative=None):
    """The flow ODE from the inversion's top latent with the unpatched model, through ComfyUI."""
    def fn(denoiser, like, sigmas, **_):
        return flow_sample(denoiser, inv.trajectory[0].to(like), sigmas, order=order)[-1]
    return host.run_sampler_function(model, fn, inv.sigmas, cond, negative or cond, cfg, inv.trajectory[0].shape, {})


def record_calls(model, calls):
    """APPLY_MODEL wrapper recording (rows, cond_or_uncond, guidance, output) of every model call."""
    def wrapper(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        out = executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        g = kwargs.get("guidance")
        calls.append((x.shape[0], list(transformer_options.get("cond_or_uncond", [])),
                      None if g is None else g.tolist(), out.clone()))
        return out
    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test", wrapper)
    return clone


# ------------------------------------------------------------------ families and layers

def test_families_are_detected_with_their_layers(flux_model, sd3_model):
    info = describe(flux_model)
    assert info.family is FLUX and info.layer_keys == flux_keys(2, 3)
    assert info.default_layers == "3-4"  # FireFlow's share of single blocks: 20/38 of 3 → single 1-2
    info = describe(models.chroma(seed=None))
    assert info.family is CHROMA and info.layer_keys == flux_keys(2, 3) and info.default_layers == "3-4"
    assert not CHROMA.takes_guidance(models.chroma(seed=None))
    info = describe(models.qwen_image(seed=None, layers=4))
    assert info.family is QWEN_IMAGE and info.layer_keys == qwen_keys(4) and info.default_layers == "2-3"
    assert [QWEN_IMAGE.key_label(k) for k in info.layer_keys[:2]] == ["block 0", "block 1"]
    info = describe(sd3_model)
    assert info.family is SD3 and info.layer_keys == sd3_keys(2, [0])
    assert [SD3.key_label(k) for k in info.layer_keys] == ["joint block 0", "joint block 1", "joint block 0 image attention"]
    assert info.default_layers == "1-1"


def test_published_defaults_at_real_size():
    """Flux.1: FireFlow / RF-Solver-Edit inject in single blocks 20-37 = layers 39-56 of 0-56."""
    assert FLUX.default_layers_for(flux_keys(19, 38)) == "39-56" == FLUX.default_layers
    assert len(FLUX.layer_keys) == 57 and FLUX.layer_keys[39] == ("single_block", 20, "joint")
    assert SD3.default_layers_for(sd3_keys(38)) == "19-37"  # SD3.5 Large
    medium = sd3_keys(24, range(13))  # SD3.5 Medium: MMDiT-X blocks 0-12
    assert SD3.default_layers_for(medium) == "12-23" and len(medium) == 37 and medium[24] == ("double_block", 0, "image")
    assert CHROMA.default_layers_for(flux_keys(19, 38)) == "39-56" == CHROMA.default_layers  # Flux.1's blocks
    assert QWEN_IMAGE.default_layers_for(qwen_keys(60)) == "30-59" == QWEN_IMAGE.default_layers


@pytest.mark.skipif(HOST_LACKS["flux2"] or HOST_LACKS["z_image"],
                    reason="this ComfyUI has no Flux2 and ZImage models (they came with ComfyUI 0.8.0)")
def test_flux2_and_z_image_are_detected_with_their_layers():
    info = describe(models.flux2(seed=None))
    assert info.family is FLUX2 and info.layer_keys == flux_keys(2, 3) and info.default_layers == "3-4"
    assert FLUX2.takes_guidance(models.flux2(seed=None))
    assert not FLUX2.takes_guidance(models.flux2(seed=None, guidance_embed=False))
    info = describe(models.z_image(seed=None, layers=4))
    assert info.family is Z_IMAGE and info.layer_keys == z_image_keys(4) and info.default_layers == "2-3"
    assert Z_IMAGE.key_label(info.layer_keys[1]) == "layer 1" and info.shift == 3.0
    # Lumina 2 itself (the same NextDiT, its own config) is not Z-Image: refused, never patched
    lumina = models.z_image(seed=None, config_cls=comfy.supported_models.Lumina2, z_image_modulation=False,
                            pad_tokens_multiple=None, time_scale=1.0)
    with pytest.raises(ZStarError, match="model: this MODEL \\(Lumina2/Lumina2.*\\) has Z-Image's network but is a "
                       "variant Z\\* does not know"):
        describe(lumina)
    assert FLUX2.default_layers_for(flux_keys(8, 48)) == "33-55" == FLUX2.default_layers  # dev
    assert FLUX2.default_layers_for(flux_keys(5, 20)) == "15-24"  # Klein 4B: single blocks 10-19
    assert Z_IMAGE.default_layers_for(z_image_keys(30)) == "15-29" == Z_IMAGE.default_layers


def test_schedule_is_the_hosts_simple_scheduler(family_model):
    name, model = family_model
    info = describe(model)
    sampling = model.get_model_object("model_sampling")
    for steps in (1, 8, 30):
        sigmas, _ = info.family.schedule(info.sigma_table, steps)
        assert torch.equal(sigmas, comfy.samplers.calculate_sigmas(sampling, "simple", steps).float())


# ------------------------------------------------------------------ the host's model, bit for bit

def test_patched_model_is_the_host_outside_a_zstar_run(family_model):
    name, model = family_model
    patched = patch_model(model, 1.2, 0.0, "0-2", 0, STEPS)
    latent = latent_for(model, 5)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(3))
    runs = [comfy.sample.sample(m, noise, 4, 2.0, "euler", "simple", cond_for(name), cond_for(name, 2), latent,
                                disable_pbar=True, seed=0) for m in (model, patched)]
    assert torch.equal(runs[0], runs[1])


def test_outside_window_and_chosen_blocks_bit_for_bit(family_model):
    """Before the window every call equals the host's; inside it the style rows (λ_style off) and
    the text tokens' path are untouched, so the style rows' outputs equal the host's bit for bit."""
    name, model = family_model
    cond = cond_for(name)
    content, style = invert(model, 2, cond), invert(model, 3, cond)
    patched = patch_model(model, 1.2, 0.0, "auto", 3, STEPS)
    got, ref = [], []
    zstar_sample(record_calls(patched, got), content, style, cond, cond, progress=False)
    zstar_sample(record_calls(unpatched_flow_twin(model, patched), ref), content, style, cond, cond, progress=False)
    assert [c[0] for c in got] == [1] * 3 + [2] * 5
    for i in range(3):
        assert torch.equal(got[i][3], ref[i][3])
    for i in range(3, STEPS):
        assert torch.equal(got[i][3][1:], ref[i][3][1:])  # the style row
        assert not torch.equal(got[i][3][:1], ref[i][3][:1])  # the content row did change


# ------------------------------------------------------------------ faithfulness

@pytest.mark.parametrize("solver", ["euler", "fireflow"])
def test_alongside_self_style_reproduces_plain_reconstruction(family_model, solver):
    """Spec: style = content, λ = 1, anchor 0, style denoised alongside ⇒ the plain flow ODE. The
    style keys sit where they were recorded and the sampler's guidance is the inversion's (1.0),
    so the style row IS the content row."""
    name, model = family_model
    cond = models.flow_cond(1, guidance=1.0 if name in GUIDED else None)
    content = invert(model, 2, cond, solver=solver)
    patched = patch_model(model, 1.0, 0.0, "0-2", 0, STEPS, positions="as_recorded")
    with style_lends_all_tokens():
        out, _ = zstar_sample(patched, content, content, cond, cond, anchor=0.0, style_mode="alongside", progress=False)
    plain = plain_reconstruction(model, content, cond)
    err = rel(out, plain)
    print(f"\n{name} {solver}: alongside identity vs plain flow reconstruction rel {err:.2e}")
    assert err <= 1e-5
    # and the method's own style keys (image tokens only) do change it: that switch is what makes it exact
    own, _ = zstar_sample(patch_model(model, 1.0, 0.0, "0-2", 0, STEPS, positions="as_recorded"), content, content, cond, cond, anchor=0.0,
                          style_mode="alongside", progress=False)
    assert rel(own, plain) > 1e-4


def test_reconstruction_converges_with_steps(family_model):
    """Inversion then reconstruction (plain model) against the clean latent, for both inversion
    solvers: the Z* Sampler's own first-order step, and each solver's own reconstruction. Flux
    reconstructs with the inversion's guidance (1.0): another guidance is another ODE."""
    name, model = family_model
    cond = models.flow_cond(1, guidance=1.0 if name in GUIDED else None)
    clean = model.model.process_latent_in(latent_for(model, 2))
    rows = []
    for steps in (4, 8, 16, 32):
        row = [steps]
        for solver, order in (("euler", 1), ("fireflow", 2)):
            inv = invert(model, 2, cond, steps, solver)
            for sample_order in (1, order) if order == 2 else (1,):
                out = model.model.process_latent_in(plain_reconstruction(model, inv, cond, order=sample_order))
                row.append(rel(out, clean))
        rows.append(row)
    print(f"\n{name}: reconstruction rel error | steps | euler inv + euler | fireflow inv + euler | fireflow inv + fireflow")
    for r in rows:
        print(f"{name}: {r[0]:3d} | " + " | ".join(f"{e:.2e}" for e in r[1:]))
    for col in range(1, 4):
        errs = [r[col] for r in rows]
        if col == 2 and name == "chroma":
            # a second-order inversion read back first order: on the random Chroma (0.3.64's blocks) this
            # mixed pair's error is not monotone at 4-16 steps; it must still fall overall
            assert errs[-1] < min(errs[:-1]), errs
            continue
        assert all(b < a for a, b in zip(errs, errs[1:])), (col, errs)
    assert rows[-1][3] < rows[-1][1] / 4  # second order both ways: far below first order at 32 steps


@pytest.mark.parametrize("solver", ["euler", "fireflow"])
def test_flux_inversion_is_the_reference_loop(flux_model, solver):
    """FireFlow's reference code (FireFlow's src/flux/sampling.py: `denoise` for Euler,
    `denoise_fireflow`, with inverse=True) asks the transformer for its velocity at every t it
    visits, t = 0 included. Transcribed here with ComfyUI's Flux module called directly on the
    pack's σ schedule, guidance 1.0: the pack's inversion is that trajectory (before, its first
    step took the exact limit v = −x at σ = 0 and every later latent differed by ~1e-2)."""
    cond = models.flow_cond(1, guidance=1.0)
    inv = invert(flux_model, 2, cond, 8, solver)
    net = flux_model.model.diffusion_model
    context, y = cond[0][0], cond[0][1]["pooled_output"]
    img = flux_model.model.process_latent_in(models.flow_latent(2)["samples"])

    def model(x, t):
        b = x.shape[0]
        return net(x, torch.full((b,), t), context, y=y, guidance=torch.full((b,), 1.0)).float()

    timesteps = inv.sigmas.tolist()[::-1]  # inverse: from t = 0 up
    reference, next_step_velocity = [img], None
    with torch.no_grad():
        for t_curr, t_prev in zip(timesteps[:-1], timesteps[1:]):
            if solver == "euler":
                img = img + (t_prev - t_curr) * model(img, t_curr)
            else:
                pred = model(img, t_curr) if next_step_velocity is None else next_step_velocity
                img_mid = img + (t_prev - t_curr) / 2 * pred
                next_step_velocity = model(img_mid, t_curr + (t_prev - t_curr) / 2)
                img = img + (t_prev - t_curr) * next_step_velocity
            reference.append(img)
    errors = [rel(mine, ref) for mine, ref in zip(inv.trajectory[::-1], reference)]
    print(f"\nflux {solver}: pack vs reference loop, rel error per latent: " + " ".join(f"{e:.1e}" for e in errors))
    assert len(errors) == 9 and max(errors) < 1e-5


def test_cond_and_uncond_together_or_apart_agree(real_cfg_model):
    """Real CFG (Chroma, Qwen-Image, SD3.5): ComfyUI's batching of the halves must not change the result."""
    name, model = real_cfg_model
    cond, negative = cond_for(name), cond_for(name, 7)
    content, style = invert(model, 2, cond), invert(model, 3, cond)
    patched = patch_model(model, 1.2, 0.0, "auto", 2, STEPS)
    apart_model = patched.clone()

    def apart(args):
        return [comfy.samplers.calc_cond_batch(args["model"], [c], args["input"], args["sigma"], args["model_options"])[0]
                for c in args["conds"]]
    apart_model.model_options["sampler_calc_cond_batch_function"] = apart
    together_calls, apart_calls = [], []
    together, _ = zstar_sample(record_calls(patched, together_calls), content, style, cond, negative, cfg=4.0, progress=False)
    separate, _ = zstar_sample(record_calls(apart_model, apart_calls), content, style, cond, negative, cfg=4.0, progress=False)
    assert {tuple(c[1]) for c in together_calls} in ({(0, 1)}, {(1, 0)})
    assert all(len(c[1]) == 1 for c in apart_calls) and len(apart_calls) == 2 * len(together_calls)
    err = rel(separate, together)
    print(f"\n{name} cond/uncond together vs apart: rel diff {err:.2e}")
    assert err <= 1e-5


def test_batch_of_contents_equals_each_alone(family_model):
    name, model = family_model
    cond = cond_for(name)
    style = invert(model, 3, cond)
    both = torch.cat([latent_for(model, 2), latent_for(model, 4)])
    batch_inv = invert_latent(model, both, STEPS, cond, progress=False, method="flow", guidance=1.0)[0]
    patched = patch_model(model, 1.2, 0.0, "auto", 2, STEPS)
    batched, _ = zstar_sample(patched, batch_inv, style, cond, cond, progress=False)
    for i, seed in enumerate((2, 4)):
        alone, _ = zstar_sample(patched, invert(model, seed, cond), style, cond, cond, progress=False)
        err = rel(batched[i:i + 1], alone)
        print(f"\n{name} batch row {i} vs alone: rel diff {err:.2e}")
        assert err <= 1e-5


def test_flux_guidance_content_rows_sampler_style_rows_inversion(flux_model):
    """FluxGuidance on the sampler's conditioning reaches the content rows; the style rows replay
    their inversion, so they run with the inversion's guidance (1.0 here)."""
    cond = cond_for("flux")
    content, style = invert(flux_model, 2, cond), invert(flux_model, 3, cond)
    assert content.guidance == 1.0
    seen = []

    def wrapper(executor, x, timestep, context, y, guidance, *args, **kwargs):  # what the transformer gets
        seen.append(guidance.tolist())
        return executor(x, timestep, context, y, guidance, *args, **kwargs)
    patched = patch_model(flux_model, 1.2, 0.0, "auto", 2, STEPS)
    probe = patched.clone()
    probe.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test", wrapper)
    zstar_sample(probe, content, style, cond, cond, progress=False)
    assert seen == [[GUIDANCE]] * 2 + [[GUIDANCE, 1.0]] * (STEPS - 2)
    other, _ = zstar_sample(patched, content, style, models.flow_cond(1, guidance=1.5), cond, progress=False)
    first, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    assert rel(other, first) > 1e-4


def test_positions_shifted_and_as_recorded_differ(rope_model):
    name, model = rope_model
    cond = cond_for(name)
    content, style = invert(model, 2, cond), invert(model, 3, cond)
    outs = {}
    for mode in ("auto", "shifted", "as_recorded", "reference_latent"):
        patched = patch_model(model, 1.2, 0.0, "auto", 2, STEPS, positions=mode)
        outs[mode], _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    no_style, _ = zstar_sample(patch_model(model, 0.0, 0.0, "auto", 2, STEPS, positions="as_recorded"), content,
                               style, cond, cond, progress=False)
    assert torch.equal(outs["auto"], outs["shifted"])
    # the toy model's attention is diffuse, so Z* moves its output little (~1e-5): compare with that effect
    effect = rel(outs["as_recorded"], no_style)
    print(f"\n{name} positions: shifted vs as_recorded {rel(outs['shifted'], outs['as_recorded']):.2e}, "
          f"λ 1.2 vs 0 {effect:.2e}")
    assert rel(outs["shifted"], outs["as_recorded"]) > 0.2 * effect > 0
    # the host's placement moves the keys on the index axis only (16 of 128 rotary dims): a third answer,
    # nearer the content's grid than 'shifted', which also moves them in the image plane
    index_only = rel(outs["reference_latent"], outs["as_recorded"])
    print(f"{name} positions: reference_latent vs as_recorded {index_only:.2e}")
    assert index_only > 0.05 * effect  # Chroma's toys: 0.12 (0.33.0) to 0.47 (0.3.64) of the effect
    if name == "flux":  # on the random Chroma the order of the two differs between hosts
        assert index_only < rel(outs["shifted"], outs["as_recorded"])


def test_positions_are_refused_without_rotary_positions(sd3_model):
    with pytest.raises(ZStarError, match="style_positions: SD3.5 has no rotary positions to shift"):
        patch_model(sd3_model, 1.2, 0.0, "auto", 2, STEPS, positions="shifted")
    with pytest.raises(ZStarError, match="style_positions: SD3.5 has no rotary positions to shift .*so "
                       "'reference_latent' does not apply; use 'auto' or 'as_recorded'"):
        patch_model(sd3_model, 1.2, 0.0, "auto", 2, STEPS, positions="reference_latent")
    with pytest.raises(ZStarError, match="style_positions: SD1.5 has no rotary positions to shift"):
        patch_model(models.sd15(seed=None, load_device=models.CPU), 1.2, 0.0, "auto", 2, STEPS, positions="shifted")
    assert patch_model(sd3_model, 1.2, 0.0, "auto", 2, STEPS).model_options["transformer_options"][CONFIG_KEY] \
        .positions == "as_recorded"


ROPE = {"flux": ([8, 12, 12], 10000.0), "flux2": ([8, 8, 8, 8], 2000.0), "chroma": ([8, 12, 12], 10000.0),
        "qwen_image": ([8, 12, 12], 10000.0), "z_image": ([8, 12, 12], 256.0)}  # models.py's layouts


@pytest.mark.parametrize("mode", ["shifted", "reference_latent", "as_recorded"])
def test_positions_place_the_style_keys_where_they_say(rope_model, mode):
    """A 16 × 24 latent is a 8 × 12 token grid (2×2 patches; Flux.2's 1×1: 16 × 24): 'shifted' moves
    the style keys by index + 1 and the grid's height (beside the image along its shorter side),
    'reference_latent' by the index the host gives a first reference latent (Flux.2: 10, the others
    1) only, 'as_recorded' not at all. The rotation is built from the network's own rotary
    embedding (its axes and θ)."""
    from comfyui_zstar.zstar_attention import rope_rotation

    name, model = rope_model
    patched = patch_model(model, 1.2, 0.0, "auto", 2, STEPS, positions=mode)
    info = describe(patched)
    hook = next(iter(info.family.installed(patched).values()))
    shape = (16, 1, 16, 24) if name == "qwen_image" else (model.model.latent_format.latent_channels, 16, 24)
    run = types.SimpleNamespace(rope_rotation={}, latent_shape=shape)
    found = hook.positions(run)
    if mode == "as_recorded":
        assert found is None
        return
    height = 16 if name == "flux2" else 8
    offsets = (1.0, float(height), 0.0) if mode == "shifted" else (10.0 if name == "flux2" else 1.0, 0.0, 0.0)
    axes, theta = ROPE[name]
    assert torch.equal(found, rope_rotation(offsets + (0.0,) * (len(axes) - 3), axes, theta))


# ------------------------------------------------------------------ Z-Image: the layer-indexed hook

def z_image_run(model, layers="0-2", **kwargs):
    cond = cond_for("z_image")
    content, style = invert(model, 2, cond), invert(model, 3, cond)
    return zstar_sample(patch_model(model, 1.2, 0.0, layers, 2, STEPS), content, style, cond, cond,
                        progress=False, **kwargs)[0]


def test_z_image_refiners_never_take_a_stale_layer_index(z_image_model):
    """NextDiT's context and noise refiners attend before the host writes block_index: options that
    still carry one from elsewhere must not make them Z* layers (they would be reweighted as layer 0,
    or stop the run: a refiner's call holds the caption or the image alone)."""
    cond = cond_for("z_image")
    content, style = invert(z_image_model, 2, cond), invert(z_image_model, 3, cond)
    patched = patch_model(z_image_model, 1.2, 0.0, "0-2", 2, STEPS)
    fresh, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    stale = patched.clone()
    stale.model_options["transformer_options"].update(block_type="double", block_index=0)
    again, _ = zstar_sample(stale, content, style, cond, cond, progress=False)
    assert torch.equal(again, fresh)


def test_z_image_override_chains_the_one_set_before(z_image_model):
    """An attention override set before the patch (another pack's, an attention-backend node) keeps
    every call: the refiners', the unchosen layers' and Z*'s own; a second patch replaces ours only."""
    lengths = []

    def backend(func, *args, **kwargs):
        lengths.append(args[0].shape[2] if kwargs.get("skip_reshape") else args[0].shape[1])
        return func(*args, **kwargs)
    base = z_image_model.clone()
    base.model_options["transformer_options"][OVERRIDE_KEY] = backend
    patched = patch_model(base, 1.2, 0.0, "1", 2, STEPS)
    hook = patched.model_options["transformer_options"][OVERRIDE_KEY]
    assert isinstance(hook, LayerOverride) and hook.previous is backend and set(hook.calls) == {1}
    chained = z_image_run(base, "1")
    assert torch.equal(chained, z_image_run(z_image_model, "1"))
    # caption (16 → 32 with pad tokens), image (64), both (96), and Z*'s own calls over the style keys
    assert {32, 64, 96} <= set(lengths)
    again = patch_model(patched, 1.0, 0.0, "0-1", 2, STEPS).model_options["transformer_options"][OVERRIDE_KEY]
    assert isinstance(again, LayerOverride) and again.previous is backend and set(again.calls) == {0, 1}
    assert "zstar" not in base.model_options["transformer_options"]  # the model we were given is untouched


def test_z_image_on_a_host_without_layer_index_is_refused(z_image_model):
    """A host that writes no block index the override recognises (ComfyUI before 0.8.0) would give
    the plain model's image: the run stops at its first reweighted step instead."""
    cond = cond_for("z_image")
    content, style = invert(z_image_model, 2, cond), invert(z_image_model, 3, cond)
    patched = patch_model(z_image_model, 1.2, 0.0, "auto", 2, STEPS)
    patched.model_options["transformer_options"][OVERRIDE_KEY].block_type = "a label no host writes"
    with pytest.raises(ZStarError, match="model: this ComfyUI does not tell attention calls which layer they belong "
                       "to .*ComfyUI 0.8.0 and later"):
        zstar_sample(patched, content, style, cond, cond, progress=False)


def test_flux2_and_z_image_bad_input_is_named(z_image_model):
    if HOST_LACKS["flux2"]:
        pytest.skip("this ComfyUI has no Flux2 model (it came with ComfyUI 0.8.0)")
    flux2 = models.flux2(seed=1)
    with pytest.raises(ZStarError, match=r"layers: layer 10 is out of range \(layers 0-2\)"):
        patch_model(z_image_model, 1.2, 0.0, "10-15", 2, STEPS)
    with pytest.raises(ZStarError, match=r"layers: layer 10 is out of range \(layers 0-4\)"):
        patch_model(flux2, 1.2, 0.0, "10-15", 2, STEPS)
    z_inv = invert(z_image_model, 2, cond_for("z_image"), steps=2)
    with pytest.raises(ZStarError, match="content: inverted with a .*ZImage.* model but this MODEL is .*Flux2"):
        zstar_sample(patch_model(flux2, 1.2, 0.0, "auto", 0, 2), z_inv, z_inv, cond_for("flux2"), cond_for("flux2"),
                     progress=False)
    with pytest.raises(ZStarError, match=r"latent: .*128"):  # a Flux.1 latent (16 channels) on Flux.2
        invert_latent(flux2, torch.randn(1, 16, 16, 16), 2, cond_for("flux2"), progress=False, method="flow")


def test_mask_and_style_mix(flux_model):
    cond = cond_for("flux")
    content, style, other = (invert(flux_model, s, cond) for s in (2, 3, 4))
    patched = patch_model(flux_model, 1.2, 0.0, "auto", 2, STEPS)
    single, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    full, _ = zstar_sample(patched, content, style, cond, cond, progress=False, mask=torch.ones(1, 128, 128))
    assert torch.equal(single, full)
    half = torch.zeros(1, 128, 128)
    half[:, :, :64] = 1
    masked, _ = zstar_sample(patched, content, style, cond, cond, progress=False, mask=half)
    assert rel(masked, single) > 1e-4
    mix, _ = zstar_sample(patched, content, (StyleEntry(style, 1.2), StyleEntry(other, 0.8)), cond, cond, progress=False)
    assert rel(mix, single) > 1e-4


# ------------------------------------------------------------------ interrupts and bad input

def test_interrupt_leaves_nothing(family_model):
    name, model = family_model
    cond = cond_for(name)
    content, style = invert(model, 2, cond), invert(model, 3, cond)
    patched = patch_model(model, 1.2, 0.0, "auto", 2, STEPS)
    before = repr(sorted(patched.model_options["transformer_options"].keys()))
    fresh, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    calls = []

    def interrupting(executor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            comfy.model_management.interrupt_current_processing(True)
        return executor(*args, **kwargs)
    clone = patched.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test", interrupting)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        zstar_sample(clone, content, style, cond, cond, progress=True)
    comfy.model_management.interrupt_current_processing(False)
    assert repr(sorted(patched.model_options["transformer_options"].keys())) == before
    again, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    assert torch.equal(again, fresh)


def test_bad_input_is_named(flux_model, sd3_model):
    cond = cond_for("flux")
    flux_inv = invert(flux_model, 2, cond)
    sd3_inv = invert(sd3_model, 2, cond_for("sd3"))
    with pytest.raises(ZStarError, match=r"layers: layer 10 is out of range \(layers 0-4\)"):
        patch_model(flux_model, 1.2, 0.0, "10-15", 2, STEPS)
    with pytest.raises(ZStarError, match="model: Flux.1 is a rectified-flow model; invert it with 'Z\\* Flow Inversion'"):
        ZStarDDIMInversion.execute(flux_model, models.flow_latent(2), STEPS, cond)
    with pytest.raises(ZStarError, match="model: SD1.5 is a DDPM model; invert it with 'Z\\* DDIM Inversion'"):
        ZStarFlowInversion.execute(models.sd15(seed=None, load_device=models.CPU), models.latent(2), STEPS, "euler",
                                   1.0, models.cond(1))
    with pytest.raises(ZStarError, match="solver: 'rk4' is not one of euler, fireflow"):
        ZStarFlowInversion.execute(flux_model, models.flow_latent(2), STEPS, "rk4", 1.0, cond)
    patched = patch_model(flux_model, 1.2, 0.0, "auto", 2, STEPS)
    with pytest.raises(ZStarError, match="content: inverted with a .*SD3.* model but this MODEL is .*Flux"):
        zstar_sample(patched, sd3_inv, flux_inv, cond, cond, progress=False)
    with pytest.raises(ZStarError, match="style: inverted with a .*SD3.* model but content with .*Flux"):
        zstar_sample(patched, flux_inv, sd3_inv, cond, cond, progress=False)
    inpaint = models.patcher(comfy.supported_models.FluxInpaint({**models.FLUX_SMALL, "in_channels": 96,
                             **({"txt_ids_dims": []} if "txt_ids_dims" in models.flux().model.diffusion_model.params.__dataclass_fields__ else {})}),
                             load_device=models.CPU)
    with pytest.raises(ZStarError, match="model: this MODEL \\(Flux/FluxInpaint.*\\) has Flux.1's network but is a variant "
                       "Z\\* does not know"):
        describe(inpaint)


def test_chroma_and_qwen_image_bad_input_is_named():
    """U-Net layer strings, another family's inversion, video latents, Qwen-Image-Edit's reference
    latents: each is stopped with the input's name."""
    chroma, qwen = models.chroma(seed=1), models.qwen_image(seed=1)
    cond = cond_for("qwen_image")
    with pytest.raises(ZStarError, match=r"layers: layer 10 is out of range \(layers 0-2\)"):
        patch_model(qwen, 1.2, 0.0, "10-15", 2, STEPS)  # SD1.5's paper layers
    with pytest.raises(ZStarError, match=r"layers: layer 10 is out of range \(layers 0-4\)"):
        patch_model(chroma, 1.2, 0.0, "10-15", 2, STEPS)
    qwen_inv, chroma_inv = invert(qwen, 2, cond, steps=2), invert(chroma, 2, cond, steps=2)
    with pytest.raises(ZStarError, match="content: inverted with a .*Chroma.* model but this MODEL is .*QwenImage"):
        zstar_sample(patch_model(qwen, 1.2, 0.0, "auto", 0, 2), chroma_inv, qwen_inv, cond, cond, progress=False)
    with pytest.raises(ZStarError, match=r"latent: holds 2 frames, shape \(1, 16, 2, 16, 16\); Z\* stylizes images"):
        invert_latent(qwen, torch.randn(1, 16, 2, 16, 16), 2, cond, progress=False, method="flow")
    with pytest.raises(ZStarError, match=r"latent: expected image latents of shape \(batch, channels, height, width\), "
                       r"got \(1, 16, 1, 16, 16\)"):
        invert_latent(chroma, torch.randn(1, 16, 1, 16, 16), 2, cond, progress=False, method="flow")
    edit = [[cond[0][0], {**cond[0][1], "reference_latents": [torch.randn(1, 16, 1, 16, 16)]}]]
    with pytest.raises(ZStarError, match="conditioning: carries reference latents .*Qwen-Image-Edit"):
        zstar_sample(patch_model(qwen, 1.2, 0.0, "auto", 0, 2), qwen_inv, qwen_inv, edit, cond, progress=False)


def test_schedule_mismatch_names_the_first_differing_sigma_and_the_shift(sd3_model):
    """An inversion on shift 3 (SD3.5's) sampled on shift 6 (a ModelSamplingSD3 node): σ[0] = 1 on
    both, so the message names the first σ that differs and the MODEL's shift, not "σ_max 1 vs 1"."""
    cond = cond_for("sd3")
    inv = invert(sd3_model, 2, cond, steps=2)
    base = sd3_model.get_model_object("model_sampling")
    sampling = type(base)(sd3_model.model.model_config)
    sampling.set_parameters(shift=6.0, multiplier=base.multiplier)
    shifted = sd3_model.clone()
    shifted.add_object_patch("model_sampling", sampling)
    with pytest.raises(ZStarError, match=r"content: inverted on a different noise schedule than this MODEL's "
                       r"\(they first differ at σ\[1\] of 3: 0\.[0-9]+ in the inversion, 0\.[0-9]+ here; "
                       r"this MODEL samples with shift 6\); invert with the same model and model-sampling settings"):
        zstar_sample(patch_model(shifted, 1.2, 0.0, "auto", 0, 2), inv, inv, cond, cond, progress=False)


def test_nan_guidance_is_named(flux_model):
    """FluxGuidance passes NaN and inf through; the sampler and the inversion name them."""
    cond = cond_for("flux")
    inv = invert(flux_model, 2, cond, steps=2)
    patched = patch_model(flux_model, 1.2, 0.0, "auto", 0, 2)
    nan = models.flow_cond(1, guidance=float("nan"))
    with pytest.raises(ZStarError, match=r"positive: the conditioning's guidance is nan \(not a finite number\); "
                       "set FluxGuidance's guidance to a number such as 3.5"):
        zstar_sample(patched, inv, inv, nan, cond, progress=False)
    with pytest.raises(ZStarError, match="negative: the conditioning's guidance is nan"):
        zstar_sample(patched, inv, inv, cond, nan, cfg=2.0, progress=False)
    with pytest.raises(ZStarError, match="positive: the conditioning's guidance is inf"):
        invert_latent(flux_model, models.flow_latent(2)["samples"], 2, models.flow_cond(1, guidance=float("inf")),
                      progress=False, method="flow", guidance=None)


@pytest.mark.parametrize("what", ["record", "style_map", "nulltext"])
def test_unet_only_features_are_refused_by_name(flux_model, what):
    from comfyui_zstar.zstar_runtime.nulltext import nulltext_optimise
    from comfyui_zstar.zstar_runtime.record import record_style
    from comfyui_zstar.zstar_runtime.style_map import style_map

    cond = cond_for("flux")
    inv = invert(flux_model, 2, cond)
    patched = patch_model(flux_model, 1.2, 0.0, "auto", 2, STEPS)
    call, name = {"record": (lambda: record_style(flux_model, inv, cond, cond, progress=False), "Z\\* Style Record"),
                  "style_map": (lambda: style_map(patched, inv, inv, cond, cond, progress=False), "Z\\* Style Map"),
                  "nulltext": (lambda: nulltext_optimise(flux_model, inv, cond, cond, progress=False),
                               "Z\\* Null-Text Optimization")}[what]
    with pytest.raises(ZStarError, match=f"model: {name}.* is not available for Flux.1 yet"):
        call()


def test_patch_node_layer_string_and_positions_widget(flux_model):
    out = ZStarAttentionPatch.execute(flux_model, 1.2, 0.0, "auto", 2, STEPS).result[0]
    assert out.model_options["transformer_options"][CONFIG_KEY].positions == "shifted"
    assert ZStarAttentionPatch.validate_inputs(style_positions="sideways") == \
        "style_positions: 'sideways' is not one of auto, as_recorded, shifted, reference_latent"


def saved_and_loaded(inversion, name: str, folder):
    """The inversion written by Z* Save Style into `folder` (as the output directory) and read back by Z* Load Style."""
    import folder_paths
    from comfyui_zstar.nodes.style_bank import ZStarLoadStyle, ZStarSaveStyle

    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(folder))
    try:
        saved = ZStarSaveStyle.execute(name, "overwrite", inversion=inversion).result[0]
        return ZStarLoadStyle.execute(saved).result[0]
    finally:
        folder_paths.set_output_directory(old)


def test_a_saved_flux_inversion_gives_the_identical_result(flux_model, tmp_path):
    """The style bank keeps a flow inversion (σ ending at 0, its guidance) bit for bit."""
    cond = cond_for("flux")
    content, style = invert(flux_model, 2, cond), invert(flux_model, 3, cond)
    patched = patch_model(flux_model, 1.2, 0.0, "auto", 2, STEPS)
    loaded = saved_and_loaded(style, "flux_style", tmp_path)
    assert loaded.arch == "flux" and loaded.guidance == 1.0 and float(loaded.sigmas[-1]) == 0.0
    direct, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    again, _ = zstar_sample(patched, content, loaded, cond, cond, progress=False)
    assert torch.equal(direct, again)


def test_a_saved_qwen_image_inversion_gives_the_identical_result(tmp_path):
    """Qwen-Image's inversions hold one-frame latents (C, 1, H, W); the style bank keeps them bit for bit."""
    model = models.qwen_image(seed=0)
    cond = cond_for("qwen_image")
    content, style = invert(model, 2, cond, steps=2), invert(model, 3, cond, steps=2)
    assert style.latent_shape == (16, 1, models.LATENT_SIZE, models.LATENT_SIZE)
    patched = patch_model(model, 1.2, 0.0, "auto", 0, 2)
    loaded = saved_and_loaded(style, "qwen_style", tmp_path)
    assert loaded.arch == "qwen_image" and loaded.latent_shape == style.latent_shape
    direct, _ = zstar_sample(patched, content, style, cond, cond, progress=False)
    again, _ = zstar_sample(patched, content, loaded, cond, cond, progress=False)
    assert torch.equal(direct, again)
