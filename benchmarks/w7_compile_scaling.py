"""W7: compile scaling. Each configuration in a fresh process with empty caches, under limits.

A configuration is one program (benchmarks/w7_programs.py) at one size, written
one way (a Python loop, or scan), run by one implementation (gradfuse, JAX jit)
for one measure (value_and_grad, or for the deep net also a train step). Its
process (`python -m benchmarks.w7_compile_scaling --child ... --cache DIR`) points
GRADFUSE_CACHE_DIR and NUMBA_CACHE_DIR into an empty directory (JAX's persistent
cache stays off),
imports its libraries, builds the arguments, then times the first call: for
gradfuse tracing, autodiff, passes, code generation, numba's compilation and the
call itself. It reads its peak resident memory (VmHWM: `_own_peak_mb`) right
after, checks the loss and gradients against the float64 NumPy reference, takes
gradfuse's `compile_report()` (generated lines, numba's seconds), then times
steady calls as the other workloads do (benchmarks/harness.py) and prints JSON.

The parent stops a process that runs longer than `Config.compile_timeout` or
grows beyond `Config.compile_memory_gb` of resident memory (a GRU unrolled over
50 steps once took 683 s and 2.9 GB) and reports "timeout >120 s" instead of a
figure, with the peak memory reached by then. Variants written with
`compiler.scan` are "not available" until it exists.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import (
    GRADFUSE,
    JAX,
    Case,
    Config,
    DisagreementError,
    Impl,
    Timing,
    Tolerance,
    Unfinished,
    WorkloadResult,
    check_agreement,
    time_rows,
)

ID = "W7"
TITLE = "compile scaling, float64, cold cache, a fresh process each: deep net, GRU, Euler"
GRADFUSE_SCAN = "gradfuse scan"
JAX_SCAN = "JAX jit scan"
ROWS = {("gradfuse", "loop"): GRADFUSE, ("gradfuse", "scan"): GRADFUSE_SCAN,
        ("jax", "loop"): JAX, ("jax", "scan"): JAX_SCAN}
SIZES = {"deep": (5, 20, 100), "gru": (20, 50, 200), "euler": (100, 1000)}
QUICK_SIZES = {"deep": (5, 20), "gru": (20,), "euler": (100,)}
VALUE_AND_GRAD, TRAIN_STEP = "value_and_grad", "train step"
# float64 throughout: differences in the order of operations stay near 1e-15 relative
AGREEMENT = Tolerance(rtol=1e-8, scale=1e-8)
ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.2


def case_label(program: str, size: int, measure: str = VALUE_AND_GRAD) -> str:
    if program == "deep":
        return f"deep net L={size}: {measure}"
    return f"GRU T={size}" if program == "gru" else f"Euler {size} steps"


@dataclass(frozen=True)
class Configuration:
    """One fresh process's work."""

    program: str  # "deep", "gru", "euler"
    size: int  # layers, time steps, Euler steps
    variant: str  # "loop" (a Python loop) or "scan"
    impl: str  # "gradfuse" or "jax"
    measure: str = VALUE_AND_GRAD  # or TRAIN_STEP (the deep net)

    @property
    def row(self) -> str:
        return ROWS[self.impl, self.variant]

    @property
    def label(self) -> str:
        return case_label(self.program, self.size, self.measure)

    def argv(self) -> list[str]:
        return [self.program, str(self.size), self.variant, self.impl, self.measure]


def plan(config: Config) -> list[Configuration]:
    """Every configuration `config` asks for, smallest programs first."""
    impls = ["gradfuse"] + (["jax"] if config.wants(JAX) else [])
    configurations = []
    for program, sizes in (QUICK_SIZES if config.quick else SIZES).items():
        measures = (VALUE_AND_GRAD, TRAIN_STEP) if program == "deep" else (VALUE_AND_GRAD,)
        variants = ("loop",) if program == "deep" else ("loop", "scan")
        for size in sizes:
            for measure in measures:
                for variant in variants:
                    configurations += [Configuration(program, size, variant, impl, measure)
                                       for impl in impls]
    return configurations


# --- the child process -------------------------------------------------------------------
def _prepare(cache: str) -> None:
    """Point the kernel caches at `cache` (empty), before gradfuse or numba is imported;
    JAX's persistent cache stays off."""
    os.environ["GRADFUSE_CACHE_DIR"] = os.path.join(cache, "gradfuse")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(cache, "numba")
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)


