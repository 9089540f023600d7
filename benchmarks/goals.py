"""The goals of BENCHMARKS.md, each a rule over one run's results: met, MISSED, or n/a.

Every goal is a ratio between figures of the same run, except W6's and W7's, which
BENCHMARKS.md states in seconds and bytes, and two of W9's from its issue (the W1 runtime
step in µs, the optimizer's µs per parameter). A W7 row stopped at its time or memory
limit misses every goal it is judged by; a row that is not available is n/a.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import (
    w1_mlp_step,
    w2_mae,
    w4_mlp_large,
    w5_logreg_loop,
    w8_transformer_cnn,
    w10_data_parallel,
)
from benchmarks import w7_compile_scaling as w7
from benchmarks import w9_runtime_step as w9
from benchmarks.harness import (
    GRADFUSE,
    JAX,
    NUMBA,
    PEERS,
    TORCH,
    TORCH_COMPILE,
    UNITS,
    WorkloadResult,
    format_number,
)

Results = dict[str, WorkloadResult]


@dataclass(frozen=True)
class Verdict:
    id: str
    goal: str
    status: str  # "met", "MISSED", "reported" (a figure to show, not a test), "n/a" (not measured)
    figures: str

    def to_json(self) -> dict:
        return {"id": self.id, "goal": self.goal, "status": self.status, "figures": self.figures}


class Missing(LookupError):
    """A figure the goal needs was not measured."""


def _seconds(results: Results, workload: str, case: str, name: str) -> float:
    result = results.get(workload)
    found = result.case(case) if result is not None else None
    seconds = found.seconds(name) if found is not None else None
    if seconds is None:
        raise Missing(f"no {name} figure for {workload} {case}")
    return seconds


def _format(seconds: float, unit: str) -> str:
    return f"{format_number(seconds * UNITS[unit])} {unit}"


def within(workload: str, case: str, unit: str, of: str, factor: float) -> Callable:
    """gradfuse's time <= factor x the time of `of`."""
    def rule(results: Results) -> tuple[bool, str]:
        mine, theirs = (_seconds(results, workload, case, n) for n in (GRADFUSE, of))
        return mine <= factor * theirs, (f"gradfuse {_format(mine, unit)} vs {of} "
                                         f"{_format(theirs, unit)}: {mine / theirs:.2f}x")
    return rule


def row_within(workload: str, case: str, unit: str, row: str, of: str, factor: float
               ) -> Callable:
    """Row `row`'s time <= factor x the time of row `of`."""
    def rule(results: Results) -> tuple[bool, str]:
        mine, theirs = (_seconds(results, workload, case, n) for n in (row, of))
        return mine <= factor * theirs, (f"{row} {_format(mine, unit)} vs {of} "
                                         f"{_format(theirs, unit)}: {mine / theirs:.2f}x")
    return rule


def time_at_most(workload: str, case: str, unit: str, limit: float, per: int = 1) -> Callable:
    """gradfuse's time (divided by `per`, e.g. per parameter) <= `limit` in `unit`."""
    def rule(results: Results) -> tuple[bool, str]:
        mine = _seconds(results, workload, case, GRADFUSE) / per
        each = f" per parameter ({per} parameters)" if per > 1 else ""
        return mine * UNITS[unit] <= limit, (f"gradfuse {_format(mine, unit)}{each} "
                                             f"(limit {format_number(limit)} {unit})")
    return rule


def faster_than(workload: str, case: str, unit: str, peers: tuple[str, ...],
                factor: float = 1.0) -> Callable:
    """gradfuse at least `factor` times faster than each of `peers` (the measured ones)."""
    def rule(results: Results) -> tuple[bool, str]:
        mine = _seconds(results, workload, case, GRADFUSE)
        theirs = {}
        for peer in peers:
            try:
                theirs[peer] = _seconds(results, workload, case, peer)
            except Missing:
                pass
        if not theirs:
            raise Missing(f"no peer measured for {workload} {case}")
        speedups = ", ".join(f"{p} {_format(t, unit)} ({t / mine:.1f}x)"
                             for p, t in theirs.items())
        met = all(t >= factor * mine for t in theirs.values())
        return met, f"gradfuse {_format(mine, unit)}; {speedups}"
    return rule


