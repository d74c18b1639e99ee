#!/usr/bin/env python3
"""Z* batch runner: every content image × every style image through ComfyUI's HTTP API.

    python scripts/zstar_batch.py --contents photos/ --styles paintings/ --out results/ \\
        --comfyui ~/ComfyUI                    # starts ComfyUI for the run, stops it after
    python scripts/zstar_batch.py ... --server http://127.0.0.1:8188          # a running ComfyUI
    python scripts/zstar_batch.py ... --server http://gpu0:8188 --server http://gpu1:8188

With a ComfyUI path (and no --server) it starts `python main.py --listen 127.0.0.1 --port
<free port>` from that folder with the Python running this script (--python to choose another)
and stops it at the end. Several --server addresses: one job in flight per server, each server
takes the next job as soon as it is free; a job whose server fails is retried on another server.
Before anything is queued every server is checked: reachable, has the Z* nodes (and every other
node the workflow uses), has the checkpoint (and any other model the workflow names).

It uploads the images (POST /upload/image, into input/zstar_batch/), fills the API workflow
(default: example_workflows/api/zstar_basic.json of this pack), queues it (POST /prompt), shows
progress from the websocket, downloads what Save Image wrote (GET /view) into --out as
<content>__<style>.png and prints a summary of which output came from which server.

Standard library only: it runs with any Python 3.9+, not only ComfyUI's.
"""
from __future__ import annotations

import argparse
import base64
import copy
import json
import mimetypes
import os
import shlex
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = REPO / "example_workflows" / "api" / "zstar_basic.json"
DEFAULT_SERVER = "http://127.0.0.1:8188"
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
UPLOAD_SUBFOLDER = "zstar_batch"
# Inputs whose value must be one of the server's files, and the folder ComfyUI lists them from.
MODEL_INPUTS = {"ckpt_name": "checkpoints", "control_net_name": "controlnet", "vae_name": "vae",
                "lora_name": "loras", "unet_name": "diffusion_models", "clip_name": "text_encoders"}
# Frontend-only node types that may appear in UI workflows but never in API prompts.
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


class ZStarBatchError(Exception):
    """A problem the user can fix (printed without a traceback)."""


class ServerDown(ZStarBatchError):
    """The server did not answer (refused, timed out, connection dropped) or answered 5xx."""


class JobFailed(ZStarBatchError):
    """The server answered but the job failed (rejected prompt, execution error)."""


# --------------------------------------------------------------------------- HTTP client


