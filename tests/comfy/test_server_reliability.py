"""Reliability through a real ComfyUI server (issue 7): interruptions and a long-running server.

- POST /interrupt while the content inversion runs and again while the Z* sampler runs; the
  next run of the same prompt saves exactly the image a fresh server saves.
- 20 consecutive runs in one server process: the RSS series shows no growth and identical
  inputs give identical images. Consecutive runs alternate between two input sets (content
  image and λ), so every run recomputes the inversion, the patch and the sampler instead of
  being served from ComfyUI's cache, and like is compared with like.

Uses the session server of zstar_server.py (a full-size random-weight SD1.5 on the CPU, 64×64
images, 3 steps) and, for the fresh-server reference, a second server started and stopped
before the session one is used by this module.
"""
from __future__ import annotations

import io
import json
import time
import uuid

import pytest

from harness import COMFYUI_PATH, REPO, SKIP_REASON

if not COMFYUI_PATH:
    pytest.skip(SKIP_REASON, allow_module_level=True)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from zstar_server import ZStarServer, make_test_image, runner, small_prompt  # noqa: E402

BASIC = json.loads((REPO / "example_workflows" / "api" / "zstar_basic.json").read_text())
INTERRUPT_STEPS = 4  # the interrupt lands after step 1 of 4: seconds per step on a CPU, so always mid-node
RUN_STEPS = 2        # the long run: one plain step and one Z* step per run
RUNS = 10  # first 4 vs last 4 runs, 2 between: any model-sized leak (GBs, see below) shows in one run
WINDOW = 4
# RSS tolerance for "no growth": last-5 mean ≤ first-5 mean + this. A real leak in this
# pipeline keeps tensors or model copies: one fp32 copy of the U-Net is 3.4 GB, one
# ModelPatcher clone's patched weights the same; an inversion at 64 px is only KBs, so those are
# covered by the in-process test that counts Z* objects (test_reliability.py). Between runs
# glibc and torch's CPU allocator move RSS by a few MB to a few tens of MB (freed arenas are not
# always returned), so 64 MB separates allocator noise from any leak of model-sized objects.
RSS_TOLERANCE_MB = 64


def node_of(prompt: dict, class_type: str, nth: int = 0) -> str:
    return sorted((nid for nid, n in prompt.items() if n["class_type"] == class_type), key=int)[nth]


def images_of(server, result) -> list[tuple[bytes, np.ndarray]]:
    out = []
    for info in result.images:
        data = server.client.view(info["filename"], info.get("subfolder", ""), info.get("type", "output"))
        out.append((data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))
    return out


def interrupt_prompt(content: str, style: str) -> dict:
    return small_prompt(BASIC, [content], style, steps=INTERRUPT_STEPS, prefix="tests/interrupt")


def run_and_interrupt(server, prompt: dict, node_id: str, at_step: int = 1, timeout: float = 300) -> list:
    """Queue `prompt`; when `node_id` reports progress step `at_step`, POST /interrupt (as the
    UI's Cancel button does). Returns the history's status messages; fails if it completed."""
    client = server.client
    client_id = uuid.uuid4().hex
    ws = client.websocket(client_id)
    try:
        prompt_id = client.queue_prompt(prompt, client_id)
        deadline, sent = time.monotonic() + timeout, False
        while time.monotonic() < deadline:
            for msg in ws.messages(wait=0.5):
                data = msg.get("data") or {}
                if (not sent and msg.get("type") == "progress" and data.get("node") == node_id
                        and data.get("value", 0) >= at_step):
                    client.post_json("/interrupt", {})
                    sent = True
            entry = client.history(prompt_id)
            if entry:
                messages = runner.status_messages(entry)
                events = [e for e, _ in messages]
                assert sent, f"node {node_id} never reported step {at_step}; events {events}"
                assert "execution_interrupted" in events, f"not interrupted: {events}"
                interrupted = next(d for e, d in messages if e == "execution_interrupted")
                assert interrupted.get("node_id") == node_id, interrupted
                return messages
        pytest.fail(f"prompt did not finish within {timeout} s")
    finally:
        ws.close()