def child(configuration: Configuration, quick: bool, cache: str) -> dict:
    start = time.perf_counter()
    _prepare(cache)
    if configuration.impl == "jax":
        from benchmarks import peers

        peers.load_jax().config.update("jax_enable_x64", True)
        build = _jax_row
    else:
        import compiler  # noqa: F401 -- its import is part of the process's cost

        build = _gradfuse_row
    from benchmarks import w7_programs

    imported = time.perf_counter()
    problem = w7_programs.problem(configuration.program, configuration.size)
    begin = time.perf_counter()
    impl, expected, tolerance, report = build(configuration, problem)
    first = impl.call()
    first_seconds = time.perf_counter() - begin
    peak_mb = _own_peak_mb()
    check_agreement(f"{ID} {configuration.label}", impl.name, impl.read(first), expected,
                    dict.fromkeys(expected, tolerance))
    compiled = report() if report else None
    config = Config.quick_mode() if quick else Config()
    steady = time_rows([impl], config)[impl.name]
    return {"import_s": imported - start, "first_s": first_seconds, "peak_mb": peak_mb,
            "steady_s": steady.median, "steady_best_s": steady.best,
            "compile_report": compiled.to_json() if compiled else None}


def _train_tolerance(params: list[dict], lr: float) -> Tolerance:
    """Gradients read back from an SGD update, (before - after) / lr, carry the rounding of
    the new parameters: up to ulp(|p|) / lr."""
    import numpy as np

    peak = max(float(np.max(np.abs(a))) for layer in params for a in layer.values())
    return Tolerance(rtol=AGREEMENT.rtol, scale=AGREEMENT.scale,
                     slack=4 * np.finfo(np.float64).eps * peak / lr)


def _read_back(initial: list[dict], current: list[dict], lr: float) -> list[dict]:
    return [{k: (a[k] - b[k]) / lr for k in a} for a, b in zip(initial, current)]


def _gradfuse_row(configuration: Configuration, problem):
    """(Impl, expected outcome, tolerance, compile report callable) for gradfuse."""
    import numpy as np

    from benchmarks import w7_programs
    from compiler import compile_grad

    function = w7_programs.gradfuse_function(problem.program, problem.size, configuration.variant)
    compiled = compile_grad(function)
    args = problem.args
    if configuration.measure == VALUE_AND_GRAD:
        impl = Impl(configuration.row, lambda: compiled.value_and_grad(*args),
                    lambda result: w7_programs.outcome(*result))
        return impl, problem.expected(), AGREEMENT, compiled.compile_report
    from compiler.training import train_step
    from runtime import Parameter, optim

    initial, data = args[0], args[1:]
    params = [{k: Parameter(v.copy()) for k, v in layer.items()} for layer in initial]
    lr = w7_programs.LEARNING_RATE
    step = train_step(compiled, params, optim.SGD([p for layer in params for p in layer.values()],
                                                  lr=lr))

    def current() -> list[dict]:
        return [{k: p.data for k, p in layer.items()} for layer in params]

    def restore() -> None:
        for layer, values in zip(params, initial):
            for k, p in layer.items():
                p.data[...] = values[k]

    def read(loss):
        return w7_programs.outcome(np.asarray(loss), _read_back(initial, current(), lr))

    impl = Impl(configuration.row, lambda: step(*data), read, restore)
    return impl, problem.expected(), _train_tolerance(initial, lr), step.compile_report


def _jax_row(configuration: Configuration, problem):
    """(Impl, expected outcome, tolerance, None) for JAX jit."""
    import jax
    import numpy as np

    from benchmarks import w7_programs

    function = w7_programs.jax_function(problem.program, problem.size, configuration.variant)
    args = jax.tree.map(jax.numpy.asarray, problem.args)
    if configuration.measure == VALUE_AND_GRAD:
        compiled = jax.jit(jax.value_and_grad(function))
        impl = Impl(configuration.row, lambda: jax.block_until_ready(compiled(*args)),
                    lambda result: w7_programs.outcome(*jax.tree.map(np.asarray, result)))
        return impl, problem.expected(), AGREEMENT, None
    lr = w7_programs.LEARNING_RATE

    @jax.jit
    def sgd_step(params, *data):
        loss, grads = jax.value_and_grad(function)(params, *data)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    state = [args[0]]

    def call():
        state[0], loss = sgd_step(state[0], *args[1:])
        return jax.block_until_ready(loss)

    def restore() -> None:
        state[0] = args[0]

    def read(loss):
        after = jax.tree.map(np.asarray, state[0])
        return w7_programs.outcome(np.asarray(loss), _read_back(problem.args[0], after, lr))

    impl = Impl(configuration.row, call, read, restore)
    return impl, problem.expected(), _train_tolerance(problem.args[0], lr), None


# --- the parent --------------------------------------------------------------------------
@dataclass
class Finished:
    """What a child reported, or why there is no figure (`unfinished`), and its peak memory."""

    report: dict | None
    unfinished: Unfinished | None
    peak_mb: float
    process_s: float


