"""Parallel loops: large static nests run their outer loop with numba.prange when that is
race-free, small ones and those that accumulate into shared locations stay serial."""

from __future__ import annotations

import numpy as np

from compiler import compile_grad
from compiler.codegen import generate
from compiler.codegen.nests import PARALLEL_MIN_ELEMENTS

N = PARALLEL_MIN_ELEMENTS



def source_of(fn, *args, kind="value_and_grad", wrt=0) -> str:
    spec = compile_grad(fn, wrt=wrt, backend="interpreter").specialize(*args)
    return generate(spec.graph_of(kind), kind).source


def softplus_loss(x, y, w, b):
    return np.mean(np.log(1 + np.exp(-y * np.tanh(w * x + b))) + 0.01 * (w * x) ** 2)


def test_a_large_elementwise_nest_with_a_full_sum_runs_in_parallel_and_matches():
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(N) for _ in range(4)]
    source = source_of(softplus_loss, *args, wrt=(2, 3))
    assert source.count("numba.prange(") == 1 and "parallel=True" in source
    compiled = compile_grad(softplus_loss, wrt=(2, 3))
    reference = compile_grad(softplus_loss, wrt=(2, 3), backend="interpreter")
    value, grads = compiled.value_and_grad(*args)
    expected_value, expected_grads = reference.value_and_grad(*args)
    np.testing.assert_allclose(value, expected_value, rtol=1e-9)
    for got, expected in zip(grads, expected_grads):  # exp/log within a few ulps
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)


def test_small_nests_stay_serial_and_compile_without_parallel():
    args = [np.ones(N - 1) for _ in range(4)]
    source = source_of(softplus_loss, *args, wrt=(2, 3))
    assert "prange" not in source and "parallel=True" not in source


def test_row_sums_run_in_parallel_but_column_sums_and_max_stay_serial():
    X = np.random.default_rng(1).standard_normal((N // 4, 4))
    rows = source_of(lambda X: np.sum(np.sum(X * X, axis=1) ** 2), X)
    # forward and backward: each row's sum is private to its iteration
    assert rows.count("numba.prange(") == 2
    columns = source_of(lambda X: np.sum(np.sum(X * X, axis=0) ** 2), X, kind="forward")
    assert "prange" not in columns  # an array accumulator shared by every row
    largest = source_of(lambda X: np.max(X * X), X, kind="forward")
    assert "prange" not in largest
    for fn in (lambda X: np.sum(np.sum(X * X, axis=1) ** 2),
               lambda X: np.sum(np.sum(X * X, axis=0) ** 2)):
        value, grad = compile_grad(fn).value_and_grad(X)
        expected_value, expected_grad = compile_grad(fn, backend="interpreter").value_and_grad(X)
        np.testing.assert_allclose(value, expected_value, rtol=1e-9)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-9)


def test_scatter_adds_stay_serial():
    W = np.linspace(-1.0, 1.0, 50)
    ids = np.arange(N) % 50

    def loss(W, ids):
        return np.sum(np.tanh(W[ids]) ** 2)

    source = source_of(loss, W, ids, kind="backward")
    assert "+=" in source and "prange" not in source
    grad = compile_grad(loss).grad(W, ids)
    np.testing.assert_allclose(grad, compile_grad(loss, backend="interpreter").grad(W, ids),
                               rtol=1e-10)


def test_a_parallel_nest_keeps_its_small_accumulator_on_the_heap():
    # sum over the middle axis keeps the outer one: race-free in parallel; stack arrays stay
    # out of parallel regions, whose bodies numba compiles as functions of their own
    X = np.random.default_rng(2).standard_normal((4, N // 64, 16))
    source = source_of(lambda X: np.sum(np.sum(X * X, axis=1) ** 2), X, kind="forward")
    assert "numba.prange(4)" in source
    assert "np.zeros((4, 16), np.float64)" in source and "_stack" not in source
    fn = lambda X: np.sum(np.sum(X * X, axis=1) ** 2)  # noqa: E731
    np.testing.assert_allclose(compile_grad(fn)(X), compile_grad(fn, backend="interpreter")(X),
                               rtol=1e-12)
