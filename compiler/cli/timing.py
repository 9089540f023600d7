"""Wall-clock timing of compiled calls: the first call (which compiles), then the median of
samples after warm-up, each sample averaging enough calls to last a couple of milliseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

SAMPLE_SECONDS = 2e-3


@dataclass(frozen=True)
class Timing:
    first: float  # seconds, including tracing and compilation
    median: float  # seconds per call
    best: float
    samples: int
    calls_per_sample: int


def measure(call: Callable[[], object], repeat: int) -> Timing:
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    call()  # warm-up: caches, allocator, branch predictors
    start = time.perf_counter()
    call()
    once = time.perf_counter() - start
    number = max(1, min(100_000, int(SAMPLE_SECONDS / max(once, 1e-9))))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return Timing(first, statistics.median(samples), min(samples), repeat, number)


def format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
