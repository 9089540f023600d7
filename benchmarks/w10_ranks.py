"""One rank of W10: `mpiexec -n P python -m benchmarks.w10_ranks OUT.json [--quick]`.

Every rank runs the same rows in the same order (each timed batch starts with a barrier
and has a fixed number of calls, so collective calls pair up across ranks); rank 0
writes the timings to OUT.json. Each rank uses one thread: the caps are set before
NumPy, OpenBLAS and numba load.
"""

from benchmarks import threads

threads.cap_threads(1)

import json  # noqa: E402  (after the thread caps)
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from benchmarks import steps, w4_mlp_large  # noqa: E402
from benchmarks.harness import Config, Impl, Timing, check_agreement, time_rows  # noqa: E402
from benchmarks.w10_data_parallel import BUSY_BOUND  # noqa: E402
from compiler.training import allreduce as sums  # noqa: E402
from compiler.training import train_step  # noqa: E402
from compiler.training.allreduce import ALLREDUCE_VARIABLE  # noqa: E402
from runtime import Parameter, optim  # noqa: E402

STEPS_PER_BATCH = 20
REDUCES_PER_BATCH = 50
NUMBA_MPI_LOOP = 10  # all-reduces per call of the njit loop


def share(batch: tuple, rank: int, ranks: int) -> tuple:
    """Rank `rank`'s rows of the batch, as fit splits it."""
    n = batch[0].shape[0]
    lo, hi = n * rank // ranks, n * (rank + 1) // ranks
    return tuple(np.ascontiguousarray(d[lo:hi]) for d in batch)


def step_row(name: str, problem: steps.Problem, comm, rows: tuple, comm_world) -> Impl:
    """A W4 SGD step on `rows` (with `comm`: this rank's share), checked once from the initial
    parameters against the float64 reference of the whole batch (by problem), then timed."""
    params = {k: Parameter(v) for k, v in problem.copy_params().items()}
    arrays = {k: p.data for k, p in params.items()}
    step = train_step(w4_mlp_large.mlp_cross_entropy, params, optim.SGD(params, lr=problem.lr),
                      comm=comm)
    def setup() -> None:
        for key, array in arrays.items():
            array[...] = problem.params[key]
        comm_world.Barrier()

    return Impl(name, lambda: step(*rows), problem.step_reader(lambda: arrays), setup,
                number=STEPS_PER_BATCH, subject=step)


def checked(impl: Impl, problem: steps.Problem, reference) -> Impl:
    impl.setup()
    check_agreement("W10", impl.name, impl.read(impl.call()), reference,
                    problem.step_tolerances())
    return impl


