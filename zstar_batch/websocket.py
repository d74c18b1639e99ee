"""A minimal websocket client: ComfyUI reports progress over /ws, and the runner needs no packages."""
from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import time
import urllib.parse


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
