"""Reductions and scans of issue 14 as users write them, against PyTorch and NumPy: cumprod
(zeros included), sort, argsort, argmax/argmin, any/all, where= of sum/mean/prod, ufunc
reduce and accumulate, diff. Values and gradients through the interpreter and numba (one
fused kernel for the family); integer results against NumPy exactly."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences
from op_cases import Arg
from torch_idioms import Idiom, lazy_family

from compiler import compile_grad
from compiler.errors import TraceError, UnsupportedError

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(31)

A = Arg
MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, True, True]])


def _t(array):
    return torch.tensor(array)


IDIOMS = [
    Idiom("cumprod", lambda x: np.cumprod(x, axis=1), lambda x: torch.cumprod(x, 1), (A((3, 4)),)),
    Idiom("cumprod_zeros", lambda x: np.cumprod(x, axis=1), lambda x: torch.cumprod(x, 1),
          (A((3, 5)),), zeros=((0, (0, 1)), (0, (1, 0)), (0, (1, 3)), (0, (2, 4)))),
    Idiom("cumprod_two_zeros_axis0", lambda x: np.cumprod(x, axis=0), lambda x: torch.cumprod(x, 0),
          (A((4, 2)),), zeros=((0, (1, 0)), (0, (2, 0)), (0, (3, 1)))),
    Idiom("cumprod_flat", lambda x: np.cumprod(x), lambda x: torch.cumprod(x.flatten(), 0),
          (A((2, 3)),)),
    Idiom("multiply_accumulate", lambda x: np.multiply.accumulate(x, axis=1) + np.add.accumulate(x),
          lambda x: torch.cumprod(x, 1) + torch.cumsum(x, 0), (A((3, 4)),)),
    Idiom("sort", lambda x: np.sort(x, axis=0), lambda x: torch.sort(x, 0).values, (A((3, 4)),),
          distinct=True),
    Idiom("sort_last_flat", lambda x: np.sort(x) + np.sort(x, axis=None)[:4],
          lambda x: torch.sort(x, -1).values + torch.sort(x.flatten()).values[:4], (A((3, 4)),),
          distinct=True),
    Idiom("argsort_gather", lambda x: np.take_along_axis(x, np.argsort(x, axis=1)[:, ::-1], 1),
          lambda x: torch.sort(x, 1, descending=True).values, (A((3, 4)),), distinct=True),
    Idiom("argmax_argmin", lambda x: np.argmax(x, axis=1) * x[:, 0] + np.argmin(x, axis=1),
          lambda x: torch.argmax(x, 1) * x[:, 0] + torch.argmin(x, 1), (A((3, 4)),),
          distinct=True),
    Idiom("any_all", lambda x: np.any(x > 1, axis=0) * x + np.all(x > -1, axis=1, keepdims=True),
          lambda x: torch.any(x > 1, 0) * x + torch.all(x > -1, 1, keepdim=True), (A((3, 4)),)),
    Idiom("logaddexp_reduce", lambda x: np.logaddexp.reduce(x, axis=1),
          lambda x: torch.logsumexp(x, 1), (A((3, 4)),)),
    Idiom("logaddexp_reduce_all", lambda x: np.logaddexp.reduce(x * 30.0, axis=None),
          lambda x: torch.logsumexp((x * 30.0).flatten(), 0), (A((2, 3)),)),
    Idiom("add_multiply_max_reduce",
          lambda x: np.add.reduce(x) + np.multiply.reduce(x, axis=0) + np.maximum.reduce(x),
          lambda x: x.sum(0) + x.prod(0) + x.amax(0), (A((3, 4)),), distinct=True),
    Idiom("sum_where", lambda x: np.sum(x, axis=1, where=MASK) + np.prod(x, axis=1, where=MASK),
          lambda x: torch.where(_t(MASK), x, 0).sum(1) + torch.where(_t(MASK), x, 1).prod(1),
          (A((3, 4)),)),
    Idiom("mean_where", lambda x: np.mean(x, axis=0, where=MASK[1:]),
          lambda x: torch.where(_t(MASK[1:]), x, 0).sum(0) / _t(MASK[1:]).sum(0),
          (A((2, 4)),)),
    Idiom("diff", lambda x: np.diff(x, n=2, axis=1), lambda x: torch.diff(x, n=2, dim=1),
          (A((3, 5)),)),
    Idiom("diff_prepend", lambda x, p: np.diff(x, axis=0, prepend=p, append=1.5),
          lambda x, p: torch.diff(x, dim=0, prepend=p, append=torch.full((1, 4), 1.5,
                                                                          dtype=x.dtype)),
          (A((3, 4)), A((2, 4)))),
]

family = lazy_family(IDIOMS, seed=14)


def test_idioms_agree_with_pytorch_under_numpy():
    family().check_numpy_values()


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_values_and_gradients_match_pytorch(backend):
    family().check(backend)


# --- integer results: exactly NumPy's ---------------------------------------------------------
def integer_results(x, t):
    return (np.argmax(x), np.argmax(x, axis=0), np.argmin(x, axis=1, keepdims=True),
            np.argmax(t, axis=1), np.argmin(t, axis=0), np.argsort(t, axis=1),
            np.argsort(t, axis=0, kind="stable"), np.argsort(t, axis=None, kind="stable"),
            np.argsort(x, axis=1, kind="stable"), np.any(x > 2, axis=1),
            np.all(t > 0, axis=0), np.any(t), np.all(x, axis=(0, 1), keepdims=True),
            np.isnan(x).any(axis=1))


INTEGER_RESULTS = compile_grad(integer_results)


def test_integer_results_match_numpy_through_numba():
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, np.nan, 1.0, np.nan], [-1.0, -1.0, 4.0, 4.0]])
    ties = np.array([[2.0, 1.0, 2.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0],
                     [3.0, -1.0, 3.0, -1.0, 3.0]])
    got = INTEGER_RESULTS(x, ties)
    for k, (g, expected) in enumerate(zip(got, integer_results(x, ties))):
        assert np.asarray(g).dtype == np.asarray(expected).dtype, k
        np.testing.assert_array_equal(g, expected, err_msg=f"result {k}")
    # gradfuse always sorts stably (ties keep their order, NaNs go last), whatever kind= says
    np.testing.assert_array_equal(got[5], np.argsort(ties, axis=1, kind="stable"))


def test_sort_gradient_follows_the_stable_permutation():
    x = np.array([2.0, 1.0, 2.0, 1.0])
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    f = compile_grad(lambda x: np.sum(np.sort(x) * weights), backend="interpreter")
    # sorted order is x[1], x[3], x[0], x[2]: each gets its place's weight
    np.testing.assert_array_equal(f.grad(x), [3.0, 1.0, 4.0, 2.0])


def test_cumprod_gradient_at_zeros_closed_form():
    x = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    f = compile_grad(lambda x: np.sum(np.cumprod(x)), backend="interpreter")
    # d/dx1 sum(cumprod) = 2 + 2*3 (the products through x1 that have no other zero)
    np.testing.assert_array_equal(f.grad(x), [1.0, 8.0, 0.0, 0.0, 0.0])


def test_unsupported_ufunc_methods_are_named():
    with pytest.raises(UnsupportedError, match=r"np\.subtract\.reduce is not supported.*"
                                               r"np\.logaddexp\.reduce"):
        compile_grad(lambda x: np.subtract.reduce(x), backend="interpreter")(np.ones(3))
    with pytest.raises(UnsupportedError, match=r"np\.maximum\.accumulate is not supported"):
        compile_grad(lambda x: np.maximum.accumulate(x), backend="interpreter")(np.ones(3))
    with pytest.raises(UnsupportedError, match=r"maximum\.reduce\(where=\.\.\.\)"):
        compile_grad(lambda x: np.maximum.reduce(x, where=x > 0),
                     backend="interpreter")(np.ones(3))


def test_in_place_sort_method_is_refused():
    with pytest.raises(UnsupportedError, match=r"x\.sort\(\) sorts in place.*np\.sort"):
        compile_grad(lambda x: x.sort(), backend="interpreter")(np.ones(3))


def test_second_derivatives_of_cumprod_with_a_zero_and_of_sort():
    from gradcheck import central_differences

    for fn, x in [(lambda x: np.sum(np.cumprod(x) ** 2), np.array([0.5, -1.2, 0.0, 0.8, 1.1])),
                  (lambda x: np.sum(np.sort(x) ** 3 * np.arange(4.0)),
                   np.array([0.3, -1.0, 2.0, 0.7]))]:
        g = compile_grad(fn, backend="interpreter")

        def weighted_gradient(x, g=g):
            return np.sum(g.grad(x) * np.arange(1.0, x.size + 1))

        hessian_product = compile_grad(weighted_gradient, backend="interpreter").grad(x)
        np.testing.assert_allclose(hessian_product,
                                   central_differences(weighted_gradient, [x], 0),
                                   rtol=1e-6, atol=1e-8)


def small_int_products(a, b, c, d):
    return np.prod(a), np.multiply.reduce(b, axis=0), np.prod(c, axis=1), d.prod()


SMALL_INT_PRODUCTS = compile_grad(small_int_products)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_products_of_small_ints_widen_as_numpys_do(backend):
    # int32 stayed int32 and overflowed; NumPy multiplies small ints as int64 (unsigned: uint64)
    a = np.full(4, 50000, dtype=np.int32)
    b = np.full((3, 2), 3000, dtype=np.int16)
    c = np.array([[True, True], [True, False]])
    d = np.full(3, 70000, dtype=np.uint32)
    f = SMALL_INT_PRODUCTS if backend == "numba" else \
        compile_grad(small_int_products, backend=backend)
    for got, expected in zip(f(a, b, c, d), small_int_products(a, b, c, d)):
        assert np.asarray(got).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(got, expected)


def reductions_in_dtype(i, x):
    return (np.sum(i, dtype=np.float64), np.prod(i, dtype=np.float64),
            np.cumsum(i, dtype=np.float64), np.cumprod(i, dtype=np.float64),
            np.einsum("i->", i, dtype=np.float64), np.add.accumulate(i, dtype=np.float64),
            np.sum(x, dtype=np.float64), np.nansum(x, dtype=np.float64),
            np.cumsum(x, dtype=np.float64))


IN_DTYPE = compile_grad(reductions_in_dtype)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_reductions_accumulate_in_their_dtype_argument(backend):
    # NumPy sums in dtype=: ints as floats (they overflowed as int64 and were cast after:
    # np.sum(3 * [2**62], dtype=float) gave -4.6e18), float32 to a float64 total (was rounded
    # to float32 first)
    i = np.full(3, 2**62)
    x = np.array([1e8, 1.0, 3.0], dtype=np.float32)
    f = IN_DTYPE if backend == "numba" else compile_grad(reductions_in_dtype, backend=backend)
    for got, expected in zip(f(i, x), reductions_in_dtype(i, x)):
        assert np.asarray(got).dtype == np.asarray(expected).dtype
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    grad = compile_grad(lambda x: np.sum(x * x, dtype=np.float64), backend=backend).grad(x)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, 2 * x)


def initial_and_dtype(k, x):
    return (np.sum(k, initial=0.5), np.prod(k, axis=0, initial=2),
            np.sum(x, initial=np.float64(0.5)), np.var(k, dtype=np.float32),
            np.std(k, axis=1, dtype=np.float32))


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_initial_takes_the_reductions_dtype_and_var_sums_in_its_dtype(backend):
    # np.sum(ints, initial=0.5) gave 5.5 (float64) where NumPy casts initial to int64 (5); a
    # float64 initial made a float32 sum float64; np.var(ints, dtype=np.float32) was float64
    k = np.array([[1, -2, 3], [4, 5, -6]])
    x = np.array([1.5, 2.25], np.float32)
    got = compile_grad(initial_and_dtype, backend=backend)(k, x)
    for g, e in zip(got, initial_and_dtype(k, x)):
        assert np.asarray(g).dtype == np.asarray(e).dtype
        np.testing.assert_allclose(g, e, rtol=1e-6)


def extremes_over_the_batch(w, X):
    return np.sum(w * np.max(X, axis=0)) + np.sum(np.ptp(X * w, axis=0))


def reductions_with_identities(w, X):
    return (np.logaddexp.reduce(X, axis=0) * w, np.any(X > 0, axis=0), np.all(X > 0, axis=0),
            np.max(X, axis=0, initial=-1.0) * w, np.min(X, axis=0, where=X > 0, initial=5.0))


EXTREMES = compile_grad(extremes_over_the_batch)
IDENTITIES = compile_grad(reductions_with_identities)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_max_over_an_empty_batch_raises_as_numpy_does(backend):
    # the kernel gave -inf (np.max) and garbage further on for an empty batch, where NumPy
    # raises; the interpreter raised NumPy's error without the user's line
    f = EXTREMES if backend == "numba" else compile_grad(extremes_over_the_batch,
                                                         backend=backend)
    w = np.array([1.0, 2.0, 3.0])
    X = RNG.normal(size=(4, 3))
    np.testing.assert_allclose(f(w, X), extremes_over_the_batch(w, X), rtol=1e-12)
    with pytest.raises(ValueError, match=r"test_numpy_reductions.py:\d+: zero-size array to "
                                         "reduction operation maximum which has no identity"):
        f(w, np.zeros((0, 3)))
    np.testing.assert_allclose(f(w, X[:2]), extremes_over_the_batch(w, X[:2]), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_reductions_with_an_identity_of_an_empty_batch_give_numpys_values(backend):
    # the interpreter raised 'zero-size array to reduction operation maximum' for these
    f = IDENTITIES if backend == "numba" else compile_grad(reductions_with_identities,
                                                           backend=backend)
    w = np.array([1.0, 2.0, 3.0])
    for X in (RNG.normal(size=(4, 3)), np.zeros((0, 3))):
        for got, expected in zip(f(w, X), reductions_with_identities(w, X)):
            assert np.asarray(got).dtype == np.asarray(expected).dtype
            np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_extremes_of_a_static_empty_axis_are_errors_at_the_users_line():
    f = compile_grad(lambda x: np.max(x, axis=0), backend="interpreter")
    with pytest.raises(TraceError, match="zero-size array to reduction operation maximum"):
        f(np.zeros((0, 3)))
    f = compile_grad(lambda x: np.sum(x) + np.argmin(x, axis=0), backend="interpreter")
    with pytest.raises(TraceError, match="attempt to get argmin of an empty sequence"):
        f(np.zeros((0, 3)))


def test_axis_zero_of_a_0d_array_as_numpy_reads_it():
    # np.sum/np.max let axis 0 of a 0-d array through (the interpreter raised a bare AxisError,
    # np.max a bare IndexError on both backends); np.mean refuses it (was a bare IndexError)
    x = np.array(2.5)
    f = compile_grad(lambda x: np.sum(x, axis=0) * np.max(x, axis=-1) + np.min(x, axis=0),
                     backend="interpreter")
    np.testing.assert_allclose(f.value_and_grad(x), (2.5 * 2.5 + 2.5, 2 * 2.5 + 1))
    assert compile_grad(lambda x: np.any(x, axis=0), backend="interpreter")(x)
    with pytest.raises(TraceError, match="axis 0 is out of bounds for array of dimension 0"):
        compile_grad(lambda x: np.mean(x, axis=0), backend="interpreter")(x)


# --- np.flip, ptp, nansum, average, fmax/fmin: composites of supported ops -------------------
def flips_and_friends(x, y, w):
    flips = np.sum(np.flip(x, 1) * y) + np.sum(np.flip(x) * y**2) + np.sum(np.fliplr(x)[0]) \
        + np.sum(np.flipud(x)[0] * 3)
    spread = np.sum(np.ptp(x, axis=0) * w[:4].sum()) + np.ptp(y)
    nan_sums = np.nansum(x * y) + np.sum(np.nansum(x, axis=1, keepdims=True))
    means = np.average(x) + np.sum(np.average(x, axis=1, weights=w)) \
        + np.sum(np.average(x, axis=0, weights=y * y + 1))
    avg, weight_sums = np.average(x, axis=1, weights=w, returned=True)
    nan_extremes = np.sum(np.fmax(x, y) * 2 + np.fmin(x, y)) + np.sum(avg * weight_sums)
    return flips + spread + nan_sums + means + nan_extremes


FLIPS = {backend: compile_grad(flips_and_friends, wrt=(0, 1, 2), backend=backend)
         for backend in ("interpreter", "numba")}


@pytest.mark.parametrize("backend", sorted(FLIPS))
def test_flip_ptp_nansum_average_fmax_give_numpys_values_and_gradients(backend):
    rng = np.random.default_rng(2)
    args = (rng.normal(size=(4, 5)), rng.normal(size=(4, 5)), rng.uniform(0.5, 2, size=5))
    value, grads = FLIPS[backend].value_and_grad(*args)
    np.testing.assert_allclose(value, flips_and_friends(*args), rtol=1e-12)
    for k, grad in enumerate(grads):
        np.testing.assert_allclose(grad, central_differences(flips_and_friends, args, k),
                                   rtol=1e-5, atol=1e-6)


def test_nansum_fmax_fmin_treat_nan_as_numpy_does():
    x, y = np.arange(12.0).reshape(3, 4) - 5, np.full((3, 4), 0.5)
    x[1, 2] = y[0, 0] = y[1, 2] = np.nan
    f = compile_grad(lambda x, y: (np.nansum(x * 2), np.fmax(x, y), np.fmin(x, y)))
    total, high, low = f(x, y)
    assert total == np.nansum(x * 2)
    np.testing.assert_array_equal(high, np.fmax(x, y))  # NaN only where both are
    np.testing.assert_array_equal(low, np.fmin(x, y))
