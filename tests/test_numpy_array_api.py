"""NumPy 2's array-API spellings, np.nan_to_num and np.float_power (compiler/numpy_api/
array_api.py): values against NumPy on both backends, gradients against central differences."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_interpreted_gradient

from compiler import TraceError, compile_grad

RNG = np.random.default_rng(5)


def spellings(a, b, v, w):
    """a, b: stacks of matrices (2, 3, 3); v, w: vectors (3,)."""
    return (np.matrix_transpose(a), np.linalg.matrix_transpose(b), np.vecdot(a, b),
            np.linalg.vecdot(a, b, axis=1), np.linalg.matmul(a, b), np.linalg.outer(v, w),
            np.linalg.trace(a, offset=1), np.linalg.diagonal(b), np.float_power(v, 2))


def scalar_spellings(a, b, v, w):
    return sum(np.sum(np.sin(r)) for r in spellings(a, b, v, w))


def cleaned(x):
    return np.sum(np.nan_to_num(x) * 0.5) + np.sum(np.nan_to_num(x, nan=1.0, posinf=2.0) ** 2)


COMPILED = compile_grad(spellings)  # the numba kernel, shared by the tests below


def arguments():
    return (RNG.normal(size=(2, 3, 3)), RNG.normal(size=(2, 3, 3)), RNG.uniform(1, 2, 3),
            RNG.normal(size=3))


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_the_spellings_give_numpys_values(backend):
    args = arguments()
    compiled = COMPILED if backend == "numba" else compile_grad(spellings, backend=backend)
    for got, expected in zip(compiled(*args), spellings(*args), strict=True):
        assert np.asarray(got).dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)


def test_the_spellings_differentiate_as_central_differences():
    args = arguments()
    for position in range(4):
        check_interpreted_gradient(scalar_spellings, list(args), wrt=position)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_nan_to_num_replaces_and_has_no_gradient_there(backend):
    x = np.array([1.5, np.nan, np.inf, -np.inf, -2.0])
    f = compile_grad(cleaned, backend=backend)
    with np.errstate(over="ignore"):
        expected = cleaned(x)
    value, grad = f.value_and_grad(x)
    np.testing.assert_allclose(value, expected, rtol=1e-13)
    # d/dx of 0.5 x + x**2 where x is finite; 0 where a number replaced it
    np.testing.assert_array_equal(grad, [0.5 + 2 * 1.5, 0.0, 0.0, 0.0, 0.5 - 4.0])
    ints = np.arange(3)
    assert compile_grad(lambda n: np.nan_to_num(n) + 1, backend=backend)(ints).tolist() == \
        [1, 2, 3]


def test_array_api_errors_name_the_line():
    with pytest.raises(TraceError, match=r"test_numpy_array_api.py:\d+: matrix_transpose needs "
                                         "an array of at least 2 dimensions, got 1"):
        compile_grad(lambda v: np.sum(np.matrix_transpose(v)), backend="interpreter")(np.ones(3))
    with pytest.raises(TraceError, match="np.linalg.outer takes 1-D arrays only"):
        compile_grad(lambda m: np.sum(np.linalg.outer(m, m)), backend="interpreter")(
            np.ones((2, 2)))
