"""Flux.1 quantized to GGUF (city96's ComfyUI-GGUF) through the Z* Flux workflow, via the API.

The session's server has ComfyUI-GGUF in its custom_nodes when the pack's archive is there
(../shared/packs/comfyui-gguf-*.tar.gz, or ZSTAR_GGUF_PACK) and this venv has `gguf`
(zstar_server.gguf_pack_source); otherwise these tests skip and say which of the two is missing.

The files: the tier's random Flux.1-dev diffusion model (checkpoint.flux_diffusion_model) written
as GGUF by the `gguf` package the way the pack's own tools make them (tools/convert.py, then its
patched llama-quantize, tools/lcpp.patch): arch "flux", the 2-D weights in Q8_0 or Q4_0, the
embedders and the final layer left unquantized (F16, lossless from the fp16 source), 1-D tensors
F32. They are cached beside the float file and linked into the server's models/diffusion_models
as flux1-dev-Q8_0.gguf / flux1-dev-Q4_0.gguf, the names of the published files.
(`COMFYUI_PATH=... python tests/comfy/test_gguf.py [Q8_0 Q4_0]` writes them.)

Per model (float UNETLoader, then UnetLoaderGGUF with each file), one prompt: the shipped
zstar_flux workflow made small (zstar_server.small_prompt) plus
- the plain reconstruction of the content from the same content inversion with the same
  conditioning: a second Z* Sampler in 'alongside' mode whose style is the content's inversion,
  under a patch with style_self_strength 0, so its style rows are the plain flow ODE (host
  attention, no anchor) from the inversion's top latent; its `style_branch` output. (No stock
  sampler starts a flow model from a given latent at σ = 1: it scales the latent by 1 - σ. The
  prompt is the sampler's positive; as style rows they take their inversion's Flux guidance, 1.0,
  where the Z* content rows take the Flux Guidance node's 2.0.)
- the workflow's patched model patched a second time (other layers and λ) into a stock KSampler,
  and the unpatched model into the same KSampler.
Latents are read back from SaveLatent's files. Asserted: every output finite, the Z* result's
drift from the float model at most DRIFT_RATIO × the plain reconstruction's drift at that
quantization, and the KSampler through the twice-patched GGUF model bitwise equal to the
unpatched one.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from harness import COMFYUI_PATH, REPO, SKIP_REASON

if not COMFYUI_PATH:
    pytest.skip(SKIP_REASON, allow_module_level=True)

import zstar_server  # noqa: E402
from zstar_server import FLUX_MODEL, SIZE, runner, small_prompt  # noqa: E402

QUANTS = ("Q8_0", "Q4_0")
DRIFT_RATIO = 1.5
EFFECT_OVER_DRIFT = 1.5  # Z*'s own effect must exceed quantization's drift of the plain result by this much
# A GGUF model call dequantizes every weight (~0.5 G parameters here), several times the cost of a
# float call on a CPU: the prompts run one flow step, reweighted (start_step 0), and a 1-step KSampler.
STEPS, START_STEP = 1, 0
KSAMPLER_STEPS = 1
GGUF_WRITER_VERSION = 1
WORKFLOW = REPO / "example_workflows" / "api" / "zstar_flux.json"
# tools/lcpp.patch, llama_model_quantize_internal: what it never quantizes in a Flux file
FLUX_KEEP = ("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.")


# --------------------------------------------------------------------------- the GGUF files


def gguf_tensor_type(key: str, shape: tuple[int, ...], qtype):
    """The GGML type of one tensor of a Flux file quantized to `qtype` (a GGMLQuantizationType)."""
    import gguf

    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32  # convert.py: 1-D tensors in F32
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if any(p in key for p in FLUX_KEEP) or shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return qtype


def write_flux_gguf(src: Path, dst: Path, quant: str):
    """Write the safetensors Flux file `src` as a GGUF file of arch 'flux' in `quant` (one tensor at
    a time: peak memory is one tensor, in float32)."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    qtype = gguf.GGMLQuantizationType[quant]
    writer = gguf.GGUFWriter(path=None, arch="flux")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{quant}"))
    tmp = dst.with_name(dst.name + f".{os.getpid()}.part")
    with safe_open(str(src), framework="np") as f:
        plan = []
        for key in f.keys():
            shape = tuple(f.get_slice(key).get_shape())
            ttype = gguf_tensor_type(key, shape, qtype)
            if ttype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                dtype = np.float32 if ttype == gguf.GGMLQuantizationType.F32 else np.float16
                nbytes = math.prod(shape) * np.dtype(dtype).itemsize
            else:
                dtype, nbytes = np.float32, math.prod(gguf.quant_shape_to_byte_shape(shape, ttype))
            writer.add_tensor_info(key, shape, np.dtype(dtype), nbytes, raw_dtype=ttype)
            plan.append((key, ttype))
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for key, ttype in plan:
            writer.write_tensor_data(gguf.quants.quantize(f.get_tensor(key).astype(np.float32), ttype))
    writer.close()
    os.replace(tmp, dst)


