"""A ComfyUI started for one run: its own free port, a log file, and stopped even if the runner dies."""
from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import ComfyClient
from .errors import ZStarBatchError


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
