"""The backward pass of a one-node graph (one compiled call on leaves) takes a shorter path than
the general walk: every semantic of the pass, run both ways, gives the same values and errors."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import Parameter, Tensor, autograd, record


@pytest.fixture(params=["one-node", "general"])
def path(request, monkeypatch):
    """Which pass one-node graphs take; "general" sends them through the graph walk."""
    taken = []
    if request.param == "general":
        def general(root, seed, retain_graph):
            taken.append("general")
            autograd._backward_graph([root], [seed], retain_graph)

        monkeypatch.setattr(autograd, "_backward_one_node", general)
    else:
        one_node = autograd._backward_one_node

        def counted(root, seed, retain_graph):
            taken.append("one-node")
            one_node(root, seed, retain_graph)

        monkeypatch.setattr(autograd, "_backward_one_node", counted)
    yield taken
    assert taken and set(taken) == {request.param}  # the path under test really ran


def cube_and_scale(x: Parameter, w: Parameter):
    """y = x**3 * w, one node over two leaves, with its hand-written VJP."""
    a, b = x.data, w.data
    [y] = record([a**3 * b], [x, w], lambda cts: [3 * a**2 * b * cts[0], a**3 * cts[0]], "cs")
    return y


def test_seeded_gradients_accumulate(path):
    x, w = Parameter(np.array([1.0, 2.0])), Parameter(np.array([3.0, -1.0]))
    cube_and_scale(x, w).backward(gradient=np.array([1.0, 0.5]))
    cube_and_scale(x, w).backward(gradient=np.array([1.0, 0.5]))
    np.testing.assert_array_equal(x.grad, 2 * np.array([9.0, -6.0]))
    np.testing.assert_array_equal(w.grad, 2 * np.array([1.0, 4.0]))


def test_hooks_on_the_root_and_the_leaves_and_retain_grad(path):
    x, w = Parameter(2.0), Parameter(3.0)
    y = cube_and_scale(x, w)
    seen = []
    y.register_hook(lambda g: seen.append(("y", float(g))) or g * 10)
    y.retain_grad()
    x.register_hook(lambda g: seen.append(("x", float(g))))
    w.register_hook(lambda g: g + 1)
    y.backward()
    assert seen == [("y", 1.0), ("x", 360.0)]
    assert y.grad == 10.0 and x.grad == 360.0 and w.grad == 81.0


def test_the_same_leaf_twice_gets_one_summed_gradient_and_its_hook_runs_once(path):
    x = Parameter(3.0)
    calls = []
    x.register_hook(lambda g: calls.append(float(g)))
    [y] = record([x.data * x.data], [x, x], lambda cts: [x.data * cts[0], x.data * cts[0]], "sq")
    y.backward()
    assert calls == [6.0] and x.grad == 6.0


def test_an_output_without_a_gradient_gets_zeros(path):
    x = Parameter(np.array([0.3, 1.1]))
    seen = []

    def vjp(cts):
        seen.append([c.copy() for c in cts])
        return [np.cos(x.data) * cts[0] - np.sin(x.data) * cts[1]]

    s, c = record([np.sin(x.data), np.cos(x.data)], [x], vjp, "sincos")
    c.backward(gradient=np.ones(2))
    np.testing.assert_array_equal(seen[0][0], np.zeros(2))
    np.testing.assert_allclose(x.grad, -np.sin(x.data))


def test_gradients_are_cast_to_the_leaf_dtype_and_never_alias(path):
    x = Parameter(np.array([1.0, 2.0], dtype=np.float32))
    kept = np.full(2, 3.0)  # float64, handed out by the callable
    [y] = record([x.data * 3], [x], lambda cts: [kept], "f")
    y.backward(gradient=np.ones(2))
    assert x.grad.dtype == np.float32 and x.grad is not kept
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_a_second_pass_needs_retain_graph_and_fails_before_touching_grads(path):
    x, w = Parameter(2.0), Parameter(3.0)
    y = cube_and_scale(x, w)
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad == 72.0
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()
    assert x.grad == 72.0


def test_a_modified_input_fails_before_touching_grads(path):
    x, w = Parameter(2.0), Parameter(3.0)
    frozen = Tensor(np.array(1.0))
    [y] = record([x.data * w.data], [x, w], lambda cts: [w.data * cts[0], x.data * cts[0]],
                 "mul", saved=[frozen])
    w._version += 1
    with pytest.raises(RuntimeError, match=r"input 1 of mul, is at version 1"):
        y.backward()
    w._version -= 1
    frozen._version += 1
    with pytest.raises(RuntimeError, match=r"an input saved for backward of mul"):
        y.backward()
    assert x.grad is None and w.grad is None


def test_a_leaf_that_stopped_requiring_grad_keeps_none(path):
    x, w = Parameter(2.0), Parameter(3.0)
    y = cube_and_scale(x, w)
    w.requires_grad = False
    y.backward()
    assert x.grad == 36.0 and w.grad is None


def test_hooks_and_callables_run_under_no_grad(path):
    x = Parameter(2.0)
    modes = []
    [y] = record([x.data * 2], [x], lambda cts: modes.append(autograd.is_grad_enabled())
                 or [2 * cts[0]], "double")
    y.register_hook(lambda g: modes.append(autograd.is_grad_enabled()))
    y.backward()
    assert modes == [False, False] and autograd.is_grad_enabled()
