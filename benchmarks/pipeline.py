"""ComfyUI tier of the benchmark: a real ComfyUI SD1.5 U-Net with random weights and the
pack's node functions (invert, patch, record, sample), as ComfyUI's executor runs them.

Needs COMFYUI_PATH; `setup(device)` must run before anything here touches `comfy`.
"""
from __future__ import annotations

import gc
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from timing import best, interleaved, sync, timed

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from zstar_attention.presets import PAPER_PRESET  # noqa: E402

STEPS = PAPER_PRESET.steps
STYLE_SCALE, STYLE_SELF_SCALE = PAPER_PRESET.style_scale, PAPER_PRESET.style_self_scale
RERUN_SCALE = 1.4  # the λ the artist changes to before re-running
START_STEP, END_STEP, LAYERS = PAPER_PRESET.start_step, PAPER_PRESET.end_step, PAPER_PRESET.layers


def setup(device: str, attention: str = "pytorch"):
    """ComfyUI on sys.path (in CPU mode for --device cpu) and the pack imported as ComfyUI
    imports it; returns (pack modules, tests/comfy/models). attention "pytorch" starts ComfyUI
    as --use-pytorch-cross-attention would (torch SDPA, its default on NVIDIA GPUs); "comfy"
    leaves ComfyUI's own choice for this machine (on a CPU: sub-quadratic chunked attention)."""
    sys.path.insert(0, str(REPO / "tests" / "comfy"))
    import harness  # puts COMFYUI_PATH on sys.path (tests/comfy/harness.py)
    import comfy.cli_args

    if torch.device(device).type == "cpu":
        comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
    if attention == "pytorch":
        comfy.cli_args.args.use_pytorch_cross_attention = True
    import models  # tests/comfy/models.py: the SD1.5 builder, conds, latents

    harness.load_pack()
    from comfyui_zstar.zstar_runtime import inversion, patch, record, sampler, wrappers
    from comfyui_zstar.zstar_attention import RowLayout, ZStarRun
    global nodes
    nodes = Nodes(inversion, patch, record, sampler, RowLayout, ZStarRun, wrappers)
    return nodes, models


@dataclass
class Nodes:
    inversion: object
    patch: object
    record: object
    sampler: object
    RowLayout: type
    ZStarRun: type
    wrappers: object


nodes: Nodes | None = None


@dataclass
class Sd15:
    patcher: object  # comfy ModelPatcher
    positive: list  # CONDITIONING (the empty prompt stands in: one random embedding)
    context_dim: int
    label: str


def build_sd15(models, width: str, device, dtype, seed: int = 0) -> Sd15:
    """The tests' SD1.5 builder (models.sd15) at one of models.SD15_WIDTHS: "full" is the real
    U-Net (860M parameters), "small" the tests' toy one (9M)."""
    patcher = models.sd15(seed, width, dtype=dtype, load_device=torch.device(device))
    unet_config = patcher.model.model_config.unet_config
    ctx = unet_config["context_dim"]
    params = sum(p.numel() for p in patcher.model.diffusion_model.parameters())
    label = (f"SD1.5 {'full' if width == 'full' else 'quick stand-in'} ({unet_config['model_channels']} ch, "
             f"{params / 1e6:.0f}M params, random weights)")
    return Sd15(patcher, models.cond(1, 77, ctx), ctx, label)


class UNetClock:
    """Sums the time spent inside the U-Net (diffusion_model.forward) and the rows per call."""

    def __init__(self, patcher, device):
        self.dm = patcher.model.diffusion_model
        self.device = device
        self.seconds = 0.0
        self.rows = []

    @contextmanager
    def running(self):
        inner = self.dm.forward

        def forward(x, *args, **kwargs):
            t, out = timed(lambda: inner(x, *args, **kwargs), self.device)
            self.seconds += t
            self.rows.append(x.shape[0])
            return out

        self.dm.forward = forward
        try:
            yield self
        finally:
            del self.dm.forward


# ---- single U-Net evaluations ------------------------------------------------------------

def _options(patcher, run=None) -> dict:
    opts = dict(patcher.model_options.get("transformer_options", {}))
    opts["cond_or_uncond"] = [0]
    if run is not None:
        opts[nodes.patch.RUN_KEY] = run
    return opts


