"""W4: MLP 784-512-512-10, ReLU, softmax cross-entropy, batch 256, float32: one SGD step.

Its floor is BLAS: the 8 GEMMs of forward (3) and backward (5: no gradient for
the input) alone, timed through NumPy's matmul into preallocated outputs.
"""

from __future__ import annotations

import numpy as np

from benchmarks import handwritten, peers, reference, steps
from benchmarks.harness import Config, Impl, WorkloadResult, build_rows, run_case
from compiler import compile_grad
from runtime import functional as F
from runtime import init

ID = "W4"
TITLE = "MLP 784-512-512-10, cross-entropy, batch 256: SGD step vs the BLAS floor"
LR = 0.01
SIZES = (784, 512, 512, 10)
BATCH = 256
CASE = "train step"
BLAS_FLOOR = "BLAS floor (8 GEMMs)"


@compile_grad
def mlp_cross_entropy(params, X, labels):
    return F.cross_entropy(init.mlp(params, X), labels)


MODEL = steps.PeerModel(peers.torch_mlp, peers.torch_cross_entropy, peers.jax_mlp_cross_entropy)


def problem() -> steps.Problem:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], BATCH)
    params = {k: np.array(p.data) for k, p in init.mlp_params(SIZES, rng).items()}
    return steps.Problem(params, [(X, labels)], LR, reference.mlp_cross_entropy)


def blas_floor(problem: steps.Problem) -> Impl:
    """The GEMMs of one step with NumPy's BLAS, results into preallocated arrays."""
    W0, W1, W2 = (problem.params[f"W{i}"] for i in range(3))
    X = problem.batch[0]
    h0, h1 = np.empty((BATCH, SIZES[1]), np.float32), np.empty((BATCH, SIZES[2]), np.float32)
    d2, d1, d0 = (np.empty_like(a) for a in (np.empty((BATCH, SIZES[3]), np.float32), h1, h0))
    g2, g1, g0 = (np.empty_like(W) for W in (W2, W1, W0))

    def call():
        np.matmul(X, W0, out=h0)
        np.matmul(h0, W1, out=h1)
        np.matmul(h1, W2, out=d2)
        np.matmul(h1.T, d2, out=g2)
        np.matmul(d2, W2.T, out=d1)
        np.matmul(h0.T, d1, out=g1)
        np.matmul(d1, W1.T, out=d0)
        np.matmul(X.T, d0, out=g0)

    return Impl(BLAS_FLOOR, call, read=None)


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    one = problem()
    rows = steps.step_rows(one, mlp_cross_entropy, handwritten.mlp3_cross_entropy_sgd_step, MODEL)
    impls = build_rows(config, rows, result.notes) + [blas_floor(one)]
    run_case(result, CASE, "ms", impls, one.step_reference(), config, one.step_tolerances(),
             max_number=50)
    return result
