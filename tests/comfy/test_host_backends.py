"""The user's attention backend and the host's dynamic VRAM (issue 17, items 2 and 5).

- ModelAttentionBackend (a core node since ComfyUI 0.32) puts the backend the user chose into
  the MODEL's `optimized_attention_override`. Applied before or after Z* Attention Patch, on the
  toy SD1.5 U-Net and on the small Flux, every attention call of a Z* run, the reweighted ones
  over [λ·K_style ; K] included, runs through that backend, and the result is the Z* result.
  Skipped by name where the node does not exist (0.3.64, 0.8.0).
- Dynamic VRAM (ComfyUI 0.16+: ModelPatcherDynamic, `free_memory(..., for_dynamic=)`): fast
  mode's records ask the host for room as memory used alongside a dynamic model when the MODEL
  is dynamic, and as before on hosts without dynamic VRAM. A CPU cannot load a dynamic model
  (the host turns a ModelPatcherDynamic with a CPU load device into a plain ModelPatcher), so
  the dynamic patcher is built for a CUDA load device in a subprocess that starts comfy-aimdo
  as ComfyUI's main.py does; nothing is ever loaded onto that device.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch
from torch.overrides import TorchFunctionMode

import comfy.ldm.modules.attention
import comfy.model_management
import comfy.model_patcher
from comfy_extras import nodes_model_advanced

import models
from models import rel
from zstar_fixtures import _inference_mode, invert, unpatched_flow_twin, unpatched_twin  # noqa: F401 (pytest fixture)

harness.load_pack()
from comfyui_zstar.nodes.patch import ZStarAttentionPatch  # noqa: E402
from comfyui_zstar.zstar_runtime import host  # noqa: E402
from comfyui_zstar.zstar_runtime.inversion import invert_latent  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import CONFIG_KEY  # noqa: E402
from comfyui_zstar.zstar_runtime.record import record_style  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402

STEPS = 6
START = 2
SIZE = 8  # latent side: 64 tokens at the U-Net's first level, 16 image tokens in Flux
TXT = 7  # Flux prompt tokens: never equal to the image tokens, so every call's shape is unambiguous
PYTORCH = "pytorch attention"
OVERRIDE = "optimized_attention_override"

BACKEND_NODE = getattr(nodes_model_advanced, "ModelAttentionBackend", None)
needs_backend_node = pytest.mark.skipif(BACKEND_NODE is None,
                                        reason="ModelAttentionBackend is not in this ComfyUI (added in 0.32)")
DYNAMIC = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
NON_DYNAMIC_FREE = "Non dynamic memory free called!"  # model_management.free_memory's log without for_dynamic


# ------------------------------------------------------------------ the user's attention backend


def choose_backend(model, attention=PYTORCH):
    """The core node, run as the executor runs a node of its kind: FUNCTION with the inputs."""
    choices = BACKEND_NODE.INPUT_TYPES()["required"]["attention"][0]
    assert attention in choices
    return getattr(BACKEND_NODE(), BACKEND_NODE.FUNCTION)(model=model, attention=attention)[0]


def zstar_patch(model, style_self_strength):
    return ZStarAttentionPatch.execute(model, 1.2, style_self_strength, "auto", START, STEPS).result[0]


class SDPACalls(TorchFunctionMode):
    """(query tokens, key tokens) of every torch scaled_dot_product_attention call: the chosen
    backend ("pytorch attention") is the only attention in these models that calls it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k = args[0], args[1]
            self.calls.append((q.shape[-2], k.shape[-2]))
        return func(*args, **(kwargs or {}))


def hook_calls(model, run):
    """(query tokens, key tokens) of every attention call that reaches the host's attention hook
    (`optimized_attention_override`) in `run(model)`, run on the host's default backend."""
    seen = []

    def override(func, *args, **kwargs):
        q, k = args[0], args[1]
        axis = -2 if kwargs.get("skip_reshape") else 1
        seen.append((q.shape[axis], k.shape[axis]))
        return func(*args, **kwargs)

    hooked = model.clone()
    hooked.model_options["transformer_options"][OVERRIDE] = override
    run(hooked)
    return seen


@pytest.fixture(scope="module")
def host_default_is_not_the_choice():
    """The node's choice must differ from the host's default to be seen (on a CPU host: sub-quad)."""
    default = comfy.ldm.modules.attention.optimized_attention
    chosen = comfy.ldm.modules.attention.get_attention_function("pytorch")
    if default is chosen:
        pytest.skip("the host already runs pytorch attention by default: the node's choice cannot be told apart")
    return default.__name__


