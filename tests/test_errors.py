"""User mistakes fail before any kernel runs, naming the user's file:line and what was wrong."""

from __future__ import annotations

import os

import numpy as np
import pytest
from source_lines import marked_line

from compiler import ArgumentError, TraceError, UnsupportedError, compile_grad

HERE = os.path.basename(__file__)


def line_of(marker: str) -> int:
    return marked_line(__file__, marker)


@pytest.fixture(params=["interpreter", "numba"])
def backend(request):
    return request.param


def test_shape_mismatch_names_both_shapes_and_the_line(backend):
    @compile_grad(backend=backend)
    def loss(w, x):
        return np.sum(x @ w - np.ones(3))  # MISMATCH

    with pytest.raises(TraceError) as err:
        loss(np.ones((4, 2)), np.ones((5, 4)))
    message = str(err.value)
    assert f"{HERE}:{line_of('MISMATCH')}" in message
    assert "(5, 2)" in message and "(3,)" in message
    assert "x @ w - np.ones(3)" in message  # the offending source line is shown


def test_matmul_mismatch_names_shapes():
    @compile_grad(backend="interpreter")
    def f(w, x):
        return np.sum(x @ w)  # MATMUL

    with pytest.raises(TraceError, match=r"matmul \(@\): shapes \(4, 5\) and \(3, 2\) are not "
                                         r"aligned: 5 \(dim 1\) != 3 \(dim 0\)") as err:
        f(np.ones((3, 2)), np.ones((5, 4)).T)
    assert f"{HERE}:{line_of('MATMUL')}" in str(err.value)


def test_unsupported_numpy_function_is_named(backend):
    @compile_grad(backend=backend)
    def f(x):
        return np.sum(np.unique(x))  # UNIQUE

    with pytest.raises(UnsupportedError, match=r"np\.unique is not supported") as err:
        f(np.ones(3))
    assert f"{HERE}:{line_of('UNIQUE')}" in str(err.value)


def test_unsupported_ufunc_method_suggests_the_function():
    f = compile_grad(lambda x: np.subtract.reduce(x), backend="interpreter")
    with pytest.raises(UnsupportedError, match=r"np\.subtract\.reduce is not supported.*np\.sum"):
        f(np.ones(3))


def test_branching_on_a_traced_value_suggests_where(backend):
    @compile_grad(backend=backend)
    def f(x):
        if x.sum() > 0:  # BRANCH
            return x.sum()
        return -x.sum()

    with pytest.raises(TraceError, match=r"np\.where\(condition, a, b\)") as err:
        f(np.ones(3))
    assert f"{HERE}:{line_of('BRANCH')}" in str(err.value)


def test_gradient_of_an_integer_argument_is_refused(backend):
    f = compile_grad(lambda labels, w: np.sum(w * labels), backend=backend)
    with pytest.raises(ArgumentError, match=r"'labels': it holds int64 values"):
        f.grad(np.arange(3), np.ones(3))


def test_wrong_argument_count(backend):
    f = compile_grad(lambda w, x: np.sum(w * x), backend=backend)
    with pytest.raises(ArgumentError, match=r"missing a required argument: 'x'"):
        f(np.ones(3))
    with pytest.raises(ArgumentError, match=r"too many positional arguments"):
        f(np.ones(3), np.ones(3), np.ones(3))


def test_unknown_wrt_name():
    f = compile_grad(lambda w, x: np.sum(w * x), wrt="b", backend="interpreter")
    with pytest.raises(ArgumentError, match=r"wrt='b'.*without an argument named 'b'"):
        f.grad(np.ones(3), np.ones(3))


def test_grad_of_a_non_scalar_result_explains():
    f = compile_grad(lambda w: w * 2.0, backend="interpreter")
    with pytest.raises(ArgumentError, match=r"grad needs <lambda> to return one scalar.*f64\[3\]"):
        f.grad(np.ones(3))


def test_item_assignment_is_refused():
    def f(x):
        x[0] = 1.0
        return x.sum()

    with pytest.raises(UnsupportedError, match="item assignment"):
        compile_grad(f, backend="interpreter")(np.ones(3))


def test_non_array_argument_is_refused():
    f = compile_grad(lambda x, mode: np.sum(x), backend="interpreter")
    with pytest.raises(ArgumentError, match=r"'mode' holds a set"):
        f(np.ones(3), {"fast"})  # a string is static (tests/test_program_structure.py)


def returns_a_note(x):  # marker: returns a note
    return np.sum(x), "done"


def test_returning_a_string_is_refused_at_the_function():
    # was a NotImplementedError "no literal for dtype <U4" from code generation
    f = compile_grad(returns_a_note, backend="interpreter")
    with pytest.raises(TraceError, match=rf"{HERE}:{line_of('marker: returns a note')}: "
                       r"returns_a_note returns 'done' \(str\): a compiled function returns "
                       "arrays and numbers"):
        f(np.ones(3))


def test_a_complex_constant_is_refused_at_its_line():
    def f(x):
        return np.sum(x) * (1 + 2j)  # marker: complex constant

    with pytest.raises(TraceError, match=rf"{HERE}:{line_of('marker: complex constant')}: "
                       r"\(1\+2j\) \(complex\) is used as an array here, but kernels compute "
                       "on real numbers only"):
        compile_grad(f, backend="interpreter")(np.ones(3))


def test_boolean_mask_indexing_explains():
    f = compile_grad(lambda x: np.sum(x[x > 0]), backend="interpreter")
    with pytest.raises(UnsupportedError, match="boolean masks have a data-dependent shape"):
        f(np.ones(3))


def test_inputs_are_never_modified(backend):
    w, x = np.array([1.0, -2.0, 3.0]), np.array([[0.5, 1.0, 2.0]] * 4)
    w0, x0 = w.copy(), x.copy()
    f = compile_grad(lambda w, x: np.sum(np.maximum(x * w, 0.0) ** 2), backend=backend)
    f(w, x)
    f.grad(w, x)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(x, x0)
