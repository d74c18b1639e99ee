"""The command line: parse the options, start or reach the servers, run every content × style job.

Exit status: 0 all done, 1 some jobs failed, 2 nothing could run, 130 interrupted.
"""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from .errors import ZStarBatchError
from .preflight import connect
from .printer import Printer
from .process import LocalComfyUI
from .scheduler import Job, run_all, summary_table
from .workflow import DEFAULT_WORKFLOW, Settings, apply_settings, image_slots, load_workflow, parse_value

DEFAULT_SERVER = "http://127.0.0.1:8188"
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def list_images(folder: Path, what: str) -> list[Path]:
    folder = Path(folder).expanduser()
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise ZStarBatchError(f"--{what}: {folder} is neither an image nor a folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not found:
        raise ZStarBatchError(f"--{what}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    return found


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    try:
        size = (int(w), int(h or w))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected W or WxH, e.g. 512 or 768x512, got {text!r}") from None
    if min(size) < 8:
        raise argparse.ArgumentTypeError(f"{text}: at least 8 pixels")
    return size


def parse_args(argv=None, prog: str = "zstar_batch.py"):
    """`prog` names the runner as it was started (the script or `python -m zstar_batch`) in --help."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Z* style transfer for every content image × every style image, through ComfyUI's HTTP API.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  %(prog)s --contents photos --styles paintings --out results --comfyui ~/ComfyUI\n"
               "  %(prog)s --contents photos --styles paintings --out results --server http://127.0.0.1:8188\n"
               "  %(prog)s ... --server http://gpu0:8188 --server http://gpu1:8188   (spreads the jobs)")
    p.add_argument("comfyui_path", nargs="?", help="a ComfyUI folder (same as --comfyui)")
    p.add_argument("--contents", required=True, help="folder of content images (or one image)")
    p.add_argument("--styles", required=True, help="folder of style images (or one image)")
    p.add_argument("--out", required=True, help="folder for the results (created)")
    where = p.add_argument_group("where to run")
    where.add_argument("--server", action="append", default=[], metavar="URL",
                       help=f"a running ComfyUI (repeat for several; default {DEFAULT_SERVER} when no --comfyui)")
    where.add_argument("--comfyui", metavar="PATH", help="start ComfyUI from this folder for the run and stop it after")
    where.add_argument("--python", help="Python that runs ComfyUI with --comfyui (default: this one)")
    where.add_argument("--comfyui-args", default="", metavar="ARGS",
                       help="extra arguments for ComfyUI's main.py, written with '=': --comfyui-args='--cpu --lowvram'")
    where.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for a started ComfyUI")
    where.add_argument("--job-timeout", type=float, default=0.0, help="give up on a job after this many seconds (0: never)")
    wf = p.add_argument_group("workflow")
    wf.add_argument("--workflow", default=str(DEFAULT_WORKFLOW), help="API-format workflow (default: %(default)s)")
    wf.add_argument("--checkpoint", help="checkpoint file name as ComfyUI lists it (default: the workflow's)")
    wf.add_argument("--size", type=parse_size, metavar="WxH",
                    help="resize (center-crop) both images to W×H before encoding, e.g. 512 or 768x512 "
                         "(default: the workflow's, 512×512)")
    wf.add_argument("--steps", type=int, help="DDIM steps of the inversions (paper: 30)")
    wf.add_argument("--style-strength", type=float, help="λ (paper: 1.2); higher = stronger style")
    wf.add_argument("--style-self-strength", type=float, help="λ_style (paper: 1.5; 0 = off)")
    wf.add_argument("--layers", help="reweighted self-attention layers ('auto' = the paper's)")
    wf.add_argument("--start-step", type=int, help="first reweighted step (paper: 5)")
    wf.add_argument("--end-step", type=int, help="step where reweighting stops (default: the end)")
    wf.add_argument("--cfg", type=float, help="classifier-free guidance of the Z* sampler (paper preset: 1.0)")
    wf.add_argument("--content-anchor", type=float, help="pull toward the content's inversion (paper: 0.01)")
    wf.add_argument("--style-mode", choices=["replay", "alongside"],
                    help="replay (paper): the style branch replays its inversion; alongside: denoised with the content")
    wf.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="set any input: NODE is a node id, class or title, e.g. --set ControlNetApplyAdvanced.strength=0.5")
    p.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    args = p.parse_args(argv)
    if args.comfyui_path and args.comfyui:
        p.error("give the ComfyUI path once (positional or --comfyui)")
    args.comfyui = args.comfyui or args.comfyui_path
    if args.comfyui and args.server:
        p.error("use either --comfyui (start ComfyUI here) or --server (ComfyUI already running), not both")
    return args


def settings_from(args) -> Settings:
    zstar = {}
    for flag, name in (("style_strength", "style_strength"), ("style_self_strength", "style_self_strength"),
                       ("layers", "layers"), ("start_step", "start_step"), ("end_step", "end_step"),
                       ("cfg", "cfg"), ("content_anchor", "content_anchor"), ("style_mode", "style_mode")):
        if getattr(args, flag) is not None:
            zstar[name] = getattr(args, flag)
    sets = []
    for item in args.set:
        target, sep, value = item.partition("=")
        node, dot, name = target.rpartition(".")
        if not sep or not dot or not node or not name:
            raise ZStarBatchError(f"--set {item}: expected NODE.INPUT=VALUE")
        sets.append((node, name, parse_value(value)))
    return Settings(checkpoint=args.checkpoint, steps=args.steps, size=args.size, zstar=zstar, sets=sets)


def main(argv=None, prog: str = "zstar_batch.py") -> int:
    """Run the batch; returns the exit status (0 all done, 1 some jobs failed, 2 nothing could run)."""
    args = parse_args(argv, prog)
    say = Printer(quiet=args.quiet)
    local, rc = None, 2
    try:
        settings = settings_from(args)
        workflow = apply_settings(load_workflow(Path(args.workflow)), settings)
        image_slots(workflow)  # fail early on a workflow the runner cannot fill
        contents = list_images(Path(args.contents), "contents")
        styles = list_images(Path(args.styles), "styles")
        out_dir = Path(args.out).expanduser()
        urls = args.server
        if args.comfyui:
            local = LocalComfyUI(args.comfyui, python=args.python, extra_args=shlex.split(args.comfyui_args),
                                 start_timeout=args.start_timeout)
            say(f"Starting ComfyUI from {local.path} on {local.url} (log: {local.log_path})", force=True)
            local.start()
            urls = [local.url]
        elif not urls:
            urls = [DEFAULT_SERVER]
        clients = connect(urls, workflow, say)
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs = [Job(i + 1, c, s) for i, (c, s) in enumerate((c, s) for c in contents for s in styles)]
        say(f"{len(jobs)} job(s): {len(contents)} content × {len(styles)} style image(s) on "
            f"{', '.join(c.name for c in clients)}", force=True)
        t0 = time.monotonic()
        sched = run_all(clients, jobs, workflow, out_dir, say, timeout=args.job_timeout or None)
        say(f"\n{summary_table(sched)}\n\n{len(sched.done)} of {len(jobs)} done in {time.monotonic() - t0:.1f} s; "
            f"results in {out_dir}", force=True)
        rc = 0 if not sched.failed else 1
    except ZStarBatchError as e:
        say.error(f"error: {e}")
        if local is not None and local.proc is not None:
            say.error(f"ComfyUI's log: {local.log_path}")
        rc = 2
    except KeyboardInterrupt:
        say.error("interrupted")
        rc = 130
    finally:
        if local is not None:
            say(f"Stopping ComfyUI ({local.url})", force=True)
            local.stop()
            if local.temp_log and rc == 0:  # keep the log only when something went wrong
                local.log_path.unlink(missing_ok=True)
    return rc
