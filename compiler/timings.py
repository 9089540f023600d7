"""Compile time by phase: timed where the work happens, reported per kernel (`compile_report`).

The phases, in pipeline order:

    trace     running the user's function on tracers (a train step's trace also runs the
              loss's reverse mode and passes, which are inlined into it)
    autodiff  reverse mode, and the split into forward_save and backward
    passes    simplification, CSE, DCE, inlining custom rules, verification
    codegen   generating a kernel's source, writing its cache file and importing it
    numba     numba compiling a kernel, or loading its machine code from numba's cache

Whoever does the work owns the clock: a specialization times its trace and the
graphs of each kernel kind, a numba kernel its code generation and compilation.
Nothing is process-wide, so compilations in other threads never mix their figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PHASES = ("trace", "autodiff", "passes", "codegen", "numba")


class PhaseTimes:
    """Seconds per phase, summed over every piece of work timed into it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as part of phase `name` (time spent in a failed body counts too)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        if name not in PHASES:
            raise ValueError(f"unknown compile phase {name!r}: one of {PHASES}")
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds


@dataclass(frozen=True)
class NumbaCompile:
    """One function of a kernel's module made ready by numba."""

    seconds: float
    cache_hit: bool  # nothing compiled: numba's on-disk cache (or this process) had it


@dataclass
class KernelBuild:
    """What building one kernel module cost: code generation (and loading the module), and
    numba's work per function compiled from it, in the order they were compiled."""

    times: PhaseTimes = field(default_factory=PhaseTimes)
    lines: int = 0  # of generated source
    compiles: dict[str, NumbaCompile] = field(default_factory=dict)


@dataclass(frozen=True)
class KernelReport:
    """One kernel: seconds per phase, lines of generated source, and whether numba loaded it
    from its cache (`lines` and `cache_hit` are None where nothing was generated or compiled:
    the interpreter backend)."""

    kind: str
    seconds: dict[str, float]
    lines: int | None = None
    cache_hit: bool | None = None

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def to_json(self) -> dict:
        return {"kind": self.kind, "seconds": self.seconds, "total_s": self.total,
                "lines": self.lines, "cache_hit": self.cache_hit}


def kernel_report(kind: str, times: Iterable[PhaseTimes], lines: int | None = None,
                  compiles: Iterable[NumbaCompile] = ()) -> KernelReport:
    """A kernel's report from the clocks of the work that built it and numba's compilations."""
    seconds: dict[str, float] = {}
    for clock in times:
        for name, s in clock.seconds.items():
            seconds[name] = seconds.get(name, 0.0) + s
    compiles = list(compiles)
    if compiles:
        seconds["numba"] = seconds.get("numba", 0.0) + sum(c.seconds for c in compiles)
    cache_hit = all(c.cache_hit for c in compiles) if compiles else None
    ordered = {name: seconds[name] for name in PHASES if name in seconds}
    return KernelReport(kind, ordered, lines, cache_hit)


@dataclass(frozen=True)
class CompileReport:
    """Where one specialization's compile time went: its trace, then each kernel built so
    far. `str(report)` is a table; `seconds`, `total`, `lines` and `kernels[kind]` are the
    figures."""

    name: str
    trace: KernelReport
    kernels: dict[str, KernelReport]  # per kind, in the order they were built

    @property
    def rows(self) -> list[KernelReport]:
        return [self.trace, *self.kernels.values()]

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per phase over the trace and every kernel."""
        return {name: sum(r.seconds.get(name, 0.0) for r in self.rows) for name in PHASES}

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def lines(self) -> int:
        """Generated lines over every kernel."""
        return sum(r.lines or 0 for r in self.kernels.values())

    def to_json(self) -> dict:
        return {"name": self.name, "seconds": self.seconds, "total_s": self.total,
                "lines": self.lines, "trace": self.trace.to_json(),
                "kernels": {kind: r.to_json() for kind, r in self.kernels.items()}}

    def __str__(self) -> str:
        header = ["", *PHASES, "total", "lines", "numba cache"]
        rows = [header]
        for r in self.rows:
            rows.append([r.kind, *(_seconds(r.seconds.get(p)) for p in PHASES), _seconds(r.total),
                         "" if r.lines is None else str(r.lines), _cache(r.cache_hit)])
        generated = any(r.lines is not None for r in self.kernels.values())
        rows.append(["total", *(_seconds(self.seconds[p]) for p in PHASES),
                     _seconds(self.total), str(self.lines) if generated else "", ""])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"compile report of {self.name} (seconds)"]
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(w) for cell, w in zip(row[1:-1], widths[1:-1])]
            cells.append(row[-1].ljust(widths[-1]))
            lines.append("  " + "  ".join(cells).rstrip())
        return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _cache(hit: bool | None) -> str:
    return "" if hit is None else "cached" if hit else "compiled"