def fastest_peer(workload: str, case: str, unit: str, factor: float) -> Callable:
    """gradfuse at least `factor` times faster than the fastest measured peer."""
    def rule(results: Results) -> tuple[bool, str]:
        mine = _seconds(results, workload, case, GRADFUSE)
        measured = {}
        for peer in PEERS:
            try:
                measured[peer] = _seconds(results, workload, case, peer)
            except Missing:
                pass
        if not measured:
            raise Missing(f"no peer measured for {workload} {case}")
        peer, best = min(measured.items(), key=lambda item: item[1])
        return best >= factor * mine, (f"gradfuse {_format(mine, unit)}, fastest peer {peer} "
                                       f"{_format(best, unit)}: {best / mine:.1f}x")
    return rule


def every_size(peers: tuple[str, ...]) -> Callable:
    """W3: faster than each peer at every N that ran."""
    def rule(results: Results) -> tuple[bool, str]:
        result = results.get("W3")
        if result is None or not result.cases:
            raise Missing("W3 did not run")
        verdicts = [faster_than("W3", c.label, "ms", peers)(results) for c in result.cases]
        figures = "; ".join(f"{c.label}: {v[1]}" for c, v in zip(result.cases, verdicts))
        return all(v[0] for v in verdicts), figures
    return rule


def bandwidth(results: Results) -> tuple[None, str]:
    """W3: effective GB/s of gradfuse against the copy bandwidth (reported, not judged)."""
    result = results.get("W3")
    if result is None or not result.cases:
        raise Missing("W3 did not run")
    copy = result.info.get("copy bandwidth GB/s")
    parts = [f"{c.label}: {c.extra[GRADFUSE]['GB/s']:.1f} GB/s" for c in result.cases
             if GRADFUSE in c.extra]
    return None, f"gradfuse {', '.join(parts)}; NumPy copy {copy:.1f} GB/s"


def seconds_at_most(case: str, limit: float) -> Callable:
    def rule(results: Results) -> tuple[bool, str]:
        seconds = _seconds(results, "W6", case, GRADFUSE)
        return seconds <= limit, f"gradfuse {seconds:.2f} s (limit {limit} s)"
    return rule


# --- W7: compile scaling ------------------------------------------------------------------
@dataclass(frozen=True)
class FirstResult:
    """A W7 row's seconds to its first result, or the limit it was stopped at."""

    seconds: float  # the figure, or a lower bound when `stopped`
    stopped: str | None  # why it has no figure: "timeout >120 s", ...

    def __str__(self) -> str:
        return self.stopped or f"{self.seconds:.2f} s"


def _w7_first(results: Results, label: str, row: str) -> FirstResult:
    """Missing when the row did not run or is not available here."""
    result = results.get(w7.ID)
    case = result.case(label) if result is not None else None
    if case is None:
        raise Missing(f"no {label} in {w7.ID}")
    unfinished = case.unfinished.get(row)
    if unfinished is not None:
        if unfinished.at_least is None:
            raise Missing(f"{row} {label}: {unfinished.reason}")
        return FirstResult(unfinished.at_least, unfinished.reason)
    seconds = case.seconds(row)
    if seconds is None:
        raise Missing(f"no {row} figure for {w7.ID} {label}")
    return FirstResult(seconds, None)


def first_result_at_most(label: str, row: str, limit: float) -> Callable:
    def rule(results: Results) -> tuple[bool, str]:
        first = _w7_first(results, label, row)
        return first.stopped is None and first.seconds <= limit, \
            f"{row} {first} (limit {limit:g} s)"
    return rule


