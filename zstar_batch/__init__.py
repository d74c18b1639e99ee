"""Z* batch runner: every content image × every style image through ComfyUI's HTTP API.

From the pack's folder (custom_nodes/comfyui-zstar):

    python -m zstar_batch --contents photos/ --styles paintings/ --out results/ \\
        --comfyui ~/ComfyUI                    # starts ComfyUI for the run, stops it after
    python -m zstar_batch ... --server http://127.0.0.1:8188          # a running ComfyUI
    python -m zstar_batch ... --server http://gpu0:8188 --server http://gpu1:8188

`python scripts/zstar_batch.py ...` (from anywhere) runs the same command line.

With a ComfyUI path (and no --server) it starts `python main.py --listen 127.0.0.1 --port
<free port>` from that folder with the Python running the runner (--python to choose another)
and stops it at the end. Several --server addresses: one job in flight per server, each server
takes the next job as soon as it is free; a job whose server fails is retried on another server.
Before anything is queued every server is checked: reachable, has the Z* nodes (and every other
node the workflow uses), has the checkpoint (and any other model the workflow names).

It uploads the images (POST /upload/image, into input/zstar_batch/), fills the API workflow
(default: example_workflows/api/zstar_basic.json of this pack), queues it (POST /prompt), shows
progress from the websocket, downloads what Save Image wrote (GET /view) into --out as
<content>__<style>.png and prints a summary of which output came from which server.

Standard library only, and nothing from ComfyUI or the rest of the pack: it runs with any
Python 3.9+, not only ComfyUI's. Modules, one job each:

    errors      the exceptions (which failures retry a job elsewhere)
    websocket   a minimal websocket client (progress events)
    client      ComfyClient: the HTTP endpoints a run needs
    history     reading a finished prompt's /history entry
    process     LocalComfyUI: a ComfyUI started for the run
    workflow    loading, checking, setting and filling API workflows
    preflight   per-server checks before anything is queued
    printer     thread-safe output lines
    scheduler   the job loop over the servers, with retries
    cli         the command line (`main`)
"""
from .cli import DEFAULT_SERVER, IMAGE_EXTENSIONS, list_images, main, parse_args, parse_size, settings_from
from .client import UPLOAD_SUBFOLDER, ComfyClient, describe_prompt_error
from .errors import HTTPFailure, JobFailed, ServerDown, ZStarBatchError
from .history import check_history, output_images, status_messages
from .preflight import MODEL_INPUTS, combo_options, connect, preflight
from .printer import Printer
from .process import LocalComfyUI, _die_with_parent, free_port, stop_process
from .scheduler import Job, Scheduler, run_all, run_job, summary_table
from .websocket import WebSocket
from .workflow import (DEFAULT_WORKFLOW, FRONTEND_ONLY, REPO, Settings, apply_settings, fill_job, image_slots,
                       is_link, load_workflow, moved_example, parse_value, upstream, zstar_samplers)

__all__ = [
    "DEFAULT_SERVER", "IMAGE_EXTENSIONS", "list_images", "main", "parse_args", "parse_size", "settings_from",
    "UPLOAD_SUBFOLDER", "ComfyClient", "describe_prompt_error",
    "HTTPFailure", "JobFailed", "ServerDown", "ZStarBatchError",
    "check_history", "output_images", "status_messages",
    "MODEL_INPUTS", "combo_options", "connect", "preflight",
    "Printer",
    "LocalComfyUI", "_die_with_parent", "free_port", "stop_process",
    "Job", "Scheduler", "run_all", "run_job", "summary_table",
    "WebSocket",
    "DEFAULT_WORKFLOW", "FRONTEND_ONLY", "REPO", "Settings", "apply_settings", "fill_job", "image_slots",
    "is_link", "load_workflow", "moved_example", "parse_value", "upstream", "zstar_samplers",
]
