"""Wall-clock helpers: side-by-side (interleaved) repetitions, robust to a noisy machine."""
from __future__ import annotations

import statistics
import time

import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    """(seconds, result) of one call, synchronised on CUDA."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def interleaved(fns: dict, reps: int, device="cpu") -> dict:
    """{name: [seconds per repetition]}: round r runs every fn once, in order, so load
    changes on the machine hit all of them alike."""
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn, device)[0])
    return times


def best(ts) -> float:
    return min(ts)


def median(ts) -> float:
    return statistics.median(ts)