def per_layer(small: int, large: int, limit: float) -> Callable:
    """The deep net's first value_and_grad grows by at most `limit` seconds per layer from
    L=`small` to L=`large` (a stopped L=`large` gives a lower bound, which misses)."""
    def rule(results: Results) -> tuple[bool, str]:
        start = _w7_first(results, w7.case_label("deep", small), GRADFUSE)
        end = _w7_first(results, w7.case_label("deep", large), GRADFUSE)
        if start.stopped:
            raise Missing(f"deep net L={small} did not finish: {start}")
        slope = (end.seconds - start.seconds) / (large - small)
        shown = f"{'> ' if end.stopped else ''}{slope * 1e3:.0f} ms per layer"
        return end.stopped is None and slope <= limit, (
            f"{shown} (L={small} {start}, L={large} {end}; limit {limit * 1e3:g} ms)")
    return rule


def peak_memory(limit_mb: float) -> Callable:
    """Every gradfuse configuration of W7 peaks below `limit_mb` of resident memory (those
    stopped at a limit with what they had reached)."""
    def rule(results: Results) -> tuple[bool, str]:
        result = results.get(w7.ID)
        peaks = {}
        for case in result.cases if result is not None else ():
            for row, extra in case.extra.items():
                if row.startswith(GRADFUSE) and "peak MB" in extra:
                    peaks[f"{row} {case.label}"] = extra["peak MB"]
        if not peaks:
            raise Missing(f"no gradfuse configuration of {w7.ID} ran")
        worst = max(peaks, key=peaks.get)
        over = sum(1 for mb in peaks.values() if mb > limit_mb)
        return over == 0, (f"largest {peaks[worst]:,.0f} MB ({worst}); {over} of {len(peaks)} "
                           f"over {limit_mb:,.0f} MB")
    return rule


def steady_not_slower_than_jax(results: Results) -> tuple[bool, str]:
    """In every W7 case, gradfuse's steady time per call <= JAX jit's, loop against loop
    and scan against scan."""
    result = results.get(w7.ID)
    ratios = {}
    for case in result.cases if result is not None else ():
        for mine, theirs in ((GRADFUSE, JAX), (w7.GRADFUSE_SCAN, w7.JAX_SCAN)):
            a, b = case.extra.get(mine, {}), case.extra.get(theirs, {})
            if "steady µs" in a and "steady µs" in b:
                ratios[f"{case.label} ({mine})"] = a["steady µs"] / b["steady µs"]
    if not ratios:
        raise Missing(f"no case of {w7.ID} where gradfuse and JAX both finished")
    worst = max(ratios, key=ratios.get)
    slower = sum(1 for r in ratios.values() if r > 1)
    return slower == 0, (f"worst {ratios[worst]:.2f}x JAX's ({worst}); slower in {slower} of "
                         f"{len(ratios)}")


