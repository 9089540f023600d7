"""One rank of tests/test_distributed.py: `mpiexec -n 2 python distributed_ranks.py OUT [NAME]`.

Every rank trains the scenarios of `SCENARIOS` (tests/test_distributed.py runs the same ones
in one process as the reference), writes what it saw to OUT/rank<r>.npz, then the last
scenario makes rank 1 fail inside a step while rank 0 waits for it in the all-reduce: the
run must end (MPI_Abort) instead of hanging. With a scenario's NAME, only that fit runs.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from compiler import compile_grad
from compiler.training import fit, train_step
from runtime import Parameter, init, optim, utils
from runtime import functional as F

ROWS, FEATURES, OUTPUTS = 37, 5, 2


def loss_fn(params, X, y):
    return F.mse_loss(init.mlp(params, X), y)


def scaled_loss(params, X, y, scale):
    return loss_fn(params, X, y) * scale


def problem():
    """The same data and initial parameters (float64) in every process that asks."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(ROWS, FEATURES))
    y = np.tanh(X[:, :OUTPUTS]) + 0.1 * rng.normal(size=(ROWS, OUTPUTS))
    params = init.mlp_params([FEATURES, 6, OUTPUTS], np.random.default_rng(1), np.float64)
    return X, y, params


def two_epochs(history) -> bool:
    return len(history.epoch_losses) >= 2


# name -> (optimizer, its options, fit's options, GRADFUSE_MPI_ALLREDUCE)
SCENARIOS = {
    # 37 rows in batches of 8: the last batch (5 rows) splits 2 + 3; an epoch per chunk, so
    # the callback runs after epochs 0 and 1 (0-based), where `stop` ends the run
    "sgd": (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
            dict(epochs=3, batch_size=8, seed=3, chunk_steps=5, stop=two_epochs), "shared"),
    # batches of 9, in order: the last batch has 1 row, so rank 0 has none of it
    "adam": (optim.Adam, dict(lr=0.01, weight_decay=0.01),
             dict(epochs=2, batch_size=9, shuffle=False, max_norm=0.5), "mpi"),
    # the same through shared memory (two ranks of one machine: summed in the update kernel)
    "adam-shared": (optim.Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True),
                    dict(epochs=2, batch_size=9, shuffle=False, max_norm=0.5), "shared"),
    # a Parameter of the dict that the loss never reads ("unused"): no gradient, so AdamW's
    # decoupled decay must not shrink it (the all-reduced buffer holds zeros for it)
    "adamw-unused": (optim.AdamW, dict(lr=0.01, weight_decay=0.1),
                     dict(epochs=1, batch_size=9, shuffle=False), "shared"),
    # batches of 1 row: rank 0 never has any, so it traces no gradient before its update,
    # which must still skip "unused" as rank 1's does (it decayed it, on rank 0 only)
    "adamw-rows1-unused": (optim.AdamW, dict(lr=0.01, weight_decay=0.1),
                           dict(epochs=1, batch_size=1, shuffle=False), "shared"),
}
UNUSED = "unused"  # the key of that Parameter (a scenario named *-unused has it)
SHARDS = ((0, 3), (3, 8))  # train_step: rank r passes rows SHARDS[r]; one process all 8
STEPS = 4


def run_fit(name: str, comm=None, compiled=None):
    """(parameters, history, the callback's epochs, how the step all-reduced) after fit on
    scenario `name`. The callback halves the learning rate (with comm it runs on rank 0, and
    fit sends the new rate to the others) and, with comm, writes a checkpoint."""
    make_optimizer, options, fit_options, _ = SCENARIOS[name]
    fit_options = dict(fit_options)
    X, y, params = problem()
    if name.endswith("-unused"):
        params[UNUSED] = Parameter(np.ones(3))
    optimizer = make_optimizer(params, **options)
    compiled = compiled or compile_grad(loss_fn)
    seen = []

    def callback(epoch, history):
        seen.append(epoch)
        optimizer.param_groups[0]["lr"] *= 0.5
        if comm is not None:
            utils.save(f"{OUT}/{name}-checkpoint-rank{comm.Get_rank()}.npz", params, optimizer)

    if comm is None:
        history = fit(compiled, params, optimizer, (X, y), callback=callback, **fit_options)
        return params, history, seen, None
    max_norm = fit_options.pop("max_norm", None)
    step = train_step(compiled, params, optimizer, max_norm=max_norm, comm=comm)
    history = fit(compiled, params, optimizer, (X, y), step=step, callback=callback,
                  **fit_options)
    reducer = step.parallel.reducer
    return params, history, seen, f"{reducer.name} over {getattr(reducer, 'machines', 1)}"


