"""How users structure programs: Python number arguments that steer the code (`if training:`,
`range(n_layers)`, `x[:k]`), traced once per value and never answered from another value's
kernels; values against NumPy running the same function, gradients against central
differences."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.errors import TraceError
from runtime import Parameter
from tests.gradcheck import central_differences
from tests.source_lines import marked_line

HERE = __file__.rsplit("/", 1)[-1]
RNG = np.random.default_rng(7)
X = RNG.normal(size=(4, 3))
W = RNG.normal(size=3)


def line_of(marker: str) -> int:
    return marked_line(__file__, marker)


def dropout_like(w, X, training=False, scale=2.0):
    y = X * w
    if training:  # a Python bool argument: static, one trace per value
        y = y * scale
    return np.sum(y ** 2)


flagged = compile_grad(dropout_like)  # numba: its fast paths must not answer another value


def check(compiled, fn, w, *args, **kwargs):
    value, grad = compiled.value_and_grad(w, *args, **kwargs)
    np.testing.assert_allclose(value, fn(w, *args, **kwargs), rtol=1e-12)
    np.testing.assert_allclose(compiled(w, *args, **kwargs), fn(w, *args, **kwargs), rtol=1e-12)
    np.testing.assert_allclose(
        grad, central_differences(lambda w: fn(w, *args, **kwargs), [w], 0), rtol=1e-6)


def test_a_python_flag_steers_the_trace_for_each_value_in_any_order():
    calls = [{}, {"training": True}, {"training": False}, {"training": True, "scale": 3.0},
             {"scale": 5.0}, {"training": 1}, {"training": 0}, {"training": True}]
    for kwargs in calls + calls:  # the second round runs where fast paths would answer
        check(flagged, dropout_like, W, X, **kwargs)
    check(flagged, dropout_like, W, X[:3], training=True)  # another batch size


def test_a_python_flag_with_parameters_records_the_branch_taken():
    for training in (True, False, True):
        w = Parameter(W.copy())
        out = flagged(w, X, training=training)
        out.backward()
        np.testing.assert_allclose(out.item(), dropout_like(W, X, training), rtol=1e-12)
        np.testing.assert_allclose(
            w.grad, central_differences(lambda v: dropout_like(v, X, training), [W], 0),
            rtol=1e-6)


def layered(w, X, n, k):
    h = X[:k]  # a slice bound from a Python int
    for i in range(n):  # range() of a Python int
        h = np.tanh(h * w + i)
    return np.sum(h.reshape(k, -1))  # a shape from a Python int


def with_penalty(w, X, lam):
    loss = np.sum((X @ w) ** 2)
    if lam > 0:  # a comparison of a Python float
        loss = loss + lam * np.sum(w ** 2)
    return loss


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_python_ints_and_floats_used_as_numbers_are_static(backend):
    deep = compile_grad(layered, backend=backend)
    for n, k in [(3, 2), (1, 4), (3, 2), (0, 3)]:
        check(deep, layered, W, X, n, k)
    penalized = compile_grad(with_penalty, backend=backend)
    for lam in [0.0, 0.5, -1.0, 0.5, -0.0]:
        check(penalized, with_penalty, W, X, lam)


def test_a_number_that_is_differentiated_or_meets_an_array_cannot_steer_python():
    with pytest.raises(TraceError, match="np.where") as err:
        compile_grad(with_penalty, wrt=2, backend="interpreter").grad(W, X, 0.5)
    assert "if lam > 0" in str(err.value)

    def against_data(w, X, t):
        if np.sum(X @ w) > t:  # DATA_BRANCH
            return np.sum(w)
        return np.sum(-w)

    with pytest.raises(TraceError, match="np.where") as err:
        compile_grad(against_data, backend="interpreter")(W, X, 1.0)
    assert f"{HERE}:{line_of('DATA_BRANCH')}" in str(err.value)
