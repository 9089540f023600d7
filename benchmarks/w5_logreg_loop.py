"""W5: logistic regression, 100 features, batch 32, SGD lr 0.1: 10,000 steps over 32 fixed batches.

Every implementation runs the same 10,000 steps, step k on minibatch k mod 32
(rows 32*(k mod 32) onwards, no shuffling): gradfuse with `fit`, numba in one
kernel, JAX in a jitted `lax.fori_loop`, PyTorch and NumPy in Python loops.
"""

from __future__ import annotations

import numpy as np

from benchmarks import handwritten, peers, reference, steps
from benchmarks.harness import Config, WorkloadResult, build_rows, run_case
from compiler import compile_grad
from runtime import functional as F

ID = "W5"
TITLE = "logistic regression, 100 features, batch 32, SGD: 10,000 steps"
LR = 0.1
FEATURES, BATCH, BATCHES, STEPS = 100, 32, 32, 10_000
CASE = "10,000 steps"


@compile_grad
def logistic(params, X, y):
    return F.binary_cross_entropy_with_logits(X @ params["w"] + params["b"], y)


MODEL = steps.PeerModel(peers.torch_logistic, peers.torch_bce_with_logits, peers.jax_logistic)


def problem() -> steps.Problem:
    """Labels drawn from a logistic model with known weights, so that training makes progress."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(BATCH * BATCHES, FEATURES)).astype(np.float32)
    true_w = rng.normal(0, 0.3, FEATURES)
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-X @ true_w))).astype(np.float32)
    params = {"w": rng.normal(0, 0.01, FEATURES).astype(np.float32),
              "b": np.zeros(1, np.float32)}
    batches = [(X[k:k + BATCH], y[k:k + BATCH]) for k in range(0, len(X), BATCH)]
    return steps.Problem(params, batches, LR, reference.logistic, STEPS)


def _run_loop_kernel(problem: steps.Problem):
    X, y = (np.concatenate(columns) for columns in zip(*problem.batches))

    def run(params, losses):
        handwritten.logistic_sgd_loop(params["w"], params["b"], X, y, problem.lr, BATCH, losses)

    return run


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    loop = problem()
    rows = steps.loop_rows(loop, logistic, _run_loop_kernel(loop), MODEL)
    run_case(result, CASE, "ms", build_rows(config, rows, result.notes), loop.loop_reference(),
             config, loop.loop_tolerances(rtol=1e-3), alternate=True)
    return result
