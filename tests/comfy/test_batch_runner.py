"""scripts/zstar_batch.py as a user runs it (a subprocess), against real ComfyUI servers.

- 3 contents × 1 style over three addresses: two of the test server (one job in flight on each)
  and a proxy whose /prompt answers 503: that server is retired and its job reruns elsewhere;
- clear errors: server down, Z* nodes missing (a proxy hiding them), checkpoint not found;
- given a ComfyUI path, it starts its own ComfyUI for the run and stops it after.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import COMFYUI_PATH, REPO, SKIP_REASON

if not COMFYUI_PATH:
    pytest.skip(SKIP_REASON, allow_module_level=True)

import zstar_server  # noqa: E402
from zstar_server import CHECKPOINT, SIZE, STEPS, make_test_image  # noqa: E402

SCRIPT = REPO / "scripts" / "zstar_batch.py"
SMALL = ["--steps", str(STEPS), "--start-step", "1", "--size", str(SIZE)]


def run_script(*args, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))
    print(f"$ zstar_batch.py {' '.join(map(str, args))}\n{proc.stdout}{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    for i in range(3):
        make_test_image(root / "contents" / f"photo{i}.png", "content", seed=i + 3)
    make_test_image(root / "styles" / "stripes.png", "style", seed=1)
    return root


def summary_rows(stdout: str) -> dict[str, str]:
    """{output file name: server} from the summary table."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"\s*\d+\s+(\S+)\s+(\S+)\s+(\S+).*?\s(\S+\.png)\s*$", line)
        if m:
            rows[Path(m.group(4)).name] = m.group(3)
    return rows


def check_outputs(out: Path, names: list[str]):
    from PIL import Image

    assert sorted(p.name for p in out.glob("*.png")) == sorted(names)
    for name in names:
        with Image.open(out / name) as img:
            assert img.size == (SIZE, SIZE)


class Proxy:
    """An HTTP proxy in front of the test server that can fail /prompt or hide the Z* nodes."""

    def __init__(self, upstream: str, fail_prompt=False, hide_zstar=False):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if method == "POST" and self.path.startswith("/prompt") and proxy.fail_prompt:
                    proxy.failed += 1
                    return self._send(503, b'{"error": "GPU fell off the bus"}')
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type",)}
                req = urllib.request.Request(upstream + self.path, data=body, method=method, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=120) as resp:
                        status, data = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                if proxy.hide_zstar and self.path.startswith("/object_info"):
                    info = json.loads(data)
                    data = json.dumps({k: v for k, v in info.items() if not k.startswith("ZStar")}).encode()
                self._send(status, data)

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.fail_prompt, self.hide_zstar, self.failed = fail_prompt, hide_zstar, 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_jobs_spread_over_servers_and_a_failing_server_is_retired(comfy_server, folders, tmp_path):
    """3 contents × 1 style on three addresses: a proxy that answers /prompt with 503 (a server
    that fails) and two addresses of the one test server (standing in for two GPUs). Each
    address takes one job at once; the failed job is retried on a real one, and the summary
    says where every output came from."""
    port = comfy_server.url.rsplit(":", 1)[1]
    real = {f"127.0.0.1:{port}", f"localhost:{port}"}
    out = tmp_path / "out"
    with Proxy(comfy_server.url, fail_prompt=True) as flaky:
        proc = run_script("--contents", folders / "contents", "--styles", folders / "styles", "--out", out,
                          "--server", flaky.url, "--server", comfy_server.url, "--server", f"http://localhost:{port}",
                          "--checkpoint", CHECKPOINT, *SMALL)
        assert flaky.failed == 1, "the failing server should get exactly one job, then be retired"
    assert proc.returncode == 0, proc.stderr
    names = [f"photo{i}__stripes.png" for i in range(3)]
    check_outputs(out, names)
    rows = summary_rows(proc.stdout)
    assert set(rows) == set(names), proc.stdout
    assert set(rows.values()) == real, f"both real addresses used, the failing one not: {rows}"
    assert f"after {flaky.url.split('://')[1]} failed" in proc.stdout
    assert "HTTP 503" in proc.stderr and "retiring it" in proc.stderr
    assert "3 of 3 done" in proc.stdout
    assert re.search(r"Z\* Sampler \d+/\d+", proc.stdout), "no step progress shown"


def test_clear_errors_server_down_node_missing_checkpoint_missing(comfy_server, folders, tmp_path):
    common = ["--contents", folders / "contents", "--styles", folders / "styles", "--out", tmp_path / "out", *SMALL]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = run_script(*common, "--server", dead, "--checkpoint", CHECKPOINT)
    assert proc.returncode == 2
    assert f"cannot reach ComfyUI at {dead}" in proc.stderr and "--comfyui" in proc.stderr

    with Proxy(comfy_server.url, hide_zstar=True) as no_nodes:
        proc = run_script(*common, "--server", no_nodes.url, "--checkpoint", CHECKPOINT)
    assert proc.returncode == 2
    assert "has no node type(s) ZStarAttentionPatch, ZStarDDIMInversion, ZStarSampler" in proc.stderr
    assert "custom_nodes" in proc.stderr

    proc = run_script(*common, "--server", comfy_server.url, "--checkpoint", "sd15-typo.safetensors")
    assert proc.returncode == 2
    assert "ckpt_name 'sd15-typo.safetensors' is not in its models/checkpoints folder" in proc.stderr
    assert CHECKPOINT in proc.stderr  # lists what the server has
    assert not list((tmp_path / "out").glob("*.png"))


def test_given_a_comfyui_path_it_starts_and_stops_its_own_server(folders, tmp_path):
    """The default for a user with ComfyUI but no server running: `zstar_batch.py ~/ComfyUI ...`."""
    base = zstar_server.prepare_base(tmp_path / "base")
    out = tmp_path / "out"
    args = " ".join(zstar_server.comfyui_args(base))
    proc = run_script(COMFYUI_PATH, f"--comfyui-args={args}", "--python", sys.executable,
                      "--contents", folders / "contents" / "photo0.png", "--styles", folders / "styles", "--out", out,
                      *SMALL)
    assert proc.returncode == 0, proc.stderr
    check_outputs(out, ["photo0__stripes.png"])
    started = re.search(r"Starting ComfyUI from .* on (http://127\.0\.0\.1:(\d+))", proc.stdout)
    assert started and f"Stopping ComfyUI ({started.group(1)})" in proc.stdout
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(started.group(2)))) != 0, "the runner left its ComfyUI running"
    # the summary names the server it started
    assert set(summary_rows(proc.stdout).values()) == {f"127.0.0.1:{started.group(2)}"}
    assert os.path.isdir(base / "output" / "zstar_batch")