def flux_gguf(quant: str) -> Path:
    """The cached GGUF file of this host's random Flux model in `quant`, written on first use."""
    import checkpoint

    src = checkpoint.flux_diffusion_model()
    dst = src.with_name(f"{src.stem}-{quant}-g{GGUF_WRITER_VERSION}.gguf")
    if not dst.is_file():
        write_flux_gguf(src, dst, quant)
    return dst


# --------------------------------------------------------------------------- the prompts


def gguf_name(quant: str) -> str:
    return FLUX_MODEL.replace(".safetensors", f"-{quant}.gguf")  # flux1-dev-Q8_0.gguf, as published


def only(prompt: dict, class_type: str) -> str:
    ids = [nid for nid, node in prompt.items() if node["class_type"] == class_type]
    assert len(ids) == 1, f"{WORKFLOW.name}: expected one {class_type}, found {ids}"
    return ids[0]


def model_prompt(model: str, content: str, style: str) -> tuple[dict, dict]:
    """The zstar_flux API workflow made small, on the float file (model='float') or a GGUF file
    (model=quant, loaded by UnetLoaderGGUF), with the extra outputs the tests read; returns
    (prompt, {output: SaveLatent node id})."""
    prompt = small_prompt(json.loads(WORKFLOW.read_text()), [content], style, steps=STEPS, prefix=f"tests/gguf/{model}")
    loader, sampler = only(prompt, "UNETLoader"), only(prompt, "ZStarSampler")
    for node in prompt.values():
        if node["class_type"] == "ZStarAttentionPatch":
            node["inputs"].update(start_step=START_STEP, end_step=STEPS)
    patch = prompt[sampler]["inputs"]["model"][0]
    assert prompt[patch]["class_type"] == "ZStarAttentionPatch"
    if model != "float":
        prompt[loader] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": gguf_name(model)},
                          "_meta": {"title": f"Unet Loader (GGUF) {model}"}}
    zs = prompt[sampler]["inputs"]
    content_inv = zs["content"][0]
    encoded = prompt[content_inv]["inputs"]["latent"][0]  # the content's VAE Encode
    extra = {
        # The plain reconstruction: style = the content's own inversion, denoised alongside with
        # λ_style = 0, i.e. the host's attention on the style rows, from the inversion's top latent.
        "plain_patch": ("ZStarAttentionPatch", {**prompt[patch]["inputs"], "model": [loader, 0], "style_self_strength": 0.0}),
        "plain_sampler": ("ZStarSampler", {**zs, "model": ["plain_patch", 0], "style": [content_inv, 0],
                                           "style_mode": "alongside"}),
        "zstar": ("SaveLatent", {"samples": [sampler, 0]}),
        "plain": ("SaveLatent", {"samples": ["plain_sampler", 1]}),
    }
    if model != "float":
        ksampler = {"seed": 0, "steps": KSAMPLER_STEPS, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                    "positive": zs["positive"], "negative": zs["negative"], "latent_image": [encoded, 0], "denoise": 1.0}
        extra.update({
            # The workflow's patched model patched again (both blocks, other λ, every step), then a stock KSampler.
            "patch_again": ("ZStarAttentionPatch", {"model": [patch, 0], "style_strength": 2.0, "style_self_strength": 0.5,
                                                    "layers": "0-1", "start_step": 0, "end_step": STEPS,
                                                    "style_positions": "as_recorded"}),
            "ksampler_patched": ("KSampler", {**ksampler, "model": ["patch_again", 0]}),
            "ksampler_unpatched": ("KSampler", {**ksampler, "model": [loader, 0]}),
            "patched": ("SaveLatent", {"samples": ["ksampler_patched", 0]}),
            "unpatched": ("SaveLatent", {"samples": ["ksampler_unpatched", 0]}),
        })
    ids = {name: str(1000 + i) for i, name in enumerate(extra)}

    def relink(value):
        return [ids[value[0]], value[1]] if runner.is_link(value) and value[0] in ids else value

    saved = {}
    for name, (class_type, inputs) in extra.items():
        inputs = {k: relink(v) for k, v in inputs.items()}
        if class_type == "SaveLatent":
            inputs["filename_prefix"] = f"tests/gguf/{model}_{name}"
            saved[name] = ids[name]
        prompt[ids[name]] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": f"test: {name}"}}
    return prompt, saved


