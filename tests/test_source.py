"""`.source(kind)` shows the generated kernel of the specialization used last."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter


def softsq(w):
    return np.sum(np.tanh(w) * w)


LINE = f"test_source.py:{inspect.getsourcelines(softsq)[1] + 1}"  # the return statement
softsq_numba = compile_grad(softsq)  # 4 kernels in all: forward and backward of two shapes


def test_forward_and_backward_source_of_the_last_specialization():
    np.testing.assert_allclose(softsq_numba(np.ones(3)), 3 * np.tanh(1.0))
    forward = softsq_numba.source("forward")
    assert "def softsq(w):" in forward and "_backward" not in forward
    assert "range(3)" in forward and f"({LINE})" in forward  # w's static size, the user's line
    backward = softsq_numba.source("backward")
    assert "def softsq_backward(" in backward and "def softsq(" not in backward
    assert "w_grad" in backward and f"# d np.tanh ({LINE})" in backward
    assert "range(3)" in backward

    # A new static shape is a new specialization: its source replaces the first one's.
    w = Parameter(np.full(5, 0.5))
    softsq_numba(w).backward()  # through the runtime: forward_save and backward kernels
    np.testing.assert_allclose(w.grad, np.tanh(0.5) + 0.5 * (1 - np.tanh(0.5) ** 2))
    for kind in ("forward", "backward"):
        source = softsq_numba.source(kind)
        assert "range(5)" in source and "range(3)" not in source, kind

    # Back to the first shape: its kernels are reused and shown again.
    softsq_numba(np.ones(3))
    assert softsq_numba.source("forward") == forward
    assert softsq_numba.source("backward") == backward


def test_source_before_any_call_and_of_an_unknown_kind():
    f = compile_grad(softsq, backend="interpreter")
    with pytest.raises(RuntimeError, match="has not been called yet"):
        f.source("forward")
    f.grad(np.ones(2))
    with pytest.raises(ValueError, match="kind must be one of"):
        f.source("sideways")


def test_interpreter_source_is_the_ir_of_that_kind():
    f = compile_grad(softsq, backend="interpreter")
    f.grad(np.ones(4))
    assert f.source("forward") == f.ir("forward")
    assert f.source("backward") == f.ir("backward")
    assert f.source("forward").startswith("def softsq(w: f64[4])")
    assert f.source("backward").startswith("def softsq_backward(w: f64[4]")
    assert "w_grad: f64[4]" in f.source("backward")
    f.grad(np.ones(6))
    assert f.source("backward").startswith("def softsq_backward(w: f64[6]")
    assert "f64[4]" not in f.source("backward")
