"""Time and peak memory of work on a device, for the benchmarks (``scripts/bench/``). CUDA runs
asynchronously, so the device is synchronized before the clock starts and before it stops."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str | torch.device) -> None:
    """Waits for the work queued on ``device`` (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: str | torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak_memory(device: str | torch.device) -> None:
    """Starts a new CUDA peak (the CPU's resident peak cannot be reset)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: str | torch.device) -> float:
    """Peak CUDA memory allocated since the last reset, or on the CPU this process's peak resident memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
