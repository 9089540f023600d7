"""np.cbrt, the NaN-ignoring reductions (nanmean, nanmax, ..., nancumprod), the order statistics
(median, quantile, percentile and their nan forms), max/min with initial= and where=, and
np.take's clip and wrap modes: values against NumPy (NaNs, lanes of NaNs only, axis forms,
keepdims, dtypes), gradients against central differences in float64, on both backends (a few
numba kernels shared at module level)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from compiler.errors import TraceError, UnsupportedError

BACKENDS = ("interpreter", "numba")
# NumPy (the reference, and finite differences) warns of all-NaN slices and empty means
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _with_nans(dtype=np.float64, seed=0):
    """A (4, 6) array of distinct values with a NaN in row 1, two in row 2, and row 3 all NaN."""
    x = (np.random.default_rng(seed).permutation(24).reshape(4, 6) - 11.5) * 0.25
    x[1, 2] = x[2, 0] = x[2, 5] = np.nan
    x[3] = np.nan
    return x.astype(dtype)


def _numpy(fn, *args):
    with warnings.catch_warnings():  # NumPy warns of all-NaN slices and empty means
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args)


def _assert_same(got, expected, exact=True, what=""):
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        g, e = np.asarray(g), np.asarray(e)
        assert g.dtype == e.dtype, f"{what} result {k}: {g.dtype} != {e.dtype}"
        assert g.shape == e.shape, f"{what} result {k}: {g.shape} != {e.shape}"
        if exact:
            np.testing.assert_array_equal(g, e, err_msg=f"{what} result {k}")
        else:  # float32 sums: gradfuse accumulates in float64, NumPy pairwise in float32
            np.testing.assert_allclose(g, e, rtol=2e-6, atol=1e-6, err_msg=f"{what} result {k}")


# --- the NaN-ignoring reductions and scans --------------------------------------------------
def nan_reductions(x):
    return (np.nansum(x, axis=1), np.nanprod(x, axis=0, keepdims=True),
            np.nanmean(x, axis=1), np.nanmean(x), np.nanmax(x, axis=1),
            np.nanmin(x, axis=(0, 1), keepdims=True), np.nanmax(x, axis=1, initial=1.0),
            np.nanmin(x, axis=0, initial=0.0, where=x > -2), np.nanvar(x, axis=1),
            np.nanvar(x, axis=0, ddof=1), np.nanstd(x, axis=1, ddof=2), np.nanstd(x),
            np.nancumsum(x, axis=1), np.nancumprod(x * 0.5 + 1.0),
            np.nanmean(x, axis=1, where=x > -2), np.nansum(x, axis=0, initial=2.0),
            np.nanargmax(x[:3]), np.nanargmin(x[:3], axis=0))


def nan_reductions_and_args(x):
    return nan_reductions(x) + (np.nanargmax(x, axis=1), np.nanargmin(x, axis=1, keepdims=True))


NAN_REDUCTIONS = {backend: compile_grad(nan_reductions_and_args, backend=backend)
                  for backend in BACKENDS}


def _expected_nan_reductions(x):
    """NumPy's results; for nanargmax/nanargmin NumPy raises ValueError on the row of NaNs
    only, where gradfuse answers -1 (as JAX)."""
    return _numpy(nan_reductions, x) + (np.append(np.nanargmax(x[:3], axis=1), -1),
                                        np.append(np.nanargmin(x[:3], axis=1), -1)[:, None])


# numba runs float64 (exact), the interpreter float32 too (its sums accumulate in float64)
@pytest.mark.parametrize("backend, dtype", [("interpreter", np.float64), ("numba", np.float64),
                                            ("interpreter", np.float32)])
def test_nan_reductions_give_numpys_values_and_dtypes(backend, dtype):
    x = _with_nans(dtype)
    got = NAN_REDUCTIONS[backend](x)
    _assert_same(got, _expected_nan_reductions(x), exact=dtype == np.float64,
                 what=f"{backend} {np.dtype(dtype)}")
    # a lane of NaNs only: 0 for sums, 1 for products, NaN for the others, -1 for the args
    assert got[0][3] == 0 and got[1][0, 0] != 0 and np.isnan(got[4][3]) and got[6][3] == 1.0
    assert got[-2][3] == -1 and got[-1][3, 0] == -1


def test_nan_reductions_of_integers_are_the_plain_ones():
    x = np.arange(12).reshape(3, 4) - 5
    f = compile_grad(lambda x: (np.nansum(x, axis=1), np.nanmax(x, axis=0), np.nanmean(x),
                                np.nanargmin(x, axis=1), np.nancumprod(x, axis=0),
                                np.nanvar(x, ddof=1), np.nanmedian(x, axis=1)),
                     backend="interpreter")
    expected = (np.sum(x, axis=1), np.max(x, axis=0), np.mean(x), np.argmin(x, axis=1),
                np.cumprod(x, axis=0), np.var(x, ddof=1), np.median(x, axis=1))
    _assert_same(f(x), expected)


# --- order statistics ------------------------------------------------------------------------
def order_statistics(x, y):
    # the lanes of x along axis 1 are sorted once (CSE), whatever asks for them: 3 sorts in all
    return (np.median(x, axis=1), np.quantile(x, [0.0, 0.3, 0.5, 1.0], axis=1),
            np.percentile(x, 37.5, axis=1, keepdims=True), np.nanmedian(x, axis=1),
            np.nanquantile(x, [0.25, 1.0], axis=1, keepdims=True),
            np.nanpercentile(x, np.float32(80.0), axis=1), np.quantile(x, [[0.1], [1]], axis=1),
            np.nanmedian(x, axis=0), np.quantile(y, 0.7, axis=(0, 2)))


def more_axis_forms(x, y):
    return (np.median(x[:3]), np.median(y, axis=(1, 2), keepdims=True),
            np.nanquantile(x, 0.4, axis=None, keepdims=True), np.percentile(x[0], [10, 90]),
            np.nanmedian(y, axis=-1), np.median(y[0, 0, :4]), np.quantile(y, [0.5], axis=0))


ORDER_STATISTICS = {"interpreter": compile_grad(order_statistics, backend="interpreter"),
                    "numba": compile_grad(order_statistics)}
MORE_AXIS_FORMS = compile_grad(more_axis_forms, backend="interpreter")


# numba runs one dtype (float32: where weak Python floats meet the data); the interpreter both
@pytest.mark.parametrize("backend, dtype", [("interpreter", np.float64), ("numba", np.float32),
                                            ("interpreter", np.float32)])
def test_order_statistics_give_numpys_values_and_dtypes(backend, dtype):
    x = _with_nans(dtype)
    y = np.random.default_rng(1).normal(size=(2, 3, 5)).astype(dtype)
    got = ORDER_STATISTICS[backend](x, y)
    _assert_same(got, _numpy(order_statistics, x, y), what=f"{backend} {np.dtype(dtype)}")
    assert np.isnan(got[0][1]) and not np.isnan(got[3][1]) and np.isnan(got[3][3])
    if backend == "interpreter":
        _assert_same(MORE_AXIS_FORMS(x, y), _numpy(more_axis_forms, x, y))


def quantile_methods(x):
    # lanes of 6 numbers (index (n - 1) q = 0.5, 1.5, 2.5, ... for q = 0.1, 0.3, 0.5, ...: the
    # halves that nearest rounds to even), 5 and 4 (the nan forms), and of NaNs only
    results = []
    for method in ("lower", "higher", "nearest", "midpoint"):
        results += [np.quantile(x, [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0], axis=1, method=method),
                    np.nanquantile(x, [0.125, 0.5, 0.6, 1.0], axis=1, method=method),
                    np.percentile(x, 62.5, axis=1, keepdims=True, method=method),
                    np.nanpercentile(x, np.float32(30.0), axis=1, method=method)]
    return tuple(results)


QUANTILE_METHODS = {"interpreter": compile_grad(quantile_methods, backend="interpreter"),
                    "numba": compile_grad(quantile_methods)}


@pytest.mark.parametrize("backend, dtype", [("interpreter", np.float64), ("numba", np.float32),
                                            ("interpreter", np.float32)])
def test_quantile_methods_give_numpys_values_and_dtypes(backend, dtype):
    x = _with_nans(dtype)
    _assert_same(QUANTILE_METHODS[backend](x), _numpy(quantile_methods, x),
                 what=f"{backend} {np.dtype(dtype)}")


def test_quantile_methods_send_the_gradient_to_the_statistics_they_pick():
    x = np.array([4.0, 1.0, 3.0, 2.0, 5.0, 0.0])  # sorted: 0 1 2 3 4 5 at 5 1 3 2 0 4
    for method, q, expected in [("lower", 0.5, [0, 0, 0, 1, 0, 0]),  # index 2.5 -> 2
                                ("higher", 0.5, [0, 0, 1, 0, 0, 0]),  # -> 3
                                ("nearest", 0.5, [0, 0, 0, 1, 0, 0]),  # 2.5 to even: 2
                                ("nearest", 0.7, [1, 0, 0, 0, 0, 0]),  # 3.5 to even: 4
                                ("midpoint", 0.5, [0, 0, 0.5, 0.5, 0, 0]),
                                ("midpoint", 0.2, [0, 1, 0, 0, 0, 0])]:  # index 1: itself
        for fn in (lambda x, q=q, method=method: np.quantile(x, q, method=method),
                   lambda x, q=q, method=method: np.nanquantile(x, q, method=method)):
            grad = compile_grad(fn, backend="interpreter").grad(x)
            np.testing.assert_array_equal(grad, expected, err_msg=f"{method} {q}")
            fd = central_differences(fn, [x], 0)
            np.testing.assert_allclose(grad, fd, atol=1e-8, err_msg=f"{method} {q}")


@pytest.mark.parametrize("q, dtype", [(0.3, np.float32), (np.float32(0.3), np.float32),
                                      (np.float64(0.3), np.float64), ([0.3], np.float64),
                                      (1, np.int64), (0.5, np.float64)])
def test_quantile_result_dtypes_follow_numpys_promotion(q, dtype):
    x = np.array([3.0, 1.0, 2.0, 4.0], dtype=np.float32 if dtype != np.int64 else np.int64)
    if q == 0.5 and dtype == np.float64:
        x = x.astype(np.int32)
    got = compile_grad(lambda x: (np.quantile(x, q), np.nanquantile(x, q)),
                       backend="interpreter")(x)
    for result in got:
        expected = np.quantile(x, q)
        assert np.asarray(result).dtype == np.asarray(expected).dtype == dtype
        np.testing.assert_array_equal(result, expected)


def test_order_statistics_refuse_what_they_do_not_compute():
    x = np.arange(6.0)
    for fn, message in [
        (lambda x: np.quantile(x, 0.5, method="inverted_cdf"),
         r"method='inverted_cdf'.*'linear', 'lower', 'higher', 'nearest', 'midpoint'"),
        (lambda x: np.percentile(x, 50, weights=x), r"weights="),
        (lambda x: np.quantile(x, x[0] / 10), r"q must be a constant"),
    ]:
        with pytest.raises(UnsupportedError, match=message):
            compile_grad(fn, backend="interpreter")(x)
    for fn, message in [
        (lambda x: np.quantile(x, 1.5), r"Quantiles must be in the range \[0, 1\]"),
        (lambda x: np.percentile(x, [10, 101]), r"Percentiles must be in the range"),
        (lambda x: np.max(x, where=x > 1), r"'maximum' does not have an identity"),
    ]:
        with pytest.raises(TraceError, match=message):
            compile_grad(fn, backend="interpreter")(x)


def test_median_of_a_batch_axis_and_nanmedian_beside_one():
    # the lane's length is needed to pick slices: a symbolic axis becomes static; nanmedian
    # counts in the kernel, so the batch stays symbolic
    f = compile_grad(lambda w, X: np.sum(np.median(X * w, axis=0))
                     + np.sum(np.nanmedian(X * w, axis=1)), backend="interpreter")
    w = np.array([1.0, -2.0, 0.5])
    for n in (3, 4, 7):
        X = np.random.default_rng(n).normal(size=(n, 3))
        X[0, 1] = np.nan
        value, grad = f.value_and_grad(w, X)
        expected = np.sum(np.median(X * w, axis=0)) + np.sum(np.nanmedian(X * w, axis=1))
        np.testing.assert_allclose(value, expected, rtol=1e-12)
        assert np.isnan(value) == np.isnan(expected)


# --- max/min with initial= and where=, take's modes ------------------------------------------
def extremes_and_takes(x, i):
    return (np.max(x, axis=1, initial=0.5), np.min(x, initial=-1.0),
            np.max(x, axis=0, where=x < 1, initial=-5.0), np.amin(x, axis=1, where=x > 0,
                                                                  initial=9.0, keepdims=True),
            np.take(x, [-3, 0, 9], axis=1, mode="clip"), np.take(x, [-7, 5, 13], mode="wrap"),
            np.take(x, i, axis=1, mode="clip"), np.take(x, i, axis=0, mode="wrap"),
            np.max(np.arange(5) - 2, initial=7), np.min(np.array([3, 1]) > 2, initial=True))


EXTREMES = {backend: compile_grad(extremes_and_takes, backend=backend) for backend in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_where_and_take_modes_give_numpys_values(backend):
    x = np.random.default_rng(3).normal(size=(3, 4))
    x[1, 2] = np.nan
    i = np.array([-5, -1, 0, 3, 4, 11])
    _assert_same(EXTREMES[backend](x, i), extremes_and_takes(x, i), what=backend)


# --- gradients: central differences, both backends -------------------------------------------
def loss(x, w):
    """The new functions, weighted; NaN results (lanes of NaNs) dropped by np.nansum, so the
    NaN entries' finite differences are 0 as their gradients are."""
    parts = [np.nanmean(x, axis=1), np.nanmax(x, axis=1), np.nanstd(x, axis=1, ddof=1),
             np.median(x, axis=1), np.quantile(x, [0.3, 0.75], axis=1)[1],
             np.nanmedian(x, axis=1), np.nanquantile(x, 0.35, axis=1), np.cbrt(x[0]),
             np.max(x, axis=1, where=x < 1, initial=-0.1),
             np.take(x, [-2, 1, 8], axis=1, mode="clip")[:, 0]]
    return sum(np.nansum(p * w[k]) for k, p in enumerate(parts))