def _own_peak_mb() -> float:
    """This process's peak resident MiB: VmHWM, which belongs to the process's own memory
    since exec. getrusage's ru_maxrss is kept across exec on Linux, so a configuration
    started by a large parent (a pytest worker that compiled many kernels, say) would report
    the parent's size at fork; it is the fallback where /proc is missing."""
    peak = _memory_mb(os.getpid())[1]
    return peak if peak > 0 else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a running process, from /proc (0 where unreadable)."""
    found = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, *value = line.split()
                if key in found:
                    found[key] = int(value[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return found["VmRSS:"], found["VmHWM:"]


def spawn(configuration: Configuration, config: Config) -> Finished:
    """Run one configuration in a fresh process with empty caches, within the limits."""
    limit_mb = config.compile_memory_gb * 1024
    with tempfile.TemporaryDirectory(prefix="gradfuse-w7-") as scratch:
        command = [sys.executable, "-m", "benchmarks.w7_compile_scaling", "--child",
                   *configuration.argv(), "--cache", os.path.join(scratch, "cache"),
                   *(["--quick"] if config.quick else [])]
        out_path, err_path = os.path.join(scratch, "out"), os.path.join(scratch, "err")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            start = time.perf_counter()
            process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
            unfinished, peak = _watch(process, config.compile_timeout, limit_mb, start)
            elapsed = time.perf_counter() - start
        if unfinished is not None:
            return Finished(None, unfinished, peak, elapsed)
        stdout, stderr = Path(out_path).read_text(), Path(err_path).read_text()
    lines = stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if report is None or "error" in report:
        message = report["error"] if report else stderr[-3000:]
        if report and report.get("disagreement"):
            raise DisagreementError(message)
        raise RuntimeError(f"{ID} {configuration.row} {configuration.label} failed "
                           f"(exit status {process.returncode}):\n{message}")
    return Finished(report, None, report["peak_mb"], elapsed)


def _watch(process: subprocess.Popen, timeout: float, limit_mb: float,
           start: float) -> tuple[Unfinished | None, float]:
    """Wait for `process`, stopping it at the time or memory limit; (why it was stopped, or
    None, and the peak resident memory seen)."""
    peak = 0.0
    while True:
        try:
            process.wait(timeout=POLL_SECONDS)
            return None, peak
        except subprocess.TimeoutExpired:
            pass
        resident, high_water = _memory_mb(process.pid)
        peak = max(peak, high_water, resident)
        elapsed = time.perf_counter() - start
        if elapsed > timeout:
            reason = f"timeout >{timeout:g} s"
        elif resident > limit_mb:
            reason = f"memory >{limit_mb / 1024:g} GB after {elapsed:.0f} s"
        else:
            continue
        process.kill()
        process.wait()
        return Unfinished(reason, elapsed), peak


def _jax_missing() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("jax") else "JAX is not installed"


def run(config: Config) -> WorkloadResult:
    from benchmarks import w7_programs

    result = WorkloadResult(ID, TITLE)
    cases: dict[str, Case] = {}
    for configuration in plan(config):
        case = cases.setdefault(configuration.label, Case(configuration.label, "s"))
        name = configuration.row
        if configuration.impl == "jax" and _jax_missing():
            note = f"{JAX} skipped: {_jax_missing()} (pip install 'gradfuse[peers]')"
            if note not in result.notes:
                result.notes.append(note)
            continue
        if configuration.impl == "gradfuse" and configuration.variant == "scan" \
                and w7_programs.SCAN_MISSING:
            case.unfinished[name] = Unfinished("not available")
            note = f"{GRADFUSE_SCAN}: not available, {w7_programs.SCAN_MISSING}"
            if note not in result.notes:
                result.notes.append(note)
            continue
        print(f"  W7 {name}: {configuration.label} ...", file=sys.stderr, flush=True)
        finished = spawn(configuration, config)
        if finished.unfinished is not None:
            case.unfinished[name] = finished.unfinished
            case.extra[name] = {"peak MB": finished.peak_mb}
            continue
        report = finished.report
        case.times[name] = Timing(report["first_s"], report["first_s"], 1, 1)
        case.extra[name] = {"steady µs": report["steady_s"] * 1e6, "peak MB": finished.peak_mb,
                            "import s": report["import_s"]}
        compiled = report["compile_report"]
        if compiled is not None:
            case.extra[name].update({"lines": compiled["lines"],
                                     "numba s": compiled["seconds"]["numba"]})
    result.cases = [c for c in cases.values() if c.times or c.unfinished]
    result.info["limits per process"] = (f"{config.compile_timeout:g} s, "
                                         f"{config.compile_memory_gb:g} GB resident")
    result.notes.append("median = best = seconds to the first result in a fresh process with "
                        "empty caches (imports excluded: 'import s'); 'steady µs' is the median "
                        "per call after it; 'peak MB' the process's peak resident memory after "
                        "the first call; 'lines' the generated source (compile_report)")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=5, required=True,
                        metavar=("PROGRAM", "SIZE", "VARIANT", "IMPL", "MEASURE"))
    parser.add_argument("--cache", required=True, metavar="DIR",
                        help="an empty directory for the kernel caches")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    program, size, variant, impl, measure = args.child
    configuration = Configuration(program, int(size), variant, impl, measure)
    try:
        report = child(configuration, args.quick, args.cache)
    except DisagreementError as err:
        report = {"error": str(err), "disagreement": True}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
