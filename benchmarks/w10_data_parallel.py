"""W10: W4's SGD step data-parallel over MPI, on 1 and 2 ranks of one thread each.

Each figure comes from `mpiexec -n P python -m benchmarks.w10_ranks` (benchmarks/w10_ranks.py),
whose rank 0 writes its timings as JSON. One rank measures the baseline (the fused
`train_step` of one process on the whole batch of 256, and on half of it: the time two
ranks would take if the all-reduce were free) and `train_step(comm=...)` on one rank;
two ranks measure each rank stepping alone on its share at the same time (no all-reduce:
the bound of this machine, where each core's memory traffic slows the other) and the
distributed step (each rank 128 rows) with each all-reduce (shared
memory summed in the update kernel, the default; shared memory summed by columns, the
default before, still used for more ranks or machines; MPI_Allreduce), the time of the
all-reduce inside the step (waiting for the slower rank included) and alone, and, for the
choice of design, MPI_Allreduce and numba-mpi's allreduce inside an njit loop on a buffer
of the same length. When the update kernel sums, the all-reduce's time in the step is the
barrier's (waiting included) plus what adding the second rank's row costs the update
kernel: the update timed alone, minus the same update of one row of sums. Every step row
is checked against the float64 reference of the whole batch before it is timed. Skipped
with a note when mpi4py or mpiexec is missing (`pip install "gradfuse[mpi]"`).

The 1-rank and 2-rank launches alternate for `ROUNDS` rounds and each figure is the median
over the rounds: on a shared machine, two launches a minute apart can see different loads,
and the goal is a ratio between them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Case, Config, Timing, WorkloadResult

ID = "W10"
TITLE = "W4's SGD step data-parallel over MPI, one thread per rank"
STEP = "W4 step, one thread per rank"
REDUCE = "all-reduce of W4's gradients (669,706 values), 2 ranks"
ONE_PROCESS = "gradfuse"  # the fused train_step of one process: the baseline of the goals
TWO_RANKS = "gradfuse comm, 2 ranks, shared memory, summed in the update"  # the default
SHARED_ALONE = "shared memory, summed in the update, float32 (update's extra time)"
BUSY_BOUND = "2 ranks, each alone on its share, no all-reduce (bound, both cores busy)"
TIMEOUT = 900
ROUNDS = 3  # in quick mode, 1
HERE = Path(__file__).resolve().parent


def mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def launch(ranks: int, quick: bool) -> dict:
    """What rank 0 of `mpiexec -n ranks` measured."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "ranks.json")
        command = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "benchmarks.w10_ranks", out]
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        done = subprocess.run(command + (["--quick"] if quick else []), capture_output=True,
                              text=True, timeout=TIMEOUT, env=env, cwd=HERE.parent)
        if done.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def _median_timing(found: list[dict]) -> Timing:
    """One row over the rounds: the median of its medians, the best of its bests."""
    return Timing(statistics.median(f["median_s"] for f in found), min(f["best_s"] for f in found),
                  found[0]["number"], sum(f["repeats"] for f in found))


def _merged(documents: list[dict], key: str) -> dict[str, Timing]:
    names = documents[0][key]
    return {name: _median_timing([d[key][name] for d in documents]) for name in names}


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    if importlib.util.find_spec("mpi4py") is None or mpiexec() is None:
        result.notes.append('skipped: needs mpi4py and mpiexec (pip install "gradfuse[mpi]")')
        return result
    ones, twos = [], []
    for _ in range(1 if config.quick else ROUNDS):
        ones.append(launch(1, config.quick))
        twos.append(launch(2, config.quick))
    step = Case(STEP, "ms", unchecked=["1 process, half the batch (2-rank bound)",
                                       BUSY_BOUND])
    for documents in (ones, twos):
        step.times.update(_merged(documents, "steps"))
        for name in documents[0]["extra"]:
            step.extra[name] = {k: statistics.median(d["extra"][name][k] for d in documents)
                                for k in documents[0]["extra"][name]}
    baseline = step.seconds(ONE_PROCESS)
    for name in step.times:
        if name != ONE_PROCESS:
            step.extra.setdefault(name, {})["x throughput of 1 process"] = \
                baseline / step.seconds(name)
    reduce = Case(REDUCE, "ms", _merged(twos, "reduces"))
    result.cases += [step, reduce]
    result.notes += twos[0]["notes"]
    result.info["gradient buffer elements"] = twos[0]["gradient elements"]
    result.info["rounds of launches"] = len(ones)
    return result


def throughput(results: dict) -> tuple[bool, str]:
    """2 ranks' throughput over one process's (the fused step, one thread)."""
    from benchmarks.goals import Missing

    result = results.get(ID)
    case = result.case(STEP) if result is not None else None
    if case is None or case.seconds(TWO_RANKS) is None or case.seconds(ONE_PROCESS) is None:
        raise Missing("W10 did not run (MPI missing?)")
    one, two = case.seconds(ONE_PROCESS), case.seconds(TWO_RANKS)
    bound = case.seconds("1 process, half the batch (2-rank bound)")
    text = (f"1 process {one * 1e3:.2f} ms, 2 ranks {two * 1e3:.2f} ms: {one / two:.2f}x")
    busy = case.seconds(BUSY_BOUND)
    if bound:
        text += f" (free all-reduce bound {one / bound:.2f}x"
        text += f"; with both cores busy {one / busy:.2f}x)" if busy else ")"
    return one / two >= 1.7, text


def allreduce_share(results: dict) -> tuple[bool, str]:
    """The all-reduce's time inside the 2-rank step (waiting for the slower rank included)
    over the step's; the all-reduce timed alone is shown beside it."""
    from benchmarks.goals import Missing

    result = results.get(ID)
    case = result.case(STEP) if result is not None else None
    found = case.extra.get(TWO_RANKS) if case is not None else None
    if not found:
        raise Missing("W10 did not run (MPI missing?)")
    share = found["all-reduce share %"]
    text = (f"{found['all-reduce ms']:.3f} ms of a {case.seconds(TWO_RANKS) * 1e3:.2f} ms step: "
            f"{share:.1f}%")
    alone = result.case(REDUCE).seconds(SHARED_ALONE) if result.case(REDUCE) else None
    if alone:
        text += f" (alone {alone * 1e3:.3f} ms: {alone / case.seconds(TWO_RANKS):.1%})"
    return share <= 10.0, text
