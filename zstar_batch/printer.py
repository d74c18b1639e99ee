"""Output lines shared by the worker threads: whole lines, progress and problems kept apart."""
from __future__ import annotations

import sys
import threading


class Printer:
    """Thread-safe lines: progress on stdout (silenced by --quiet), problems on stderr."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.lock = threading.Lock()

    def __call__(self, text: str, force: bool = False):
        if self.quiet and not force:
            return
        with self.lock:
            print(text, flush=True)

    def error(self, text: str):
        with self.lock:
            print(text, file=sys.stderr, flush=True)