def check_backend_runs_the_zstar_result(model, style_self, run, is_reweighted, plain_twin):
    """The node before and after the patch: same calls as the host's hook sees, all in the chosen
    backend, the reweighted ones included; the result the Z* result (bitwise between the orders)."""
    patched_without = zstar_patch(model, style_self)
    with SDPACalls() as without:
        reference = run(patched_without)
    assert without.calls == []  # the host's default backend never reaches SDPA: the count below can fail
    expected = hook_calls(patched_without, run)
    reweighted = [c for c in expected if is_reweighted(c)]
    assert reweighted  # the reweighting happened, through the host's hook

    results = {}
    for order, patched in (("node before the patch", zstar_patch(choose_backend(model), style_self)),
                           ("node after the patch", choose_backend(patched_without))):
        with SDPACalls() as chosen:
            results[order] = run(patched)
        assert chosen.calls == expected, order  # every call, in order, ran in the chosen backend
        assert [c for c in chosen.calls if is_reweighted(c)] == reweighted, order
    before, after = results.values()
    assert torch.equal(before, after)

    # SDPA and sub-quad differ only in float32 summation order; the Z* effect is 100× the tolerance
    drift = rel(after, reference)
    effect = rel(reference, run(plain_twin(patched_without)))
    print(f"\n  chosen backend vs host default: Z* result rel {drift:.1e}; Z* effect rel {effect:.1e}")
    assert drift <= 1e-5
    assert effect >= 1e-3
    return len(reweighted), patched_without.model_options["transformer_options"][CONFIG_KEY]


@needs_backend_node
def test_unet_backend_node_before_or_after_the_patch(host_default_is_not_the_choice):
    model, cond = models.sd15(seed=0), models.cond(1)
    content, style = invert(model, 2, cond, STEPS, size=SIZE), invert(model, 3, cond, STEPS, size=SIZE)

    def run(m):
        return zstar_sample(m, content, style, cond, cond, progress=False)[0]

    reweighted, config = check_backend_runs_the_zstar_result(
        model, 1.5, run, lambda c: c[1] == 2 * c[0],  # content queries over [style ; content] keys
        lambda patched: unpatched_twin(model, patched))
    assert len(config.keys) == 6
    assert reweighted == 2 * 6 * (STEPS - START)  # content and style row, 6 layers, every window step


