"""`loss.backward()` through a call site's settled backward (compiler/settled_backward.py): the
function runs in a plain training loop and in accumulation, declines everything else to the
general path, and either way the gradients and errors are PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, detect_anomaly, optim

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(11)
W0, B0 = RNG.normal(size=(3, 2)), RNG.normal(size=2)
X = RNG.normal(size=(5, 3))


@compile_grad
def loss_fn(W, b, X):
    return np.mean(np.tanh(X @ W + b) ** 2)


def torch_grads(W, b):
    """d loss / d (W, b) at these values, by PyTorch."""
    tW = torch.tensor(W, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    torch.mean(torch.tanh(torch.tensor(X) @ tW + tb) ** 2).backward()
    return tW.grad.numpy(), tb.grad.numpy()


@pytest.fixture
def model():
    """Parameters, an SGD optimizer, and the calls of the site's settled backward (True where
    it did the backward, False where it left it to the general path), after two steps that
    build the kernels storing into `.grad`."""
    W, b = Parameter(W0.copy()), Parameter(B0.copy())
    opt = optim.SGD([W, b], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(W, b, X).backward()
        opt.step()
    site = loss_fn(W, b, X).grad_fn.site
    settled = site.settled_backward
    assert settled is not None and "def settled_backward" in settled.source
    results = []

    def counted(node, retain_graph):
        results.append(settled(node, retain_graph))
        return results[-1]

    site.settled_backward = counted
    return W, b, opt, results


def assert_torch_grads(W, b, times=1):
    gW, gb = torch_grads(W.data, b.data)
    np.testing.assert_allclose(W.grad, times * gW, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b.grad, times * gb, rtol=1e-12, atol=1e-15)


def test_a_training_loop_takes_it_every_step_and_matches_pytorch(model):
    W, b, opt, results = model
    tW, tb = torch.tensor(W.data, requires_grad=True), torch.tensor(b.data, requires_grad=True)
    topt = torch.optim.SGD([tW, tb], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(W, b, X).backward()
        opt.step()
        topt.zero_grad()
        torch.mean(torch.tanh(torch.tensor(X) @ tW + tb) ** 2).backward()
        topt.step()
    assert results == [True] * 3
    np.testing.assert_allclose(W.data, tW.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-12)


def test_gradients_accumulate_without_zero_grad(model):
    W, b, opt, results = model
    opt.zero_grad()
    loss_fn(W, b, X).backward()
    loss_fn(W, b, X).backward()
    assert results == [True, True]  # the second adds into the first's arrays
    assert_torch_grads(W, b, times=2)


def test_a_gradient_the_user_holds_is_not_overwritten(model):
    W, b, opt, results = model
    opt.zero_grad()
    loss_fn(W, b, X).backward()
    held = W.grad  # handed out: the next backward must not store into it
    before = held.copy()
    opt.step()
    opt.zero_grad()
    loss_fn(W, b, X).backward()
    assert results == [True, False]
    np.testing.assert_array_equal(held, before)
    assert W.grad is not held
    assert_torch_grads(W, b)


def test_retain_graph_then_a_freed_graph(model):
    W, b, opt, results = model
    opt.zero_grad()
    loss = loss_fn(W, b, X)
    loss.backward(retain_graph=True)
    loss.backward()
    assert results == [True, True]
    assert_torch_grads(W, b, times=2)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()
    assert results[2] is False
    assert_torch_grads(W, b, times=2)


def test_parameters_changed_since_the_forward_raise_pytorchs_error(model):
    W, b, opt, results = model
    opt.zero_grad()
    loss_fn(W, b, X).backward()
    grads = W.grad.copy(), b.grad.copy()
    loss = loss_fn(W, b, X)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    assert results == [True, False]
    np.testing.assert_array_equal(W.grad, grads[0])  # untouched by the failed pass
    np.testing.assert_array_equal(b.grad, grads[1])


def test_hooks_added_later_run(model):
    W, b, opt, results = model
    seen = []
    W.register_hook(lambda g: seen.append(g.copy()) or 2 * g)
    opt.zero_grad()
    loss_fn(W, b, X).backward()
    assert results == [False]
    gW, gb = torch_grads(W.data, b.data)
    np.testing.assert_allclose(seen[0], gW, rtol=1e-12)
    np.testing.assert_allclose(W.grad, 2 * gW, rtol=1e-12)
    np.testing.assert_allclose(b.grad, gb, rtol=1e-12)


def test_retain_grad_on_the_loss_and_anomaly_mode_take_the_general_path(model):
    W, b, opt, results = model
    opt.zero_grad()
    loss = loss_fn(W, b, X)
    loss.retain_grad()
    loss.backward()
    assert loss.grad == 1.0
    with detect_anomaly():  # records through checked kernels: another site
        loss_fn(W, b, X).backward()
    loss = loss_fn(W, b, X)
    with detect_anomaly():  # a backward() under anomaly mode runs the checked kernels
        loss.backward()
    assert results == [False, False]
    assert_torch_grads(W, b, times=3)


def test_a_leaf_that_stops_requiring_grad_gets_no_gradient(model):
    W, b, opt, results = model
    opt.zero_grad()
    loss = loss_fn(W, b, X)
    b.requires_grad = False  # after the forward: PyTorch's graph still reaches b, ours too
    loss.backward()
    assert results == [False]
    assert b.grad is None
    np.testing.assert_allclose(W.grad, torch_grads(W.data, b.data)[0], rtol=1e-12)
