"""Compiled functions under the runtime's semantics: Tensors in, Tensors out, backward through
chains of kernels, retain_grad and hooks, no_grad, several outputs, has_aux."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, Tensor, no_grad


@compile_grad
def layer(w, x):
    return np.tanh(x @ w)


@compile_grad
def head(h, v):
    return np.sum(h * v)


@compile_grad
def split_stats(x):
    return x.sum(), (x * x).mean()


@compile_grad
def first_tower(params, x):
    return np.sum(np.tanh(x @ params["a"]))


@compile_grad
def two_towers(params, x):
    return np.sum(np.tanh(x @ params["a"])), np.sum(params["b"] * x[0]) + np.sum(params["a"])


def test_backward_flows_through_two_kernels_with_retain_grad_and_hooks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    w, v = Parameter(rng.normal(size=(3, 2))), Parameter(rng.normal(size=2))
    h = layer(w, x)
    assert isinstance(h, Tensor) and h.requires_grad and h.shape == (5, 2)
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()))
    out = head(h, v)
    out.backward()
    t = np.tanh(x @ w.data)
    np.testing.assert_allclose(v.grad, t.sum(axis=0))
    np.testing.assert_allclose(h.grad, np.broadcast_to(v.data, (5, 2)))
    np.testing.assert_allclose(seen[0], h.grad)
    np.testing.assert_allclose(w.grad, x.T @ ((1 - t**2) * v.data))


def test_plain_arrays_give_plain_values_and_tensors_without_grad_give_tensors():
    x = np.ones((2, 3))
    assert isinstance(layer(np.ones((3, 2)), x), np.ndarray)
    result = layer(Parameter(np.ones((3, 2)), requires_grad=False), x)
    assert isinstance(result, Tensor) and not result.requires_grad


def test_no_grad_runs_the_forward_only_kernel():
    fresh_layer = compile_grad(layer.fn)
    w = Parameter(np.ones((3, 2)))
    with no_grad():
        out = fresh_layer(w, np.ones((4, 3)))
    assert not out.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        head(out, np.ones(2)).backward()
    spec = fresh_layer._last
    assert "forward" in spec.kernels and "forward_save" not in spec.kernels


def test_several_outputs_each_backpropagate():
    x = Parameter(np.array([1.0, 2.0, 3.0]))
    total, mean_square = split_stats(x)
    assert total.item() == 6.0 and mean_square.item() == pytest.approx(14 / 3)
    mean_square.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, 2 * x.data / 3)
    total.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data / 3 + 1)


def test_has_aux_returns_undifferentiated_values():
    f = compile_grad(lambda w: (np.sum(w**2), w.max()), has_aux=True)
    w = Parameter(np.array([1.0, -3.0]))
    value, aux = f(w)
    assert aux.item() == 1.0 and not aux.requires_grad
    value.backward()
    np.testing.assert_allclose(w.grad, [2.0, -6.0])
    (grads, aux_value) = f.grad(np.array([1.0, -3.0]))
    np.testing.assert_allclose(grads, [2.0, -6.0])
    assert aux_value == 1.0


def test_a_parameter_the_result_does_not_depend_on_gets_no_grad_and_is_not_stepped():
    # PyTorch: a Parameter outside the graph keeps .grad None, so optimizers skip it (Adam's
    # moments and weight decay would move it otherwise); it was given zeros, every step
    from runtime import optim

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    params = {"a": Parameter(rng.normal(size=(3, 2))), "b": Parameter(rng.normal(size=3))}
    b_before = params["b"].data.copy()
    params["b"].grad = np.ones(3)  # from an earlier loss: Adam gets moments for b
    opt = optim.Adam(params.values(), lr=0.1, weight_decay=0.1)
    opt.step()
    b_before = params["b"].data.copy()
    for _ in range(6):  # past the calls after which the fast paths take over
        opt.zero_grad()
        a = params["a"].data.copy()
        first_tower(params, x).backward()
        assert params["b"].grad is None
        t = np.tanh(x @ a)
        np.testing.assert_allclose(params["a"].grad, x.T @ (1 - t**2))
        opt.step()
    np.testing.assert_array_equal(params["b"].data, b_before)
    # a result that depends on no Tensor needing grad does not require grad, as in PyTorch
    assert not first_tower({"a": Parameter(params["a"].data, requires_grad=False),
                            "b": params["b"]}, x).requires_grad


def test_backward_from_one_of_several_outputs_leaves_the_others_inputs_without_grad():
    # PyTorch's graph from the second result does not reach "b" through the first one: b
    # keeps .grad None (it was given zeros), whether the pass is backward(), inputs= or a sum
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3))
    params = {"a": Parameter(rng.normal(size=(3, 2))), "b": Parameter(rng.normal(size=3))}
    t = np.tanh(x @ params["a"].data)
    for _ in range(3):
        first, second = two_towers(params, x)
        first.backward(retain_graph=True)  # one node: its residuals serve both results
        assert params["b"].grad is None
        np.testing.assert_allclose(params["a"].grad, x.T @ (1 - t**2))
        params["a"].zero_grad()
        second.backward()
        np.testing.assert_allclose(params["a"].grad, np.ones((3, 2)))
        np.testing.assert_allclose(params["b"].grad, x[0])
        params["a"].zero_grad()
        params["b"].zero_grad()
    first, second = two_towers(params, x)
    (first * 2.0).backward(inputs=[params["a"], params["b"]])
    assert params["b"].grad is None
    np.testing.assert_allclose(params["a"].grad, 2 * x.T @ (1 - t**2))
