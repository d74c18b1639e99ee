"""`python -m zstar_batch ...` from the pack's folder."""
import sys

from .cli import main

sys.exit(main(prog="python -m zstar_batch"))