def fresh_server_images(tmp_path_factory, files: dict) -> tuple[dict, list]:
    """Start a brand-new server, run the interrupt prompt once, stop it."""
    server = ZStarServer(tmp_path_factory.mktemp("fresh-comfyui"), COMFYUI_PATH).start()
    try:
        names = {k: server.upload(p) for k, p in files.items()}
        prompt = interrupt_prompt(names["content"], names["style"])
        return prompt, images_of(server, server.run(prompt, timeout=600))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("reliability-images")
    return {"content": make_test_image(folder / "rel_content.png", "content", seed=1),
            "content_b": make_test_image(folder / "rel_content_b.png", "content", seed=2),
            "style": make_test_image(folder / "rel_style.png", "style", seed=1)}


def test_interrupted_runs_leave_nothing_behind(request, tmp_path_factory, image_files):
    # the reference first, so that two full-size servers of this module never run at once
    t0 = time.monotonic()
    ref_prompt, reference = fresh_server_images(tmp_path_factory, {k: image_files[k] for k in ("content", "style")})
    print(f"\nfresh server reference: {time.monotonic() - t0:.0f} s")

    server = request.getfixturevalue("comfy_server")
    names = {k: server.upload(image_files[k]) for k in ("content", "style")}
    prompt = interrupt_prompt(names["content"], names["style"])
    content_inv = next(n for n in runner.upstream(prompt, node_of(prompt, "ZStarSampler"), "content")
                       if prompt[n]["class_type"] == "ZStarDDIMInversion")
    sampler = node_of(prompt, "ZStarSampler")

    run_and_interrupt(server, prompt, content_inv)   # cancelled during the inversion
    print("interrupted during the content inversion")
    run_and_interrupt(server, prompt, sampler)       # the inversions are cached now; cancelled while sampling
    print("interrupted during Z* sampling")
    result = server.run(prompt, timeout=600)
    assert "execution_success" in [e for e, _ in result.messages]
    again = images_of(server, result)
    assert len(again) == len(reference) == 1
    assert np.array_equal(again[0][1], reference[0][1]), "the rerun differs from a fresh server's result"
    if prompt == ref_prompt:  # same upload names: the PNG (pixels + embedded prompt) is byte-identical
        assert again[0][0] == reference[0][0]
    print("rerun after two interruptions == fresh server, pixel for pixel"
          + (" and byte for byte" if prompt == ref_prompt else ""))


def test_long_running_server_memory_and_determinism(comfy_server, image_files):
    server = comfy_server
    names = {k: server.upload(p) for k, p in image_files.items()}
    variants = []
    for content, strength in ((names["content"], 1.2), (names["content_b"], 1.3)):
        prompt = small_prompt(BASIC, [content], names["style"], steps=RUN_STEPS, prefix="tests/longrun")
        prompt[node_of(prompt, "ZStarAttentionPatch")]["inputs"]["style_strength"] = strength
        variants.append(prompt)
    proc = psutil.Process(server.process.proc.pid)
    rss, images, seconds = [], {0: [], 1: []}, []
    for i in range(RUNS):
        t0 = time.monotonic()
        result = server.run(variants[i % 2], timeout=600)
        seconds.append(time.monotonic() - t0)
        assert not set(result.cached) & {node_of(variants[0], "ZStarSampler"), node_of(variants[0], "ZStarDDIMInversion")}
        images[i % 2].append(images_of(server, result)[0])
        rss.append(proc.memory_info().rss / 2**20)
    print(f"\nRSS after each of {RUNS} runs (MB): " + ", ".join(f"{r:.0f}" for r in rss))
    print(f"seconds per run: " + ", ".join(f"{s:.1f}" for s in seconds))
    first, last = sum(rss[:WINDOW]) / WINDOW, sum(rss[-WINDOW:]) / WINDOW
    print(f"first-{WINDOW} mean {first:.0f} MB, last-{WINDOW} mean {last:.0f} MB, growth {last - first:+.0f} MB "
          f"(tolerance {RSS_TOLERANCE_MB} MB)")
    assert last <= first + RSS_TOLERANCE_MB, f"RSS grew {last - first:.0f} MB over {RUNS} runs: {rss}"
    for parity, runs in images.items():
        assert all(np.array_equal(px, runs[0][1]) for _, px in runs), f"input set {parity}: results differ"
        assert all(data == runs[0][0] for data, _ in runs), f"input set {parity}: PNG bytes differ"
    assert not np.array_equal(images[0][0][1], images[1][0][1])  # the two input sets really differ
