"""The batch runner (zstar_batch/) without a server: workflow filling, checks, websocket frames.

Its job loop against fake servers is in test_zstar_batch_runs.py, against a real ComfyUI in
tests/comfy/test_batch_runner.py.
"""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

import zstar_batch as zb

REPO = Path(__file__).resolve().parents[2]
BASIC = REPO / "example_workflows" / "api" / "zstar_basic.json"


def test_workflow_slots_and_settings():
    prompt = zb.load_workflow(BASIC)
    content, style = zb.image_slots(prompt)
    assert prompt[content]["_meta"]["title"] == "Content image"
    assert prompt[style]["_meta"]["title"] == "Style image"

    s = zb.Settings(checkpoint="x.safetensors", steps=10, size=(64, 96), zstar={"style_strength": 1.4},
                    sets=[("ZStarSampler", "content_anchor", 0.02)])
    p = zb.apply_settings(prompt, s)
    by_type = {}
    for node in p.values():
        by_type.setdefault(node["class_type"], []).append(node["inputs"])
    assert all(i["steps"] == 10 for i in by_type["ZStarDDIMInversion"])
    patch = by_type["ZStarAttentionPatch"][0]
    assert patch["style_strength"] == 1.4 and patch["end_step"] == 10 and patch["start_step"] == 5
    assert by_type["ZStarSampler"][0]["content_anchor"] == 0.02
    assert by_type["CheckpointLoaderSimple"][0]["ckpt_name"] == "x.safetensors"
    assert all((i["width"], i["height"]) == (64, 96) for i in by_type["ImageScale"])
    assert prompt != p and zb.load_workflow(BASIC) == prompt  # the original is untouched

    few = zb.apply_settings(prompt, zb.Settings(steps=4))
    patch = next(n["inputs"] for n in few.values() if n["class_type"] == "ZStarAttentionPatch")
    assert (patch["start_step"], patch["end_step"]) == (3, 4)  # start kept inside the window

    job = zb.fill_job(p, "zstar_batch/a.png", "zstar_batch/b.png", "zstar_batch/a__b")
    assert job[content]["inputs"]["image"] == "zstar_batch/a.png"
    assert job[style]["inputs"]["image"] == "zstar_batch/b.png"
    assert [n["inputs"]["filename_prefix"] for n in job.values() if n["class_type"] == "SaveImage"] == ["zstar_batch/a__b"]

    with pytest.raises(zb.ZStarBatchError, match="no node"):
        zb.apply_settings(prompt, zb.Settings(sets=[("Nope", "x", 1)]))


def test_ui_workflows_and_batch_graphs_are_refused_with_a_reason(tmp_path):
    ui = tmp_path / "ui.json"
    ui.write_text((REPO / "example_workflows" / "zstar_basic.json").read_text())
    with pytest.raises(zb.ZStarBatchError, match="UI workflow"):
        zb.load_workflow(ui)
    batch = zb.load_workflow(REPO / "example_workflows" / "api" / "zstar_batch.json")
    with pytest.raises(zb.ZStarBatchError, match="exactly one Z\\* sampler .*, it has 3"):
        zb.image_slots(batch)


def test_paths_into_the_old_workflows_folder_still_load():
    """The examples moved from workflows/ to example_workflows/; scripts that name the old path keep working."""
    old = REPO / "workflows" / "api" / "zstar_controlnet.json"
    assert not old.exists()
    assert zb.load_workflow(old) == zb.load_workflow(REPO / "example_workflows" / "api" / "zstar_controlnet.json")
    with pytest.raises(zb.ZStarBatchError, match="cannot read workflow"):
        zb.load_workflow(REPO / "workflows" / "api" / "no_such_workflow.json")


class FakeClient:
    name = "fake:1"

    def __init__(self, info):
        self.info = info

    def object_info(self):
        return self.info


def test_preflight_names_missing_nodes_and_models():
    prompt = zb.load_workflow(REPO / "example_workflows" / "api" / "zstar_controlnet.json")
    types = {n["class_type"] for n in prompt.values()}
    info = {t: {"input": {"required": {}}} for t in types}
    info["CheckpointLoaderSimple"] = {"input": {"required": {"ckpt_name": [["a.safetensors", "b.ckpt"], {}]}}}
    info["ControlNetLoader"] = {"input": {"required": {"control_net_name": ["COMBO", {"options": []}]}}}
    del info["ZStarSampler"]
    problems = zb.preflight(FakeClient(info), prompt)
    text = "\n".join(problems)
    assert "has no node type(s) ZStarSampler" in text and "custom_nodes" in text
    assert "ckpt_name 'v1-5-pruned-emaonly-fp16.safetensors' is not in its models/checkpoints" in text
    assert "a.safetensors, b.ckpt" in text and "--checkpoint" in text
    assert "control_net_name 'control_v11p_sd15_canny_fp16.safetensors'" in text


def test_prompt_errors_read_like_sentences():
    body = json.dumps({"error": {"message": "Prompt outputs failed validation", "details": ""},
                       "node_errors": {"4": {"class_type": "LoadImage", "errors": [
                           {"message": "Invalid image file", "details": "image - Invalid image file: x.png"}]}}})
    text = zb.describe_prompt_error(body)
    assert "Prompt outputs failed validation" in text and "node 4 (LoadImage): Invalid image file" in text


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(zb.ServerDown, match="cannot reach ComfyUI"):
        zb.ComfyClient(f"127.0.0.1:{port}").ping(timeout=2)
    with pytest.raises(zb.ZStarBatchError, match="--comfyui"):
        zb.connect([f"http://127.0.0.1:{port}"], zb.load_workflow(BASIC), zb.Printer(quiet=True))


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def test_websocket_client_reads_frames_and_answers_pings():
    """A scripted server: handshake, then small, 16-bit and 64-bit text frames, a fragmented
    message split across TCP writes, a binary frame, a ping (must be answered), a close."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    big = "x" * 70000
    got_pong = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn:
            req = b""
            while b"\r\n\r\n" not in req:
                req += conn.recv(4096)
            assert b"Upgrade: websocket" in req
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: x\r\n\r\n" + _frame(1, b'{"type": "a"}'))
            conn.sendall(_frame(1, json.dumps({"type": "b", "pad": "y" * 300}).encode()))
            conn.sendall(_frame(2, b"\x00\x01preview"))
            data = _frame(1, b'{"type": "c", ', fin=False) + _frame(0, b'"big": "' + big.encode() + b'"}')
            conn.sendall(data[:7])
            time.sleep(0.05)
            conn.sendall(data[7:])
            conn.sendall(_frame(9, b"hi"))
            head = conn.recv(2)
            if head and head[0] & 0x0F == 0xA:
                got_pong.set()
            conn.recv(64)
            conn.sendall(_frame(8, b""))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ws = zb.WebSocket(f"ws://127.0.0.1:{port}/ws?clientId=1", timeout=5)
    msgs = []
    while len(msgs) < 3:
        m = ws.recv(5.0)
        assert m is not None, "timed out"
        if isinstance(m, str):  # the binary preview frame comes back as bytes and is skipped here
            msgs.append(json.loads(m))
    assert [m["type"] for m in msgs] == ["a", "b", "c"] and msgs[2]["big"] == big
    with pytest.raises(OSError, match="closed"):
        ws.recv(5.0)  # answers the ping on the way, then meets the close frame
    assert got_pong.is_set()
    ws.close()
    listener.close()
    t.join(timeout=5)
