"""NumPy spellings users write that gradfuse got wrong or refused: keyword names of NumPy 2
(`np.clip(x, min=...)`, `x.clip(max=...)`), Fortran-order reshapes, Python bools as
np.where's condition (what np.fmax/fmin of a scalar build), and a float array to the power
0.5, which NumPy computes as its sqrt. Values against NumPy, gradients against central
differences, on both backends (one compiled function for all of them)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from compiler.errors import TraceError, UnsupportedError


def spellings(x):
    return (np.clip(x, min=-0.5, max=0.75), x.clip(max=0.25), x.clip(-0.25),
            np.clip(x, a_min=-0.5, a_max=None), x.reshape((3, 8), order="F"),
            np.reshape(x, (2, -1, 3), order="F"), np.ravel(x, order="F"), x.T.flatten("F"),
            np.fmax(x, 0.2), np.fmin(np.nan, x), np.where(True, x, 0.0),
            np.where(False, 1.0, x), x ** 0.5, np.power(x, 0.5))


SPELLINGS = {backend: compile_grad(spellings, backend=backend)
             for backend in ("interpreter", "numba")}


def _weighted_total(x):
    # every result, each entry weighted differently, NaN-free: a scalar to differentiate
    return sum(np.sum(np.where(np.isnan(r), 0.0, r) * np.linspace(-1, 2, r.size).reshape(r.shape))
               for r in spellings(np.abs(x) + 0.1))


@pytest.mark.parametrize("backend", sorted(SPELLINGS))
def test_spellings_give_numpys_values(backend):
    x = np.linspace(-2.0, 2.0, 24).reshape(4, 6)
    x[0, :3] = [-np.inf, np.inf, np.nan]  # -inf ** 0.5 is NaN in NumPy (its sqrt), not C's inf
    with np.errstate(invalid="ignore"):
        expected = spellings(x)
    for k, (got, want) in enumerate(zip(SPELLINGS[backend](x), expected)):
        assert np.asarray(got).dtype == want.dtype, k
        np.testing.assert_array_equal(got, want, err_msg=f"result {k}")


def test_spellings_give_gradients_of_central_differences():
    x = np.random.default_rng(5).normal(size=(4, 6))
    grad = compile_grad(_weighted_total).grad(x)
    np.testing.assert_allclose(grad, central_differences(_weighted_total, [x], 0),
                               rtol=1e-6, atol=1e-7)


def test_misspelled_bounds_and_layout_orders_are_refused_at_the_users_line():
    x = np.ones((2, 3))
    f = compile_grad(lambda x: np.clip(x, a_min=0.0, min=0.5), backend="interpreter")
    with pytest.raises(TraceError, match=r"test_numpy_spellings.py:\d+: clip: pass the min bound "
                                         r"once"):
        f(x)
    f = compile_grad(lambda x: x.reshape((3, 2), order="A"), backend="interpreter")
    with pytest.raises(UnsupportedError, match=r"reshape\(order='A'\) is not supported"):
        f(x)


def array_attributes(x):
    """ndarray attributes of a real array: mT (NumPy 2), real, imag, conj(), nbytes,
    itemsize (each was a bare AttributeError on a traced array)."""
    b = x.reshape(2, 3, 2)
    return (np.sum((b.mT @ b) * x.real.sum()) + np.sum(x.imag) + x.nbytes / x.itemsize
            + np.sum(x.conj() ** 2) + np.sum(x.conjugate()))


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_array_attributes_of_real_arrays(backend):
    x = np.random.default_rng(3).normal(size=(2, 6))
    value, grad = compile_grad(array_attributes, backend=backend).value_and_grad(x)
    np.testing.assert_allclose(value, array_attributes(x), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(array_attributes, [x], 0), rtol=1e-6)
    with pytest.raises(TraceError, match="x.mT of an array of 1 dimension"):
        compile_grad(lambda v: np.sum(v.mT), backend="interpreter")(np.ones(3))
