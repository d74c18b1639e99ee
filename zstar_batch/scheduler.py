"""The job loop: every server runs one job at a time, a failed job is retried on another server."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .client import UPLOAD_SUBFOLDER, ComfyClient
from .errors import HTTPFailure, JobFailed, ServerDown
from .history import output_images
from .printer import Printer
from .workflow import fill_job


@dataclass
class Job:
    """One content × style pair, and what became of it: the servers that failed it, where it ran, its files."""
    index: int
    content: Path
    style: Path
    tried: list = field(default_factory=list)     # [(server name, reason)]
    server: str | None = None
    outputs: list = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def stem(self) -> str:
        return f"{self.content.stem}__{self.style.stem}"


class Scheduler:
    """Hands jobs to servers: one in flight per server, a failed job goes to a server that has
    not tried it yet, a server that stops answering is retired."""

    def __init__(self, jobs: list[Job], servers: list[str]):
        self.pending = list(jobs)
        self.live = set(servers)
        self.running = 0
        self.done: list[Job] = []
        self.failed: list[Job] = []
        self.cond = threading.Condition()

    def take(self, server: str) -> Job | None:
        with self.cond:
            while True:
                if server not in self.live:
                    return None
                for i, job in enumerate(self.pending):
                    if server not in {s for s, _ in job.tried}:
                        self.running += 1
                        return self.pending.pop(i)
                if not self.pending and self.running == 0:
                    return None
                # Nothing this server may take now; a running job may still fail and come back.
                self.cond.wait(0.5)

    def finish(self, job: Job, server: str):
        with self.cond:
            self.running -= 1
            job.server = server
            self.done.append(job)
            self.cond.notify_all()

    def fail(self, job: Job, server: str, reason: str, retire: bool = False):
        with self.cond:
            self.running -= 1
            job.tried.append((server, reason))
            if retire:
                self.live.discard(server)
            self.pending.append(job)
            self._drop_hopeless()
            self.cond.notify_all()

    def retire(self, server: str):
        with self.cond:
            self.live.discard(server)
            self._drop_hopeless()
            self.cond.notify_all()

    def _drop_hopeless(self):
        """Fail pending jobs that every live server has already tried."""
        keep = []
        for job in self.pending:
            tried = {s for s, _ in job.tried}
            if self.live - tried:
                keep.append(job)
            else:
                job.error = "; ".join(f"{s}: {r}" for s, r in job.tried) or "no server left"
                self.failed.append(job)
        self.pending = keep


def run_job(client: ComfyClient, job: Job, total: int, workflow: dict, out_dir: Path, uploads: dict,
            say: Printer, timeout: float | None) -> list[Path]:
    tag = f"[{job.index}/{total} {client.name}] {job.content.name} × {job.style.name}"
    for path in (job.content, job.style):
        if path not in uploads:
            uploads[path] = client.upload_image(path)
    prompt = fill_job(workflow, uploads[job.content], uploads[job.style], f"{UPLOAD_SUBFOLDER}/{job.stem}")
    titles = {nid: n.get("_meta", {}).get("title") or n["class_type"] for nid, n in prompt.items()}
    state = {"node": None, "shown": 0.0}

    def on_event(kind, data):
        if kind == "executing" and data.get("node") and data["node"] != state["node"]:
            state["node"] = data["node"]
            say(f"{tag}: {titles.get(data['node'], data['node'])}")
        elif kind == "progress":
            value, maximum = data.get("value", 0), data.get("max", 0)
            if time.monotonic() - state["shown"] >= 2.0 or value == maximum:
                state["shown"] = time.monotonic()
                say(f"{tag}: {titles.get(str(data.get('node')), '')} {value}/{maximum}")

    say(f"{tag}: queued")
    t0 = time.monotonic()
    entry = client.run(prompt, on_event=on_event, timeout=timeout)
    images = output_images(entry)
    if not images:
        raise JobFailed(f"{client.name}: the workflow finished but saved no image")
    paths = []
    for i, img in enumerate(images):
        data = client.view(img["filename"], img.get("subfolder", ""), img.get("type", "output"))
        suffix = Path(img["filename"]).suffix or ".png"
        dest = out_dir / (f"{job.stem}{suffix}" if len(images) == 1 else f"{job.stem}_{i:02d}{suffix}")
        dest.write_bytes(data)
        paths.append(dest)
    job.seconds = time.monotonic() - t0
    say(f"{tag}: done in {job.seconds:.1f} s → {', '.join(str(p) for p in paths)}")
    return paths


def run_all(clients: list[ComfyClient], jobs: list[Job], workflow: dict, out_dir: Path, say: Printer,
            timeout: float | None = None) -> Scheduler:
    sched = Scheduler(jobs, [c.name for c in clients])

    def worker(client: ComfyClient):
        uploads: dict = {}
        while True:
            job = sched.take(client.name)
            if job is None:
                return
            try:
                job.outputs = run_job(client, job, len(jobs), workflow, out_dir, uploads, say, timeout)
                sched.finish(job, client.name)
            except ServerDown as e:
                say.error(f"[{job.index}/{len(jobs)} {client.name}] server failed: {e}; "
                          "retiring it and retrying the job elsewhere")
                sched.fail(job, client.name, str(e), retire=True)
                return
            except (JobFailed, HTTPFailure, OSError) as e:
                say.error(f"[{job.index}/{len(jobs)} {client.name}] failed: {e}")
                sched.fail(job, client.name, str(e))
            except Exception as e:  # keep the other workers going; report it with the job
                say.error(f"[{job.index}/{len(jobs)} {client.name}] failed: {type(e).__name__}: {e}")
                sched.fail(job, client.name, f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(c,), daemon=True, name=f"zstar-{c.name}") for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sched


def summary_table(sched: Scheduler) -> str:
    rows = [("#", "content", "style", "server", "time", "output / error")]
    for job in sorted(sched.done + sched.failed, key=lambda j: j.index):
        retried = f" (after {', '.join(s for s, _ in job.tried)} failed)" if job.tried and job.error is None else ""
        if job.error is None:
            rows.append((str(job.index), job.content.name, job.style.name, (job.server or "") + retried,
                         f"{job.seconds:.1f}s", ", ".join(str(p) for p in job.outputs)))
        else:
            rows.append((str(job.index), job.content.name, job.style.name, "-", "-", "FAILED: " + job.error))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
    lines.insert(1, "-" * min(120, len(lines[0])))
    return "\n".join(lines)
