"""Timing and agreement: every implementation must match the float64 reference before it is timed.

A workload case is a list of `Impl`s. `run_case` first runs each one once from
the initial state and compares its loss and gradients with the float64 NumPy
reference (benchmarks/reference.py); any difference beyond float32 rounding
raises `DisagreementError` and no time is reported. Then each row is timed in
turn: after the warm-up (the checking call compiled whatever JIT it uses),
`repeats` batches of `number` calls, each batch preceded by `setup` (which
restores the initial parameters, so training never drifts into another numeric
regime); the median per-call time of the batches is the figure.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GRADFUSE = "gradfuse"
NUMBA = "numba (hand-written)"
NUMPY = "NumPy (hand-written)"
TORCH = "torch eager"
TORCH_COMPILE = "torch.compile"
JAX = "JAX jit"
PEERS = (TORCH, TORCH_COMPILE, JAX)
OPTIONAL_ROWS = frozenset((NUMPY, *PEERS))
UNITS = {"s": 1.0, "ms": 1e3, "µs": 1e6}
SETTLE = 0.2  # seconds of sleep before timing a row: other libraries' threads go idle



def format_number(value: float) -> str:
    """Three significant digits, or whole numbers with thousands separators from 1000 up."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


Outcome = dict[str, Any]  # "loss" and one gradient per parameter, as arrays or scalars


class PeerMissing(RuntimeError):
    """A peer's library is not installed (or cannot work here): its rows become a note."""


class DisagreementError(AssertionError):
    """An implementation's loss or gradients differ from the reference: its time means nothing."""


@dataclass(frozen=True)
class Config:
    """What to run and how long to time it."""

    quick: bool = False
    peers: frozenset[str] = OPTIONAL_ROWS  # optional rows (gradfuse, numba always run)
    repeats: int = 15  # many short batches: their median resists a noisy shared machine
    min_time: float = 0.05  # seconds per timed batch of calls
    slow_repeats: int = 3  # for rows that take seconds per call
    subprocess_repeats: int = 3  # warm first calls measured in fresh processes (W6)
    compile_timeout: float = 120.0  # seconds a W7 configuration may take in its process
    compile_memory_gb: float = 4.0  # resident memory at which a W7 process is stopped

    @classmethod
    def quick_mode(cls, peers: frozenset[str] = OPTIONAL_ROWS) -> Config:
        """Fewer and shorter repeats, and smaller sizes where a workload has several."""
        return cls(quick=True, peers=peers, repeats=5, min_time=0.02, slow_repeats=1,
                   subprocess_repeats=1, compile_timeout=60.0)

    def wants(self, name: str) -> bool:
        """gradfuse's and the hand-written numba rows always run; the others when selected."""
        return name.startswith((GRADFUSE, "numba")) or name in self.peers


def _nothing() -> None:
    return None