def more_gradients(x, w):
    """What `loss` leaves out (composites of ops whose numba code other tests check), for the
    interpreter only."""
    parts = [np.nansum(x, axis=1), np.nanvar(x, axis=0, ddof=1), np.nancumsum(x, axis=1)[:, -2],
             np.percentile(x, 60, axis=0), np.nanmedian(x, axis=0),
             np.nanmean(x, where=x > -1), np.nanargmax(x[:3], axis=1) * x[:3, 0],
             np.nanprod(x * 0.5, axis=0), np.nanmin(x, axis=0, initial=0.3),
             np.nancumprod(x * 0.5 + 1, axis=0)[-1], np.nanpercentile(x, [20, 90], axis=0)[0],
             np.min(x, initial=0.0), np.take(x, [7, -9], axis=1, mode="wrap")[:, 1]]
    return sum(np.nansum(p * w[k]) for k, p in enumerate(parts))


LOSS = {backend: compile_grad(loss, backend=backend) for backend in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_match_central_differences(backend):
    x = _with_nans()
    w = np.linspace(0.5, 2.5, 16)
    value, grad = LOSS[backend].value_and_grad(x, w)
    np.testing.assert_allclose(value, loss(x, w), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(loss, [x, w], 0), rtol=1e-6,
                               atol=1e-8)
    assert np.all(grad[np.isnan(x)] == 0)  # NaN entries: exact zeros
    if backend == "interpreter":
        fn = compile_grad(more_gradients, backend=backend)
        np.testing.assert_allclose(fn.grad(x, w), central_differences(more_gradients, [x, w], 0),
                                   rtol=1e-6, atol=1e-8)


def test_quantile_gradient_goes_to_the_order_statistics_it_reads():
    x = np.array([4.0, 1.0, 3.0, 2.0, 5.0])  # sorted: 1 2 3 4 5 at positions 1 3 2 0 4
    grad = compile_grad(lambda x: np.quantile(x, 0.3), backend="interpreter").grad
    # virtual index 0.3 * 4 = 1.2: 0.8 to the 2nd smallest (x[3]), 0.2 to the 3rd (x[2])
    np.testing.assert_allclose(grad(x), [0.0, 0.0, 0.2, 0.8, 0.0])
    median = compile_grad(lambda x: np.median(x[:4]), backend="interpreter").grad
    np.testing.assert_allclose(median(x), [0.0, 0.0, 0.5, 0.5, 0.0])
    with_nan = compile_grad(lambda x: np.nanmedian(x), backend="interpreter").grad
    np.testing.assert_allclose(with_nan(np.array([4.0, np.nan, 3.0, 2.0])), [0, 0, 1, 0])


def test_cbrt_values_and_gradient_at_zero():
    x = np.array([-8.0, -1e-300, 0.0, 0.125, 27.0])
    f = compile_grad(lambda x: np.sum(np.cbrt(x)), backend="interpreter")
    np.testing.assert_array_equal(compile_grad(np.cbrt, backend="interpreter")(x), np.cbrt(x))
    # 1 / (3 cbrt(x)^2); inf at 0, as JAX's cbrt (and PyTorch's x ** (1/3))
    np.testing.assert_allclose(f.grad(x)[[0, 3, 4]], [1 / 12, 4 / 3, 1 / 27])
    assert f.grad(x)[2] == np.inf


def test_fmax_fmin_take_python_scalars():
    # np.fmax(x, 2.0) was a TraceError: `2.0 != 2.0` is a Python bool, not a traced condition
    x = np.array([1.0, np.nan, 3.0])
    f = compile_grad(lambda x: (np.fmax(x, 2.0), np.fmin(2, x), np.fmax(x, np.nan)),
                     backend="interpreter")
    _assert_same(f(x), (np.fmax(x, 2.0), np.fmin(2, x), np.fmax(x, np.nan)))
