"""What a compiled function reads from outside its arguments (globals, closure variables,
attributes of `self` and of objects, through helpers, properties, callees and custom_vjp rules),
rebound between calls: the next call traces again (compiler/captured.py), on the fast paths and
in train_step too; values against the same function run by NumPy."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from compiler import compile_grad, custom_vjp
from compiler.training import train_step
from runtime import Parameter, optim
from tests.gradcheck import central_differences

RNG = np.random.default_rng(7)
X = RNG.normal(size=(4, 3))
W = RNG.normal(size=3)

SCALE = 1.0
MASK = np.array([1.0, 1.0, 1.0])
ACTIVATION = np.tanh
CONFIG = SimpleNamespace(lam=0.1)


def scaled(v):
    return v * SCALE  # a helper's global


def reads_globals(w, X):
    h = ACTIVATION(X @ (w * MASK))
    return np.sum(scaled(h) ** 2) + CONFIG.lam * np.sum(w ** 2)


def expected_reads_globals(w):
    return reads_globals(w, X)


reading = compile_grad(reads_globals)  # numba: the fast paths must notice too


def test_rebinding_what_a_function_reads_traces_it_again():
    global SCALE, MASK, ACTIVATION
    changes = [lambda: None, lambda: globals().update(SCALE=3.0),
               lambda: globals().update(MASK=np.array([1.0, 0.0, 2.0])),
               lambda: globals().update(ACTIVATION=np.sin),
               lambda: setattr(CONFIG, "lam", 2.5),
               lambda: globals().update(SCALE=3.0)]  # an equal value: the kernels stay
    try:
        for change in changes:
            change()
            for _ in range(2):  # the second call runs where the fast path answers
                value, grad = reading.value_and_grad(W, X)
                np.testing.assert_allclose(value, reads_globals(W, X), rtol=1e-12)
                np.testing.assert_allclose(
                    grad, central_differences(expected_reads_globals, [W], 0), rtol=1e-6)
                np.testing.assert_allclose(reading(W, X), reads_globals(W, X), rtol=1e-12)
    finally:
        SCALE, MASK, ACTIVATION, CONFIG.lam = 1.0, np.array([1.0, 1.0, 1.0]), np.tanh, 0.1


def test_closure_variables_and_compiled_callees_are_watched_too():
    def make():
        lam = 0.5

        @compile_grad(backend="interpreter")
        def inner(w):
            return np.sum(w ** 2) * lam

        def set_lam(value):
            nonlocal lam
            lam = value

        return inner, set_lam

    inner, set_lam = make()
    outer = compile_grad(lambda w: inner(w) * 2.0, backend="interpreter")
    assert outer(W) == pytest.approx(np.sum(W ** 2))
    set_lam(4.0)
    assert inner(W) == pytest.approx(4.0 * np.sum(W ** 2))
    assert outer(W) == pytest.approx(8.0 * np.sum(W ** 2))
    np.testing.assert_allclose(outer.grad(W), 16.0 * W, rtol=1e-12)


def test_a_value_changing_every_call_warns_once_to_pass_it_as_an_argument():
    namespace = {"np": np, "STEP": 0}
    exec("def counted(w):\n    return np.sum(w) * (STEP % 2 + 1)\n", namespace)
    counted = compile_grad(namespace["counted"], backend="interpreter")
    with pytest.warns(UserWarning, match="'STEP'.*pass a value that changes") as record:
        for step in range(10):
            namespace["STEP"] = step
            assert counted(W) == pytest.approx(np.sum(W) * (step % 2 + 1))
    assert len(record) == 1


PENALTY = 0.0


def penalized_mse(params, X, y):
    return np.mean((X @ params["w"] - y) ** 2) + PENALTY * np.sum(params["w"] ** 2)


def test_a_train_step_sees_a_global_its_loss_reads_rebound():
    global PENALTY
    y = np.arange(4.0)
    params = {"w": Parameter(np.ones(3))}
    step = train_step(compile_grad(penalized_mse, backend="interpreter"), params,
                      optim.SGD(list(params.values()), lr=0.1))
    try:
        for penalty in (0.0, 10.0, 10.0, 0.5):
            PENALTY = penalty
            before = params["w"].data.copy()
            loss = step(X, y)
            assert loss == pytest.approx(penalized_mse({"w": before}, X, y), rel=1e-12)
            grad = central_differences(lambda w: penalized_mse({"w": w}, X, y), [before], 0)
            np.testing.assert_allclose(params["w"].data, before - 0.1 * grad, rtol=1e-6)
    finally:
        PENALTY = 0.0


class CallableLoss:
    def __init__(self, scale):
        self.scale = scale

    def __call__(self, w, X):
        return np.sum(np.tanh(X @ w)) * self.scale


class SlottedModel:
    __slots__ = ("scale", "__weakref__")

    def __init__(self, scale):
        self.scale = scale

    @compile_grad(backend="interpreter")
    def loss(self, w, X):
        return np.sum(np.tanh(X @ w)) * self.scale


def test_attributes_of_a_callable_object_and_of_slots_are_watched():
    callable_loss, slotted = CallableLoss(1.0), SlottedModel(1.0)
    compiled = compile_grad(callable_loss, backend="interpreter")
    base = np.sum(np.tanh(X @ W))
    assert compiled(W, X) == pytest.approx(base) and slotted.loss(W, X) == pytest.approx(base)
    callable_loss.scale = slotted.scale = 3.0
    assert compiled(W, X) == pytest.approx(3.0 * base)
    assert slotted.loss(W, X) == pytest.approx(3.0 * base)


class PropertyModel:
    def __init__(self, scale):
        self._scale = scale

    @property
    def scale(self):
        return self._scale * 2.0

    def forward(self, w, X):
        return np.tanh(X @ w) * self.scale

    @compile_grad(backend="interpreter")
    def loss(self, w, X):
        return np.sum(self.forward(w, X))


def test_attributes_read_through_methods_and_properties_are_watched():
    model = PropertyModel(1.0)
    assert model.loss(W, X) == pytest.approx(2.0 * np.sum(np.tanh(X @ W)))
    model._scale = 5.0
    assert model.loss(W, X) == pytest.approx(10.0 * np.sum(np.tanh(X @ W)))


OFFSET = 0.0


def shifted(v):
    return v + OFFSET


def make_act():
    return np.tanh


ACT = make_act()


def reads_act(w, X):
    return np.sum(ACT(X @ w))


def test_a_function_rebound_in_place_of_another_has_its_own_reads_watched():
    global ACT, OFFSET
    compiled = compile_grad(reads_act, backend="interpreter")
    try:
        assert compiled(W, X) == pytest.approx(np.sum(np.tanh(X @ W)))
        ACT = shifted  # reads OFFSET, which the first trace never saw
        assert compiled(W, X) == pytest.approx(np.sum(X @ W))
        OFFSET = 1.0
        assert compiled(W, X) == pytest.approx(np.sum(X @ W) + X.shape[0])
    finally:
        ACT, OFFSET = np.tanh, 0.0


GAIN = 1.0


@custom_vjp
def gained(x):
    return x * GAIN


gained.defvjp(lambda g, out, x: (g * GAIN,))


def test_a_custom_vjp_and_its_rule_have_their_reads_watched():
    global GAIN
    compiled = compile_grad(lambda x: np.sum(gained(x) ** 2), backend="interpreter")
    try:
        for gain in (1.0, 3.0):
            GAIN = gain
            assert compiled(W) == pytest.approx(np.sum((gain * W) ** 2))
            np.testing.assert_allclose(compiled.grad(W), 2 * gain ** 2 * W, rtol=1e-12)
    finally:
        GAIN = 1.0