@dataclass
class Impl:
    """One implementation of a case: `call` is what is timed, `read(call())` what is checked.

    `read` is None for rows that compute only part of the work (W4's BLAS floor).
    A peer whose library fails (torch.compile without a compiler, say) is skipped
    with a note; gradfuse or the hand-written kernels failing stops the run.
    """

    name: str
    call: Callable[[], Any]
    read: Callable[[Any], Outcome] | None
    setup: Callable[[], None] = _nothing
    peer: bool = False
    number: int | None = None  # calls per timed batch; None calibrates to Config.min_time
    slow: bool = False  # seconds per call (Python training loops): Config.slow_repeats
    subject: Any = None  # the object being timed (a TrainStep ...), for benchmarks/breakdown.py


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol + rtol*|expected|, with atol = scale*max|expected| + slack.

    The scale term keeps tiny entries of a gradient (where float32 cancellation
    loses all relative accuracy) from failing the check; `slack` covers error that
    does not scale with the value, such as a gradient read back from a float32
    parameter update (see `sgd_gradients`).
    """

    rtol: float = 1e-4
    scale: float = 1e-4
    slack: float = 0.0

    def atol(self, expected: np.ndarray) -> float:
        peak = float(np.max(np.abs(expected))) if expected.size else 0.0
        return self.scale * peak + self.slack


def check_agreement(where: str, name: str, outcome: Outcome, reference: Outcome,
                    tolerances: dict[str, Tolerance] | None = None) -> None:
    """Raise DisagreementError unless `outcome` matches `reference` key by key."""
    tolerances = tolerances or {}
    for key, expected in reference.items():
        if key not in outcome:
            raise DisagreementError(f"{where}: {name} gives no '{key}'")
        expected = np.asarray(expected, dtype=np.float64)
        actual = np.asarray(outcome[key], dtype=np.float64)
        if actual.shape != expected.shape:
            raise DisagreementError(f"{where}: {name}'s '{key}' has shape {actual.shape}, "
                                    f"the reference {expected.shape}")
        tol = tolerances.get(key, Tolerance())
        error = np.abs(actual - expected)
        bound = tol.atol(expected) + tol.rtol * np.abs(expected)
        if not np.all(error <= bound):  # also catches NaN
            excess = np.where(np.isfinite(error), error - bound, np.inf)
            worst = int(np.argmax(excess))
            raise DisagreementError(
                f"{where}: {name} disagrees with the float64 reference on '{key}': at flat "
                f"index {worst} got {actual.flat[worst]:.8g}, expected "
                f"{expected.flat[worst]:.8g} (|error| {error.flat[worst]:.3g}, allowed "
                f"{bound.flat[worst]:.3g})")


def sgd_gradients(before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                  lr: float) -> dict[str, np.ndarray]:
    """The gradients that plain SGD applied: (before - after) / lr, computed in float64."""
    return {k: (before[k].astype(np.float64) - np.asarray(after[k], np.float64)) / lr
            for k in before}


def sgd_tolerance(before: dict[str, np.ndarray], lr: float, rtol: float = 1e-3) -> Tolerance:
    """Tolerance for `sgd_gradients` of float32 parameters: the new value is rounded to
    float32, so the gradient read back carries up to ulp(|p|)/lr of error."""
    peak = max(float(np.max(np.abs(p))) for p in before.values())
    return Tolerance(rtol=rtol, scale=rtol, slack=2 * np.finfo(np.float32).eps * peak / lr)


# --- timing ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median over repeats of a batch's mean, and the best batch."""

    median: float
    best: float
    number: int
    repeats: int

    def to_json(self) -> dict:
        return {"median_s": self.median, "best_s": self.best, "number": self.number,
                "repeats": self.repeats}


def _batch(call: Callable, setup: Callable, number: int) -> float:
    """Mean seconds per call over `number` calls, after `setup`; the garbage collector is off
    while timing, as in timeit (a collection would land on whichever row made the garbage)."""
    setup()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            call()
        return (time.perf_counter() - start) / number
    finally:
        gc.enable()


def calibrate(call: Callable, setup: Callable, min_time: float, max_number: int) -> int:
    """Calls per batch so that a batch lasts about `min_time` (as timeit's autorange)."""
    number = 1
    while True:
        elapsed = _batch(call, setup, number) * number
        if elapsed >= min_time / 4 or number >= max_number:
            break
        number *= 4
    per_call = elapsed / number
    return max(1, min(max_number, math.ceil(min_time / max(per_call, 1e-9))))


def time_rows(impls: list[Impl], config: Config, max_number: int = 2000,
              alternate: bool = False, pair: tuple[str, ...] = (GRADFUSE, NUMBA)
              ) -> dict[str, Timing]:
    """Time each row: a pause, an untimed warm-up batch, then the timed batches.

    Rows of different libraries run one after the other, not interleaved: OpenMP,
    OpenBLAS (NumPy's copy, which gradfuse calls, and SciPy's, which numba's np.dot
    calls) and XLA's Eigen pool leave their worker threads spinning for up to ~0.1 s
    after their last parallel region, and on two cores that slows whichever row runs
    next by up to 10x (seen when interleaving all rows). The pause and the warm-up
    batch absorb it. With `alternate` (single-threaded cases: W1, W2, W5), the batches
    of gradfuse and the hand-written numba kernel, the two rows whose ratio the goals
    are, alternate instead: a ratio of two rows timed seconds apart on this shared
    machine moved by up to 1.6x between runs, timed in alternation it holds. (In W4
    the two call different OpenBLAS copies, and alternating them made gradfuse's
    step 3x slower.) `pair` names the rows that alternate, where a goal is another
    ratio (W9: the runtime's step and the fused train step). Rows with `read`
    already ran once (the agreement check), so their JIT compilation is done; the
    others get a first call here.
    """
    paired = [impl for impl in impls if alternate and impl.name in pair]
    timings = {}
    for impl in impls:
        if impl in paired:
            if impl is paired[0]:
                timings.update(_time_alternately(paired, config, max_number))
            continue
        timings.update(_time_alternately([impl], config, max_number))
    return {impl.name: timings[impl.name] for impl in impls}


