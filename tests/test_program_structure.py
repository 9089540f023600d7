"""How users structure programs: Python number arguments that steer the code (`if training:`,
`range(n_layers)`, `x[:k]`), traced once per value and never answered from another value's
kernels; values against NumPy running the same function, gradients against central
differences."""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from typing import NamedTuple

import numpy as np
import pytest

from compiler import compile_grad, scan
from compiler.errors import ArgumentError, TraceError
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
            w.grad, central_differences(dropout_like, [W, X, training], 0),
            rtol=1e-6)


def dropout_like_loss(params, X, training):
    return dropout_like(params["w"], X, training)


flagged_loss = compile_grad(dropout_like_loss)


def test_a_training_loop_with_a_positional_flag_keeps_the_generated_fast_path():
    """`loss(params, X, True)` repeated with the same Parameters runs the generated recording
    (TensorCall's `_unpacked`), which compares the flag with the traced one: another value
    never gets the kernel of the first (it took the general path, 3 us more per step)."""
    params = {"w": Parameter(W.copy())}
    expected = {flag: central_differences(dropout_like, [W, X, flag], 0) for flag in (0, 1)}
    for flag in (True, True, True, False, False, True, False, 1, 0):
        params["w"].grad = None
        out = flagged_loss(params, X, flag)
        out.backward()
        np.testing.assert_allclose(out.item(), dropout_like(W, X, flag), rtol=1e-12)
        np.testing.assert_allclose(params["w"].grad, expected[int(flag)], rtol=1e-6)
    run = flagged_loss._tensor_call.run
    assert "STATIC0" in run.source  # the generated function, with the flag's check


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
    for n, k in [(np.int64(2), np.int32(3)), (np.int64(1), np.int32(3))]:  # NumPy's too
        check(deep, layered, W, X, n, k)
    penalized = compile_grad(with_penalty, backend=backend)
    for lam in [0.0, 0.5, -1.0, 0.5, -0.0, np.float64(0.5), np.float32(0.0)]:
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


# --- namedtuples are containers, as in JAX ---------------------------------------------------
Linear = namedtuple("Linear", "W b")


class Model(NamedTuple):
    layer: Linear
    scale: float


def named_loss(model, X):
    return np.sum(np.tanh(X @ model.layer.W + model.layer.b) ** 2) * model.scale


def test_namedtuples_are_flattened_and_gradients_come_back_as_them():
    model = Model(Linear(RNG.normal(size=(3, 2)), RNG.normal(size=2)), 0.5)
    compiled = compile_grad(named_loss)  # numba: the fast path's collector checks the class
    for _ in range(2):
        value, grad = compiled.value_and_grad(model, X)
        assert type(grad) is Model and type(grad.layer) is Linear
        np.testing.assert_allclose(value, named_loss(model, X), rtol=1e-12)
        np.testing.assert_allclose(grad.layer.W, central_differences(
            lambda W: named_loss(Model(Linear(W, model.layer.b), 0.5), X), [model.layer.W], 0),
            rtol=1e-6)
        np.testing.assert_allclose(grad.scale, named_loss(model, X) / 0.5, rtol=1e-12)
    # the same leaves in plain tuples are another structure: gradients as tuples
    plain = ((model.layer.W, model.layer.b), 0.5)
    grad = compile_grad(lambda m, X: named_loss(Model(Linear(*m[0]), m[1]), X)).grad(plain, X)
    assert type(grad) is tuple and type(grad[0]) is tuple
    params = Linear(Parameter(model.layer.W.copy()), Parameter(model.layer.b.copy()))
    out = compile_grad(lambda p, X: named_loss(Model(p, 0.5), X))(params, X)
    out.backward()
    np.testing.assert_allclose(params.W.grad, grad[0][0], rtol=1e-12)


def test_a_dataclass_argument_is_refused_saying_what_to_pass():
    @dataclasses.dataclass
    class Params:
        W: np.ndarray

    with pytest.raises(ArgumentError, match=r"'params' holds a Params.*dataclasses.asdict"):
        compile_grad(lambda params, X: np.sum(X @ params.W), backend="interpreter")(
            Params(W), X)


