"""The few ComfyUI HTTP endpoints a batch run needs, over urllib (no packages to install)."""
from __future__ import annotations

import json
import mimetypes
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .errors import HTTPFailure, JobFailed, ServerDown, ZStarBatchError
from .history import check_history
from .websocket import WebSocket

# Uploads go into input/<this>/ on the server, apart from the user's own files.
UPLOAD_SUBFOLDER = "zstar_batch"


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

    def websocket(self, client_id: str, timeout: float = 10.0) -> WebSocket:
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
