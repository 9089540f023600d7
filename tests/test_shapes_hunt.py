"""Degenerate shapes against NumPy: empty matrices and diagonals past a matrix's corner, the
batch sizes 0 and 1 a compiled function meets after it was traced for others."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad

rng = np.random.default_rng(11)


# --- empty diagonals: NumPy gives an empty array (trace 0), not an error ---------------------
def gram_trace(x):
    g = x @ x.T
    return np.trace(g) + np.sum(np.diag(g) * 2.0) + np.sum(x)


def off_corner(a):
    return np.trace(a * 2.0, offset=5) + np.sum(np.diagonal(a, -4) ** 2) + np.sum(a ** 2)


def batched_off_corner(a):
    return np.sum(np.diagonal(a, 4, 1, 2) ** 2) + np.sum(a)


def empty_vector_on_diagonal(x):
    return np.sum(np.diag(x[:, 0], 2) + 1.0) + np.sum(x), np.diag(x[:, 1], -1)


gram_trace_c = compile_grad(gram_trace)
off_corner_c = compile_grad(off_corner)
batched_off_corner_c = compile_grad(batched_off_corner)
empty_vector_on_diagonal_c = compile_grad(empty_vector_on_diagonal, has_aux=True)


@pytest.mark.parametrize("rows", [4, 0, 3])
def test_trace_and_diag_of_a_gram_matrix_at_any_batch_size(rows):
    """np.trace(x @ x.T) at a batch of 0 (a 0x0 matrix) was a TraceError 'the diagonal at
    offset 0 of a 0x0 matrix is empty'; NumPy's trace is 0 and its diagonal empty."""
    x = rng.standard_normal((rows, 3))
    value, grad = gram_trace_c.value_and_grad(x)
    np.testing.assert_allclose(value, gram_trace(x), rtol=1e-12)
    np.testing.assert_allclose(grad, 6.0 * x + 1.0, rtol=1e-12)  # d(3 tr(x x^T)) = 6x


@pytest.mark.parametrize("fn, compiled, shape", [
    (off_corner, off_corner_c, (3, 3)), (batched_off_corner, batched_off_corner_c, (2, 3, 3))])
def test_a_diagonal_past_the_corner_is_empty(fn, compiled, shape):
    """An offset past the matrix's corner was the same TraceError; NumPy's diagonal is empty."""
    a = rng.standard_normal(shape)
    value, grad = compiled.value_and_grad(a)
    np.testing.assert_allclose(value, fn(a), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(fn, [a], 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(compile_grad(fn, backend="interpreter")(a), fn(a), rtol=1e-12)


def test_an_empty_vector_on_an_off_diagonal_gives_zeros():
    """np.diag of an empty vector with k=2 raised 'index -1 is out of bounds' (it gathered the
    last entry); NumPy's result is the 2x2 zeros, and k=-1 the 1x1."""
    x = np.zeros((0, 2))
    (value, aux), grad = empty_vector_on_diagonal_c.value_and_grad(x)
    expected, expected_aux = empty_vector_on_diagonal(x)
    assert value == expected == 4.0
    assert aux.shape == expected_aux.shape == (1, 1) and aux[0, 0] == 0.0
    assert grad.shape == (0, 2)


# --- train_step: which kernels answer data whose batch sizes differ from the trace's ---------
def squared_error(params, x, y):
    return np.mean((x @ params["w"] - y) ** 2)


squared_error_c = compile_grad(squared_error)


def _sgd_step(w, x, y, lr=0.1):
    """NumPy's step of SGD on squared_error; the loss before it."""
    r = x @ w - np.broadcast_to(y, np.broadcast_shapes(np.shape(y), (len(x),)))
    grad = 2.0 * x.T @ r / r.size
    return np.mean(r ** 2), w - lr * grad


def test_a_step_on_targets_of_another_batch_size_or_rank_gets_its_own_kernels():
    """The step's kernels were kept by dtypes and trailing shapes only: after a step on
    (x, y) of 5 rows, a step on x of 7 rows with y of 1 (which NumPy broadcasts) ran the
    kernels traced for one batch size N and failed with KernelShapeError 'arrays of other
    shapes than the kernel's', as did x of 7 rows with y of 5 where NumPy's broadcasting error
    is due; a 0-d y after a vector y (both of trailing shape ()) failed with numba's 'No
    matching definition'."""
    from compiler.errors import TraceError
    from compiler.training import train_step
    from runtime import Parameter, optim

    w = rng.standard_normal(3)
    params = {"w": Parameter(w.copy())}
    step = train_step(squared_error_c, params, optim.SGD(params.values(), lr=0.1))
    for rows, y_shape in [(5, (5,)), (7, (1,)), (7, (7,)), (4, ()), (6, (6,)), (3, ()),
                          (1, (1,)), (7, (1,))]:
        x, y = rng.standard_normal((rows, 3)), rng.standard_normal(y_shape)
        loss, w = _sgd_step(w, x, y)
        assert step(x, y) == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(params["w"].data, w, rtol=1e-12)
    with pytest.raises(TraceError, match=r"shapes \(7,\) and \(5,\) cannot be broadcast"):
        step(rng.standard_normal((7, 3)), rng.standard_normal(5))
    np.testing.assert_allclose(params["w"].data, w, rtol=1e-12)  # the refused step wrote nothing


# --- NaN-ignoring order statistics of an empty lane: NaN, as NumPy ---------------------------
def nan_statistics(w, x):
    h = x * w
    return (np.nansum(np.nanmedian(h, axis=0)) + np.nansum(np.nanquantile(h, 0.3, axis=0))
            + np.nansum(np.nanpercentile(h, 40, axis=0, method="midpoint")) + np.sum(h)), \
        (np.nanmedian(h, axis=0), np.nanquantile(h, [0.25, 0.9], axis=0, method="nearest"))


nan_statistics_c = compile_grad(nan_statistics, has_aux=True)


@pytest.mark.parametrize("rows", [[5, 0, 4, 0], [0, 3]], ids=["symbolic-first", "empty-first"])
def test_nan_order_statistics_of_an_empty_batch_are_nan(rows):
    """np.nanmedian (nanquantile, nanpercentile) over a batch of 0 rows gathered entry 0 of an
    empty lane: a trace-time IndexOutOfBounds for a batch of 0 first, and the kernel's run-time
    IndexOutOfBounds when the kernel traced for other batch sizes ran it; NumPy gives NaN."""
    w = rng.standard_normal(3)
    for n in rows:
        x = rng.standard_normal((n, 3))
        with warnings.catch_warnings():  # NumPy's 'All-NaN slice' for an empty lane
            warnings.simplefilter("ignore", RuntimeWarning)
            expected, (median, quantiles) = nan_statistics(w, x)
        (value, (got_median, got_quantiles)), grad = nan_statistics_c.value_and_grad(w, x)
        np.testing.assert_allclose(value, expected, rtol=1e-12)
        np.testing.assert_allclose(got_median, median, rtol=1e-12)
        if n == 0:  # NumPy's nanquantile of an empty array is nanmean's: q's axis dropped
            assert np.isnan(got_quantiles).all() and got_quantiles.shape == (2, 3)
            assert np.all(grad == 0.0)
        else:
            np.testing.assert_allclose(got_quantiles, quantiles, rtol=1e-12)
            np.testing.assert_allclose(grad, central_differences(
                lambda w_, x=x: nan_statistics(w_, x)[0], [w], 0), rtol=1e-6, atol=1e-8)