def run_steps(comm=None, backend="numba", stagger=False):
    """(parameters, losses, kept gradients) after STEPS train_steps with SGD on 8 rows: with
    comm, rank r passes only rows SHARDS[r]. With `stagger`, one rank (rank 0 on even steps,
    rank 1 on odd ones) waits 50 ms between the all-reduce and the update, so the other runs
    ahead into the next step's gradients while it has not read this step's yet."""
    X, y, params = problem()
    rows = slice(*SHARDS[comm.Get_rank()]) if comm is not None else slice(0, SHARDS[-1][1])
    step = train_step(compile_grad(loss_fn, backend=backend), params,
                      optim.SGD(params, lr=0.1), keep_grads=True, comm=comm)
    if stagger:
        _stagger(step.parallel.reducer, comm.Get_rank())
    losses, identical = [], []
    after_each_step = []  # compared across ranks at the end: a collective here would let
    for _ in range(STEPS):  # no rank run ahead of the other
        losses.append(step(X[rows], y[rows]))
        after_each_step.append(b"".join(p.data.tobytes() for p in params.values()))
    if comm is not None:  # the same bits on every rank, after every step
        identical = [len(set(found)) == 1 for found in zip(*comm.allgather(after_each_step))]
    grads = {k: p.grad for k, p in params.items()}
    if comm is not None and backend == "numba":  # both kernels of the step, by name
        source = step.source("step")
        identical.append("def loss_fn_grads(" in source and "def loss_fn_update(" in source)
    return params, np.array(losses), grads, identical


def run_scaled_steps(comm=None):
    """(parameters, losses) after 2 steps of a loss that takes a number besides the rows
    (`step(X, y, 0.5)`), its X in big-endian byte order, read-only (as np.load can give it):
    with comm, rank r passes rows SHARDS[r]. The number is not a row (a 0-d array has no
    first axis), and X is converted as one process converts it (numba refused it)."""
    X, y, params = problem()
    X = X.astype(">f8")
    X.flags.writeable = False
    rows = slice(*SHARDS[comm.Get_rank()]) if comm is not None else slice(0, SHARDS[-1][1])
    step = train_step(compile_grad(scaled_loss), params, optim.SGD(params, lr=0.1), comm=comm)
    losses = [step(X[rows], y[rows], 0.5) for _ in range(2)]
    return params, np.array(losses)


def nan_checked(alone) -> dict:
    """check_finite=True with a NaN in row 5, on a communicator of this rank alone (a failing
    rank of a larger one would abort the job): the error names the op, and no parameter took
    the step."""
    X, y, params = problem()
    X[5, 0] = np.nan
    before = {k: p.data.copy() for k, p in params.items()}
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9)
    found = {}
    try:
        fit(compile_grad(loss_fn, check_finite=True), params, optimizer, (X, y), epochs=1,
            batch_size=8, shuffle=False, comm=alone)
    except Exception as err:  # noqa: BLE001 - the test checks which
        found["errors/nan"] = np.array(f"{type(err).__name__}: {err}")
    found["errors/nan_untouched"] = np.array(
        [np.array_equal(before[k], p.data) for k, p in params.items()])
    return found


def _stagger(reducer, rank: int) -> None:
    """Make `reducer.reduce` wait 50 ms after the barrier on rank (step % 2)."""
    reduce, steps = reducer.reduce, []

    def late_reduce():
        ready = reduce()
        if len(steps) % 2 == rank:
            time.sleep(0.05)
        steps.append(ready)
        return ready

    reducer.reduce = late_reduce


