"""Anomaly mode: checked kernels stop at the first NaN or Inf an op produces, forward or
backward, naming the op and the user's line; without anomaly mode no kernel has a check."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import runtime
from compiler import compile_grad
from compiler.checks import CheckedKernel
from compiler.errors import AnomalyError
from compiler.training import fit, train_step
from runtime import Parameter, optim


def model(w, x):
    scaled = x * w
    h = np.log(scaled)  # NaN where x * w < 0, -inf at 0
    return np.sum(np.where(x > 0, np.sqrt(x), 0.0) + h)  # sqrt's NaN at x < 0 is not used


compiled = compile_grad(model)  # numba; the interpreter where it is enough
W, X = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 0.5])
LOG_LINE = "h = np.log(scaled)"


def test_forward_names_the_op_and_line_that_made_the_first_nan():
    assert np.isnan(compiled(W, -X))  # anomaly mode off: NaN is data
    with runtime.detect_anomaly():
        with pytest.raises(AnomalyError, match=r"log produced nan in the forward kernel") as err:
            compiled(W, -X)
    assert err.value.loc.lineno == model.__code__.co_firstlineno + 2
    assert LOG_LINE in str(err.value) and "test_anomaly.py" in str(err.value)
    assert np.isnan(compiled(W, -X)), "off again: the kernel without checks runs"
    assert not isinstance(compiled._fast["forward"].kernel, CheckedKernel)
    assert "_check_finite" not in compiled.source("forward")


def test_backward_names_the_derivative_that_made_the_first_inf():
    p = Parameter(W)
    out = compiled(p, np.array([1.0, 0.0, 2.0]))  # recorded without anomaly mode: log(0)
    with runtime.detect_anomaly():
        with pytest.raises(AnomalyError, match=r"gradient of log .* produced inf in the "
                                               r"backward kernel"):
            out.backward()
    with runtime.detect_anomaly():  # recorded in anomaly mode: forward's -inf comes first
        with pytest.raises(AnomalyError, match="log produced -inf in the forward_save kernel"):
            compiled(Parameter(W), np.array([1.0, 0.0, 2.0]))


def test_check_finite_compiles_checked_kernels_that_compute_the_same_values():
    checked = compile_grad(model, check_finite=True)
    value, grad = checked.value_and_grad(W, X)
    expected_value, expected_grad = compiled.value_and_grad(W, X)
    assert value == expected_value
    np.testing.assert_array_equal(grad, expected_grad)
    assert checked.value_and_grad(W, X)[0] == value  # the fast path runs checked kernels too
    with pytest.raises(AnomalyError, match="value_and_grad kernel of model"):
        checked.value_and_grad(W, -X)
    with pytest.raises(AnomalyError, match="value_and_grad kernel of model"):
        checked.grad(W, -X)
    source = checked.source("value_and_grad")  # the kernel that runs: the checked one
    assert "_check_finite(h, " in source and "(test_anomaly.py:" in source


def test_a_nan_in_an_unselected_where_branch_is_not_an_anomaly_but_a_selected_one_is():
    f = compile_grad(lambda x: np.sum(np.where(x > 0, np.sqrt(x), 0.0)), backend="interpreter",
                     check_finite=True)
    np.testing.assert_allclose(f.grad(np.array([4.0, -1.0])), [0.25, 0.0])
    g = compile_grad(lambda x: np.sum(np.where(x < 0, np.sqrt(x), 0.0)), backend="interpreter",
                     check_finite=True)
    with pytest.raises(AnomalyError, match="where produced nan"):
        g(np.array([4.0, -1.0]))


def test_anomaly_mode_is_per_thread():
    f = compile_grad(model, backend="interpreter")
    results = []
    with runtime.detect_anomaly():
        thread = threading.Thread(target=lambda: results.append(f(W, -X)))
        thread.start()
        thread.join()
        assert runtime.is_anomaly_enabled()
    assert np.isnan(results[0]) and not runtime.is_anomaly_enabled()
    runtime.set_detect_anomaly(True)
    try:
        with pytest.raises(AnomalyError):
            f(W, -X)
    finally:
        runtime.set_detect_anomaly(False)


def test_a_train_step_in_anomaly_mode_stops_before_writing_parameters():
    def loss(params, x):
        return np.sum(np.log(x * params["w"]))

    params = {"w": Parameter(W)}
    step = train_step(compile_grad(loss, backend="interpreter"), params,
                      optim.SGD(params, lr=0.1))
    step(X)
    before = params["w"].data.copy()
    with runtime.detect_anomaly():
        with pytest.raises(AnomalyError, match="log produced nan"):
            step(-X)
        with pytest.raises(AnomalyError, match="log produced nan"):
            fit(None, params, step.optimizer, (-X.reshape(3, 1),), epochs=1, progress=False,
                step=train_step(compile_grad(lambda p, x: np.sum(np.log(x * p["w"])),
                                             backend="interpreter"), params, step.optimizer))
    np.testing.assert_array_equal(params["w"].data, before)
    assert params["w"]._version == 1


def decaying(w, xs):
    from compiler import scan

    def step(h, x):
        h = np.log(h * w + x)  # NaN once h * w + x < 0
        return h, h

    h, hs = scan(step, np.ones(3), xs)
    return np.sum(hs)


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_a_nan_inside_a_loop_names_the_op_in_the_loop_body(backend):
    checked = compile_grad(decaying, check_finite=True, backend=backend)
    xs = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [-9.0, 1.0, 1.0]])
    assert np.isnan(compile_grad(decaying, backend="interpreter")(W, xs))
    with pytest.raises(AnomalyError, match=r"log produced nan in the forward kernel") as err:
        checked(W, xs)
    assert "h = np.log(h * w + x)" in str(err.value)