# --- strings are static: one trace per value -------------------------------------------------
def configurable(w, X, activation="tanh", reduction="mean"):
    h = X @ w
    h = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0), "sin": np.sin}[activation](h)
    return np.mean(h ** 2) if reduction == "mean" else np.sum(h ** 2)


def test_string_arguments_steer_the_trace_for_each_value():
    compiled = compile_grad(configurable)  # numba: its fast paths compare the strings
    calls = [{}, {"activation": "relu"}, {"activation": "sin", "reduction": "sum"}, {}]
    for kwargs in calls + calls:
        check(compiled, configurable, W, X, **kwargs)
    check(compiled, configurable, W, X, "relu", "sum")  # by position
    for activation in ("relu", "sin"):
        w = Parameter(W.copy())
        compiled(w, X, activation=activation).backward()
        np.testing.assert_allclose(
            w.grad, central_differences(configurable, [W, X, activation], 0), rtol=1e-6)
    grads = compile_grad(lambda p, X: configurable(p["w"], X, p["act"])).grad(
        {"w": W, "act": "sin"}, X)
    assert grads["act"] == "sin"  # in a dict: kept in the gradients' structure


def test_a_gradient_taken_inside_a_trace_gets_its_numbers_and_strings_as_values():
    def inner(w, X, n, act="tanh"):
        h = X @ w
        for _ in range(n):
            h = np.tanh(h) if act == "tanh" else np.sin(h)
        return np.sum(h ** 2)

    inner_compiled = compile_grad(inner, backend="interpreter")

    def outer(w, X):  # a second derivative, through range(n) and the string
        return np.sum(inner_compiled.grad(w, X, 2, act="sin") ** 2)

    def first(v):
        return central_differences(inner, [v, X, 2, "sin"], 0)

    outer_compiled = compile_grad(outer, backend="interpreter")
    np.testing.assert_allclose(outer_compiled(W, X), np.sum(first(W) ** 2), rtol=1e-6)
    second = central_differences(lambda v: np.sum(inner_compiled.grad(v, X, 2, "sin") ** 2),
                                 [W], 0)
    np.testing.assert_allclose(outer_compiled.grad(W, X), second, rtol=1e-6)


def test_wrt_as_a_list_is_a_tuple_and_other_kinds_are_refused():
    def product(a, b):
        return np.sum(a * b ** 2)

    ga, gb = compile_grad(product, wrt=[0, "b"], backend="interpreter").grad(W, X[0])
    np.testing.assert_allclose(ga, X[0] ** 2, rtol=1e-12)
    np.testing.assert_allclose(gb, 2 * W * X[0], rtol=1e-12)
    for wrong in (1.0, [0, [1]], True, None):
        with pytest.raises(ArgumentError, match=r"wrt is an argument's index, a parameter's name"):
            compile_grad(product, wrt=wrong)


GRID = np.arange(12.0).reshape(3, 4) / 10 + 0.1
WEIGHTS = np.arange(12.0).reshape(3, 4)
NUMBER_PARAMETERS = {  # a NumPy parameter given a Python number argument of the function
    "np.roll shift": (lambda x, k: np.sum(np.roll(x, k) * WEIGHTS), 2),
    "np.sum axis": (lambda x, k: np.sum(np.sum(x, axis=k) ** 2), 1),
    "x.sum axis": (lambda x, k: np.sum(x.sum(axis=k) ** 2), 1),
    "x.max axis": (lambda x, k: np.sum(x.max(k)), 0),
    "np.repeat": (lambda x, k: np.sum(np.repeat(x, k, axis=0) ** 2), 2),
    "x.repeat": (lambda x, k: np.sum(x.repeat(k, axis=1) ** 2), 3),
    "np.pad width": (lambda x, k: np.sum((np.pad(x, k) + 1.0) ** 2), 1),
    "np.split sections": (lambda x, k: np.sum(np.split(x, k, axis=1)[1] ** 2), 2),
    "np.percentile q": (lambda x, k: np.percentile(x, k), 30.0),
    "np.linalg.matrix_power": (lambda x, k: np.sum(np.linalg.matrix_power(x[:, :3], k)), 3),
    "np.stack axis": (lambda x, k: np.sum(np.stack([x, 2 * x], axis=k)[0] ** 2), 1),
    "np.full_like fill": (lambda x, k: np.sum(x * np.full_like(x, k)), 2.5),
    "x[[k, 0]]": (lambda x, k: np.sum(x[[k, 0]] ** 2), 2),
}


