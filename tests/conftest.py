"""Shared pytest setup for every tier. Never imports ComfyUI.

1. Makes `zstar_attention` importable: the repo root is APPENDED to sys.path (not
   prepended), so a ComfyUI checkout that the comfy tier puts in front of sys.path keeps its
   own top-level `nodes` module ahead of this repo's `nodes/` package.
2. Keeps pytest from importing the repo root's `__init__.py` (ComfyUI's entry point, which
   needs ComfyUI). pytest >= 8 builds its collection tree from the rootdir down and turns any
   directory with an `__init__.py` into a Package node, whose setup imports that file, even
   with --import-mode=importlib. A global plugin (registered here, so it also applies above
   this conftest's directory) collects the root as a plain directory instead.
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


class _RootIsNotAPackage:
    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if Path(path).resolve() == ROOT:
            return pytest.Dir.from_parent(parent, path=Path(path))
        return None


def pytest_configure(config):
    if not config.pluginmanager.has_plugin("zstar-root-is-not-a-package"):
        config.pluginmanager.register(_RootIsNotAPackage(), "zstar-root-is-not-a-package")
