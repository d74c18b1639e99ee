"""A real ComfyUI server for the tests, started once per session on 127.0.0.1.

(Not named server.py: ComfyUI has a top-level `server` module that its own code imports.)

    python $COMFYUI_PATH/main.py --cpu --listen 127.0.0.1 --port <free> --base-directory <tmp> ...

<tmp> is a fresh ComfyUI base directory (folder_paths.py: models/, custom_nodes/, input/,
output/, temp/, user/ all live under it):
- custom_nodes/comfyui-zstar → a symlink to this repository (loaded as ComfyUI loads any pack);
- models/checkpoints/v1-5-pruned-emaonly-fp16.safetensors and
  models/controlnet/control_v11p_sd15_canny_fp16.safetensors → the random-weight files from
  checkpoint.py, under the names the example workflows use, so the committed workflows run as is;
- input/example.png (the workflows' default image) and a few small test images;
- custom_nodes/ComfyUI-GGUF, city96's GGUF loaders, unpacked from ../shared/packs/comfyui-gguf-*.tar.gz
  (or ZSTAR_GGUF_PACK: an archive or an unpacked folder) when that archive is there and this venv
  has the `gguf` package; otherwise ZStarServer.gguf_skip says which is missing (test_gguf.py skips).
Nothing reaches the network: API nodes are off, the database is in memory, the frontend is the
installed comfyui-frontend-package, and the comfy API base points at a closed local port.

Only the standard library and pytest here; the HTTP client and the launcher are the headless
runner's (the zstar_batch package), so the tests exercise the code users run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ZSTAR_NODES = ("ZStarDDIMInversion", "ZStarAttentionPatch", "ZStarSampler")
PACK_NAME = "comfyui-zstar"
STEPS = 3      # DDIM steps the tests run (the workflows say 30)
CHROMA_STEPS = 2  # the real-width Chroma file costs ~3 s per image row and call here (its modulation approximator)
SIZE = 64      # test images are SIZE×SIZE pixels (8×8 latents)
# The random models are linked under the names the example workflows use.
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CONTROLNET = "control_v11p_sd15_canny_fp16.safetensors"
# Flux.1-dev / SD3.5 workflows: small random models of the real layouts under the real file names
FLUX_MODEL, FLUX_VAE, SD35_CHECKPOINT, CLIP_L = ("flux1-dev.safetensors", "ae.safetensors", "sd3.5_medium.safetensors",
                                                 "clip_l.safetensors")
T5XXL = "t5xxl_fp16.safetensors"
FULL_SIZE_TEXT_ENCODERS = (T5XXL, "clip_g.safetensors")  # T5-XXL (4.7B) cannot run here
# Chroma / Qwen-Image workflows (example_workflows/build.py names the files of their templates)
CHROMA_MODEL, QWEN_MODEL = "Chroma1-HD.safetensors", "qwen_image_fp8_e4m3fn.safetensors"
QWEN_TEXT, QWEN_VAE = "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image_vae.safetensors"
# Flux.2 / Z-Image workflows: the files of ComfyUI's templates (example_workflows/build.py); Z-Image's VAE is FLUX_VAE
FLUX2_MODEL, FLUX2_TEXT, FLUX2_VAE = ("flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_bf16.safetensors",
                                      "flux2-vae.safetensors")
Z_IMAGE_MODEL, Z_IMAGE_TEXT = "z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors"
# Workflows the tests open, check and convert but do not run, with the reason.
NOT_RUN = {"zstar_qwen_image": "its text encoder, Qwen2.5-VL-7B, is the only one of Qwen-Image's 3584 width and "
                               "cannot run on this CPU (tests/comfy/test_dit_checkpoints.py runs the random "
                               "Qwen-Image file, stock-loaded, with Z* on conditioning tensors of that width)",
           "zstar_flux2": "its text encoder, Mistral 3 Small (24B), is the only one of Flux.2-dev's width and cannot "
                          "run on this CPU (tests/comfy/test_flux2_z_image_files.py runs a random Flux.2 file, "
                          "stock-loaded, with Z* on conditioning tensors)",
           "zstar_z_image": "its text encoder, Qwen3-4B, cannot run on this CPU in the tests' time "
                            "(tests/comfy/test_flux2_z_image_files.py runs the random Z-Image file, stock-loaded, "
                            "with Z* on conditioning tensors of its width)"}
# Workflows of families a host must be new enough for: {name: (the model config class, the first ComfyUI with it)}
NEEDS_MODEL = {"zstar_flux2": ("Flux2", "0.8.0"), "zstar_z_image": ("ZImage", "0.8.0")}


def host_lacks(name: str) -> str | None:
    """Why this host cannot load the workflow `name` (a family it does not have), or None."""
    import comfy.supported_models

    if name in NEEDS_MODEL and not hasattr(comfy.supported_models, NEEDS_MODEL[name][0]):
        cls, version = NEEDS_MODEL[name]
        return f"{name} needs ComfyUI {version} or later (this ComfyUI has no {cls} model)"
    return None
# city96's ComfyUI-GGUF (Apache-2.0), installed into the test server when its archive is there
GGUF_PACK_ENV = "ZSTAR_GGUF_PACK"
GGUF_PACKS = REPO.parent / "shared" / "packs"
GGUF_NODES = ("UnetLoaderGGUF",)


def load_runner():
    """The headless runner, the standard-library package zstar_batch/ at the repo root (imported
    top-level, not through the pack: it needs neither ComfyUI nor the pack's other code)."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))  # appended, like tests/conftest.py: ComfyUI's own modules stay first
    import zstar_batch

    return zstar_batch


runner = load_runner()


@dataclass
class RunResult:
    prompt_id: str | None
    entry: dict                 # the /history entry: outputs, status (with its messages)
    messages: list              # [(event, data)] from the history's status
    cached: list                # node ids ComfyUI took from its cache ('execution_cached')

    @property
    def images(self) -> list[dict]:
        return runner.output_images(self.entry)


def make_test_image(path: Path, kind: str, size: int = SIZE, seed: int = 0):
    """Small synthetic pictures: 'content' (shapes on a gradient) or 'style' (coloured stripes)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    if kind == "content":
        for y in range(size):
            draw.line([(0, y), (size, y)], fill=(40 + 3 * y % 200, 90 + seed * 40 % 150, 160 - y % 120))
        s = size // 4
        draw.ellipse([s, s, 3 * s, 3 * s], fill=(230, 200 - 50 * seed % 200, 60))
        draw.rectangle([s // 2 + seed * 3, 2 * s, 2 * s, 3 * s + s // 2], fill=(30, 30, 60))
    else:
        colors = [(200, 40, 40), (240, 200, 60), (40, 60, 180), (30, 140, 80)]
        for i in range(0, size * 2, 6):
            draw.line([(i, 0), (i - size, size)], fill=colors[(i // 6 + seed) % 4], width=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def frontend_settings() -> dict:
    """User settings so a fresh frontend opens straight onto the canvas (no first-run dialogs)."""
    return {"Comfy.TutorialCompleted": True, "Comfy.InstalledVersion": "9.9.9",
            "Comfy.Release.Version": "9.9.9", "Comfy.Workflow.ShowMissingModelsWarning": True,
            "Comfy.Workflow.ShowMissingNodesWarning": True, "Comfy.Validation.Workflows": True,
            # full-detail rendering at any zoom and no minimap, for a readable screenshot
            "LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.Minimap.Visible": False}


def prepare_base(base: Path) -> Path:
    """A fresh ComfyUI base directory: this pack in custom_nodes, the random models under the
    names the workflows use, input/example.png, frontend settings."""
    import checkpoint

    base = Path(base)
    for sub in ("custom_nodes", "input", "output", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    clip_l = checkpoint.clip_l()
    for folder, name, src in (("checkpoints", CHECKPOINT, checkpoint.sd15_checkpoint()),
                              ("controlnet", CONTROLNET, checkpoint.sd15_controlnet()),
                              ("diffusion_models", FLUX_MODEL, checkpoint.flux_diffusion_model()),
                              ("vae", FLUX_VAE, checkpoint.flux_vae()),
                              ("checkpoints", SD35_CHECKPOINT, checkpoint.sd35_checkpoint()),
                              ("diffusion_models", CHROMA_MODEL, checkpoint.chroma_diffusion_model()),
                              ("diffusion_models", QWEN_MODEL, checkpoint.qwen_image_diffusion_model()),
                              ("text_encoders", CLIP_L, clip_l),
                              # listed so the Qwen-Image workflow's loaders find its names; never run (NOT_RUN)
                              ("text_encoders", QWEN_TEXT, clip_l), ("vae", QWEN_VAE, checkpoint.flux_vae()),
                              # the same for Flux.2 and Z-Image (the Flux.2 name holds the Z-Image file where
                              # this host cannot load a Klein-sized Flux.2: listed, never loaded)
                              *new_family_files(checkpoint, clip_l),
                              # listed so the workflows' loaders find every name; never loaded: the
                              # tests load CLIP-L alone in their place (see swap_text_encoders)
                              *(("text_encoders", name, clip_l) for name in FULL_SIZE_TEXT_ENCODERS)):
        dst = base / "models" / folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    make_test_image(base / "input" / "example.png", "content", seed=0)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(frontend_settings()))
    return base


def gguf_pack_source() -> tuple[Path | None, str | None]:
    """(the ComfyUI-GGUF archive or folder to install, None) or (None, why it cannot be installed)."""
    override = os.environ.get(GGUF_PACK_ENV)
    if override:
        source = Path(override)
        if not source.exists():
            return None, f"ComfyUI-GGUF not installed: {GGUF_PACK_ENV}={override} does not exist"
    else:
        found = sorted(GGUF_PACKS.glob("comfyui-gguf-*.tar.gz"))
        if not found:
            return None, f"ComfyUI-GGUF not installed: no comfyui-gguf-*.tar.gz in {GGUF_PACKS} (or set {GGUF_PACK_ENV})"
        source = found[-1]
    if importlib.util.find_spec("gguf") is None:
        return None, f"ComfyUI-GGUF not installed: this venv ({sys.executable}) lacks the `gguf` package (pip install gguf)"
    return source, None


def install_gguf_pack(base: Path, source: Path) -> Path:
    """ComfyUI-GGUF into base/custom_nodes: an unpacked folder is linked, an archive (one top-level
    folder, as the pack's repository archive has) is unpacked there."""
    nodes = Path(base) / "custom_nodes"
    if source.is_dir():
        target = nodes / source.name
        target.symlink_to(source.resolve(), target_is_directory=True)
        return target
    with tarfile.open(source) as tar:
        tops = {Path(m.name).parts[0] for m in tar.getmembers() if m.name not in ("", ".")}
        if len(tops) != 1:
            raise RuntimeError(f"{source}: expected one top-level folder, found {sorted(tops)}")
        tar.extractall(nodes, filter="data")
    return nodes / tops.pop()


def comfyui_args(base: Path) -> list[str]:
    """main.py arguments for a test server: CPU, our base directory, nothing that goes online."""
    return ["--cpu", "--base-directory", str(base), "--disable-api-nodes", "--disable-auto-launch",
            "--database-url", "sqlite:///:memory:", "--comfy-api-base", "http://127.0.0.1:9",
            "--preview-method", "none"]


def offline_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}


class ZStarServer:
    """A ComfyUI process serving this repo as a custom node pack."""

    def __init__(self, base: Path, comfy_path: str):
        self.base = prepare_base(base)
        source, self.gguf_skip = gguf_pack_source()  # gguf_skip: why ComfyUI-GGUF is not there, or None
        self.gguf_pack = install_gguf_pack(self.base, source) if source else None
        self.process = runner.LocalComfyUI(comfy_path, python=sys.executable, extra_args=comfyui_args(self.base),
                                           log_path=self.base / "comfyui.log", start_timeout=300,
                                           env=offline_env(), cwd=self.base)
        self.client: runner.ComfyClient | None = None
        self._object_info = None

    @property
    def url(self) -> str:
        return self.process.url

    def start(self):
        t0 = time.monotonic()
        try:
            self.process.start()
        except runner.ZStarBatchError as e:
            pytest.fail(f"ComfyUI did not start: {e}", pytrace=False)
        self.client = runner.ComfyClient(self.url, timeout=120)
        missing = [n for n in ZSTAR_NODES if n not in self.object_info]
        if missing:
            self.stop()
            pytest.fail(f"ComfyUI started but the Z* nodes {missing} are missing from /object_info; "
                        f"server log:\n{self.log_tail(80)}", pytrace=False)
        print(f"\nComfyUI test server {self.url} ready in {time.monotonic() - t0:.1f} s (log: {self.process.log_path})")
        return self

    def stop(self):
        self.process.stop()

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    @property
    def object_info(self) -> dict:
        if self._object_info is None:
            self._object_info = self.client.object_info()
        return self._object_info

    def upload(self, path: Path) -> str:
        return self.client.upload_image(Path(path), subfolder="tests")

    def run(self, prompt: dict, timeout: float = 600, check: bool = True) -> RunResult:
        """Queue an API prompt, wait for it; a failure shows the server's error and log tail."""
        events = []
        try:
            entry = self.client.run(prompt, on_event=lambda kind, data: events.append((kind, data)), timeout=timeout)
        except runner.ZStarBatchError as e:
            if not check:
                raise
            pytest.fail(f"{e}\nserver log:\n{self.log_tail(40)}", pytrace=False)
        messages = runner.status_messages(entry)
        cached = [n for event, data in messages if event == "execution_cached" for n in data.get("nodes", [])]
        prompt_id = next((d.get("prompt_id") for e, d in messages if d.get("prompt_id")), None)
        return RunResult(prompt_id, entry, messages, cached)

    def image(self, info: dict):
        """A saved image (an entry of RunResult.images) as a PIL image."""
        import io
        from PIL import Image

        data = self.client.view(info["filename"], info.get("subfolder", ""), info.get("type", "output"))
        return Image.open(io.BytesIO(data))


def image_roles(prompt: dict) -> tuple[list[str], list[str]]:
    """(content Load Image ids, style Load Image ids), each in id order: the Load Image nodes
    upstream of the content / style inputs of the workflow's Z* samplers."""
    samplers = runner.zstar_samplers(prompt)

    def loads(role, exclude=()):
        return sorted({n for s in samplers for n in runner.upstream(prompt, s, role)
                       if prompt[n]["class_type"] == "LoadImage"} - set(exclude), key=int)

    content = loads("content")
    return content, loads("style", exclude=content)


def new_family_files(checkpoint, clip_l) -> tuple:
    """(folder, name, file) for the Flux.2 and Z-Image workflows' loaders, on hosts that have them."""
    if NEEDS_MODEL and any(host_lacks(name) for name in NEEDS_MODEL):
        return ()
    z_image = checkpoint.z_image_diffusion_model()
    return (("diffusion_models", Z_IMAGE_MODEL, z_image),
            ("diffusion_models", FLUX2_MODEL, checkpoint.flux2_diffusion_model() or z_image),
            ("text_encoders", FLUX2_TEXT, clip_l), ("text_encoders", Z_IMAGE_TEXT, clip_l),
            ("vae", FLUX2_VAE, checkpoint.flux_vae()))


def text_encoder_swap(prompt: dict) -> dict:
    """{node id: the CLIPLoader inputs that replace it}: the workflows' Dual/Triple CLIP loaders and
    T5-XXL loaders (T5-XXL and CLIP-G, far too big for a CPU test) become CLIP-L alone, loaded the stock way
    under the type that conditions the random model of the same workflow (checkpoint.py)."""
    import checkpoint

    swap = {}
    for nid, node in prompt.items():
        if node["class_type"] == "DualCLIPLoader":  # Flux
            swap[nid] = {"clip_name": CLIP_L, "type": checkpoint.flux_text_encoder_type(), "device": "default"}
        elif node["class_type"] == "TripleCLIPLoader":  # SD3.5
            swap[nid] = {"clip_name": CLIP_L, "type": "stable_diffusion", "device": "default"}
        elif node["class_type"] == "CLIPLoader" and node["inputs"]["clip_name"] == T5XXL:  # Chroma
            # SD3's text encoder pads CLIP-L to T5-XXL's 4096, the width of the random Chroma file
            swap[nid] = {"clip_name": CLIP_L, "type": "sd3", "device": "default"}
    return swap


def small_prompt(prompt: dict, content: list[str], style, steps: int | None = None, size: int = SIZE,
                 prefix: str = "tests/zstar") -> dict:
    """An API workflow made cheap for the tests: `steps` inversion steps (STEPS, or 2 on Chroma: see
    CHROMA_STEPS), reweighting on steps 1.., images of size×size, the given uploaded images in the
    Load Image nodes (content ones in order; style one name or a list, used in turn)."""
    if steps is None:
        unets = {n["inputs"].get("unet_name") for n in prompt.values() if n["class_type"] == "UNETLoader"}
        steps = CHROMA_STEPS if CHROMA_MODEL in unets else STEPS
    settings = runner.Settings(steps=steps, size=(size, size), zstar={"start_step": 1, "end_step": steps})
    prompt = runner.apply_settings(prompt, settings)
    content_loads, style_loads = image_roles(prompt)
    styles = [style] if isinstance(style, str) else list(style)
    for i, nid in enumerate(content_loads):
        prompt[nid]["inputs"]["image"] = content[i % len(content)]
    for i, nid in enumerate(style_loads):
        prompt[nid]["inputs"]["image"] = styles[i % len(styles)]
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = prefix
    for nid, inputs in text_encoder_swap(prompt).items():
        prompt[nid] = {"inputs": inputs, "class_type": "CLIPLoader", "_meta": {"title": "Load CLIP (test: CLIP-L)"}}
    return prompt


def frontend_small_prompt(api: dict, test_images: dict, name: str) -> dict:
    """The small prompt test_frontend.py queues from the page for the workflow `name`: the API
    twin's small_prompt, saved under frontend_<name> (images and style bank entry)."""
    small = small_prompt(api, test_images["content"], test_images["styles"], prefix=f"tests/frontend_{name}")
    for node in small.values():
        if node["class_type"] == "ZStarSaveStyle":
            node["inputs"]["name"] = f"frontend_{name}"
    return small


# {workflow name: (prompt, /history entry)}: the small prompt the frontend test queued from the page
# and the server ran (the page's graphToPrompt is asserted equal to it). test_workflows.py checks
# that run's outputs instead of running the identical prompt a second time on the same server.
FRONTEND_RUNS: dict[str, tuple[dict, dict]] = {}


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """The session's ComfyUI server (skips without COMFYUI_PATH)."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        pytest.skip("ComfyUI tier skipped: COMFYUI_PATH is not set")
    server = ZStarServer(tmp_path_factory.mktemp("comfyui-base"), comfy_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def test_images(comfy_server, tmp_path_factory) -> dict:
    """Uploaded test images: {'content': [3 names], 'style': name, 'styles': [3 names], and the local
    files 'content_files', 'style_file'}."""
    folder = tmp_path_factory.mktemp("images")
    contents = [make_test_image(folder / f"content{i}.png", "content", seed=i) for i in range(3)]
    styles = [make_test_image(folder / f"style{i}.png", "style", seed=i) for i in range(3)]
    style_names = [comfy_server.upload(p) for p in styles]
    return {"content": [comfy_server.upload(p) for p in contents], "style": style_names[0], "styles": style_names,
            "content_files": contents, "style_file": styles[0]}
