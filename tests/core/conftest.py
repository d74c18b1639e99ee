"""The core tier's helpers (joint_reference.py) importable by name, as tests/comfy's are."""
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.append(HERE)
