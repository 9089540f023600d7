"""W1: MLP Linear(10,5)-ReLU-Linear(5,1), MSE, X 20x10 float32, SGD lr 0.01: a step, 1000 steps.

The step is zero-grad + forward + backward + update; the loop runs 1000 such
steps on the same batch (gradfuse: `fit`; numba: one kernel; JAX: a jitted
`lax.fori_loop`; PyTorch: a Python loop).
"""

from __future__ import annotations

import numpy as np

from benchmarks import handwritten, peers, reference, steps
from benchmarks.harness import Config, WorkloadResult, build_rows, run_case
from compiler import compile_grad
from runtime import functional as F
from runtime import init

ID = "W1"
TITLE = "MLP 10-5-1, MSE, batch 20, SGD: train step and 1000 steps"
LR = 0.01
LOOP_STEPS = 1000
STEP, LOOP = "train step", "1000 steps"


@compile_grad
def mlp_mse(params, X, y):
    return F.mse_loss(init.mlp(params, X), y)


MODEL = steps.PeerModel(peers.torch_mlp, peers.torch_mse, peers.jax_mlp_mse)


def problem(n_steps: int = 1) -> steps.Problem:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 10)).astype(np.float32)
    y = rng.normal(size=(20, 1)).astype(np.float32)
    params = {k: np.array(p.data) for k, p in init.mlp_params([10, 5, 1], rng).items()}
    return steps.Problem(params, [(X, y)], LR, reference.mlp_mse, n_steps)


def _run_loop_kernel(problem: steps.Problem):
    X, y = problem.batch

    def run(params, losses):
        handwritten.mlp_mse_sgd_loop(*params.values(), X, y, problem.lr, losses)

    return run


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    one = problem()
    rows = steps.step_rows(one, mlp_mse, handwritten.mlp_mse_sgd_step, MODEL)
    run_case(result, STEP, "µs", build_rows(config, rows, result.notes), one.step_reference(),
             config, one.step_tolerances(), max_number=LOOP_STEPS, alternate=True)
    loop = problem(LOOP_STEPS)
    rows = steps.loop_rows(loop, mlp_mse, _run_loop_kernel(loop), MODEL)
    run_case(result, LOOP, "ms", build_rows(config, rows, result.notes), loop.loop_reference(),
             config, loop.loop_tolerances(rtol=1e-3), alternate=True)
    return result