STEP, LOOP = w1_mlp_step.STEP, w1_mlp_step.LOOP
GOALS: list[tuple[str, str, Callable]] = [
    ("W1", "train step <= 1.3x hand-written numba", within("W1", STEP, "µs", NUMBA, 1.3)),
    ("W1", ">= 40x faster than PyTorch eager", faster_than("W1", STEP, "µs", (TORCH,), 40)),
    ("W1", "1000 steps in a compiled loop faster than JAX fori_loop",
     faster_than("W1", LOOP, "ms", (JAX,))),
    ("W2", "<= 1.5x hand-written numba", within("W2", w2_mae.CASE, "µs", NUMBA, 1.5)),
    ("W2", ">= 4x faster than the fastest peer", fastest_peer("W2", w2_mae.CASE, "µs", 4)),
    ("W3", "faster than JAX and torch.compile at every N", every_size((JAX, TORCH_COMPILE))),
    ("W3", "effective GB/s against measured memory bandwidth", bandwidth),
    ("W4", "<= 1.15x the BLAS floor",
     within("W4", w4_mlp_large.CASE, "ms", w4_mlp_large.BLAS_FLOOR, 1.15)),
    ("W4", "not slower than PyTorch eager", faster_than("W4", w4_mlp_large.CASE, "ms", (TORCH,))),
    ("W5", "compiled loop faster than JAX fori_loop",
     faster_than("W5", w5_logreg_loop.CASE, "ms", (JAX,))),
    ("W6", "W1 cold first call <= 3 s including tracing", seconds_at_most("W1 cold", 3.0)),
    ("W6", "W1 warm-cache first call in a new process <= 0.3 s",
     seconds_at_most("W1 warm", 0.3)),
    ("W7", "deep net L=100: first value_and_grad <= 3 s",
     first_result_at_most(w7.case_label("deep", 100), GRADFUSE, 3.0)),
    ("W7", "deep net L=100: first train_step step <= 5 s",
     first_result_at_most(w7.case_label("deep", 100, w7.TRAIN_STEP), GRADFUSE, 5.0)),
    ("W7", "<= 20 ms per additional identical layer (L=20 -> L=100)", per_layer(20, 100, 0.020)),
    ("W7", "GRU T=200 with scan <= 3 s",
     first_result_at_most(w7.case_label("gru", 200), w7.GRADFUSE_SCAN, 3.0)),
    ("W7", "GRU T=200 as a Python loop <= 10 s",
     first_result_at_most(w7.case_label("gru", 200), GRADFUSE, 10.0)),
    ("W7", "Euler 1000 steps with scan <= 2 s",
     first_result_at_most(w7.case_label("euler", 1000), w7.GRADFUSE_SCAN, 2.0)),
    ("W7", "peak memory while compiling <= 1 GB", peak_memory(1024.0)),
    ("W7", "steady time not slower than JAX jit", steady_not_slower_than_jax),
    ("W8", "transformer block at least as fast as PyTorch eager",
     faster_than("W8", w8_transformer_cnn.TRANSFORMER, "ms", (TORCH,))),
    ("W8", "transformer block within 1.5x of JAX jit",
     within("W8", w8_transformer_cnn.TRANSFORMER, "ms", JAX, 1.5)),
    ("W8", "small CNN faster than PyTorch eager and JAX jit",
     faster_than("W8", w8_transformer_cnn.CNN, "ms", (TORCH, JAX))),
    ("W9", "W1 runtime step <= 3x the fused train_step",
     within("W9", w9.W1_STEP, "µs", w9.TRAIN_STEP, 3.0)),
    ("W9", "W1 runtime step >= 12x faster than PyTorch eager",
     faster_than("W9", w9.W1_STEP, "µs", (TORCH,), 12)),
    ("W9", "W1 runtime step <= 8 µs", time_at_most("W9", w9.W1_STEP, "µs", 8.0)),
    ("W9", "deep net L=100 runtime step <= 0.5x PyTorch eager",
     within("W9", w9.DEEP_STEP, "ms", TORCH, 0.5)),
    ("W9", "optimizer step <= 0.3 µs per parameter (L=100: 200 parameters)",
     time_at_most("W9", w9.OPTIMIZER, "µs", 0.3, per=2 * w9.LAYERS)),
    ("W9", "value_and_grad(params dict) <= 1.5x flat positional arrays",
     within("W9", w9.W1_CALLS, "µs", w9.POSITIONAL, 1.5)),
    ("W9", "value_and_grad with keywords <= 1.5x flat positional arrays",
     row_within("W9", w9.W1_CALLS, "µs", w9.KEYWORDS, w9.POSITIONAL, 1.5)),
    ("W9", "deep net L=100 value_and_grad(list of dicts) <= 1.5x positional arrays",
     within("W9", w9.DEEP_CALLS, "ms", w9.POSITIONAL, 1.5)),
    ("W10", "2 ranks >= 1.7x the throughput of 1 rank (one thread each)",
     w10_data_parallel.throughput),
    ("W10", "all-reduce <= 10% of a step", w10_data_parallel.allreduce_share),
]


def evaluate(results: Results) -> list[Verdict]:
    """A verdict for every goal of the workloads that ran."""
    verdicts = []
    for workload, goal, rule in GOALS:
        if workload not in results:
            continue
        try:
            met, figures = rule(results)
        except Missing as missing:
            verdicts.append(Verdict(workload, goal, "n/a", str(missing)))
            continue
        status = "reported" if met is None else "met" if met else "MISSED"
        verdicts.append(Verdict(workload, goal, status, figures))
    return verdicts