def numba_mpi_row(length: int, comm) -> tuple[str, Timing] | str:
    """numba-mpi's allreduce inside an njit loop (float64: numba-mpi 1.3 maps no MPI type to
    float32; a separate send buffer: it has no MPI_IN_PLACE), or why it could not run."""
    try:
        import numba
        import numba_mpi
    except ImportError as err:
        return f"numba-mpi not installed ({err})"

    @numba.njit  # not cache=True: numba refuses to cache code holding ctypes pointers
    def allreduce_loop(send, recv, times):
        for _ in range(times):
            numba_mpi.allreduce(send, recv)

    send, recv = np.ones(length), np.zeros(length)
    allreduce_loop(send, recv, 1)
    if recv[0] != comm.Get_size():
        return f"numba-mpi's allreduce gave {recv[0]}, not {comm.Get_size()}"
    impl = Impl("numba-mpi allreduce in njit, float64", lambda: allreduce_loop(
        send, recv, NUMBA_MPI_LOOP), None, comm.Barrier, number=REDUCES_PER_BATCH // 10)
    return _per_reduce(impl, NUMBA_MPI_LOOP)


def _per_reduce(impl: Impl, reduces_per_call: int, config: Config | None = None):
    timing = time_rows([impl], config or CONFIG, max_number=REDUCES_PER_BATCH)[impl.name]
    scale = 1.0 / reduces_per_call
    return impl.name, Timing(timing.median * scale, timing.best * scale, timing.number,
                             timing.repeats)


def reduce_row(name: str, reduce, comm) -> tuple[str, Timing]:
    return _per_reduce(Impl(name, reduce, None, comm.Barrier, number=REDUCES_PER_BATCH), 1)


def summing_cost(summing: Impl, summed: Impl, comm) -> Timing:
    """What adding up the ranks' rows adds to the update kernel: the update kernel of
    `summing` (which reads every rank's row) less that of `summed` (one row of sums), each
    alone on the buffers of its last step, on both ranks at once, in alternating batches;
    the median of the paired differences, and the difference of the best batches. (Both
    update the parameters each call; the next row's setup puts them back.)"""
    calls = []
    for impl in (summing, summed):
        parallel = impl.subject.parallel
        update, arguments = parallel._update_kernel(), parallel._update_calls[0]
        calls.append(lambda update=update, arguments=arguments: update.step(*arguments))

    def batch(call) -> float:
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(REDUCES_PER_BATCH):
            call()
        return (time.perf_counter() - start) / REDUCES_PER_BATCH

    for call in calls:  # untimed: caches
        batch(call)
    pairs = [[batch(call) for call in calls] for _ in range(CONFIG.repeats)]
    return Timing(statistics.median(a - b for a, b in pairs),
                  min(a for a, _ in pairs) - min(b for _, b in pairs), REDUCES_PER_BATCH,
                  len(pairs))


# The 2-rank step rows: (GRADFUSE_MPI_ALLREDUCE, SUM_IN_UPDATE_MAX_RANKS); the default first.
TWO_RANK_ROWS = (("shared", sums.SUM_IN_UPDATE_MAX_RANKS), ("shared", 1), ("mpi", 1))


def main(out: str) -> None:
    comm = MPI.COMM_WORLD
    rank, ranks = comm.Get_rank(), comm.Get_size()
    problem = w4_mlp_large.problem()
    reference = problem.step_reference()
    mine = share(problem.batch, rank, ranks)
    steps_rows, extra, reduces, notes = {}, {}, {}, []

    if ranks == 1:  # the baseline: the fused step of one process, and half the batch
        one = checked(steps.gradfuse_step(problem, w4_mlp_large.mlp_cross_entropy), problem,
                      reference)
        one.number = STEPS_PER_BATCH
        half = Impl("1 process, half the batch (2-rank bound)",
                    lambda: one.subject(*share(problem.batch, 0, 2)), None, one.setup,
                    number=STEPS_PER_BATCH)
        steps_rows.update(time_rows([one, half], CONFIG))
    else:  # every rank steps alone on its share at the same time: what two ranks could do
        # without an all-reduce, each core's memory traffic slowing the other (the 2-rank
        # bound of this machine, below the bound of one process on half the batch)
        alone = steps.gradfuse_step(problem, w4_mlp_large.mlp_cross_entropy)

        def setup() -> None:
            alone.setup()
            comm.Barrier()

        busy = Impl(BUSY_BOUND, lambda: alone.subject(*mine), None, setup,
                    number=STEPS_PER_BATCH)
        steps_rows.update(time_rows([busy], CONFIG))
    impls = {}
    for allreduce, sum_in_update in TWO_RANK_ROWS if ranks > 1 else (("mpi", 1),):
        os.environ[ALLREDUCE_VARIABLE] = allreduce
        sums.SUM_IN_UPDATE_MAX_RANKS = sum_in_update
        impl = step_row("", problem, comm, mine, comm)
        parallel = impl.subject.parallel
        impl.name = f"gradfuse comm, {ranks} rank{'s' * (ranks > 1)}, {parallel.reducer.name}"
        impls[impl.name] = impl
        checked(impl, problem, reference)
        parallel.reduce_seconds, parallel.steps = 0.0, 0
        timing = time_rows([impl], CONFIG)[impl.name]
        steps_rows[impl.name] = timing
        in_step = parallel.reduce_seconds / parallel.steps
        extra[impl.name] = {"all-reduce ms": in_step * 1e3,
                            "all-reduce share %": 100 * in_step / timing.median}
        if ranks > 1 and not getattr(parallel.reducer, "in_update", False):
            name, t = reduce_row(f"{parallel.reducer.name}, float32", parallel.reducer.reduce,
                                 comm)
            reduces[name] = t
        length = parallel.layout.length
    sums.SUM_IN_UPDATE_MAX_RANKS = TWO_RANK_ROWS[0][1]
    if ranks > 1:  # summed in the update: the barrier, and what adding rows adds to the update
        fused, columns = list(impls.values())[:2]
        name = f"{fused.subject.parallel.reducer.name}, float32 (update's extra time)"
        reduces[name] = summing_cost(fused, columns, comm)
        found = extra[fused.name]
        found["all-reduce ms"] += reduces[name].median * 1e3
        found["all-reduce share %"] = found["all-reduce ms"] / steps_rows[fused.name].median / 10
    if ranks > 1:
        buffer = np.ones(length)
        name, t = reduce_row("MPI_Allreduce in place, float64",
                             lambda: comm.Allreduce(MPI.IN_PLACE, buffer), comm)
        reduces[name] = t
        found = numba_mpi_row(length, comm)
        if isinstance(found, str):
            notes.append(found)
        else:
            reduces[found[0]] = found[1]
    if rank == 0:
        document = {"ranks": ranks, "gradient elements": length, "notes": notes,
                    "steps": {k: t.to_json() for k, t in steps_rows.items()}, "extra": extra,
                    "reduces": {k: t.to_json() for k, t in reduces.items()}}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(document, f)


QUICK = "--quick" in sys.argv
CONFIG = Config.quick_mode(frozenset()) if QUICK else Config(peers=frozenset())

if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except BaseException:  # the other ranks wait in a collective for this one: end them all
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