def main() -> None:
    from mpi4py import MPI  # here: the test imports this module without starting MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    results = {}
    compiled = compile_grad(loss_fn)
    only = sys.argv[2:]
    for name, (*_, allreduce) in SCENARIOS.items():
        if only and name not in only:
            continue
        os.environ["GRADFUSE_MPI_ALLREDUCE"] = allreduce
        params, history, seen, how = run_fit(name, comm, compiled)
        results.update({f"{name}/{k}": p.data for k, p in params.items()})
        results[f"{name}/losses"] = history.losses
        results[f"{name}/callback_epochs"] = np.array(seen, dtype=np.int64)
        results[f"{name}/stopped_early"] = np.array(history.stopped_early)
        results[f"{name}/allreduce"] = np.array(how)
    os.environ.pop("GRADFUSE_MPI_ALLREDUCE")
    if only:
        np.savez(f"{OUT}/rank{rank}.npz", **results)
        return
    for backend in ("numba", "interpreter", "staggered"):
        params, losses, grads, identical = run_steps(
            comm, "numba" if backend == "staggered" else backend, stagger=backend == "staggered")
        results.update({f"steps-{backend}/{k}": p.data for k, p in params.items()})
        results.update({f"steps-{backend}/grad/{k}": g for k, g in grads.items()})
        results[f"steps-{backend}/losses"] = losses
        results[f"steps-{backend}/identical"] = np.array(identical)
    params, losses = run_scaled_steps(comm)
    results.update({f"scaled/{k}": p.data for k, p in params.items()})
    results["scaled/losses"] = losses
    try:
        train_step(compiled, params, optim.SGD(params, lr=0.1), comm="not a communicator")
    except TypeError as err:
        results["errors/comm"] = np.array(str(err))
    X, y, params = problem()
    try:  # ranks that disagree on the epochs: the same error on both, before any step
        fit(compiled, params, optim.SGD(params, lr=0.1), (X, y), epochs=1 + rank, comm=comm)
    except ValueError as err:
        results["errors/fit"] = np.array(str(err))
    X, y, params = problem()
    try:  # ranks that disagree on the clipping: it would part their parameters silently
        fit(compiled, params, optim.SGD(params, lr=0.1), (X, y), epochs=1, max_norm=1.0 + rank,
            comm=comm)
    except ValueError as err:
        results["errors/max_norm"] = np.array(str(err))
    X, y, _ = problem()
    params = init.mlp_params([FEATURES, 6 + rank, OUTPUTS], np.random.default_rng(1), np.float64)
    try:  # the broadcast from rank 0 would wait forever for parameters of other sizes
        train_step(compiled, params, optim.SGD(params, lr=0.1), comm=comm)
    except ValueError as err:
        results["errors/shapes"] = np.array(str(err))
    X, y, params = problem()
    try:  # rank 1 alone refuses its arguments: rank 0 waited forever in the first collective
        fit(compiled, params, optim.SGD(params, lr=0.1), (X, y), epochs=1,
            batch_size=8 if rank == 0 else 0, comm=comm)
    except ValueError as err:
        results["errors/fit_rank1"] = np.array(str(err))
    try:  # the same inside train_step (a loss with aux values on rank 1 only)
        train_step(compile_grad(loss_fn, has_aux=rank == 1), params, optim.SGD(params, lr=0.1),
                   comm=comm)
    except (ValueError, NotImplementedError) as err:
        results["errors/step_rank1"] = np.array(f"{type(err).__name__}: {err}")
    results.update(nan_checked(comm.Split(rank)))
    np.savez(f"{OUT}/rank{rank}.npz", **results)
    comm.Barrier()

    # A failing rank: rank 1 passes data of the wrong width; rank 0 waits in the all-reduce.
    X, y, params = problem()
    step = train_step(compiled, params, optim.SGD(params, lr=0.1), comm=comm)
    print(f"rank {rank}: about to fail", flush=True)
    step(X[:, :3] if rank == 1 else X, y)
    print(f"rank {rank}: not aborted", flush=True)  # the test fails if this is ever printed


OUT = sys.argv[1] if __name__ == "__main__" else None

if __name__ == "__main__":
    main()
