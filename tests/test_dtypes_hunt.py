"""Dtypes in compiled functions as NumPy 2 gives them (NEP 50): float32 beside float64, ints,
bools and Python numbers; dtype= arguments; the gradients' dtypes are their inputs'."""

from __future__ import annotations

import numpy as np
from gradcheck import central_differences

from compiler import compile_grad

rng = np.random.default_rng(11)


# --- np.stack of arrays of two dtypes -------------------------------------------------------
def stacked(x, y):
    return np.sum(np.stack([x, y]) ** 2 * np.arange(1.0, 5.0))


stacked_c = compile_grad(stacked, wrt=(0, 1))


def test_a_stack_of_float32_and_float64_arguments():
    """The kernel took the stacked arguments as one packed array of the stack's dtype and
    refused the float32 one with a bare TypeError 'an array of another dtype than the
    kernel's'."""
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = rng.standard_normal((3, 4))
    value, (gx, gy) = stacked_c.value_and_grad(x, y)
    assert stacked_c(x, y) == value
    assert np.asarray(value).dtype == np.float64
    np.testing.assert_allclose(value, stacked(x, y), rtol=1e-12)
    assert gx.dtype == np.float32 and gy.dtype == np.float64
    np.testing.assert_allclose(gx, central_differences(stacked, [x, y], 0), rtol=1e-6)
    np.testing.assert_allclose(gy, central_differences(stacked, [x, y], 1), rtol=1e-6)
