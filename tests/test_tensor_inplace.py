"""In-place Tensor updates (runtime/inplace.py) side by side with PyTorch: a manual SGD loop
under no_grad, each method's values and version counter, and the same errors."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, Tensor, no_grad

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(5)
X = RNG.normal(size=(16, 3))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.3


@compile_grad
def loss_fn(params, X, y):
    return np.mean((X @ params["w"] + params["b"] - y) ** 2)


def test_a_manual_sgd_loop_updates_the_parameters_as_pytorch_does():
    params = {"w": Parameter(np.zeros(3)), "b": Parameter(0.0)}
    theirs = {"w": torch.zeros(3, dtype=torch.float64, requires_grad=True),
              "b": torch.tensor(0.0, dtype=torch.float64, requires_grad=True)}
    for _ in range(5):
        loss_fn(params, X, Y).backward()
        ((torch.tensor(X) @ theirs["w"] + theirs["b"] - torch.tensor(Y)) ** 2).mean().backward()
        with no_grad():
            for p in params.values():
                p -= 0.1 * p.grad
                p.grad = None
        with torch.no_grad():
            for p in theirs.values():
                p -= 0.1 * p.grad
                p.grad = None
    assert all(type(p) is Parameter for p in params.values())  # updated, not rebound
    for key in params:
        np.testing.assert_allclose(params[key].data, theirs[key].detach().numpy(), rtol=1e-12)
        assert params[key]._version == theirs[key]._version == 5


@pytest.mark.parametrize("action", [
    lambda t, arr: t.__iadd__(2.0), lambda t, arr: t.__isub__(arr([1.0, 2.0, 3.0])),
    lambda t, arr: t.__imul__(-0.5), lambda t, arr: t.__itruediv__(4.0),
    lambda t, arr: t.__ipow__(2), lambda t, arr: t.add_(1.5, alpha=2.0),
    lambda t, arr: t.sub_(0.25, alpha=-4.0), lambda t, arr: t.mul_(3.0),
    lambda t, arr: t.div_(2.0), lambda t, arr: t.zero_(), lambda t, arr: t.fill_(7.0),
    lambda t, arr: t.copy_(arr([1.5, 2.0, 3.0])),
], ids=["iadd", "isub", "imul", "itruediv", "ipow", "add_", "sub_", "mul_", "div_", "zero_",
        "fill_", "copy_"])
def test_each_update_gives_pytorchs_values_and_version(action):
    start = np.array([0.5, -1.0, 2.0])
    ours, theirs = Parameter(start.copy()), torch.tensor(start, requires_grad=True)
    data = ours.data
    with no_grad():
        assert action(ours, lambda v: np.array(v, np.float32)) is ours
    with torch.no_grad():
        action(theirs, lambda v: torch.tensor(v, dtype=torch.float32))
    assert ours.data is data  # written in place
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-15)
    assert ours._version == theirs._version == 1


def test_the_errors_are_pytorchs():
    # a leaf that requires grad, in grad mode
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        torch.ones(2, requires_grad=True).add_(1)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        Parameter(np.ones(2)).add_(1)
    # a float result into an integer Tensor
    with pytest.raises(RuntimeError, match="can't be cast"):
        torch.arange(3).div_(2)
    with pytest.raises(RuntimeError, match="cannot be stored in a Tensor of dtype int64"):
        Tensor(np.arange(3)).div_(2)
    # a result of another shape
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        torch.ones(3).add_(torch.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"on a Tensor of shape \(3,\)"):
        Tensor(np.ones(3)).add_(np.ones((2, 3)))


def test_a_tensor_in_a_graph_is_not_updated_in_place_while_recording():
    w = Parameter(np.array([1.0, 2.0]))
    loss = loss_fn({"w": Parameter(np.ones(3)), "b": Parameter(0.0)}, X, Y)
    with pytest.raises(RuntimeError, match="not recorded for backward"):
        loss += 1.0  # PyTorch would record it; gradfuse says to write `loss = loss + 1.0`
    plain = Tensor(np.zeros(2))
    with pytest.raises(RuntimeError, match="not recorded for backward"):
        plain += w
    np.testing.assert_array_equal(plain.data, [0.0, 0.0])


@compile_grad
def penalty(w):
    return np.sum(w**2)


def test_an_update_between_forward_and_backward_is_caught_by_the_version_counter():
    w = Parameter(np.ones(3))
    loss = penalty(w)
    with no_grad():
        w -= 1.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    tw = torch.ones(3, dtype=torch.float64, requires_grad=True)
    tloss = (tw**2).sum()  # saves tw for its backward
    with torch.no_grad():
        tw -= 1.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tloss.backward()


def test_a_detached_tensor_shares_the_version_counter_of_what_it_was_detached_from():
    # as PyTorch's: an update through the alias is seen by a graph that saved the original
    # (it had a counter of its own, so backward read the changed array without a word)
    w = Parameter(np.ones(3))
    loss = penalty(w)
    alias = w.detach()
    assert not alias.requires_grad and alias.is_leaf and alias.data is w.data
    alias.mul_(2.0)  # no grad needed: allowed in grad mode, and w changes too
    np.testing.assert_array_equal(w.data, [2.0, 2.0, 2.0])
    assert w._version == alias._version == alias.detach()._version == 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    tw = torch.ones(3, dtype=torch.float64, requires_grad=True)
    tloss = (tw**2).sum()
    tw.detach().mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tloss.backward()
    # and the other way: an optimizer's update of w is seen by a graph that saved the alias
    alias = w.detach().requires_grad_()
    loss = penalty(alias)
    with no_grad():
        w -= 1.0
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    assert repr(alias) == "Tensor([1., 1., 1.], requires_grad=True)"
