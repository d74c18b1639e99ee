"""A fake ComfyUI on 127.0.0.1 that answers what the batch runner calls, so its real job loop
runs in the light tier.

Endpoints: GET /system_stats, GET /object_info, POST /upload/image, GET /ws (websocket: the
progress events of the client's prompts), POST /prompt, GET /history/<id>, GET /view. A job
"runs" instantly: /prompt stores a history entry with one saved image whose bytes name this
server and the job's two images, so a test can tell which server made which output.

It can fail on purpose: `fail_prompt` answers /prompt with 503 (a server that goes down: the
runner retires it), `fail_content` ends the prompts of that content image with an execution
error (a job that fails: the runner retries it elsewhere), `hide_zstar` leaves the Z* nodes out
of /object_info, `checkpoints` is what its checkpoint list offers.
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import socket
import struct
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's key suffix
WS_IDLE_S = 30.0  # a websocket with no traffic for this long is dropped


def ws_frame(text: str) -> bytes:
    """An unmasked server text frame."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes([0x81, n])
    elif n < 65536:
        head = bytes([0x81, 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x81, 127]) + struct.pack(">Q", n)
    return head + payload


def load_image_titles(prompt: dict) -> dict:
    """{Load Image title: its image value}: the example workflows title them 'Content image'/'Style image'."""
    return {n.get("_meta", {}).get("title"): n["inputs"].get("image") for n in prompt.values()
            if n["class_type"] == "LoadImage"}


class FakeComfyUI:
    def __init__(self, node_types, checkpoints=("model.safetensors",), fail_prompt=False, fail_content=None,
                 hide_zstar=False):
        self.node_types = sorted(node_types)
        self.checkpoints = list(checkpoints)
        self.fail_prompt, self.fail_content, self.hide_zstar = fail_prompt, fail_content, hide_zstar
        self.lock = threading.Lock()
        self.uploads: list[str] = []          # values returned for uploaded images
        self.prompts: list[tuple] = []        # (content value, style value) of every accepted prompt
        self.refused = 0                      # /prompt answered 503
        self.history: dict[str, dict] = {}
        self.files: dict[tuple, bytes] = {}   # (subfolder, filename) -> bytes
        self.sockets: dict[str, socket.socket] = {}  # websocket client id -> connection
        self.in_flight = self.peak_in_flight = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.name = self.url.split("://")[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            for conn in self.sockets.values():
                try:
                    conn.shutdown(socket.SHUT_RDWR)  # wakes the handler blocked in recv
                except OSError:
                    pass
        self.thread.join(timeout=5)

    # -- what the endpoints answer

    def object_info(self) -> dict:
        info = {t: {"input": {"required": {}}} for t in self.node_types
                if not (self.hide_zstar and t.startswith("ZStar"))}
        if "CheckpointLoaderSimple" in info:
            info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"] = [self.checkpoints, {}]
        return info

    def upload(self, content_type: str, body: bytes) -> dict:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in msg.iter_parts()}
        image = fields["image"]
        subfolder = fields["subfolder"].get_content().strip() if "subfolder" in fields else ""
        info = {"name": image.get_filename(), "subfolder": subfolder, "type": "input"}
        with self.lock:
            self.uploads.append(f"{subfolder}/{info['name']}" if subfolder else info["name"])
        return info

    def queue(self, body: dict) -> str:
        prompt, client_id = body["prompt"], body.get("client_id")
        images = load_image_titles(prompt)
        content, style = images.get("Content image"), images.get("Style image")
        prompt_id = uuid.uuid4().hex
        prefix = next(n["inputs"]["filename_prefix"] for n in prompt.values() if n["class_type"] == "SaveImage")
        subfolder, _, stem = prefix.rpartition("/")
        save_id = next(nid for nid, n in prompt.items() if n["class_type"] == "SaveImage")
        sampler = next((nid for nid, n in prompt.items() if n["class_type"] == "ZStarSampler"), None)
        if self.fail_content and content and content.endswith(self.fail_content):
            messages = [["execution_start", {"prompt_id": prompt_id}],
                        ["execution_error", {"prompt_id": prompt_id, "node_id": sampler, "node_type": "ZStarSampler",
                                             "exception_type": "RuntimeError", "exception_message": "on purpose\n"}]]
            entry = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": messages}}
        else:
            image = {"filename": f"{stem}_00001_.png", "subfolder": subfolder, "type": "output"}
            with self.lock:
                self.files[(subfolder, image["filename"])] = f"{self.name}|{content}|{style}".encode()
            messages = [["execution_start", {"prompt_id": prompt_id}], ["execution_success", {"prompt_id": prompt_id}]]
            entry = {"outputs": {save_id: {"images": [image]}},
                     "status": {"status_str": "success", "completed": True, "messages": messages}}
        with self.lock:
            self.prompts.append((content, style))
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self.history[prompt_id] = entry
            conn = self.sockets.get(client_id)
        if conn is not None and sampler is not None:
            events = [{"type": "executing", "data": {"node": sampler, "prompt_id": prompt_id}},
                      {"type": "progress", "data": {"value": 3, "max": 3, "node": sampler, "prompt_id": prompt_id}},
                      {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}]
            try:
                conn.sendall(b"".join(ws_frame(json.dumps(e)) for e in events))
            except OSError:
                pass
        return prompt_id

    def finished(self, prompt_id: str) -> dict:
        """/history/<id>: the first answer that carries the entry ends the job's time in flight."""
        with self.lock:
            entry = self.history.pop(prompt_id, None)
            if entry is None:
                return {}
            self.in_flight -= 1
            return {prompt_id: entry}

    # -- HTTP plumbing

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, data: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, obj, status: int = 200):
                self._send(status, json.dumps(obj).encode())

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
                    return self._websocket(query.get("clientId", ""))
                if url.path == "/system_stats":
                    return self._json({"system": {"comfyui_version": "fake"}, "devices": []})
                if url.path == "/object_info":
                    return self._json(fake.object_info())
                if url.path.startswith("/history/"):
                    return self._json(fake.finished(url.path.rsplit("/", 1)[1]))
                if url.path == "/view":
                    with fake.lock:
                        data = fake.files.get((query.get("subfolder", ""), query.get("filename")))
                    return self._send(200, data, "image/png") if data is not None else self._send(404, b"")
                self._send(404, b"")

            def do_POST(self):
                body = self._body()
                if self.path == "/upload/image":
                    return self._json(fake.upload(self.headers["Content-Type"], body))
                if self.path == "/prompt":
                    if fake.fail_prompt:
                        with fake.lock:
                            fake.refused += 1
                        return self._json({"error": "GPU fell off the bus"}, status=503)
                    return self._json({"prompt_id": fake.queue(json.loads(body)), "number": 0, "node_errors": {}})
                self._send(404, b"")

            def _websocket(self, client_id: str):
                key = self.headers.get("Sec-WebSocket-Key", "")
                accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
                conn = self.connection
                with fake.lock:
                    fake.sockets[client_id] = conn  # before the 101: the client queues right after it
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                conn.settimeout(WS_IDLE_S)
                try:
                    while conn.recv(4096):  # the client only ever sends its close frame
                        pass
                except OSError:
                    pass
                with fake.lock:
                    fake.sockets.pop(client_id, None)
                self.close_connection = True

        return Handler
