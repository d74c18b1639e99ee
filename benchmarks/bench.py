"""Z* benchmark: one run, ratios measured side by side, one RESULT line at the end.

    python benchmarks/bench.py            # full table (real-size SD1.5 U-Net, random weights)
    python benchmarks/bench.py --quick    # < 3 min on 2 CPU cores, small U-Net
    python benchmarks/bench.py --device cuda --sizes 512,768,1024   # + the GPU table

The attention rows (SD1.5, Flux.1, Qwen-Image and Z-Image widths) need only torch; the U-Net, end-to-end,
Flux and Qwen-Image step rows need COMFYUI_PATH (a ComfyUI checkout) and print "skipped" and `nan` in the RESULT
line without it.
See benchmarks/README.md for what each ratio measures.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import torch

import attn
import dit
from timing import best, median

TARGETS = {  # name: (comparison, bound)
    "attn_time_ratio": ("<=", 2.3),
    "attn_mem_ratio": ("<=", 1.5),
    "unet_step_ratio": ("<=", 1.15),
    "e2e_ratio": ("<=", 1.10),
    "e2e_fast_ratio": (">=", 1.6),
    "flux_attn_time_ratio": ("<=", 2.3),
    "flux_attn_mem_ratio": ("<=", 1.5),
    "flux_step_ratio": ("<=", 1.15),
    "qwen_attn_time_ratio": ("<=", 2.3),  # Qwen-Image: the Flux targets (same block width)
    "qwen_attn_mem_ratio": ("<=", 1.5),
    "qwen_step_ratio": ("<=", 1.15),
    "zimage_attn_time_ratio": ("<=", 2.3),  # Z-Image: one 3840-wide layer's attention, the same targets
    "zimage_attn_mem_ratio": ("<=", 1.5),
}
# per family: the RESULT-line prefix, the section's name, and the real model's (Z* blocks, blocks) under 'auto'
DIT_ROWS = {"flux": ("flux", "Flux", "Flux.1", (18, 57)), "qwen_image": ("qwen", "Qwen-Image", "Qwen-Image", (30, 60)),
            "z_image": ("zimage", "Z-Image", "Z-Image", (15, 30))}
STEP_FAMILIES = ("flux", "qwen_image")  # those with a step row (Z-Image: its layer's attention only)
TEXT_OF = {"flux": "T5 length", "qwen_image": "a Qwen2.5-VL prompt, our choice",
           "z_image": "a Qwen3-4B caption, our choice; image tokens padded to a multiple of 32"}
NAN = float("nan")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small U-Net, fewer sizes and repetitions (< 3 min on 2 CPU cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--sizes", default="", help="image sizes in px for the GPU table, e.g. 512,768,1024 (full-size U-Net)")
    p.add_argument("--latent", type=int, default=None,
                   help="latent side for the U-Net and end-to-end rows (default: 16 with --quick, else 64 = SD1.5's 512 px)")
    p.add_argument("--attention", choices=("pytorch", "comfy"), default="pytorch",
                   help="ComfyUI's attention backend for the U-Net rows: pytorch = torch SDPA, as "
                        "--use-pytorch-cross-attention and ComfyUI's default on NVIDIA GPUs (default); "
                        "comfy = whatever ComfyUI picks on this machine (on a CPU: sub-quadratic attention)")
    p.add_argument("--attn-sizes", default=None, help="latent sides for the attention rows (default: 64,96 quick; 64,96,128 full)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 with --quick, else torch's choice, one per core)")
    p.add_argument("--flux-sizes", default=None,
                   help="latent sides for the Flux attention rows (default: 64 quick; 64,96,128 full = 512, 768, 1024 px)")
    p.add_argument("--flux-latent", type=int, default=None,
                   help="latent side for the Flux step row (default: 32 with --quick, else 64 = 512 px)")
    p.add_argument("--skip-attention", action="store_true", help="only the ComfyUI rows (U-Net, end to end, Flux step)")
    p.add_argument("--skip-pipeline", action="store_true", help="only the attention rows (no ComfyUI)")
    p.add_argument("--skip-flux", action="store_true", help="no Flux, Qwen-Image or Z-Image rows (attention and step)")
    return p.parse_args(argv)


def fmt(x, spec=".2f") -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def met(name: str, value: float) -> str:
    if math.isnan(value):
        return "not measured"
    op, bound = TARGETS[name]
    ok = value <= bound if op == "<=" else value >= bound
    return "met" if ok else "MISSED"


def attention_section(results, dtype, quick: bool) -> tuple[list[str], float, float]:
    out = [f"## Attention ({attn.HEADS} heads × {attn.DIM_HEAD} = SD1.5 level 1, {str(dtype).split('.')[-1]}, batch 1)",
           "plain  = sdpa_attention over the N own keys (the unpatched layer)",
           "Z*     = the patched layer's content-row call: N own + N style keys as the layer's k/v hold them",
           "         (side by side), λ applied in place, one fused call over the 2N keys, no copy",
           "copy   = the same over style K/V held apart (fast mode's record): [λ·K_s; K], [V_s; V] built first",
           "einsum = reweighted_attention_reference(dtype=None), the official materialised formulation",
           "Time: best of interleaved repetitions [median]. peak: the call's high-water mark, inputs included;",
           "extra: the same without the inputs (temporaries + output).",
           ""]
    head = f"{'latent':>6} {'N':>6} | {'plain ms':>16} {'Z* ms':>16} {'copy ms':>16} {'einsum ms':>16} | " \
           f"{'Z*/plain':>8} {'copy/pl':>7} {'ein/pl':>6}"
    out += ["Time", head, "-" * len(head)]
    t_ratio = m_ratio = NAN
    for r in results:
        t = r["times"]

        def ms(v):
            return f"{best(t[v]) * 1e3:7.1f} [{median(t[v]) * 1e3:6.1f}]" if v in t else f"{'—':>16}"

        def rt(v):
            return best(t[v]) / best(t["plain"]) if v in t else NAN

        out.append(f"{r['side']:>4}² {r['n']:>6} | {ms('plain')} {ms('zstar')} {ms('copy')} {ms('einsum')} | "
                   f"{rt('zstar'):8.2f} {fmt(rt('copy')):>7} {fmt(rt('einsum')):>6}")
        if r["side"] == 64:
            t_ratio = rt("zstar")
    out.append("")
    head = f"{'latent':>6} {'N':>6} | {'peak MiB: plain':>15} {'Z*':>7} {'copy':>7} {'einsum':>8} | " \
           f"{'Z*/plain':>8} {'copy/pl':>7} | {'extra MiB: plain':>16} {'Z*':>6} {'copy':>6}"
    out += ["Peak memory", head, "-" * len(head)]
    for r in results:
        m = r["mem"]
        if not m:
            out.append(f"{r['side']:>4}² {r['n']:>6} | peak memory not measurable here (no /proc/self/clear_refs)")
            continue
        mib = {v: m[v]["total"] / 2**20 for v in m}
        extra = {v: m[v]["extra"] / 2**20 for v in m}
        mr, cr = mib["zstar"] / mib["plain"], mib["copy"] / mib["plain"]
        ein = f"{mib['einsum']:8.0f}" if "einsum" in mib else f"{'skipped':>8}"
        out.append(f"{r['side']:>4}² {r['n']:>6} | {mib['plain']:15.1f} {mib['zstar']:7.1f} {mib['copy']:7.1f} {ein} | "
                   f"{mr:8.2f} {cr:7.2f} | {extra['plain']:16.1f} {extra['zstar']:6.1f} {extra['copy']:6.1f}")
        if r["side"] == 64:
            m_ratio = mr
    out.append("")
    for r in results:
        if not r["einsum"]:
            out.append(f"einsum at {r['side']}² skipped: its score matrices need ~{r['einsum_gib']:.0f} GiB.")
    if quick and 128 not in [r["side"] for r in results]:
        out.append("--quick: 128² (N=16384) left out; the full run measures it.")
    for r in results:
        if r["side"] == 64:
            t, m = r["times"], r["mem"]
            lt = best(t["layer_zstar"]) / best(t["layer_plain"])
            lm = m["layer_zstar"]["total"] / m["layer_plain"]["total"] if m else NAN
            out.append(f"Patched layer at 64² (2 rows: content + style, λ {attn.STYLE_SCALE}, λ_style {attn.STYLE_SELF_SCALE}, "
                       f"zstar_batch_attention) vs the unpatched layer on the same 2 rows: time {lt:.2f}×, peak {fmt(lm)}×.")
    return out, t_ratio, m_ratio


def flux_attention_section(results, dtype, family: str = "flux") -> tuple[list[str], float, float]:
    prefix, name, real, _ = DIT_ROWS[family]
    n_txt = results[0]["n_txt"] if results else dit.N_TXT
    text, heads = TEXT_OF[family], dit.ATTN_SPECS[dit.FAMILY_PREFIX[family]][0]
    out = [f"## {name} joint attention ({heads} heads × {dit.DIM_HEAD} = {heads * dit.DIM_HEAD} wide, {real}'s block; "
           f"{n_txt} text ({text}) + image tokens; rows [content, style]; {str(dtype).split('.')[-1]})",
           "plain = one attention call over the 2 rows, q/k/v (2, heads, L, d): torch SDPA, then (2, L, heads·d), as ComfyUI's",
           f"        attention_pytorch(skip_reshape=True) runs it for {name}: the unpatched block",
           f"Z*    = joint_zstar_attention on the same q, k, v with that backend (λ {dit.STYLE_SCALE}, λ_style {dit.STYLE_SELF_SCALE}, "
           "style keys' positions shifted:",
           "        'auto' on rotary models): the content row's image queries over [λ·K_style,img ; K_own], its text queries plain,",
           "        the style row's image queries over [λ_style·K_content,img ; K_own]: the patched block",
           "Time: best of interleaved repetitions [median]. Memory: the call's high-water mark with the inputs counted",
           "(as attn_mem_ratio) and, for comparison, above them (temporaries + output; both read the same q, k, v).",
           ""]
    head = f"{'image':>8} {'latent':>6} {'text + image':>12} | {'plain ms':>16} {'Z* ms':>16} {'Z*/plain':>8} | " \
           f"{'MiB above inputs: plain':>23} {'Z*':>7} {'Z*/plain':>8} | {'with inputs: plain':>18} {'Z*':>7} {'Z*/plain':>8}"
    out += [head, "-" * len(head)]
    t_ratio = m_ratio = NAN
    for i, r in enumerate(results):
        t, m = r["times"], r["mem"]
        rt = best(t["zstar"]) / best(t["plain"])
        ms = {v: f"{best(t[v]) * 1e3:7.1f} [{median(t[v]) * 1e3:6.1f}]" for v in t}
        line = f"{r['side'] * 8:>5} px {r['side']:>5}² {r['n_txt']:>4} + {r['n_img']:>5} | {ms['plain']} {ms['zstar']} {rt:8.2f} | "
        if m:
            ex = {v: m[v]["extra"] / 2**20 for v in m}
            tot = {v: m[v]["total"] / 2**20 for v in m}
            mr = tot["zstar"] / tot["plain"]  # as attn_mem_ratio counts it: the inputs included
            line += f"{ex['plain']:23.1f} {ex['zstar']:7.1f} {ex['zstar'] / ex['plain']:8.2f} | {tot['plain']:18.1f} {tot['zstar']:7.1f} {mr:8.2f}"
        else:
            mr = NAN
            line += "peak memory not measurable here (no /proc/self/clear_refs)"
        out.append(line)
        if i == 0:
            t_ratio, m_ratio = rt, mr
    if results:
        out += ["", f"{prefix}_attn_* in the RESULT line: the first size ({results[0]['side']}², {results[0]['side'] * 8} px), "
                    "memory with the inputs counted, as attn_mem_ratio counts it."]
    return out, t_ratio, m_ratio


def flux_step_section(res, backend: str) -> tuple[list[str], float]:
    _, name, real, (real_z, real_blocks) = DIT_ROWS[res["family"]]
    t, w = res["times"], res["width"]
    ratio = best(t["patched"]) / best(t["unpatched"])
    double, single = res["blocks"]
    n_blocks, n_z = double + single, len({k[:2] for k in res["keys"]})
    side = res["side"]
    kind = (lambda k: k[0].replace('_', ' ')) if res["family"] == "flux" else (lambda k: "block")
    labels = ", ".join(f"{n} ({kind(k)} {k[1]})" for n, k in zip(res["layers"], res["keys"]))
    # The real model: the same per-block costs, blocks being ~all of a step at 3072 wide.
    per_block = best(t["unpatched"]) / n_blocks
    scaled = 1 + real_z * (best(t["patched"]) - best(t["unpatched"])) / n_z / (real_blocks * per_block)
    blocks = f"{double} double + {single} single blocks" if res["family"] == "flux" else f"{double} blocks"

    def ms(v):
        return f"{best(t[v]) * 1e3:9.1f} ms [{median(t[v]) * 1e3:8.1f}]"

    out = [f"## {name} step: random {real} layout, hidden {w['hidden_size']} = {w['num_heads']} heads × "
           f"{w['hidden_size'] // w['num_heads']}, {blocks} ({res['params'] / 1e6:.0f}M params, float32), "
           f"latent {side}² ({side * 8} px: {res['n_txt']} text + {dit.image_tokens(side)} image tokens), rows [content, style]",
           f"ComfyUI attention backend: {backend}",
           f"Z* ('auto' layers) on layer {labels}: {n_z} of {n_blocks} blocks ({real}: {real_z} of {real_blocks}); "
           f"λ {dit.STYLE_SCALE}, λ_style {dit.STYLE_SELF_SCALE}, style positions {res['positions']}",
           "",
           "One model call (BaseModel.apply_model, cfg 1), best of interleaved repetitions [median]:",
           f"  unpatched, 2 rows   {ms('unpatched')}",
           f"  patched, 2 rows     {ms('patched')}   ratio {ratio:.3f}",
           f"  patched vs unpatched output, relative difference {res['diff']:.2e} (nonzero: Z* ran)",
           f"  scaled to {real} ({real_z} Z* blocks of {real_blocks}, the same cost per block): ≈ {scaled:.3f}"]
    return out, ratio


def pipeline_section(res, device) -> tuple[list[str], float, float, float]:
    from pipeline import END_STEP, LAYERS, RERUN_SCALE, START_STEP, STEPS, STYLE_SELF_SCALE

    u, runs = res.unet, res.runs
    step_ratio = best(u["patched_2rows"]) / best(u["unpatched_2rows"])
    fast_step = best(u["fast_1row"]) / best(u["unpatched_1row"])
    # The bare sum from per-call medians (5 one-row + 25 two-row calls): one call stalled by
    # another process on the machine cannot inflate it the way it inflates a raw sum.
    window = END_STEP - START_STEP
    bare = START_STEP * median(res.bare_calls["1 row"]) + window * median(res.bare_calls["2 rows"])
    e2e = best(runs["paper"]) / bare
    e2e_fast = best(runs["paper"]) / best(runs["fast"])
    inside = res.unet_inside
    bound = ((START_STEP * best(u["unpatched_1row"]) + window * best(u["patched_2rows"]))
             / (START_STEP * best(u["unpatched_1row"]) + window * best(u["fast_1row"])))
    batch = best(u["unpatched_2rows"]) / best(u["unpatched_1row"])
    side = res.latent
    cuda = torch.device(device).type == "cuda"

    def s(v):
        return f"{best(v):7.2f} s [{median(v):6.2f}]"

    def rows(name):
        r = res.rows.get(name, [])
        counts = {}
        for n in r:
            counts[n] = counts.get(n, 0) + 1
        return " + ".join(f"{c}×{n}" for n, c in sorted(counts.items())) + f" = {sum(r)} rows"

    out = [f"## U-Net and end to end: {res.model}, latent {side}² ({side * 8} px), {STEPS} steps, cfg 1",
           "",
           "U-Net step, best of interleaved repetitions (median):",
           f"  unpatched, 2 rows (content + style)          {best(u['unpatched_2rows']) * 1e3:9.1f} ms [{median(u['unpatched_2rows']) * 1e3:8.1f}]",
           f"  patched, 2 rows, Z* in layers {LAYERS} (paper)  {best(u['patched_2rows']) * 1e3:9.1f} ms [{median(u['patched_2rows']) * 1e3:8.1f}]"
           f"   ratio {step_ratio:.3f}",
           f"  unpatched, 1 row                             {best(u['unpatched_1row']) * 1e3:9.1f} ms [{median(u['unpatched_1row']) * 1e3:8.1f}]",
           f"  fast mode, 1 content row + recorded K/V      {best(u['fast_1row']) * 1e3:9.1f} ms [{median(u['fast_1row']) * 1e3:8.1f}]"
           f"   ratio {fast_step:.3f}",
           "",
           "One-off work (cached by ComfyUI across re-runs):"]
    inv = res.inversion
    line = f"  inversion content + style, one batched pass  {inv['pair_batched']:7.2f} s"
    if "one_alone" in inv:
        line += f"   (one image alone {inv['one_alone']:.2f} s: batched pair = {inv['pair_batched'] / (2 * inv['one_alone']):.2f}× two separate passes)"
    out.append(line)
    out.append(f"  style record (fast mode)                     {res.record_seconds:7.2f} s   {res.record_mib:.1f} MiB")
    out += ["",
            f"Re-run after changing λ to {RERUN_SCALE} (inversions and record cached), interleaved, best (median):",
            f"  paper preset (style inversion, λ_style {STYLE_SELF_SCALE})  {s(runs['paper'])}   U-Net: {rows('paper')}",
            f"  its U-Net row evaluations timed alone: {START_STEP} × 1 row + {window} × 2 rows, each call's median "
            f"{median(res.bare_calls['1 row']):.3f} s / {median(res.bare_calls['2 rows']):.3f} s",
            f"    sum {bare:7.2f} s (raw sums {s(runs['bare_unet_sum'])})   e2e ratio {e2e:.3f}",
            f"    (time inside the U-Net during that run {inside.get('paper', NAN):.2f} s: run / inside = "
            f"{best(runs['paper']) / inside['paper']:.3f})",
            f"  fast mode (style record, λ_style 0)          {s(runs['fast'])}   U-Net: {rows('fast')}",
            f"    paper / fast = {e2e_fast:.2f}; from the U-Net steps alone ({START_STEP}·1 row + {window}·patched 2 rows) / "
            f"({START_STEP}·1 row + {window}·fast row) "
            f"= {bound:.2f}, as 2 rows cost {batch:.2f}× one row here",
            f"  fast vs replay, relative difference: λ_style {STYLE_SELF_SCALE} (paper) {res.diff_fast_vs_replay_on:.2e}, "
            f"λ_style 0 {res.diff_fast_vs_replay_off:.2e}"]
    if cuda and res.peak:
        p = {k: v / 2**30 for k, v in res.peak.items()}
        out.append(f"  peak memory allocated (GiB): U-Net step unpatched {p['unpatched_2rows']:.2f}, patched {p['patched_2rows']:.2f}, "
                   f"1 row {p['unpatched_1row']:.2f}, fast 1 row {p['fast_1row']:.2f}; whole run paper {p['paper']:.2f}, fast {p['fast']:.2f}")
    return out, step_ratio, e2e, e2e_fast


def gpu_section(rows, label) -> list[str]:
    from pipeline import STEPS

    out = [f"## Per image: {label}, {STEPS} steps, cfg 1 (seconds, peak memory allocated)", "",
           "| size | paper preset: s / image | peak GiB | fast mode: s / image | peak GiB | inversion pair (batched) s | record s | record MiB |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['px']} | {r['paper_s']:.2f} | {fmt(r['paper_peak'] / 2**30)} | {r['fast_s']:.2f} | "
                   f"{fmt(r['fast_peak'] / 2**30)} | {r['inversion_pair_s']:.2f} | {r['record_s']:.2f} | {r['record_mib']:.0f} |")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads or (1 if args.quick and device.type == "cpu" else None)
    if threads:  # --quick: the small U-Net's ops are too small for two threads to help
        torch.set_num_threads(threads)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    quick = args.quick
    started = time.perf_counter()
    comfy_path = os.environ.get("COMFYUI_PATH")

    header = [f"# Z* benchmark ({'quick' if quick else 'full'}) — {platform.processor() or platform.machine()}, "
              f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}"]
    if hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        busy = " — busy machine, timings are noisy (on a shared CPU, --threads 1 is steadier)" if load > cores else ""
        header.append(f"load average {load:.1f} on {cores} cores at the start{busy}")
    header.append("")
    sections = []
    ratios = dict.fromkeys(TARGETS, NAN)

    if not args.skip_attention:
        sizes = [int(s) for s in (args.attn_sizes or ("64,96" if quick else "64,96,128")).split(",")]
        reps = 3 if quick else 5
        limit = min(32 * 2**30, torch.cuda.get_device_properties(device).total_memory // 2) if cuda else 4 * 2**30
        results = attn.run(sizes, reps, device, dtype, limit, log=log)
        lines, ratios["attn_time_ratio"], ratios["attn_mem_ratio"] = attention_section(results, dtype, quick)
        sections.append(lines)
        if not args.skip_flux:
            sides = [int(s) for s in (args.flux_sizes or ("64" if quick else "64,96,128")).split(",")]
            for family, (prefix, *_) in DIT_ROWS.items():
                results = dit.run_attention(sides, reps, device, dtype, log=log, family=family)
                lines, ratios[f"{prefix}_attn_time_ratio"], ratios[f"{prefix}_attn_mem_ratio"] = \
                    flux_attention_section(results, dtype, family)
                sections.append(lines)

    sizes_px = [int(s) for s in args.sizes.split(",") if s]
    if args.skip_pipeline:
        pass
    elif not comfy_path:
        sections.append(["## U-Net and end to end", "skipped: COMFYUI_PATH not set"])
        if not args.skip_flux:
            sections.append(["## Flux and Qwen-Image steps", "skipped: COMFYUI_PATH not set"])
    else:
        import pipeline

        nodes, models = pipeline.setup(args.device, args.attention)
        import comfy.ldm.modules.attention as comfy_attention

        backend = comfy_attention.optimized_attention.__name__
        latent = args.latent or (16 if quick else 64)
        log(f"building the {'small' if quick else 'full-size'} SD1.5 U-Net")
        sd = pipeline.build_sd15(models, "small" if quick else "full", device=device, dtype=dtype)
        res = pipeline.run_pipeline(sd, models, latent, unet_reps=9 if quick else 3, run_reps=3 if quick else 1,
                                    device=device, log=log, separate_inversion=quick)
        lines, ratios["unet_step_ratio"], ratios["e2e_ratio"], ratios["e2e_fast_ratio"] = pipeline_section(res, device)
        lines.insert(1, f"ComfyUI attention backend: {backend}")
        sections.append(lines)
        if sizes_px:
            if not cuda:
                log("--sizes on the CPU: real SD1.5 at these sizes takes hours here; meant for --device cuda")
            full = sd if not quick else pipeline.build_sd15(models, "full", device=device, dtype=dtype)
            table = pipeline.gpu_table(full, models, sizes_px, device, reps=1 if quick else 2, log=log)
            sections.append(gpu_section(table, full.label))
        if not args.skip_flux:
            for family in STEP_FAMILIES:
                prefix = DIT_ROWS[family][0]
                step = dit.run_step(models, "quick" if quick else "full", args.flux_latent or (32 if quick else 64),
                                    reps=5 if quick else 3, device=device, log=log, family=family)
                lines, ratios[f"{prefix}_step_ratio"] = flux_step_section(step, backend)
                sections.append(lines)

    summary = ["## Targets", "", f"{'metric':<20} {'value':>8}  {'target':<8} status"]
    for name, value in ratios.items():
        op, bound = TARGETS[name]
        toy = ""
        if quick and "attn" not in name and not math.isnan(value):
            toy = (" (small Flux)" if name.startswith("flux") else " (small Qwen-Image)" if name.startswith("qwen")
                   else " (toy U-Net)")
        summary.append(f"{name:<20} {fmt(value, '.3f'):>8}  {op} {bound:<5} {met(name, value)}{toy}")
    if quick:
        summary += ["", "--quick runs the U-Net rows on the tests' toy U-Net (32 channels, 16² latent) to show that",
                    "everything runs. On it two batch rows cost only ~1.5× one row, which caps paper / fast near",
                    "1.4; the U-Net targets are judged on the full run (SD1.5's real U-Net at 512 px)."]
        if not math.isnan(ratios["flux_step_ratio"]):
            summary += ["The Flux and Qwen-Image steps run 768-wide models (6 heads × 128) here; the full run's are the",
                        "real width, 3072, at 512 px."]
    summary.append("")
    summary.append(f"total time {time.perf_counter() - started:.0f} s")

    print("\n".join(header))
    for lines in sections + [summary]:
        print("\n".join(lines))
        print()
    print("RESULT " + " ".join(f"{k}={fmt(v, '.3f')}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