@pytest.mark.parametrize("name", list(NUMBER_PARAMETERS))
def test_a_number_argument_given_to_a_numpy_parameter_is_static(name):
    fn, number = NUMBER_PARAMETERS[name]
    compiled = compile_grad(fn, backend="interpreter")
    np.testing.assert_allclose(compiled(GRID, number), fn(GRID, number), rtol=1e-12)
    np.testing.assert_allclose(compiled.grad(GRID, number),
                               central_differences(fn, [GRID, number], 0), rtol=1e-6, atol=1e-8)


def test_scan_reverse_from_a_flag_argument():
    def rnn(w, xs, reverse):
        h, _ = scan(lambda h, x: (np.tanh(h * w + x), h), np.zeros(3), xs, reverse=reverse)
        return np.sum(h)

    compiled = compile_grad(rnn, backend="interpreter")
    xs = RNG.normal(size=(4, 3))
    for reverse in (True, False, True):
        expected = np.zeros(3)
        for x in (xs[::-1] if reverse else xs):
            expected = np.tanh(expected * W + x)
        np.testing.assert_allclose(compiled(W, xs, reverse), np.sum(expected), rtol=1e-12)


class Settings:  # a class used as a namespace of settings
    scale = 1.0


class Losses:
    factor = 2.0

    @compile_grad(backend="interpreter")
    @staticmethod
    def plain(w, X):
        return np.sum(np.tanh(X @ w)) * Settings.scale

    @compile_grad(backend="interpreter")
    @classmethod
    def scaled(cls, w, X):
        return np.sum(np.tanh(X @ w)) * cls.factor


def test_compile_grad_over_staticmethod_and_classmethod_binds_as_they_do():
    base, grad = np.sum(np.tanh(X @ W)), X.T @ (1 - np.tanh(X @ W) ** 2)
    try:
        for owner in (Losses, Losses()):
            assert owner.plain(W, X) == pytest.approx(base)
            np.testing.assert_allclose(owner.scaled.grad(W, X), 2.0 * grad, rtol=1e-12)
        Losses.factor, Settings.scale = 3.0, 5.0  # class attributes are watched too
        assert Losses().scaled(W, X) == pytest.approx(3.0 * base)
        assert Losses.plain(W, X) == pytest.approx(5.0 * base)
    finally:
        Losses.factor, Settings.scale = 2.0, 1.0


def test_a_bool_argument_is_static_even_where_python_never_asks_its_value():
    def flagged_identity(w, X, training):
        scale = {True: 2.0, False: 1.0}[training]  # a dict lookup: no __bool__ is called
        if training is True:  # an identity test: none either
            scale = scale * 3.0
        return np.sum(np.tanh(X @ w)) * scale

    compiled = compile_grad(flagged_identity, backend="interpreter")
    for training in (True, False, np.True_, True):
        assert compiled(W, X, training) == pytest.approx(flagged_identity(W, X, training))


def test_an_int_argument_formatted_into_a_key_is_static():
    def pick(params, X, k):
        return np.sum(X @ params[f"W{k}"]) + np.sum(params["W" + str(k)])

    params = {"W0": W, "W1": 2.0 * W}
    compiled = compile_grad(pick, backend="interpreter")
    for k in (1, 0, 1):
        assert compiled(params, X, k) == pytest.approx(pick(params, X, k))


def test_a_static_number_that_keeps_changing_warns_once_to_compute_with_it():
    with pytest.warns(UserWarning, match=r"8 values of its argument 'lam'.*np.where") as record:
        penalized = compile_grad(with_penalty, backend="interpreter")
        for step in range(12):
            lam = 1.0 / (step + 1)
            assert penalized(W, X, lam) == pytest.approx(with_penalty(W, X, lam))
    assert len(record) == 1