def _short(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


class ComfyClient:
    """The few ComfyUI HTTP endpoints a batch run needs."""

    def __init__(self, url: str, timeout: float = 60.0):
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        self.url = url
        self.name = _short(url)
        self.timeout = timeout

    # -- plumbing
    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            if e.code >= 500:
                raise ServerDown(f"{self.name}: HTTP {e.code} on {method} {path}: {text[:300]}") from None
            raise HTTPFailure(e.code, text, f"{self.name}: HTTP {e.code} on {method} {path}: {text[:500]}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServerDown(f"cannot reach ComfyUI at {self.url} ({reason})") from None

    def get_json(self, path: str, timeout: float | None = None):
        return json.loads(self._request("GET", path, timeout=timeout))

    def post_json(self, path: str, obj) -> dict:
        raw = self._request("POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"})
        return json.loads(raw) if raw.strip() else {}

    # -- endpoints
    def ping(self, timeout: float = 5.0) -> dict:
        return self.get_json("/system_stats", timeout=timeout)

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def models(self, folder: str) -> list[str] | None:
        try:
            return self.get_json(f"/models/{urllib.parse.quote(folder)}")
        except HTTPFailure:
            return None  # unknown folder or an older ComfyUI

    def upload_image(self, path: Path, subfolder: str = UPLOAD_SUBFOLDER) -> str:
        """Upload into the server's input folder; returns the value for a Load Image node.

        Without 'overwrite' ComfyUI keeps same-named different files apart (renames) and
        reuses identical ones (hash check), so repeated runs do not pile up copies."""
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\n{subfolder}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        raw = self._request("POST", "/upload/image", b"".join(parts),
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        info = json.loads(raw)
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else info["name"]

    def queue_prompt(self, prompt: dict, client_id: str) -> str:
        try:
            return self.post_json("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
        except HTTPFailure as e:
            raise JobFailed(f"{self.name} rejected the workflow: {describe_prompt_error(e.body)}") from None

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self._request("GET", f"/view?{query}")

    def websocket(self, client_id: str, timeout: float = 10.0) -> "WebSocket":
        parts = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return WebSocket(f"{scheme}://{parts.netloc}{parts.path}/ws?clientId={client_id}", timeout=timeout)

    def run(self, prompt: dict, on_event=None, poll: float = 1.0, timeout: float | None = None) -> dict:
        """Queue `prompt`, wait for it, return its history entry (outputs + status messages).

        Completion is read from /history (authoritative); the websocket, when it connects,
        only feeds on_event(type, data) for progress."""
        client_id = uuid.uuid4().hex
        ws = None
        if on_event is not None:
            try:
                ws = self.websocket(client_id)
            except (OSError, ZStarBatchError):
                ws = None  # progress is optional; completion comes from /history
        try:
            prompt_id = self.queue_prompt(prompt, client_id)
            start, last_poll = time.monotonic(), 0.0
            while True:
                if ws is not None:
                    try:
                        for msg in ws.messages(wait=poll):
                            data = msg.get("data") or {}
                            if data.get("prompt_id") in (None, prompt_id):
                                on_event(msg.get("type"), data)
                    except OSError:
                        ws = None
                else:
                    time.sleep(poll)
                if time.monotonic() - last_poll >= poll:
                    last_poll = time.monotonic()
                    entry = self.history(prompt_id)
                    if entry:  # ComfyUI writes the history entry when the prompt has finished
                        return check_history(self.name, entry)
                if timeout and time.monotonic() - start > timeout:
                    raise JobFailed(f"{self.name}: no result after {timeout:.0f} s")
        finally:
            if ws is not None:
                ws.close()


class HTTPFailure(ZStarBatchError):
    def __init__(self, code: int, body: str, message: str):
        super().__init__(message)
        self.code, self.body = code, body


def describe_prompt_error(body: str) -> str:
    """Turn /prompt's 400 answer (error + node_errors) into one readable line per problem."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500]
    lines = []
    err = data.get("error") or {}
    if isinstance(err, dict) and err.get("message"):
        lines.append(err["message"] + (f": {err['details']}" if err.get("details") else ""))
    for node_id, info in (data.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            lines.append(f"node {node_id} ({info.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "; ".join(lines) or body[:500]


def status_messages(entry: dict) -> list:
    return [(m[0], m[1]) for m in entry.get("status", {}).get("messages", [])]


def check_history(name: str, entry: dict) -> dict:
    for event, data in status_messages(entry):
        if event == "execution_error":
            raise JobFailed(f"{name}: node {data.get('node_id')} ({data.get('node_type')}) failed: "
                            f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}")
        if event == "execution_interrupted":
            raise JobFailed(f"{name}: the job was interrupted on the server")
    if entry.get("status", {}).get("status_str") == "error":
        raise JobFailed(f"{name}: the job ended with an error")
    return entry


def output_images(entry: dict) -> list[dict]:
    """Every saved image (type 'output') in a history entry, in node order."""
    images = []
    for node_id in sorted(entry.get("outputs", {}), key=lambda k: (len(k), k)):
        for img in entry["outputs"][node_id].get("images", []):
            if img.get("type", "output") == "output":
                images.append(img)
    return images


# --------------------------------------------------------------------------- websocket


class WebSocket:
    """A minimal RFC 6455 client (text frames, ping/pong, close) over the standard library."""

    def __init__(self, url: str, timeout: float = 10.0, headers: dict | None = None):
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        self.sock, self.buf, self.closed = sock, b"", False
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"websocket handshake with {url} failed: connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 101 " not in status + " ":
            sock.close()
            raise OSError(f"websocket handshake with {url} failed: {status}")

    def send_text(self, text: str):
        self._send(0x1, text.encode())

    def _send(self, opcode: int, payload: bytes):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
        self.sock.sendall(head + mask + masked)

    def _frame(self):
        """One complete frame from the buffer, or None."""
        b = self.buf
        if len(b) < 2:
            return None
        opcode, length, pos = b[0] & 0x0F, b[1] & 0x7F, 2
        fin = bool(b[0] & 0x80)
        if length == 126:
            if len(b) < 4:
                return None
            length, pos = struct.unpack(">H", b[2:4])[0], 4
        elif length == 127:
            if len(b) < 10:
                return None
            length, pos = struct.unpack(">Q", b[2:10])[0], 10
        if b[1] & 0x80:  # servers do not mask, but be lenient
            mask, pos = b[pos:pos + 4], pos + 4
        else:
            mask = None
        if len(b) < pos + length:
            return None
        payload = b[pos:pos + length]
        if mask:
            payload = _mask_fast(payload, mask)
        self.buf = b[pos + length:]
        return fin, opcode, payload

    def recv(self, wait: float | None = None) -> str | bytes | None:
        """The next message (str for text, bytes for binary), or None if none came within `wait` s."""
        deadline = None if wait is None else time.monotonic() + wait
        fragments, first_opcode = [], None
        while True:
            frame = self._frame()
            if frame is None:
                if fragments:  # the rest of a fragmented message is on its way
                    timeout = 30.0
                else:
                    timeout = None if deadline is None else deadline - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        return None
                self.sock.settimeout(timeout)
                try:
                    chunk = self.sock.recv(1 << 20)
                except (socket.timeout, TimeoutError):
                    if fragments:
                        raise OSError("websocket stalled in the middle of a message") from None
                    return None
                if not chunk:
                    self.closed = True
                    raise OSError("websocket closed by the server")
                self.buf += chunk
                continue
            fin, opcode, payload = frame
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                self.closed = True
                raise OSError("websocket closed by the server")
            if opcode != 0x0:
                first_opcode = opcode
            fragments.append(payload)
            if fin:
                data = b"".join(fragments)
                return data.decode("utf-8", "replace") if first_opcode == 0x1 else data

    def messages(self, wait: float):
        """JSON text messages that arrive within `wait` seconds (binary previews are skipped)."""
        deadline = time.monotonic() + wait
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return
            if isinstance(msg, str):
                try:
                    yield json.loads(msg)
                except ValueError:
                    pass

    def close(self):
        try:
            if not self.closed:
                self._send(0x8, b"")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


# --------------------------------------------------------------------------- local ComfyUI


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent():
    """Linux: the started ComfyUI gets SIGTERM if this process dies without stopping it."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(proc: subprocess.Popen, timeout: float = 20.0):
    """Terminate, then kill if it has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class LocalComfyUI:
    """`python main.py --listen 127.0.0.1 --port <free>` from a ComfyUI folder, for one run."""

    def __init__(self, comfy_path, python: str | None = None, extra_args=(), port: int | None = None,
                 log_path: Path | None = None, start_timeout: float = 600.0, env: dict | None = None,
                 cwd: Path | None = None):
        self.path = Path(comfy_path).expanduser().resolve()
        if not (self.path / "main.py").is_file():
            raise ZStarBatchError(f"{self.path} is not a ComfyUI folder (no main.py); pass the folder that holds main.py")
        self.python = python or sys.executable
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.env = env
        self.cwd = cwd
        self.temp_log = log_path is None
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="comfyui-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [self.python, str(self.path / "main.py"), "--listen", "127.0.0.1", "--port", str(self.port),
                *self.extra_args]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> "LocalComfyUI":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=str(self.cwd or self.path), env=self.env,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        log.close()
        client = ComfyClient(self.url)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ZStarBatchError(f"ComfyUI exited with code {self.proc.returncode} while starting "
                                      f"(command: {shlex.join(self.command)}); last lines of {self.log_path}:\n"
                                      f"{self.log_tail()}")
            try:
                client.ping(timeout=2.0)
                return self
            except ZStarBatchError:
                time.sleep(0.5)
        self.stop()
        raise ZStarBatchError(f"ComfyUI did not answer on {self.url} within {self.start_timeout:.0f} s; "
                              f"last lines of {self.log_path}:\n{self.log_tail()}")

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- workflows


def moved_example(path: Path) -> Path:
    """The pack's example workflows moved from workflows/ to example_workflows/ (the folder name
    ComfyUI expects); a path into the old folder that no longer exists is read from the new one."""
    path = Path(path)
    parts = path.parts
    if not path.exists() and "workflows" in parts:
        i = len(parts) - 1 - parts[::-1].index("workflows")
        candidate = REPO / "example_workflows" / Path(*parts[i + 1:]) if i + 1 < len(parts) else None
        if candidate is not None and candidate.is_file():
            return candidate
    return path


def load_workflow(path: Path) -> dict:
    """An API-format workflow ({node id: {class_type, inputs}}), as ComfyUI's 'Export (API)' writes."""
    path = moved_example(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ZStarBatchError(f"cannot read workflow {path}: {e}") from None
    if "nodes" in data and "links" in data:
        raise ZStarBatchError(f"{path} is a UI workflow; use its API twin (example_workflows/api/) or "
                              "ComfyUI's Workflow → Export (API)")
    if not data or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise ZStarBatchError(f"{path} is not an API-format workflow")
    return data


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def upstream(prompt: dict, node_id: str, input_name: str | None = None) -> set[str]:
    """Node ids that feed node_id (through input_name only, if given), transitively."""
    seen, todo = set(), []
    inputs = prompt[node_id]["inputs"]
    for name, value in inputs.items():
        if (input_name is None or name == input_name) and is_link(value):
            todo.append(value[0])
    while todo:
        nid = todo.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.add(nid)
        todo.extend(v[0] for v in prompt[nid]["inputs"].values() if is_link(v))
    return seen


def zstar_samplers(prompt: dict) -> list[str]:
    """Ids of the Z* nodes that take a content and a style (the Z* Sampler, the Style Map, …)."""
    return sorted((nid for nid, n in prompt.items()
                   if n["class_type"].startswith("ZStar") and is_link(n["inputs"].get("content"))
                   and is_link(n["inputs"].get("style"))), key=lambda k: (len(k), k))


def image_slots(prompt: dict) -> tuple[str, str]:
    """(content Load Image id, style Load Image id): the Load Image nodes upstream of the Z*
    sampler's content and style inputs."""
    samplers = zstar_samplers(prompt)
    if len(samplers) != 1:
        raise ZStarBatchError(f"the workflow needs exactly one Z* sampler (a Z* node with content and style "
                              f"inputs), it has {len(samplers)}")
    sid = samplers[0]
    found = {}
    for role in ("content", "style"):
        loads = sorted(n for n in upstream(prompt, sid, role) if prompt[n]["class_type"] == "LoadImage")
        if role == "style":
            loads = [n for n in loads if n != found["content"]]
        if len(loads) != 1:
            raise ZStarBatchError(f"the workflow needs one Load Image feeding the sampler's {role} input, it has {len(loads)}")
        found[role] = loads[0]
    return found["content"], found["style"]


def parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class Settings:
    """What the command line changes in the workflow (None = keep the workflow's value)."""
    checkpoint: str | None = None
    steps: int | None = None
    size: tuple[int, int] | None = None
    zstar: dict = field(default_factory=dict)  # input name -> value, on every ZStar* node that has it
    sets: list = field(default_factory=list)   # [(node id or class_type, input, value)]


def apply_settings(prompt: dict, s: Settings) -> dict:
    prompt = copy.deepcopy(prompt)
    zstar_values = dict(s.zstar)
    if s.steps is not None:
        zstar_values["steps"] = s.steps
        # The paper preset reweights to the end (end_step = steps); keep "to the end" when the
        # step count changes, and keep start_step inside the window.
        for node in prompt.values():
            ins = node["inputs"]
            if node["class_type"].startswith("ZStar") and "end_step" in ins and "end_step" not in s.zstar:
                if not is_link(ins["end_step"]):
                    zstar_values.setdefault("end_step", s.steps)
            if node["class_type"].startswith("ZStar") and "start_step" in ins and "start_step" not in s.zstar:
                if not is_link(ins["start_step"]) and ins["start_step"] >= zstar_values.get("end_step", s.steps):
                    zstar_values["start_step"] = max(0, zstar_values.get("end_step", s.steps) - 1)
    for node in prompt.values():
        ins = node["inputs"]
        if node["class_type"].startswith("ZStar"):
            for name, value in zstar_values.items():
                if name in ins and not is_link(ins[name]):
                    ins[name] = value
        if s.checkpoint is not None and "ckpt_name" in ins and not is_link(ins["ckpt_name"]):
            ins["ckpt_name"] = s.checkpoint
        if s.size is not None and node["class_type"] == "ImageScale":
            ins["width"], ins["height"] = s.size
    for target, name, value in s.sets:
        hits = [n for nid, n in prompt.items() if nid == target or n["class_type"] == target
                or n.get("_meta", {}).get("title") == target]
        if not hits:
            raise ZStarBatchError(f"--set {target}.{name}: no node with that id, class or title in the workflow")
        for n in hits:
            n["inputs"][name] = value
    return prompt


def fill_job(prompt: dict, content_value: str, style_value: str, prefix: str) -> dict:
    prompt = copy.deepcopy(prompt)
    content_id, style_id = image_slots(prompt)
    prompt[content_id]["inputs"]["image"] = content_value
    prompt[style_id]["inputs"]["image"] = style_value
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = prefix
    return prompt


def combo_options(spec) -> list | None:
    """The allowed values of an /object_info input spec, if it is a combo (old or V3 style)."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1].get("options")
    return None


def preflight(client: ComfyClient, prompt: dict) -> list[str]:
    """Problems that would make every job fail on this server: missing nodes or models."""
    info = client.object_info()
    problems = []
    types = sorted({n["class_type"] for n in prompt.values()})
    missing = [t for t in types if t not in info]
    if missing:
        zstar = [t for t in missing if t.startswith("ZStar")]
        hint = (" — the Z* nodes are not loaded: clone comfyui-zstar into ComfyUI/custom_nodes, restart ComfyUI "
                "and look for 'IMPORT FAILED' in its log" if zstar else " — install the custom nodes that provide them")
        problems.append(f"{client.name} has no node type(s) {', '.join(missing)}{hint}")
    for nid, node in prompt.items():
        spec_all = info.get(node["class_type"], {}).get("input", {})
        specs = {**spec_all.get("required", {}), **spec_all.get("optional", {})}
        for name, folder in MODEL_INPUTS.items():
            value = node["inputs"].get(name)
            if value is None or is_link(value) or name not in specs:
                continue
            options = combo_options(specs[name])
            if options is not None and value not in options:
                have = ", ".join(options[:12]) + (" …" if len(options) > 12 else "") if options else "none"
                flag = " (choose one with --checkpoint)" if name == "ckpt_name" else " (change it with --set)"
                problems.append(f"{client.name}: {name} '{value}' is not in its models/{folder} folder{flag}; "
                                f"it has: {have}")
    return problems


# --------------------------------------------------------------------------- scheduling


@dataclass
class Job:
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


class Printer:
    """Thread-safe lines: progress on stdout (silenced by --quiet), problems on stderr."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.lock = threading.Lock()

    def __call__(self, text: str, force: bool = False):
        if self.quiet and not force:
            return
        with self.lock:
            print(text, flush=True)

    def error(self, text: str):
        with self.lock:
            print(text, file=sys.stderr, flush=True)


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


# --------------------------------------------------------------------------- command line


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


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="zstar_batch.py",
        description="Z* style transfer for every content image × every style image, through ComfyUI's HTTP API.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  zstar_batch.py --contents photos --styles paintings --out results --comfyui ~/ComfyUI\n"
               "  zstar_batch.py --contents photos --styles paintings --out results --server http://127.0.0.1:8188\n"
               "  zstar_batch.py ... --server http://gpu0:8188 --server http://gpu1:8188   (spreads the jobs)")
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


def connect(urls: list[str], workflow: dict, say: Printer) -> list[ComfyClient]:
    """Clients for the servers that answer and can run the workflow; errors if none can."""
    clients, down, problems = [], [], []
    for url in dict.fromkeys(urls):
        client = ComfyClient(url)
        try:
            client.ping()
            found = preflight(client, workflow)
        except ServerDown as e:
            down.append(str(e))
            continue
        if found:
            problems.extend(found)
        else:
            clients.append(client)
    for text in down + problems:
        say.error(("warning: " if clients else "error: ") + text)
    if not clients:
        if down and not problems:
            raise ZStarBatchError("no ComfyUI server answered. Start ComfyUI (python main.py) or let this script "
                                  "start it: --comfyui /path/to/ComfyUI")
        raise ZStarBatchError("no server can run the workflow (see the errors above)")
    return clients


def main(argv=None) -> int:
    args = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