def unet_call(sd: Sd15, patcher, rows: int, latent: int, run=None, step: int = START_STEP):
    """One U-Net evaluation of `rows` rows (cond half only, cfg 1) through BaseModel.apply_model,
    with the run state the sampler would set at `step`."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patcher])
    device = patcher.load_device
    dtype = patcher.model.get_dtype()
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 4, latent, latent, generator=gen).to(device)
    ctx = sd.positive[0][0].to(device, dtype).expand(rows, -1, -1)
    sigma = torch.full((rows,), float(patcher.model.model_sampling.sigma(torch.tensor(500.0))), device=device)
    opts = _options(patcher, run)
    opts["sigmas"] = sigma
    if run is not None:
        run.step = step

    def fn():
        return patcher.model.apply_model(x, sigma, c_crossattn=ctx, transformer_options=opts)

    return fn


def paper_run_state(reweight=True, scale=STYLE_SCALE, self_scale=STYLE_SELF_SCALE):
    run = nodes.ZStarRun(nodes.RowLayout(1, 1, 1), (scale,), self_scale)
    run.reweight = run.stacked = reweight
    return run


def fast_run_state(record, scale=STYLE_SCALE):
    run = nodes.ZStarRun(nodes.RowLayout(1, 1, 1), (scale,), 0.0)
    run.reweight = True
    run.record = (record,)
    return run


# ---- the pipeline ----------------------------------------------------------------------

@dataclass
class PipelineResult:
    model: str
    latent: int
    unet: dict = field(default_factory=dict)  # name -> [seconds]
    runs: dict = field(default_factory=dict)  # name -> [seconds]
    unet_inside: dict = field(default_factory=dict)  # run name -> seconds inside the U-Net (best run)
    rows: dict = field(default_factory=dict)  # run name -> rows per U-Net call
    bare_calls: dict = field(default_factory=dict)  # "1 row" / "2 rows" -> seconds of each bare call
    inversion: dict = field(default_factory=dict)  # name -> seconds
    record_seconds: float = 0.0
    record_mib: float = 0.0
    diff_fast_vs_replay_on: float = float("nan")
    diff_fast_vs_replay_off: float = float("nan")
    peak: dict = field(default_factory=dict)  # name -> bytes (CUDA only)


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run_pipeline(sd: Sd15, models, latent: int, unet_reps: int, run_reps: int, device, log=print,
                 separate_inversion: bool = True) -> PipelineResult:
    inv_mod, patch_mod, rec_mod, smp = nodes.inversion, nodes.patch, nodes.record, nodes.sampler
    model, empty = sd.patcher, sd.positive
    res = PipelineResult(sd.label, latent)
    content_lat = models.latent(11, 1, latent)["samples"]
    style_lat = models.latent(12, 1, latent)["samples"]

    with torch.inference_mode():
        # Inversions: content and style in one batched pass (and, for comparison, one alone).
        log(f"pipeline: inverting content + style ({STEPS} steps, latent {latent}², batched)")
        t, pair = timed(lambda: inv_mod.invert_latents(model, [content_lat, style_lat], STEPS, empty, progress=False),
                        device)
        (content_inv, _), (style_inv, _) = pair
        res.inversion["pair_batched"] = t
        if separate_inversion:
            log("pipeline: inverting the content alone (for the batched-vs-separate row)")
            res.inversion["one_alone"] = timed(
                lambda: inv_mod.invert_latent(model, content_lat, STEPS, empty, progress=False), device)[0]

        log("pipeline: recording the style (fast mode)")
        t, record = timed(lambda: rec_mod.record_style(model, style_inv, empty, empty, 1.0, LAYERS,
                                                       START_STEP, END_STEP, progress=False), device)
        res.record_seconds, res.record_mib = t, record.nbytes / 2**20

        # One U-Net step: patched (content + style row, Z* in layers 10-15) vs unpatched, same batch.
        paper = patch_mod.patch_model(model, STYLE_SCALE, STYLE_SELF_SCALE, LAYERS, START_STEP, END_STEP)
        fast = patch_mod.patch_model(model, STYLE_SCALE, 0.0, LAYERS, START_STEP, END_STEP)
        calls = {
            "unpatched_2rows": unet_call(sd, model, 2, latent),
            "patched_2rows": unet_call(sd, paper, 2, latent, paper_run_state()),
            "unpatched_1row": unet_call(sd, model, 1, latent),
            "fast_1row": unet_call(sd, fast, 1, latent, fast_run_state(nodes.wrappers.replace_kv(record, model.load_device))),
        }
        for fn in calls.values():
            fn()  # warm-up
        log(f"pipeline: U-Net steps, interleaved × {unet_reps}")
        res.unet = interleaved(calls, unet_reps, device)
        for name, fn in calls.items():
            _peak_timed(res, name, fn, device)

        # The artist's loop: λ changed, inversions and record cached. Paper preset re-run,
        # the sum of its U-Net row evaluations timed alone, fast-mode re-run; interleaved.
        paper_rerun = patch_mod.patch_model(model, RERUN_SCALE, STYLE_SELF_SCALE, LAYERS, START_STEP, END_STEP)
        fast_rerun = patch_mod.patch_model(model, RERUN_SCALE, 0.0, LAYERS, START_STEP, END_STEP)
        outputs, clock = {}, UNetClock(model, device)
        inside = {"paper": [], "fast": []}

        def sample(name, patched, style):
            def fn():
                before = clock.seconds
                rows_before = len(clock.rows)
                with clock.running():
                    out, _ = smp.zstar_sample(patched, content_inv, style, empty, empty, 1.0, progress=False)
                inside[name].append(clock.seconds - before)
                res.rows[name] = clock.rows[rows_before:]
                outputs[name] = out
                return out
            return fn

        plain_steps = [unet_call(sd, paper_rerun, 1, latent, paper_run_state(False, RERUN_SCALE), step=i)
                       for i in range(START_STEP)]
        z_steps = [unet_call(sd, paper_rerun, 2, latent, paper_run_state(True, RERUN_SCALE), step=i)
                   for i in range(START_STEP, STEPS)]

        def bare_sum():  # the same row evaluations, timed alone one by one; returns their sum
            for name, fns in (("1 row", plain_steps), ("2 rows", z_steps)):
                res.bare_calls.setdefault(name, []).extend(timed(fn, device)[0] for fn in fns)
            return sum(res.bare_calls["1 row"][-len(plain_steps):]) + sum(res.bare_calls["2 rows"][-len(z_steps):])

        log(f"pipeline: re-runs (paper preset, bare U-Net sum, fast mode), interleaved × {run_reps}")
        paper_fn, fast_fn = sample("paper", paper_rerun, style_inv), sample("fast", fast_rerun, record)
        runs = {"paper": [], "bare_unet_sum": [], "fast": []}
        for _ in range(run_reps):
            runs["paper"].append(_peak_timed(res, "paper", paper_fn, device))
            runs["bare_unet_sum"].append(bare_sum())
            runs["fast"].append(_peak_timed(res, "fast", fast_fn, device))
        res.runs = runs
        res.unet_inside = {k: inside[k][v.index(best(v))] for k, v in runs.items() if k in inside}

        log("pipeline: replay run with λ_style off (fast mode's exact reference)")
        replay_off = patch_mod.patch_model(model, RERUN_SCALE, 0.0, LAYERS, START_STEP, END_STEP)
        out_off, _ = smp.zstar_sample(replay_off, content_inv, style_inv, empty, empty, 1.0, progress=False)
        res.diff_fast_vs_replay_on = rel(outputs["fast"], outputs["paper"])
        res.diff_fast_vs_replay_off = rel(outputs["fast"], out_off)
    del record, pair, outputs
    gc.collect()
    return res


def _peak_timed(res: PipelineResult, name: str, fn, device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = timed(fn, device)[0]
    if torch.device(device).type == "cuda":
        res.peak[name] = max(res.peak.get(name, 0), torch.cuda.max_memory_allocated(device))
    return t


# ---- GPU table (time per image, peak VRAM) -----------------------------------------------

def gpu_table(sd: Sd15, models, sizes_px, device, reps: int, log=print) -> list[dict]:
    """Per image size: one-off costs (batched inversion pair, style record) and the per-image
    sampling time and peak memory of the paper preset and fast mode."""
    inv_mod, patch_mod, rec_mod, smp = nodes.inversion, nodes.patch, nodes.record, nodes.sampler
    model, empty = sd.patcher, sd.positive
    is_cuda = torch.device(device).type == "cuda"
    rows = []

    def measure(fn):
        gc.collect()
        if is_cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t, out = timed(fn, device)
        return t, (torch.cuda.max_memory_allocated(device) if is_cuda else float("nan")), out

    for px in sizes_px:
        latent = px // 8
        log(f"gpu table: {px}px (latent {latent}²)")
        with torch.inference_mode():
            lats = [models.latent(11, 1, latent)["samples"], models.latent(12, 1, latent)["samples"]]
            t_inv, m_inv, pair = measure(lambda: inv_mod.invert_latents(model, lats, STEPS, empty, progress=False))
            (content_inv, _), (style_inv, _) = pair
            t_rec, m_rec, record = measure(lambda: rec_mod.record_style(model, style_inv, empty, empty, 1.0, LAYERS,
                                                                       START_STEP, END_STEP, progress=False))
            paper = patch_mod.patch_model(model, STYLE_SCALE, STYLE_SELF_SCALE, LAYERS, START_STEP, END_STEP)
            fast = patch_mod.patch_model(model, STYLE_SCALE, 0.0, LAYERS, START_STEP, END_STEP)
            smp.zstar_sample(fast, content_inv, record, empty, empty, 1.0, progress=False)  # warm-up
            tp, tf, mp, mf = [], [], 0, 0
            for _ in range(reps):
                t, m, _ = measure(lambda: smp.zstar_sample(paper, content_inv, style_inv, empty, empty, 1.0, progress=False))
                tp.append(t)
                mp = max(mp, m)
                t, m, _ = measure(lambda: smp.zstar_sample(fast, content_inv, record, empty, empty, 1.0, progress=False))
                tf.append(t)
                mf = max(mf, m)
        rows.append({"px": px, "inversion_pair_s": t_inv, "inversion_peak": m_inv, "record_s": t_rec,
                     "record_peak": m_rec, "record_mib": record.nbytes / 2**20, "paper_s": best(tp),
                     "paper_peak": mp if is_cuda else float("nan"), "fast_s": best(tf),
                     "fast_peak": mf if is_cuda else float("nan")})
        del pair, record, content_inv, style_inv
        sync(device)
    return rows
