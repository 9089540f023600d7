"""W2: mean absolute error of (inputs*params).sum(axis=1), inputs 1000x10: value and gradient."""

from __future__ import annotations

import numpy as np

from benchmarks import handwritten, peers, reference
from benchmarks.gradients import Function
from benchmarks.harness import Config, WorkloadResult, run_case
from compiler import compile_grad

ID = "W2"
TITLE = "mean absolute error, inputs 1000x10: value and gradient"
CASE = "value and grad"


@compile_grad
def mae(params, inputs, targets):
    preds = (inputs * params).sum(axis=1)
    return np.abs(preds - targets).mean()


FUNCTION = Function(("params",), mae, handwritten.mae_value_and_grad, reference.mae,
                    peers.torch_mae, peers.jax_mae)


def arguments() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(1000, 10)).astype(np.float32)
    params = rng.normal(size=10).astype(np.float32)
    targets = rng.normal(size=1000).astype(np.float32)
    return [params, inputs, targets]


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    args = arguments()
    run_case(result, CASE, "µs", FUNCTION.rows(args, config, result.notes),
             FUNCTION.reference(args), config, alternate=True)
    return result
