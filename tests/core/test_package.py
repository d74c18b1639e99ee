"""The core package stands alone: no ComfyUI, and pytest never imports the repo root package."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# The ComfyUI tier loads the pack on purpose, under this name, as ComfyUI loads a custom node
# folder (tests/comfy/harness.py: load_pack); when both tiers share one pytest session it is
# already in sys.modules here. Any other name means pytest's own collection imported the root.
HARNESS_NAME = "comfyui_zstar"


def test_root_init_not_imported_by_pytest():
    root_init = ROOT / "__init__.py"
    loaded = [name for name, mod in list(sys.modules.items())
              if getattr(mod, "__file__", None) and Path(mod.__file__).resolve() == root_init]
    assert [name for name in loaded if name != HARNESS_NAME] == [], f"pytest imported the ComfyUI entry point as {loaded}"


def test_core_imports_without_comfyui():
    code = (
        "import sys, zstar_attention\n"
        "bad = [m for m in sys.modules if m == 'comfy' or m.startswith(('comfy.', 'comfy_api'))]\n"
        "assert not bad, bad\n"
        "from zstar_attention import reweighted_attention, ZStarError, PAPER_PRESET\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(ROOT / "tests"))