@needs_backend_node
def test_flux_backend_node_before_or_after_the_patch(host_default_is_not_the_choice):
    model = models.flux(seed=0)
    cond = models.flow_cond(1, tokens=TXT, guidance=3.5)

    def inv(seed):
        latent = models.flow_latent(seed, size=SIZE)["samples"]
        return invert_latent(model, latent, STEPS, cond, progress=False, method="flow", guidance=1.0)[0]

    content, style = inv(2), inv(3)
    n_img = (SIZE // 2) ** 2

    def run(m):
        return zstar_sample(m, content, style, cond, cond, progress=False)[0]

    reweighted, config = check_backend_runs_the_zstar_result(
        model, 0.0, run, lambda c: c == (n_img, 2 * n_img + TXT),  # image queries over [style img ; txt ; img]
        lambda patched: unpatched_flow_twin(model, patched))
    assert reweighted == len(config.keys) * (STEPS - START)  # the content row in every chosen block and window step


# ------------------------------------------------------------------ dynamic VRAM


def test_free_memory_options_follow_the_hosts_signature(caplog):
    """Hosts without dynamic VRAM get free_memory's old call; hosts with it are told whether the
    MODEL is dynamic (a plain ModelPatcher is not), and the host's own call accepts it."""
    model = models.sd15(seed=None, load_device=models.CPU)
    options = host.free_memory_options(model)
    takes_flag = "for_dynamic" in inspect.signature(comfy.model_management.free_memory).parameters
    assert options == ({"for_dynamic": False} if takes_flag else {})
    assert takes_flag == (DYNAMIC is not None)  # the flag and the dynamic patcher came together (0.16)
    with caplog.at_level(1):
        host.free_device_memory(model, 1 << 20, models.CPU)  # a real call; nothing to unload on a CPU
    said = NON_DYNAMIC_FREE in caplog.text
    assert said == takes_flag  # a plain patcher on a dynamic host: the host's non-dynamic path, as its loader


def test_fast_mode_on_a_cpu_load_device_asks_the_host_for_nothing(caplog):
    """On a CPU the records already live where they are read: no free_memory call at all, dynamic
    host or not (and a CPU load device never has a dynamic patcher, model_patcher.py)."""
    model, cond = models.sd15(seed=0, load_device=models.CPU), models.cond(1)
    content, style = invert(model, 2, cond, STEPS, size=SIZE), invert(model, 3, cond, STEPS, size=SIZE)
    record = record_style(model, style, cond, cond, 1.0, "auto", START, STEPS, progress=False)
    patched = zstar_patch(model, 0.0)
    with caplog.at_level(1):
        out, _ = zstar_sample(patched, content, record, cond, cond, progress=False)
    assert torch.isfinite(out).all()
    assert NON_DYNAMIC_FREE not in caplog.text


DYNAMIC_SCRIPT = textwrap.dedent("""
    import json, logging, sys
    import comfy_aimdo.control
    # ComfyUI's main.py starts comfy-aimdo before anything imports comfy; its host buffers need it
    if not comfy_aimdo.control.init():
        print("RESULT " + json.dumps({"skip": "comfy-aimdo does not load on this machine"}))
        sys.exit(0)
    sys.path.insert(0, sys.argv[1])
    import harness, torch
    import models
    import comfy.model_patcher
    from zstar_fixtures import invert

    harness.load_pack()
    from comfyui_zstar.nodes.patch import ZStarAttentionPatch
    from comfyui_zstar.zstar_attention import RowLayout, ZStarRun
    from comfyui_zstar.zstar_runtime import host
    from comfyui_zstar.zstar_runtime.record import record_style
    from comfyui_zstar.zstar_runtime.wrappers import RecordsOnDevice

    lines = []
    class Lines(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger().addHandler(Lines())
    logging.getLogger().setLevel(1)

    out = {}
    with torch.inference_mode():
        plain = models.sd15(seed=0, load_device=models.CPU)
        Dynamic = comfy.model_patcher.ModelPatcherDynamic
        gpu = torch.device("cuda", 0)  # never touched: nothing is loaded, no tensor is moved there
        dynamic = Dynamic(plain.model, gpu, models.CPU)
        on_cpu = Dynamic(plain.model, models.CPU, models.CPU)
        patched = ZStarAttentionPatch.execute(dynamic, 1.2, 0.0, "auto", 2, 6).result[0]
        out["types"] = [type(m).__name__ for m in (dynamic, on_cpu, patched)]
        out["dynamic"] = [m.is_dynamic() for m in (dynamic, on_cpu, patched, plain)]
        out["options"] = [host.free_memory_options(m) for m in (dynamic, patched, plain)]

        # the host's real free_memory with those options (on the CPU, the only device here)
        said = {}
        for name, m in (("dynamic", patched), ("plain", plain)):
            del lines[:]
            host.free_device_memory(m, 1 << 20, models.CPU)
            said[name] = any("Non dynamic memory free called!" in s for s in lines)
        out["non_dynamic_logged"] = said

        # RecordsOnDevice before a load onto the dynamic MODEL's GPU: what it asks the host for
        cond = models.cond(1)
        style = invert(plain, 3, cond, 6, size=8)
        record = record_style(plain, style, cond, cond, 1.0, "auto", 2, 6, progress=False)
        run = ZStarRun(RowLayout(1, 1), (1.2,), 0.0)
        run.record = (record,)
        asked = []
        class Stop(Exception):
            pass
        def observe(model, nbytes, device):
            asked.append((model is patched, nbytes == record.nbytes, str(device), host.free_memory_options(model)))
            raise Stop  # before the records would move to a GPU this machine lacks
        real, host.free_device_memory = host.free_device_memory, observe
        try:
            RecordsOnDevice(run)(lambda *a, **k: None, patched, (1, 4, 8, 8), {})
        except Stop:
            pass
        finally:
            host.free_device_memory = real
        out["records_ask"] = asked
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.skipif(DYNAMIC is None, reason="ModelPatcherDynamic is not in this ComfyUI (dynamic VRAM came in 0.16)")
def test_a_dynamic_model_frees_memory_as_dynamic():
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-c", DYNAMIC_SCRIPT, str(Path(__file__).resolve().parent)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=harness.REPO)
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(result[-1][len("RESULT "):])
    if "skip" in out:
        pytest.skip(out["skip"])
    # a CUDA load device gives a dynamic patcher, a CPU one the host's plain ModelPatcher; the Z* clone stays dynamic
    assert out["types"] == ["ModelPatcherDynamic", "ModelPatcher", "ModelPatcherDynamic"]
    assert out["dynamic"] == [True, False, True, False]
    assert out["options"] == [{"for_dynamic": True}, {"for_dynamic": True}, {"for_dynamic": False}]
    assert out["non_dynamic_logged"] == {"dynamic": False, "plain": True}
    assert out["records_ask"] == [[True, True, "cuda:0", {"for_dynamic": True}]]
