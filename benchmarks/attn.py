"""Attention tier of the benchmark: plain torch, no ComfyUI.

Compares, at SD1.5's first-level width (8 heads × 40 = 320 channels):
  plain   sdpa_attention(q, k, v)                          N keys   (the unpatched layer)
  zstar   attention_over_rows(q, k_rows, v_rows, (1, λ))   2N keys: what the patched layer runs
          for its content row. The keys and values arrive as the layer holds them, the
          content's and the style row's side by side in its own k and v; λ scales the style
          half in place and one fused call reads the 2N keys as a view (no copy).
  copy    reweighted_attention(q, k, v, k_s, v_s, λ)       2N keys from separate tensors (fast
          mode's recorded style): [λ·K_s; K] and [V_s; V] are written into new buffers first
  einsum  reweighted_attention_reference(dtype=None)       the official, materialised formulation
  layer   zstar_batch_attention on a [content; style] batch vs plain attention on the same batch

Time: interleaved repetitions, best (min) and median (zstar and layer scale their style keys
in place on every repetition; attention's cost does not depend on the values). Memory: the
peak of the call measured for real. On CUDA: torch.cuda.max_memory_allocated after a reset.
On CPU: each measurement runs in a fresh subprocess (`python attn.py --child ...`); it resets
the kernel's peak-RSS counter (write "5" to /proc/self/clear_refs), allocates the inputs, runs
the call once and reads VmHWM from /proc/self/status. "total" = peak − RSS before the inputs
existed (inputs, temporaries and output); "extra" = peak − RSS once the inputs exist
(temporaries and output).
"""
from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from zstar_attention import (PAPER_PRESET, RowLayout, attention_over_rows, reweighted_attention,  # noqa: E402
                             reweighted_attention_reference, sdpa_attention, zstar_batch_attention)

from timing import interleaved  # noqa: E402

HEADS, DIM_HEAD = 8, 40
STYLE_SCALE, STYLE_SELF_SCALE = PAPER_PRESET.style_scale, PAPER_PRESET.style_self_scale
VARIANTS = ("plain", "zstar", "copy", "einsum", "layer_plain", "layer_zstar")
LAYER_SIDE = 64  # the [content; style] layer rows run at this latent side only


def make_inputs(variant: str, n: int, device, dtype, seed: int = 0) -> tuple:
    """The call's inputs in ComfyUI's layout (B, N, heads·d); zstar's keys/values as (1, 2, N, ·)."""
    gen = torch.Generator().manual_seed(seed)

    def t(rows):
        return torch.randn(rows, n, HEADS * DIM_HEAD, generator=gen).to(device, dtype)

    if variant == "zstar":  # q of the content row; k, v of the layer's [content; style] rows
        return t(1), t(2).unsqueeze(0), t(2).unsqueeze(0)
    if variant.startswith("layer"):
        return t(2), t(2), t(2)
    return tuple(t(1) for _ in range(3 if variant == "plain" else 5))


def call(variant: str, t: tuple):
    if variant in ("plain", "layer_plain"):
        return sdpa_attention(t[0], t[1], t[2], HEADS)
    if variant == "zstar":
        return attention_over_rows(t[0], t[1], t[2], HEADS, (1.0, STYLE_SCALE))
    if variant == "copy":
        return reweighted_attention(*t, HEADS, STYLE_SCALE)
    if variant == "einsum":
        return reweighted_attention_reference(*t, HEADS, STYLE_SCALE, dtype=None)
    if variant == "layer_zstar":  # the patched layer: content row + style row, paper preset
        return zstar_batch_attention(*t, HEADS, RowLayout(1, 1, 1), 1, (STYLE_SCALE,), STYLE_SELF_SCALE)
    raise ValueError(variant)


def einsum_bytes(n: int, dtype) -> int:
    """Rough peak of the materialised formulation (style logits, own logits, their concat,
    softmax): used only to decide whether to run it at all on this machine."""
    return 3 * HEADS * n * 2 * n * torch.empty((), dtype=dtype).element_size()


# ---- memory -----------------------------------------------------------------------------

def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_peak(call, make_inputs, variant: str, n: int, dtype_name: str, warm: int = 64) -> None:
    """Runs in a fresh process (`<module>.py --child`): peak-RSS growth of one call(variant,
    make_inputs(variant, n)) (see the module docstring); warm: the warm-up call's size."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    dtype = getattr(torch, dtype_name)
    with torch.inference_mode():
        call(variant, make_inputs(variant, warm, "cpu", dtype))  # thread pool and kernels initialised
        gc.collect()
        before_inputs = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        inputs = make_inputs(variant, n, "cpu", dtype)
        with_inputs = _status_bytes("VmRSS")
        out = call(variant, inputs)
        peak = _status_bytes("VmHWM")
    print(json.dumps({"total": peak - before_inputs, "extra": peak - with_inputs, "out": out.nbytes}))


def cpu_peak(script: str, variant: str, n: int, dtype) -> dict:
    """child_peak of `script --child variant n dtype` in a subprocess."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", BENCH_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run([sys.executable, script, "--child", variant, str(n), str(dtype).split(".")[-1]],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"memory child {variant} N={n} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cuda_peak(call, make_inputs, variant: str, n: int, device, dtype) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before_inputs = torch.cuda.memory_allocated(device)
    inputs = make_inputs(variant, n, device, dtype)
    with_inputs = torch.cuda.memory_allocated(device)
    out = call(variant, inputs)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    res = {"total": peak - before_inputs, "extra": peak - with_inputs, "out": out.nbytes}
    del inputs, out
    return res


def peak_memory(variant: str, n: int, device, dtype) -> dict:
    if torch.device(device).type == "cuda":
        return cuda_peak(call, make_inputs, variant, n, device, dtype)
    return cpu_peak(__file__, variant, n, dtype)


def cpu_memory_supported() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and Path("/proc/self/status").is_file()


# ---- the table --------------------------------------------------------------------------

def run(sizes, reps: int, device, dtype, einsum_limit: int, log=print) -> list[dict]:
    """One dict per latent side: times (s, min/median) and peak memory per variant."""
    results = []
    mem_ok = torch.device(device).type == "cuda" or cpu_memory_supported()
    for side in sizes:
        n = side * side
        with_einsum = einsum_bytes(n, dtype) <= einsum_limit
        variants = [v for v in VARIANTS if (v != "einsum" or with_einsum) and (side == LAYER_SIDE or not v.startswith("layer"))]
        log(f"attention {side}² (N={n}): timing {', '.join(variants)} × {reps}")
        with torch.inference_mode():
            for v in variants:  # warm-up (kernels, thread pool) at a small size
                call(v, make_inputs(v, 256, device, dtype))
            inputs = {v: make_inputs(v, n, device, dtype) for v in variants}
            fns = {v: (lambda v=v: call(v, inputs[v])) for v in variants}
            times = interleaved(fns, reps, device)
            del inputs, fns
        mem = {}
        if mem_ok:
            for v in variants:
                log(f"attention {side}²: peak memory of {v}")
                mem[v] = peak_memory(v, n, device, dtype)
        results.append({"side": side, "n": n, "times": times, "mem": mem, "einsum": with_einsum,
                        "einsum_gib": einsum_bytes(n, dtype) / 2**30, "mem_ok": mem_ok})
    return results


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    child_peak(call, make_inputs, sys.argv[2], int(sys.argv[3]), sys.argv[4])
