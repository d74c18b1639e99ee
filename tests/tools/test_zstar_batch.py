"""scripts/zstar_batch.py without ComfyUI: scheduling, workflow filling, checks, websocket frames.

The runner against a real server is in tests/comfy/test_batch_runner.py.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASIC = REPO / "example_workflows" / "api" / "zstar_basic.json"


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


zb = _load("zstar_batch", REPO / "scripts" / "zstar_batch.py")


def jobs(n):
    return [zb.Job(i + 1, Path(f"c{i}.png"), Path("s.png")) for i in range(n)]


def run_fake(servers: dict, n_jobs: int):
    """Drive the Scheduler with fake servers: servers[name](job) returns, or raises
    ServerDown / JobFailed. Returns the scheduler after every worker has stopped."""
    sched = zb.Scheduler(jobs(n_jobs), list(servers))
    in_flight = {name: 0 for name in servers}
    peak = {name: 0 for name in servers}
    lock = threading.Lock()

    def worker(name):
        while True:
            job = sched.take(name)
            if job is None:
                return
            with lock:
                in_flight[name] += 1
                peak[name] = max(peak[name], in_flight[name])
            try:
                servers[name](job)
                sched.finish(job, name)
            except zb.ServerDown as e:
                sched.fail(job, name, str(e), retire=True)
                return
            except zb.JobFailed as e:
                sched.fail(job, name, str(e))
            finally:
                with lock:
                    in_flight[name] -= 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    return sched, peak


def test_jobs_spread_over_servers_one_in_flight_each():
    sched, peak = run_fake({"a": lambda j: time.sleep(0.05), "b": lambda j: time.sleep(0.05)}, 6)
    assert len(sched.done) == 6 and not sched.failed
    used = {j.server for j in sched.done}
    assert used == {"a", "b"}
    assert peak == {"a": 1, "b": 1}


def test_a_server_that_goes_down_is_retired_and_its_job_runs_elsewhere():
    def broken(job):
        raise zb.ServerDown("connection refused")

    sched, _ = run_fake({"dead": broken, "ok": lambda j: time.sleep(0.02)}, 4)
    assert len(sched.done) == 4 and not sched.failed
    assert all(j.server == "ok" for j in sched.done)
    retried = [j for j in sched.done if j.tried]
    assert len(retried) == 1 and retried[0].tried[0][0] == "dead"
    assert "after dead failed" in zb.summary_table(sched)


def test_a_job_failing_everywhere_is_reported_once_per_server_and_others_finish():
    def picky(job):
        if job.index == 2:
            raise zb.JobFailed("node 13 failed")
        time.sleep(0.01)

    sched, _ = run_fake({"a": picky, "b": picky}, 3)
    assert [j.index for j in sched.failed] == [2]
    assert {s for s, _ in sched.failed[0].tried} == {"a", "b"}
    assert len(sched.done) == 2
    assert "FAILED" in zb.summary_table(sched)


def test_all_servers_down_fails_every_job_without_hanging():
    def broken(job):
        raise zb.ServerDown("gone")

    sched, _ = run_fake({"a": broken, "b": broken}, 5)
    assert len(sched.failed) == 5 and not sched.done


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