def saved_latent(server, entry: dict, node_id: str):
    from safetensors.torch import load_file

    files = entry["outputs"][node_id]["latents"]
    assert len(files) == 1, files
    info = files[0]
    return load_file(str(server.base / info.get("type", "output") / info["subfolder"] / info["filename"]))["latent_tensor"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gguf_server(comfy_server):
    """The session's server with ComfyUI-GGUF loaded and the GGUF files in models/diffusion_models."""
    if comfy_server.gguf_skip:
        pytest.skip(comfy_server.gguf_skip)
    missing = [n for n in zstar_server.GGUF_NODES if n not in comfy_server.object_info]
    if missing:
        pytest.fail(f"ComfyUI-GGUF is in {comfy_server.gguf_pack} but {missing} are not in /object_info "
                    f"(the pack failed to import); server log:\n{comfy_server.log_tail(60)}", pytrace=False)
    folder = comfy_server.base / "models" / "diffusion_models"
    for quant in QUANTS:
        link = folder / gguf_name(quant)
        if not link.exists():
            link.symlink_to(flux_gguf(quant))
    yield comfy_server
    # The session's later modules need neither the GGUF models nor this module's cached outputs.
    comfy_server.client.post_json("/free", {"unload_models": True, "free_memory": True})


@pytest.fixture(scope="module")
def outputs(gguf_server, test_images):
    """model ('float' or a quant) → {output name: latent}, each model's prompt run once."""
    import time

    done = {}

    def get(model: str) -> dict:
        if model not in done:
            prompt, saved = model_prompt(model, test_images["content"][0], test_images["style"])
            t0 = time.monotonic()
            result = gguf_server.run(prompt)
            seconds = time.monotonic() - t0
            assert any(e == "execution_success" for e, _ in result.messages), result.messages
            assert len(result.images) == 1, result.images
            latents = {name: saved_latent(gguf_server, result.entry, nid) for name, nid in saved.items()}
            done[model] = {"latents": latents, "image": gguf_server.image(result.images[0]), "seconds": seconds}
            print(f"\n{model}: prompt ran in {seconds:.1f} s")
        return done[model]

    return get


def drift(a, b) -> float:
    return float((a.double() - b.double()).norm())


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("quant", QUANTS)
def test_zstar_flux_workflow_on_gguf_drifts_no_more_than_the_plain_model(gguf_server, outputs, quant):
    """The Z* Flux workflow with UnetLoaderGGUF runs and saves finite latents and a real picture, and
    quantization moves the Z* result no more than DRIFT_RATIO × what it moves the plain
    reconstruction from the same inversion."""
    import numpy as np

    ref, out = outputs("float"), outputs(quant)
    for name, latent in out["latents"].items():
        assert latent.is_floating_point() and bool(latent.isfinite().all()), f"{quant}: {name} is not finite"
    for name, latent in ref["latents"].items():
        assert latent.shape == out["latents"][name].shape == (1, 16, SIZE // 8, SIZE // 8), name
    pixels = np.asarray(out["image"].convert("RGB"), dtype=np.float64)
    assert out["image"].size == (SIZE, SIZE) and pixels.std() > 1.0, f"{quant}: the saved image is constant"
    qtypes = [line for line in (gguf_server.base / "comfyui.log").read_text(errors="replace").splitlines()
              if "gguf qtypes:" in line and f"{quant} (" in line]
    assert qtypes, f"the server log has no 'gguf qtypes: ... {quant}' line: the GGUF loader did not load a {quant} file"

    z_f, p_f = ref["latents"]["zstar"], ref["latents"]["plain"]
    z_q, p_q = out["latents"]["zstar"], out["latents"]["plain"]
    d_zstar, d_plain = drift(z_q, z_f), drift(p_q, p_f)
    effect, effect_q = drift(z_f, p_f), drift(z_q, p_q)
    print(f"\n{quant}: drift from float (L2, latent) Z* {d_zstar:.4g} (rel {d_zstar / z_f.double().norm():.3g}), "
          f"plain reconstruction {d_plain:.4g} (rel {d_plain / p_f.double().norm():.3g}), "
          f"ratio {d_zstar / d_plain:.3f}; Z* vs plain: float {effect:.4g}, {quant} {effect_q:.4g}")
    assert d_plain > 0, f"{quant}: the GGUF model gives the float model's plain reconstruction exactly: not quantized?"
    # Z* acts, on both models, by clearly more than quantization moves anything (else the ratio says
    # little). The inversion asks the quantized model for its velocity at σ = 0 (FireFlow's reference
    # loop), so at Q4_0 quantization moves even the plain reconstruction by ~20 % (Z* vs plain: ~1.9×).
    assert min(effect, effect_q) > EFFECT_OVER_DRIFT * d_plain, (
        f"{quant}: Z* moves the result {effect:.4g} (float) / {effect_q:.4g} (GGUF) from the plain "
        f"reconstruction, quantization {d_plain:.4g}")
    assert d_zstar <= DRIFT_RATIO * d_plain, (f"{quant}: the Z* result drifts {d_zstar:.4g} from the float model's, "
                                              f"{d_zstar / d_plain:.2f}× the plain reconstruction's {d_plain:.4g}")


def test_q4_0_drifts_more_than_q8_0(outputs):
    """The files are what they say: 4 bits move the plain reconstruction further than 8."""
    ref = outputs("float")["latents"]["plain"]
    q8, q4 = (drift(outputs(q)["latents"]["plain"], ref) for q in ("Q8_0", "Q4_0"))
    assert 0 < q8 < q4, (q8, q4)


@pytest.mark.parametrize("quant", QUANTS)
def test_twice_patched_gguf_model_in_a_plain_ksampler_is_the_unpatched_model(outputs, quant):
    """The workflow's Z* Attention Patch on the GGUF model, patched again, in a stock KSampler (no Z*
    run): bit for bit what the unpatched GGUF model gives in the same KSampler."""
    import torch

    latents = outputs(quant)["latents"]
    patched, unpatched = latents["patched"], latents["unpatched"]
    assert bool(unpatched.isfinite().all()), f"{quant}: the KSampler's output is not finite"
    assert patched.shape == unpatched.shape and patched.dtype == unpatched.dtype
    assert torch.equal(patched, unpatched), (f"{quant}: the twice-patched model differs from the unpatched one in a "
                                             f"plain KSampler by {drift(patched, unpatched):.3g} (L2)")


if __name__ == "__main__":
    import sys
    import time

    for q in sys.argv[1:] or QUANTS:
        t0 = time.monotonic()
        print(flux_gguf(q), f"{time.monotonic() - t0:.1f} s")