# Calls made before calibrating a row: the runtime's paths settle over the first few calls
# (the kernel that stores into .grad is built, or read from the disk cache in about 20 ms,
# on the second backward(); the optimizer's settled step on a later one). Calibrated on
# such a call, W9's runtime step once got batches of 4 calls, each starting after `setup`.
WARM_CALLS = 5


def _time_alternately(impls: list[Impl], config: Config, max_number: int) -> dict[str, Timing]:
    """Warm up each of `impls`, then time their batches in turn, round by round."""
    time.sleep(SETTLE)
    numbers = []
    for impl in impls:
        if impl.read is None or not impl.slow:  # warm: no compile or first-use cost calibrated
            impl.setup()
            for _ in range(1 if impl.slow else WARM_CALLS):
                impl.call()
        number = impl.number
        if number is None:
            number = calibrate(impl.call, impl.setup, config.min_time, max_number)
        if not impl.slow:
            _batch(impl.call, impl.setup, number)  # untimed: caches, thread pools, allocator
        numbers.append(number)
    repeats = max(config.slow_repeats if impl.slow else config.repeats for impl in impls)
    samples: list[list[float]] = [[] for _ in impls]
    for _ in range(repeats):
        for impl, number, found in zip(impls, numbers, samples):
            found.append(_batch(impl.call, impl.setup, number))
    return {impl.name: Timing(statistics.median(found), min(found), number, repeats)
            for impl, number, found in zip(impls, numbers, samples)}


# --- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Unfinished:
    """A row without a figure: stopped at a limit (`at_least`: its time is at least that many
    seconds, so any goal under it is missed), or not available here (`at_least` None)."""

    reason: str  # shown in place of the figure: "timeout >120 s", "not available: ..."
    at_least: float | None = None

    def to_json(self) -> dict:
        return {"reason": self.reason, "at_least_s": self.at_least}


@dataclass
class Case:
    """One measured quantity of a workload ('train step', 'N=1e6'), per implementation."""

    label: str
    unit: str
    times: dict[str, Timing] = field(default_factory=dict)
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # e.g. effective GB/s
    unchecked: list[str] = field(default_factory=list)  # rows that compute only part of the work
    unfinished: dict[str, Unfinished] = field(default_factory=dict)  # rows with no figure

    def seconds(self, name: str) -> float | None:
        timing = self.times.get(name)
        return None if timing is None else timing.median

    def to_json(self) -> dict:
        return {"label": self.label, "unit": self.unit,
                "times": {k: t.to_json() for k, t in self.times.items()},
                "extra": self.extra, "unchecked": self.unchecked,
                "unfinished": {k: u.to_json() for k, u in self.unfinished.items()}}


@dataclass
class WorkloadResult:
    """A workload's cases, notes (skipped peers, caveats) and reference figures."""

    id: str
    title: str
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def case(self, label: str) -> Case | None:
        return next((c for c in self.cases if c.label == label), None)

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "cases": [c.to_json() for c in self.cases],
                "notes": self.notes, "info": self.info}


def run_case(result: WorkloadResult, label: str, unit: str, impls: list[Impl],
             reference: Outcome, config: Config,
             tolerances: dict[str, Tolerance] | None = None,
             max_number: int = 2000, alternate: bool = False,
             pair: tuple[str, ...] = (GRADFUSE, NUMBA)) -> Case:
    """Check every implementation against `reference`, then time them (`alternate`: see
    time_rows); appends the Case."""
    where = f"{result.id} {label}"
    checked = []
    for impl in impls:
        try:
            if impl.read is not None:
                impl.setup()
                outcome = impl.read(impl.call())
                check_agreement(where, impl.name, outcome, reference, tolerances)
        except DisagreementError:
            raise
        except Exception as err:  # noqa: BLE001 -- a peer's own failure is a note, not ours
            if not impl.peer:
                raise
            result.notes.append(f"{impl.name} skipped in {label}: {type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}")
            continue
        checked.append(impl)
    case = Case(label, unit, time_rows(checked, config, max_number, alternate, pair),
                unchecked=[impl.name for impl in checked if impl.read is None])
    result.cases.append(case)
    return case


def build_rows(config: Config, rows: dict[str, Callable[[], Impl]],
               notes: list[str]) -> list[Impl]:
    """The rows `config` asks for; a peer whose library is missing becomes a note instead."""
    impls = []
    for name, build in rows.items():
        if not config.wants(name):
            continue
        try:
            impls.append(build())
        except PeerMissing as missing:
            note = f"{name} skipped: {missing}"
            if note not in notes:
                notes.append(note)
    return impls
