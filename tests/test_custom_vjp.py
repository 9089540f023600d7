"""custom_vjp: user-written derivative rules, used inside compiled functions and fused like ops."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import TraceError, compile_grad, custom_vjp
from runtime import Parameter


@custom_vjp
def clip_gradient(x):
    return x * 1.0


@clip_gradient.defvjp
def clip_gradient_vjp(g, out, x):
    return (np.clip(g, -1.0, 1.0),)


@custom_vjp
def safe_log(x):
    return np.log(x)


@safe_log.defvjp
def safe_log_vjp(g, out, x):
    return (g / np.maximum(x, 1e-3),)


@custom_vjp
def scaled_product(a, b):
    return a * b


@scaled_product.defvjp
def scaled_product_vjp(g, out, a, b):
    return g * b * 10.0, None  # no gradient for b


def loss(x):
    return np.sum(clip_gradient(x * 3.0) * 5.0) + np.sum(safe_log(x))


@pytest.fixture(params=["interpreter", "numba"])
def backend(request):
    return request.param


def test_rule_replaces_the_derivative(backend):
    f = compile_grad(loss, backend=backend)
    x = np.array([0.0, 2.0])
    # clip_gradient: cotangent 5 clipped to 1, times 3; safe_log: 1 / max(x, 1e-3)
    np.testing.assert_allclose(f.grad(x), [1.0 * 3 + 1000.0, 3.0 + 0.5])
    assert f(np.array([1.0, 2.0])) == pytest.approx(45.0 + np.log(2.0))


def test_none_means_no_gradient_and_the_forward_is_inlined(backend):
    f = compile_grad(lambda a, b: np.sum(scaled_product(a, b)), wrt=(0, 1), backend=backend)
    ga, gb = f.grad(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    np.testing.assert_allclose(ga, [30.0, 40.0])
    np.testing.assert_allclose(gb, [0.0, 0.0])
    lowered = f.specialize(np.ones(2), np.ones(2)).graph_of("value_and_grad")
    assert all(n.op != "custom_call" for n in lowered.nodes())


def test_runtime_backward_uses_the_rule():
    f = compile_grad(loss, backend="interpreter")
    x = Parameter(np.array([0.0, 2.0]))
    f(x).backward()
    np.testing.assert_allclose(x.grad, [1003.0, 3.5])


def test_plain_call_runs_the_function():
    np.testing.assert_allclose(safe_log(np.array([1.0, np.e])), [0.0, 1.0])


def test_missing_rule_is_reported():
    @custom_vjp
    def no_rule(x):
        return x

    with pytest.raises(TraceError, match="no_rule has no rule"):
        compile_grad(lambda x: np.sum(no_rule(x)), backend="interpreter")(np.ones(2))


def test_rule_with_wrong_arity_is_reported():
    @custom_vjp
    def bad(x, y):
        return x * y

    @bad.defvjp
    def bad_vjp(g, out, x, y):
        return (g,)

    f = compile_grad(lambda x: np.sum(bad(x, 2.0)), backend="interpreter")
    with pytest.raises(TraceError, match="must return a tuple of 2 cotangent"):
        f.grad(np.ones(2))


@custom_vjp
def shifted(x, shift=0.0, scale=1.0):
    return (x + shift) * scale


@shifted.defvjp
def shifted_vjp(g, out, x, shift, scale):
    # shift's and scale's cotangents have x's shape: summed to their scalar shape, as PyTorch
    # sums a Function's gradient that the input broadcasts to
    return g * scale, g * scale, g * (x + shift)


def shifted_loss(x, s):
    return np.sum(shifted(x, scale=s) ** 2) + np.sum(shifted(x, s) * x)


def test_keyword_arguments_and_defaults_reach_the_function_and_its_rule_by_position():
    # a keyword argument was a bare TypeError from custom_vjp.__call__, and a default was not
    # passed to the rule (which got as many inputs as the call gave)
    x, s = np.linspace(-1.0, 1.0, 6).reshape(2, 3), np.array(1.5)
    np.testing.assert_allclose(shifted(x, scale=2.0), 2.0 * x)
    f = compile_grad(shifted_loss, wrt=(0, 1), backend="interpreter")
    assert f(x, s) == pytest.approx(np.sum((x * s) ** 2) + np.sum((x + s) * x))
    gx, gs = f.grad(x, s)  # closed forms: d/dx = 2 s^2 x + 2x + s, d/ds = 2 s sum(x^2) + sum(x)
    np.testing.assert_allclose(gx, 2 * s**2 * x + 2 * x + s, rtol=1e-12)
    assert gs == pytest.approx(2 * s * np.sum(x**2) + np.sum(x), rel=1e-12)
    with pytest.raises(TypeError, match=r"shifted\(\): .*'offset'"):
        shifted(x, offset=1.0)


def test_a_cotangent_of_another_shape_is_reported_naming_the_rule():
    @custom_vjp
    def total(x):
        return np.sum(x)

    @total.defvjp
    def total_vjp(g, out, x):
        return (g * np.ones(3),)  # x is (4, 3): each row needs its own cotangent

    f = compile_grad(lambda x: total(x) * 2.0, backend="interpreter")
    with pytest.raises(TraceError, match=r"the VJP rule of total returned a cotangent of shape "
                                         r"\(3,\) for input 0, whose shape is \(4, 3\)"):
        f.grad(np.ones((4, 3)))  # was "reshape: cannot reshape an array of shape (3,) ..."


def test_a_constant_cotangent_of_another_shape_is_reported_naming_the_rule():
    @custom_vjp
    def doubled(x):
        return 2.0 * x

    @doubled.defvjp
    def doubled_vjp(g, out, x):
        return (np.full(4, 2.0),)  # x is (3,)

    f = compile_grad(lambda x: np.sum(doubled(x)), backend="interpreter")
    with pytest.raises(TraceError, match=r"the VJP rule of doubled returned a cotangent of "
                                         r"shape \(4,\) for input 0, whose shape is \(3,\)"):
        f.grad(np.ones(3))  # was "add (+): shapes (3,) and (4,) cannot be broadcast together"
    # a constant of a shape the input broadcasts to is summed back, as a traced one is
    doubled.defvjp(lambda g, out, x: (np.full((2, 3), 2.0),))
    f = compile_grad(lambda x: np.sum(doubled(x)), backend="interpreter")
    np.testing.assert_array_equal(f.grad(np.ones(3)), np.full(3, 4.0))


def scaled_by_a_closure(w, xs):
    """A custom_vjp function that closes over a traced value (`s`), in a scan step."""
    from compiler import scan

    s = np.exp(w)

    @custom_vjp
    def scaled(v):
        return np.tanh(v) * s

    @scaled.defvjp
    def scaled_vjp(g, out, v):  # s as out / tanh(v): a rule closing over s fails in a scan
        return (g * out / np.tanh(v) * (1.0 - np.tanh(v) ** 2),)

    def step(c, x):
        c = scaled(c + x)
        return c, c

    c, ys = scan(step, np.zeros(3), xs)
    return np.sum(ys ** 2) + np.sum(c)


def test_a_gradient_through_a_value_the_function_closes_over_is_refused():
    """The rule gives cotangents of the parameters only: the gradient through `s` (to w) was
    silently zero. The gradient to xs, which does not need it, is computed."""
    from gradcheck import central_differences

    rng = np.random.default_rng(4)
    w, xs = rng.normal(size=3), rng.normal(size=(4, 3))
    f = compile_grad(scaled_by_a_closure, wrt=1, backend="interpreter")
    value, grad = f.value_and_grad(w, xs)
    assert np.isclose(value, scaled_by_a_closure(w, xs), rtol=1e-14)
    np.testing.assert_allclose(grad, central_differences(scaled_by_a_closure, [w, xs], 1),
                               rtol=1e-6, atol=1e-8)
    f.wrt = 0
    with pytest.raises(TraceError, match=r"custom_vjp function scaled closes over a traced value "
                                         r"\(a f64\[3\] array\) that the gradient depends on"):
        f.grad(w, xs)
