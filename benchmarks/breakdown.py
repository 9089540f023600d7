"""Where gradfuse's time goes in W1, W2 and W5: Python call path, numba dispatch, kernel compute.

    python -m benchmarks.breakdown

A diagnostic for whoever works on the call path or the generator, not part of
the suite's run: it reaches into private attributes of `TrainStep` and
`CompiledFunction` (`_last`, `_pack_hypers`, `_fast`), so it follows their
changes. "compute" is a kernel called 1000 times from a numba loop, which
leaves out every Python and dispatch cost. Figures are the best of 5 rounds.
"""

from __future__ import annotations

import timeit

import numba
import numpy as np

from benchmarks import handwritten, peers, steps, w1_mlp_step, w2_mae, w5_logreg_loop
from benchmarks.harness import PeerMissing
from compiler.training import TrainStep


def best_of(calls: dict[str, tuple], rounds: int = 5) -> dict[str, float]:
    """Best µs per unit of work; each entry is (callable, units of work per call, calls)."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, (call, units, number) in calls.items():
            call()
            seconds = min(timeit.repeat(call, number=number, repeat=3)) / number / units
            best[name] = min(best[name], seconds * 1e6)
    return best


def _train_step(row) -> TrainStep:
    """The TrainStep behind a gradfuse row, after one call (which compiles its kernel)."""
    row.setup()
    row.call()
    return row.subject


def _in_numba_loop(kernel, n_args: int):
    """A numba function calling kernel(*args) `n` times: the kernel's compute alone."""
    names = ", ".join(f"a{i}" for i in range(n_args))
    namespace = {"kernel": kernel}
    exec(f"def loop({names}, n):\n    for _ in range(n):\n        kernel({names})\n", namespace)
    return numba.njit(namespace["loop"])


def w1_step() -> dict[str, float]:
    problem = w1_mlp_step.problem()
    step = _train_step(steps.gradfuse_step(problem, w1_mlp_step.mlp_mse))
    X, y = problem.batch
    kernels = step._last
    args = (*kernels.arguments, X, y)
    mine = _in_numba_loop(kernels.step, len(args))
    theirs_args = (*problem.copy_params().values(), X, y, problem.lr)
    theirs = _in_numba_loop(handwritten.mlp_mse_sgd_step, len(theirs_args))
    return best_of({
        "gradfuse step(X, y)": (lambda: step(X, y), 1, 20000),
        "  arrays still current": (lambda: kernels.current(step.optimizer), 1, 20000),
        "  TrainStep._pack_hypers": (step._pack_hypers, 1, 20000),
        "  step kernel from Python": (lambda: kernels.step(*args), 1, 20000),
        "  numba dispatch of as many arguments, no work": (lambda: mine(*args, 0), 1, 20000),
        "  compute (in a numba loop)": (lambda: mine(*args, 1000), 1000, 20),
        "hand-written step from Python": (
            lambda: handwritten.mlp_mse_sgd_step(*theirs_args), 1, 20000),
        "  hand-written compute (in a numba loop)": (
            lambda: theirs(*theirs_args, 1000), 1000, 20),
    })


def w2_value_and_grad() -> dict[str, float]:
    args = w2_mae.arguments()
    f = w2_mae.mae
    f.value_and_grad(*args)
    fast = f._fast["value_and_grad"]
    dispatcher = fast.kernel.dispatcher
    mine = _in_numba_loop(dispatcher, len(args))
    theirs = _in_numba_loop(handwritten.mae_value_and_grad, len(args))
    return best_of({
        "gradfuse value_and_grad": (lambda: f.value_and_grad(*args), 1, 5000),
        "  FastCall.run (dispatch, compute, boxing)": (lambda: fast.run(args), 1, 5000),
        "  kernel from Python (dispatch, compute, boxing)": (lambda: dispatcher(*args), 1, 5000),
        "  compute (in a numba loop)": (lambda: mine(*args, 1000), 1000, 5),
        "hand-written from Python": (lambda: handwritten.mae_value_and_grad(*args), 1, 5000),
        "  hand-written compute (in a numba loop)": (lambda: theirs(*args, 1000), 1000, 5),
    })


def w5_loop() -> dict[str, float]:
    problem = w5_logreg_loop.problem()
    fit_row = steps.gradfuse_fit(problem, w5_logreg_loop.logistic)
    step = _train_step(fit_row)
    X, y = (np.concatenate(columns) for columns in zip(*problem.batches))
    kernels = step._fit_kernels((X, y))
    orders = np.empty((w5_logreg_loop.STEPS // w5_logreg_loop.BATCHES, 0), np.int64)
    losses = np.empty(len(orders) * w5_logreg_loop.BATCHES)
    loop = steps.numba_loop(problem, w5_logreg_loop._run_loop_kernel(problem))
    calls = {
        "gradfuse fit": (fit_row.call, 1, 1),
        "  its fit kernel alone (whole epochs)": (
            lambda: kernels.fit(*kernels.arguments, X, y, orders, w5_logreg_loop.BATCH, losses),
            1, 1),
        "hand-written loop": (loop.call, 1, 1),
    }
    try:
        jax_row = steps.jax_loop(problem, peers.jax_logistic)
        jax_row.setup()
        calls["JAX fori_loop"] = (jax_row.call, 1, 1)
    except PeerMissing:
        pass
    microseconds = best_of(calls)
    return {k: v * 1e-3 for k, v in microseconds.items()}  # ms per run of 10,000 steps


def main() -> None:
    for title, unit, measure in (("W1 train step", "µs", w1_step),
                                 ("W2 value and gradient", "µs", w2_value_and_grad),
                                 ("W5 10,000 steps", "ms", w5_loop)):
        print(title)
        for name, value in measure().items():
            print(f"  {name:<52} {value:8.2f} {unit}")


if __name__ == "__main__":
    main()
