"""Every example workflow in ComfyUI's own frontend, in headless Chromium, against the test server.

Drives Chromium through the DevTools protocol with the headless runner's small websocket client
(no Playwright/Selenium, no browser download: Debian's `chromium` package). The page is opened
once with a returning user's settings (tutorial done, so newer frontends do not greet the
session with their templates browser). For each workflow the test opens the Templates menu,
picks the pack's category and the workflow's card, as a user does, then checks: no missing
node types, no node errors, no dialog or error toast, no new page errors; the frontend's own
graphToPrompt gives exactly the API twin; widget values round-trip. It saves a screenshot to
tests/artifacts/, then makes the graph small (3 steps, 64×64, the test images) in the page,
queues it from the frontend and checks the server validates and runs it.

Chromium: `apt-get install chromium` (.ci/run does it), or CHROMIUM=/path/to/chrome. Without a
browser the test skips, unless ZSTAR_REQUIRE_CHROMIUM=1 (set by .ci/run) makes that a failure.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from harness import COMFYUI_PATH, REPO, SKIP_REASON

if not COMFYUI_PATH:
    pytest.skip(SKIP_REASON, allow_module_level=True)

from zstar_server import (FRONTEND_RUNS, NOT_RUN, PACK_NAME, frontend_small_prompt, host_lacks, image_roles,  # noqa: E402
                          runner, text_encoder_swap)

ARTIFACTS = REPO / "tests" / "artifacts"
WORKFLOWS = REPO / "example_workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio", "--window-size=1920,1080"]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="zstar-chromium-")  # empty --user-data-dir
        self.stderr = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "TMPDIR": self.profile},  # its scratch dirs go too
                                     preexec_fn=runner._die_with_parent)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start: {self.log()}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        self.ws = runner.WebSocket(page["webSocketDebuggerUrl"], timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def log(self) -> str:
        try:
            return (Path(self.profile) / "chromium.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send_text(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(max(0.05, deadline - time.monotonic()))
            if raw is None:
                raise TimeoutError(f"no answer to {method} within {timeout} s")
            msg = json.loads(raw)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            if "method" in msg:
                self.events.append(msg)

    def js(self, expression: str, timeout: float = 60):
        """Evaluate in the page (promises awaited), return the JSON value."""
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"page error: {details.get('exception', {}).get('description') or details.get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied: {what or expression}")

    def screenshot(self, path: Path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Uncaught page exceptions and console errors seen so far."""
        found = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                d = e["params"]["exceptionDetails"]
                found.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", ""))[:400])
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error":
                args = [a.get("value", a.get("description", "")) for a in e["params"]["args"]]
                found.append("console.error: " + " ".join(str(a) for a in args)[:400])
        return found

    def close(self):
        try:
            if hasattr(self, "ws"):
                self.ws.close()
        finally:
            runner.stop_process(self.proc, timeout=10)
            self.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        reason = "chromium not found (apt-get install chromium, or set CHROMIUM=/path/to/chrome)"
        if os.environ.get("ZSTAR_REQUIRE_CHROMIUM"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    b = Browser(binary)
    try:
        for domain in ("Runtime", "Page", "Log"):
            b.call(f"{domain}.enable")
        yield b
    finally:
        b.close()


# Page-side helpers, evaluated in the frontend. A dialog is PrimeVue's `.p-dialog` up to frontend
# 1.4x and an ARIA `role=dialog` element from 1.48 (its templates browser is no PrimeVue dialog):
# OPEN_DIALOGS lists the outermost open dialog of either kind.
OPEN_DIALOGS = ("[...document.querySelectorAll('.p-dialog, [role=dialog]')]"
                ".filter((d, _, all) => !all.some(o => o !== d && o.contains(d)))")
CLICK_TEXT = """((text) => {
  const all = OPEN_DIALOGS.flatMap(d => [...d.querySelectorAll('*')]).filter(e => e.innerText?.trim() === text);
  const el = all.filter(e => !all.some(o => o !== e && e.contains(o)))[0];  // the innermost match
  if (!el) return false; el.click(); return true; })(%s)""".replace("OPEN_DIALOGS", OPEN_DIALOGS)
STATE = """(() => ({
  nodes: app.graph.nodes.map(n => ({id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
                                    errors: !!n.has_errors})),
  dialogs: OPEN_DIALOGS.map(d => d.innerText.slice(0, 500)),
  toasts: [...document.querySelectorAll('.p-toast-message')].map(d => d.innerText.slice(0, 300)),
  workflow: app.extensionManager?.workflow?.activeWorkflow?.filename ?? null,
}))()""".replace("OPEN_DIALOGS", OPEN_DIALOGS)
# A node replaced in the page by another type under the same id, its first output relinked (the
# text-encoder swap of the Flux / SD3.5 workflows, zstar_server.text_encoder_swap).
REPLACE_NODE = """((id, type) => {
  const old = app.graph.getNodeById(id) ?? app.graph.getNodeById(String(id)), pos = [...old.pos];
  const link = (lid) => app.graph.getLink?.(lid) ?? app.graph.links.get?.(lid) ?? app.graph.links[lid];
  const targets = (old.outputs[0].links ?? []).map(lid => [link(lid).target_id, link(lid).target_slot]);
  app.graph.remove(old);
  const n = LiteGraph.createNode(type); n.id = old.id; n.pos = pos; app.graph.add(n);
  for (const [t, slot] of targets) n.connect(0, app.graph.getNodeById(t), slot);
  return String(n.id); })(%s, %s)"""
# The templates grid of frontend 1.27 renders its cards a page at a time and adds the next page when
# scrolled to the end: every scrollable part of the open dialog scrolled to its end, once per try.
SCROLL_DIALOG = """(() => { let n = 0;
  for (const e of OPEN_DIALOGS.flatMap(d => [d, ...d.querySelectorAll('*')]))
    if (e.scrollHeight > e.clientHeight + 1) { e.scrollTop = e.scrollHeight; n++; }
  return n; })()""".replace("OPEN_DIALOGS", OPEN_DIALOGS)
SET_WIDGETS = """((prompt) => { let n_set = 0;
  for (const n of app.graph.nodes) { const inputs = prompt[String(n.id)]?.inputs; if (!inputs) continue;
    for (const w of n.widgets ?? []) if (w.name in inputs && !Array.isArray(inputs[w.name])) { w.value = inputs[w.name]; n_set++; } }
  return n_set; })(%s)"""


def open_templates_menu(b: Browser):
    """The Templates browser, opened as the sidebar's Templates button and the menu do."""
    b.js("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    b.wait_for(f"{OPEN_DIALOGS}.length > 0", timeout=30, what="the templates dialog")


def load_from_templates_menu(b: Browser, name: str):
    """Templates → the pack's category → the workflow's card, as a user does."""
    open_templates_menu(b)
    card = json.dumps(f"[data-testid='template-workflow-{name}']")
    deadline = time.monotonic() + 60
    while not b.js(f"!!document.querySelector({card})"):  # the dialog may still be filling its list: click, scroll again
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {name} card under a '{PACK_NAME}' category in the templates dialog; "
                               f"dialog: {b.js(STATE)['dialogs']}")
        b.js(CLICK_TEXT % json.dumps(PACK_NAME))
        time.sleep(0.5)
        b.js(SCROLL_DIALOG)  # a card past the first page of the grid (frontend 1.27)
        time.sleep(0.5)
    b.js(f"document.querySelector({card}).click()")
    b.wait_for(f"app.graph.nodes.some(n => n.type.startsWith('ZStar')) && {OPEN_DIALOGS}.length === 0",
               timeout=60, what=f"{name} on the canvas, the dialog closed")


@pytest.fixture(scope="module")
def page(browser, comfy_server):
    """The frontend, started on a returning user's profile (see zstar_server.frontend_settings)."""
    b = browser
    b.call("Page.navigate", url=comfy_server.url + "/")
    b.wait_for("!!(window.app && window.app.graph && window.LiteGraph && app.canvas)", timeout=120,
               what="the ComfyUI frontend to start")
    b.wait_for("Object.keys(LiteGraph.registered_node_types).includes('ZStarSampler')", timeout=60,
               what="the Z* nodes registered in the frontend")
    time.sleep(1.0)
    state = b.js(STATE)
    assert not state["dialogs"], f"the frontend greeted a returning user with a dialog: {state['dialogs']}"
    return b


def strip(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


@pytest.mark.parametrize("ui_path", UI_FILES, ids=lambda p: p.stem)
def test_workflow_opens_from_the_templates_menu_and_queues(page, comfy_server, test_images, ui_path):
    b, name = page, ui_path.stem
    if host_lacks(name):
        pytest.skip(host_lacks(name))
    ui = json.loads(ui_path.read_text())
    api = json.loads((WORKFLOWS / "api" / ui_path.name).read_text())
    baseline = len(b.errors())

    load_from_templates_menu(b, name)
    time.sleep(1.0)
    state = b.js(STATE)
    # (node ids are numbers up to frontend 1.4x, strings in the 1.48 page: compared as text)
    assert {str(n["id"]) for n in state["nodes"]} == {str(n["id"]) for n in ui["nodes"]}, f"canvas holds {state['nodes']}"
    missing = [n for n in state["nodes"] if not n["registered"]]
    assert not missing, f"missing node types in the frontend: {missing}"
    flagged = [n for n in state["nodes"] if n["errors"]]
    assert not flagged, f"nodes flagged with errors: {flagged}"
    assert not state["dialogs"], f"dialogs after loading: {state['dialogs']}"
    assert not state["toasts"], f"toasts after loading: {state['toasts']}"
    new_errors = b.errors()[baseline:]
    assert not new_errors, f"page errors while loading {name}: {new_errors}"
    # Loaded as this frontend's own save would be: every node has its definition's outputs, also
    # those a newer host appended after the file was written (0.33.0's SaveImage IMAGE output).
    info = comfy_server.object_info
    loaded = b.js("app.graph.nodes.map(n => [n.type, (n.outputs ?? []).map(o => o.type)])")
    differ = [(t, outs, info[t]["output"]) for t, outs in loaded if t in info and outs != list(info[t]["output"])]
    assert not differ, f"loaded nodes whose outputs differ from the server's definition: {differ}"

    # The frontend's own conversion is exactly the committed API twin; widget values round-trip.
    assert strip(b.js("app.graphToPrompt().then(p => p.output)")) == strip(api), \
        f"frontend graphToPrompt differs from example_workflows/api/{ui_path.name}"
    saved = {str(n["id"]): n["widgets_values"] for n in b.js("app.graph.serialize().nodes")}
    assert saved == {str(n["id"]): n["widgets_values"] for n in ui["nodes"]}
    b.js("app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    time.sleep(0.5)
    shot = b.screenshot(ARTIFACTS / f"frontend_{name}.png")

    if name in NOT_RUN:
        print(f"\n{name}: opened from the Templates menu; not queued: {NOT_RUN[name]}")
        return
    # Made small in the page (3 steps, 64×64, the uploaded test images), queued from the frontend.
    small = frontend_small_prompt(api, test_images, name)
    for nid in text_encoder_swap(api):  # T5-XXL / CLIP-G cannot run here: CLIP-L alone in their place
        assert b.js(REPLACE_NODE % (json.dumps(int(nid)), json.dumps(small[nid]["class_type"]))) == str(nid)
    assert b.js(SET_WIDGETS % json.dumps(small)) > 0
    assert strip(b.js("app.graphToPrompt().then(p => p.output)")) == strip(small)
    before = set(comfy_server.client.get_json("/history"))
    b.js("app.queuePrompt(0, 1)", timeout=120)  # its return value is false even on success ({} errors)
    node_errors = b.js("app.lastNodeErrors")
    assert not node_errors, f"the server rejected the frontend's prompt: {node_errors}; dialogs: {b.js(STATE)['dialogs']}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        new = [k for k in comfy_server.client.get_json("/history") if k not in before]
        if new:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the frontend's prompt never finished; server log:\n{comfy_server.log_tail()}")
    entry = runner.check_history("test server", comfy_server.client.history(new[0]))
    assert len(runner.output_images(entry)) == len(image_roles(small)[0])
    FRONTEND_RUNS[name] = (small, entry)  # test_workflows.py checks this run's images (see zstar_server)
    time.sleep(0.5)
    after = b.js(STATE)
    assert not after["dialogs"] and not [t for t in after["toasts"] if "error" in t.lower()], after
    assert not b.errors()[baseline:], f"page errors while running {name}: {b.errors()[baseline:]}"
    print(f"\n{name}: opened from the Templates menu and ran from the frontend; screenshot {shot}")
