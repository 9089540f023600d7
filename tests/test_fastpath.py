"""Repeated plain-array calls run the last kernel at once; whatever does not fit it (another
dtype, rank, layout, static size or argument count) is refused by numba's dispatcher or by the
kernel's own shape check, before any memory is touched, and takes the general path."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.errors import TraceError
from compiler.fastpath import REFUSED
from runtime import Parameter

square_norm = compile_grad(lambda w, x: np.sum((x @ w) ** 2))
W, X = np.ones(3), np.ones((4, 3))


@pytest.fixture(scope="module")
def fast():
    square_norm.value_and_grad(W, X)
    return square_norm._fast["value_and_grad"]


@pytest.mark.parametrize("args", [
    (W, np.ones((9, 2))),  # a static size differs: the kernel's shape check
    (np.ones(4), X),  # the differentiated argument's size
    (W, np.ones((4, 3), np.float32)),  # dtype: numba's dispatcher
    (W, np.ones(4)),  # rank
    (W, np.ones((6, 3))[::2]),  # not contiguous
    (W, [[1.0, 2.0, 3.0]]),  # not an array
    (W,),  # argument count
    (Parameter(W), X),  # a runtime Tensor: the recorded path's business
], ids=["static-size", "wrt-size", "dtype", "rank", "layout", "list", "count", "tensor"])
def test_what_does_not_fit_the_last_kernel_is_refused_without_compiling(fast, args):
    assert fast.run(args) is REFUSED
    assert len(fast.kernel.dispatcher.signatures) == 1


def test_a_new_batch_size_fits_and_gives_the_right_values(fast):
    value, grad = fast.run((W, np.full((9, 3), 2.0)))
    assert value == 9 * 36.0
    np.testing.assert_allclose(grad, np.full(3, 2 * 6.0 * 2 * 9))


def test_refused_calls_take_the_general_path_and_its_answers(fast):
    with pytest.raises(TraceError, match=r"matmul"):
        square_norm.value_and_grad(W, np.ones((9, 2)))
    x32 = np.full((5, 3), 0.5, np.float32)
    value, grad = square_norm.value_and_grad(W.astype(np.float32), x32)
    assert value.dtype == np.float32 and value == np.float32(5 * 1.5**2)
    np.testing.assert_allclose(grad, np.full(3, 2 * 1.5 * 0.5 * 5, np.float32))
