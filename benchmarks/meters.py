"""The meters: interleaved timing rounds, the map arithmetic alone, and the peak extra memory of
one call (CPU RSS high-water in a fresh subprocess, or CUDA ``max_memory_allocated``)."""

from __future__ import annotations

import ctypes
import gc
import json
import math
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.cases import Case
from benchmarks.contenders import FLOOR, Implementation
from benchmarks.metric_cost import MetricEvaluation
from benchmarks.report import Row


def arithmetic_ms(
    impl: Implementation, case: Case, activation: Tensor, gradient: Tensor, repeats: int
) -> float:
    """Median milliseconds of the map arithmetic alone (no pass), after two warm-up calls.

    It is small next to the floor, so it is measured apart, many times: what the implementation
    adds to the floor, free of the noise of the full calls.
    """
    assert impl.arithmetic is not None
    times = []
    for number in range(repeats + 2):
        synchronize(activation.device)
        start = time.perf_counter()
        impl.arithmetic(case, activation, gradient)
        synchronize(activation.device)
        if number >= 2:
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def interquartile_range(values: Sequence[float]) -> float:
    """Q3 - Q1 (0 for a single value): how much the rounds disagree."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clean_up(case: Case) -> None:
    """Drop what a call may leave behind (pytorch-grad-cam leaves parameter gradients)."""
    case.model.zero_grad(set_to_none=True)
    gc.collect()


def time_rounds(
    impls: Sequence[Implementation | MetricEvaluation], case: Case, rounds: int, seed: int
) -> dict[str, list[float]]:
    """Milliseconds per call: a warm-up call each, then ``rounds`` rounds in shuffled order."""
    device = case.inputs.device
    order = list(impls)
    for impl in order:
        impl.run(case)
        clean_up(case)
    times: dict[str, list[float]] = {impl.name: [] for impl in impls}
    rng = random.Random(seed)
    for number in range(rounds):
        progress(f"timing: round {number + 1} of {rounds}")
        rng.shuffle(order)
        for impl in order:
            synchronize(device)
            gc.disable()  # a collection would land in whichever call happens to trigger it
            start = time.perf_counter()
            impl.run(case)
            synchronize(device)
            times[impl.name].append(1e3 * (time.perf_counter() - start))
            gc.enable()
            clean_up(case)
    return times


def record_times(rows: Iterable[Row], times: dict[str, list[float]]) -> float:
    """Each row's times, their median, their interquartile range in % of it and its ratio to
    the floor's median from the same rounds; returns the floor's median."""
    floor_ms = statistics.median(times[FLOOR])
    for row in rows:
        row.times_ms = times[row.name]
        row.median_ms = statistics.median(row.times_ms)
        row.iqr_pct = 100 * interquartile_range(row.times_ms) / row.median_ms
        row.ratio_to_floor = row.median_ms / floor_ms
    return floor_ms


def rss_available() -> bool:
    """Whether this system exposes the RSS counters the CPU memory column needs (Linux)."""
    return Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()


def proc_memory_kib(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of a process in KiB, from
    ``/proc/PID/status``; empty if the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    found = re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)
    return {key: int(value) for key, value in found}


def return_freed_memory_to_the_os() -> None:
    """Make glibc serve every block over 64 KiB by mmap, so a freed tensor leaves RSS at once.

    By default glibc raises its mmap threshold after large frees and keeps freed blocks in the
    heap, where a later call would reuse them without any RSS growth. Called before anything
    large is allocated; ``malloc_trim`` then hands back what the heap still holds.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: RSS peaks may then be underestimated
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024)
    libc.malloc_trim(0)


def peak_extra_mib(impl: Implementation, case: Case) -> float:
    """Peak memory of one call over what was in use just before it (after a warm-up call)."""
    device = case.inputs.device
    impl.run(case)  # lazy initialisation (thread pools, kernels) is not the call's cost
    clean_up(case)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = impl.run(case)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return peak / 2**20
    if not rss_available():
        return math.nan
    return_freed_memory_to_the_os()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset the RSS high-water mark (VmHWM) to the current RSS
    before = proc_memory_kib()["VmRSS"]
    result = impl.run(case)
    peak = proc_memory_kib()["VmHWM"] - before
    del result
    return peak / 1024


def peak_extra_mib_isolated(impl_name: str, argv: Sequence[str]) -> float:
    """:func:`peak_extra_mib` in a fresh interpreter, so no earlier call shapes the heap."""
    command = [sys.executable, "-m", "benchmarks.run", *argv, "--memory-of", impl_name]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run of {impl_name!r} failed:\n{done.stderr}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_extra_mib"])


__all__ = [
    "arithmetic_ms",
    "clean_up",
    "interquartile_range",
    "peak_extra_mib",
    "peak_extra_mib_isolated",
    "proc_memory_kib",
    "progress",
    "record_times",
    "return_freed_memory_to_the_os",
    "rss_available",
    "synchronize",
    "time_rounds",
]
