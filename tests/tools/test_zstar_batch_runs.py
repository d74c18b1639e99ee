"""The batch runner's real job loop (zstar_batch.main → run_all) against fake ComfyUI servers on
127.0.0.1 (fake_comfyui.py): sharing, retries on another server, total failure, preflight.

Every job takes about a second: the runner reads progress and polls /history once a second.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

import pytest

import zstar_batch as zb
from fake_comfyui import FakeComfyUI

REPO = Path(__file__).resolve().parents[2]
BASIC = json.loads((REPO / "example_workflows" / "api" / "zstar_basic.json").read_text())
NODE_TYPES = {n["class_type"] for n in BASIC.values()}
CHECKPOINT = next(n["inputs"]["ckpt_name"] for n in BASIC.values() if n["class_type"] == "CheckpointLoaderSimple")
RUN_TIMEOUT_S = 60


def fake(**options) -> FakeComfyUI:
    return FakeComfyUI(NODE_TYPES, checkpoints=[CHECKPOINT], **options)


@pytest.fixture
def servers():
    """servers(fake(), fake(fail_prompt=True), …): started fakes, stopped after the test."""
    with ExitStack() as stack:
        yield lambda *fakes: [stack.enter_context(f) for f in fakes]


def make_images(root: Path, contents: int, styles: int = 1) -> tuple[Path, Path]:
    """Image files by name only: the runner uploads their bytes and never decodes them."""
    for folder, prefix, n in (("contents", "c", contents), ("styles", "s", styles)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            (root / folder / f"{prefix}{i}.png").write_bytes(f"{prefix}{i}".encode())
    return root / "contents", root / "styles"


def run_cli(tmp_path: Path, fakes, contents: int, styles: int = 1, *extra) -> int:
    """zstar_batch.main with --server for each fake, in a thread that must end in time."""
    content_dir, style_dir = make_images(tmp_path / "images", contents, styles)
    argv = ["--contents", str(content_dir), "--styles", str(style_dir), "--out", str(tmp_path / "out"),
            "--job-timeout", "30", *extra]
    for f in fakes:
        argv += ["--server", f if isinstance(f, str) else f.url]
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", zb.main(argv)), daemon=True)
    thread.start()
    thread.join(RUN_TIMEOUT_S)
    assert not thread.is_alive(), "the runner hung"
    return result["rc"]


def outputs(out: Path) -> dict[str, str]:
    """{output file: the server that made it} (the fake writes its name into every image)."""
    return {p.name: p.read_text().split("|")[0] for p in sorted(out.glob("*.png"))}


def expected_bytes(server: FakeComfyUI, content: str, style: str = "s0") -> str:
    return f"{server.name}|zstar_batch/{content}.png|zstar_batch/{style}.png"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


def test_one_server_runs_every_job_and_downloads_its_outputs(servers, tmp_path, capsys):
    (one,) = servers(fake())
    assert run_cli(tmp_path, [one], contents=2) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert sorted(one.prompts) == [("zstar_batch/c0.png", "zstar_batch/s0.png"), ("zstar_batch/c1.png", "zstar_batch/s0.png")]
    assert sorted(one.uploads) == ["zstar_batch/c0.png", "zstar_batch/c1.png", "zstar_batch/s0.png"]  # each once
    assert one.peak_in_flight == 1
    for name in ("c0", "c1"):
        assert (tmp_path / "out" / f"{name}__s0.png").read_text() == expected_bytes(one, name)
    assert f"2 job(s): 2 content × 1 style image(s) on {one.name}" in out
    assert "c0.png × s0.png: Z* Sampler 3/3" in out, "no progress from the websocket"
    assert "2 of 2 done" in out


def test_two_servers_share_the_jobs_one_in_flight_each(servers, tmp_path):
    a, b = servers(fake(), fake())
    content_dir, style_dir = make_images(tmp_path / "images", contents=2, styles=2)
    jobs = [zb.Job(i + 1, c, s) for i, (c, s) in enumerate(
        (c, s) for c in zb.list_images(content_dir, "contents") for s in zb.list_images(style_dir, "styles"))]
    out = tmp_path / "out"
    out.mkdir()
    sched = zb.run_all([zb.ComfyClient(a.url), zb.ComfyClient(b.url)], jobs, zb.load_workflow(zb.DEFAULT_WORKFLOW),
                       out, zb.Printer(quiet=True), timeout=30)
    assert len(sched.done) == 4 and not sched.failed
    assert sorted(a.prompts + b.prompts) == sorted(
        (f"zstar_batch/c{i}.png", f"zstar_batch/s{j}.png") for i in range(2) for j in range(2)), "a job ran twice"
    assert {job.server for job in sched.done} == {a.name, b.name}
    assert (a.peak_in_flight, b.peak_in_flight) == (1, 1)
    by_name = {a.name: a, b.name: b}
    for job in sched.done:
        assert job.outputs == [out / f"{job.stem}.png"]
        assert job.outputs[0].read_text() == expected_bytes(by_name[job.server], job.content.stem, job.style.stem)


def test_a_server_that_goes_down_is_retired_and_its_job_reruns_elsewhere(servers, tmp_path, capsys):
    flaky, good = servers(fake(fail_prompt=True), fake())
    assert run_cli(tmp_path, [flaky, good], contents=2) == 0
    out, err = capsys.readouterr()
    assert flaky.refused == 1, "the failing server should get exactly one job, then be retired"
    assert sorted(good.prompts) == [(f"zstar_batch/c{i}.png", "zstar_batch/s0.png") for i in range(2)]
    assert outputs(tmp_path / "out") == {f"c{i}__s0.png": good.name for i in range(2)}
    assert "HTTP 503" in err and "retiring it and retrying the job elsewhere" in err
    assert f"after {flaky.name} failed" in out and "2 of 2 done" in out


def test_a_job_that_fails_on_one_server_is_retried_on_another(servers, tmp_path, capsys):
    broken, good = servers(fake(fail_content=".png"), fake())  # every job fails on `broken`
    assert run_cli(tmp_path, [broken, good], contents=2) == 0
    out, err = capsys.readouterr()
    assert outputs(tmp_path / "out") == {"c0__s0.png": good.name, "c1__s0.png": good.name}
    assert f"{broken.name}: node 13 (ZStarSampler) failed: RuntimeError: on purpose" in err
    assert "retiring" not in err  # the server answered: it stays in the pool
    assert f"after {broken.name} failed" in out and "2 of 2 done" in out


def test_a_job_failing_on_every_server_is_reported_and_the_others_finish(servers, tmp_path, capsys):
    a, b = servers(fake(fail_content="c1.png"), fake(fail_content="c1.png"))
    assert run_cli(tmp_path, [a, b], contents=3) == 1
    out, _ = capsys.readouterr()
    assert sorted(outputs(tmp_path / "out")) == ["c0__s0.png", "c2__s0.png"]
    c1 = ("zstar_batch/c1.png", "zstar_batch/s0.png")
    assert (a.prompts.count(c1), b.prompts.count(c1)) == (1, 1), "tried once on each server"
    failed = [line for line in out.splitlines() if "FAILED:" in line]
    assert len(failed) == 1 and "c1.png" in failed[0] and a.name in failed[0] and b.name in failed[0]
    assert "2 of 3 done" in out


def test_all_servers_failing_fails_every_job_with_status_1(servers, tmp_path, capsys):
    a, b = servers(fake(fail_prompt=True), fake(fail_prompt=True))
    assert run_cli(tmp_path, [a, b], contents=2) == 1
    out, err = capsys.readouterr()
    assert (a.refused, b.refused) == (1, 1), "each server is retired after its first failure"
    assert err.count("retiring it") == 2
    rows = [line for line in out.splitlines() if re.match(r"\d+\s+c\d\.png ", line)]  # the summary's job rows
    assert len(rows) == 2 and all("FAILED:" in row and "HTTP 503" in row for row in rows)
    assert "0 of 2 done" in out
    assert not list((tmp_path / "out").glob("*.png"))


def test_no_server_answering_is_status_2(tmp_path, capsys):
    dead = closed_port_url()
    assert run_cli(tmp_path, [dead], contents=1) == 2
    _, err = capsys.readouterr()
    assert f"error: cannot reach ComfyUI at {dead}" in err
    assert "no ComfyUI server answered" in err and "--comfyui" in err


def test_preflight_problems_stop_the_run_before_anything_is_queued(servers, tmp_path, capsys):
    no_nodes, no_model = servers(fake(hide_zstar=True), fake())
    no_model.checkpoints = ["other.safetensors"]
    assert run_cli(tmp_path, [no_nodes, no_model], contents=1) == 2
    _, err = capsys.readouterr()
    assert (f"error: {no_nodes.name} has no node type(s) ZStarAttentionPatch, ZStarDDIMInversion, ZStarSampler"
            " — the Z* nodes are not loaded") in err
    assert (f"error: {no_model.name}: ckpt_name '{CHECKPOINT}' is not in its models/checkpoints folder "
            "(choose one with --checkpoint); it has: other.safetensors") in err
    assert "error: no server can run the workflow" in err
    for f in (no_nodes, no_model):
        assert f.uploads == [] and f.prompts == []
    assert not (tmp_path / "out").exists()


def test_servers_that_fail_preflight_are_left_out_and_the_others_run(servers, tmp_path, capsys):
    dead = closed_port_url()
    no_nodes, good = servers(fake(hide_zstar=True), fake())
    assert run_cli(tmp_path, [dead, no_nodes, good], contents=1) == 0
    out, err = capsys.readouterr()
    assert f"warning: cannot reach ComfyUI at {dead}" in err
    assert f"warning: {no_nodes.name} has no node type(s)" in err
    assert no_nodes.uploads == [] and no_nodes.prompts == []
    assert outputs(tmp_path / "out") == {"c0__s0.png": good.name}
    assert f"on {good.name}\n" in out


@pytest.mark.parametrize("command", [["scripts/zstar_batch.py"], ["-m", "zstar_batch"]], ids=["script", "module"])
def test_the_script_and_python_m_run_the_same_command_line(command, servers, tmp_path):
    (one,) = servers(fake())
    content_dir, style_dir = make_images(tmp_path / "images", contents=1)
    proc = subprocess.run([sys.executable, *command, "--contents", content_dir, "--styles", style_dir,
                           "--out", tmp_path / "out", "--server", one.url, "--job-timeout", "30"],
                          cwd=str(REPO), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 done" in proc.stdout
    assert outputs(tmp_path / "out") == {"c0__s0.png": one.name}


def test_the_package_needs_only_the_standard_library_also_as_a_subpackage(tmp_path):
    """Top level (`python -m zstar_batch`) and inside the pack as ComfyUI imports it
    (custom_nodes/comfyui-zstar → package comfyui_zstar): nothing but the standard library loads."""
    code = (
        "import sys, types\n"
        "before = set(sys.modules)\n"
        "if sys.argv[1] == 'sub':\n"
        "    pack = types.ModuleType('comfyui_zstar'); pack.__path__ = [sys.argv[2]]\n"
        "    sys.modules['comfyui_zstar'] = pack  # the pack's folder as a package, without its ComfyUI entry point\n"
        "    import comfyui_zstar.zstar_batch as zb\n"
        "    assert 'zstar_batch' not in sys.modules\n"
        "else:\n"
        "    sys.path.insert(0, sys.argv[2])\n"
        "    import zstar_batch as zb\n"
        "assert zb.main and zb.WebSocket and zb.run_all\n"
        "allowed = set(sys.stdlib_module_names) | {'comfyui_zstar', 'zstar_batch'}\n"
        "foreign = sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in allowed)\n"
        "assert not foreign, foreign\n"
    )
    for how in ("top", "sub"):
        subprocess.run([sys.executable, "-c", code, how, str(REPO)], check=True, cwd=str(tmp_path), timeout=60,
                       env={**os.environ, "PYTHONPATH": ""})
