"""PyTorch's backward errors and leaf gradients, on compiled functions (not hand-written nodes)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, no_grad


def rows(w, x):
    return np.tanh(x * w)  # (N, 3): not a scalar


rows_numba = compile_grad(rows)  # the real path: forward_save and backward kernels
rows_interp = compile_grad(rows, backend="interpreter")

X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
W0 = np.array([0.5, -1.0, 2.0])


def rows_grad(w, gradient):
    """d sum(gradient * tanh(X * w)) / dw, in closed form."""
    return np.sum(gradient * X * (1 - np.tanh(X * w) ** 2), axis=0)


@pytest.mark.parametrize("f", [rows_numba, rows_interp], ids=["numba", "interpreter"])
def test_backward_on_a_non_scalar_needs_gradient_of_its_shape(f):
    w = Parameter(W0)
    out = f(w, X)
    assert out.shape == (4, 3) and out.requires_grad
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar") as e:
        out.backward()
    assert "(4, 3)" in str(e.value)
    with pytest.raises(RuntimeError, match=r"gradient has a shape of \(3,\)") as e:
        out.backward(gradient=np.ones(3))
    assert "output[0] has a shape of (4, 3)" in str(e.value)
    assert w.grad is None  # the failed calls accumulated nothing, and freed nothing:
    gradient = np.arange(12.0).reshape(4, 3)
    out.backward(gradient=gradient)
    np.testing.assert_allclose(w.grad, rows_grad(W0, gradient), rtol=1e-12)


def test_second_backward_needs_retain_graph():
    w = Parameter(W0)
    out = rows_numba(w, X)
    gradient = np.arange(1.0, 13.0).reshape(4, 3)
    out.backward(gradient=gradient)
    first = w.grad.copy()
    with pytest.raises(RuntimeError, match="backward through the graph a second time") as e:
        out.backward(gradient=gradient)
    assert "retain_graph=True" in str(e.value)
    np.testing.assert_array_equal(w.grad, first)  # nothing accumulated by the failed call

    retained = rows_numba(w, X)
    retained.backward(gradient=gradient, retain_graph=True)
    retained.backward(gradient=gradient)
    np.testing.assert_allclose(w.grad, 3 * rows_grad(W0, gradient), rtol=1e-12)


def test_no_grad_result_cannot_backward():
    w = Parameter(W0)
    with no_grad():
        out = rows_interp(w, X)
        total = compile_grad(lambda a: np.sum(a * a), backend="interpreter")(w)
    np.testing.assert_allclose(out.data, np.tanh(X * W0))
    assert not out.requires_grad and out.grad_fn is None
    for result in (out, total):
        with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
            result.backward(gradient=np.ones(result.shape))
    assert w.grad is None


@compile_grad(backend="interpreter")
def nested(layers, extras, x):
    (W, b), scale = layers
    h = np.tanh(x @ W + b) * scale
    return np.sum(h * extras["v"]) + np.sum(extras["bias"] ** 2)


def test_parameters_inside_lists_tuples_and_dicts_get_grads():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3))
    W, b = Parameter(rng.normal(size=(3, 2))), Parameter(rng.normal(size=2))
    scale = Parameter(1.5)
    v, bias = Parameter(rng.normal(size=2)), Parameter(np.array([1.0, -2.0]))
    frozen = Parameter(rng.normal(size=2), requires_grad=False)
    loss = nested([(W, b), scale], {"v": v, "bias": bias}, x)
    loss.backward()
    t = np.tanh(x @ W.data + b.data)
    upstream = (1 - t**2) * scale.data * v.data
    np.testing.assert_allclose(W.grad, x.T @ upstream, rtol=1e-12)
    np.testing.assert_allclose(b.grad, upstream.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scale.grad, np.sum(t * v.data), rtol=1e-12)
    assert scale.grad.shape == ()
    np.testing.assert_allclose(v.grad, scale.data * t.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(bias.grad, [2.0, -4.0])

    # A Parameter that does not require grad, in a tuple, gets none; the others still do.
    W.zero_grad()
    loss = nested([(W, frozen), scale], {"v": v, "bias": bias}, x)
    loss.backward()
    assert frozen.grad is None
    t = np.tanh(x @ W.data + frozen.data)
    np.testing.assert_allclose(W.grad, x.T @ ((1 - t**2) * scale.data * v.data), rtol=1e-12)
