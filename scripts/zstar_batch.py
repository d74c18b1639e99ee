#!/usr/bin/env python3
"""Z* batch runner, the script entry: the same command line as `python -m zstar_batch` (run from
the pack's folder), for callers that name this file, e.g.

    python custom_nodes/comfyui-zstar/scripts/zstar_batch.py ~/ComfyUI \\
        --contents photos/ --styles paintings/ --out results/

The runner itself is the standard-library package zstar_batch/ next to this folder.
"""
import sys
from pathlib import Path

# The pack's folder first: this file's own folder (sys.path[0]) holds a zstar_batch.py too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zstar_batch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
