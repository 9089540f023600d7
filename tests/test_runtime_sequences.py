"""Random sequences of what PyTorch users do, run side by side with PyTorch: compiled calls on
Parameters, Tensor arithmetic combining their results, backward() with and without
retain_graph or with a `gradient`, zero_grad, optimizer steps, no_grad. After every action
the gradients and parameters agree, and an action raises in gradfuse exactly when it raises
in PyTorch (a graph freed by an earlier backward, parameters changed in place since)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import compile_grad
from runtime import Parameter, no_grad, optim

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(7)
W0, B0 = RNG.normal(size=(3, 2)), RNG.normal(size=2)
BATCHES = [RNG.normal(size=(4, 3)) for _ in range(3)]
SEEDS = [RNG.normal(size=(4, 2)) for _ in range(2)]


@compile_grad
def loss(W, b, X):
    return np.mean(np.tanh(X @ W + b) ** 2)


@compile_grad
def penalty(W):
    return 0.1 * np.sum(W * W)


@compile_grad
def features(W, b, X):
    return np.tanh(X @ W + b)


def torch_loss(W, b, X):
    return torch.mean(torch.tanh(X @ W + b) ** 2)


def torch_penalty(W):
    return 0.1 * torch.sum(W * W)


def torch_features(W, b, X):
    return torch.tanh(X @ W + b)


ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("loss"), st.integers(0, len(BATCHES) - 1)),
    st.tuples(st.just("penalty"), st.just(0)),
    st.tuples(st.just("combine"), st.integers(0, 3)),
    st.tuples(st.just("backward"), st.booleans()),
    st.tuples(st.just("features"), st.integers(0, len(SEEDS) - 1)),
    st.tuples(st.just("zero_grad"), st.booleans()),
    st.tuples(st.just("step"), st.just(0)),
    st.tuples(st.just("no_grad"), st.integers(0, len(BATCHES) - 1)),
), min_size=1, max_size=12)


class Side:
    """One framework's state: its parameters, optimizer, and the results still held."""

    def __init__(self, ours: bool) -> None:
        self.ours = ours
        if ours:
            self.W, self.b = Parameter(W0.copy()), Parameter(B0.copy())
        else:
            self.W = torch.tensor(W0.copy(), requires_grad=True)
            self.b = torch.tensor(B0.copy(), requires_grad=True)
        cls = optim.SGD if ours else torch.optim.SGD
        self.opt = cls([self.W, self.b], lr=0.1, momentum=0.5)
        self.held = []  # results (losses, features) that may still be backpropagated

    def data(self, array):
        return array if self.ours else torch.tensor(array)

    def act(self, kind: str, arg) -> None:
        if kind == "loss":
            f = loss if self.ours else torch_loss
            self.held.append(f(self.W, self.b, self.data(BATCHES[arg])))
        elif kind == "penalty":
            self.held.append((penalty if self.ours else torch_penalty)(self.W))
        elif kind == "features":
            f = features if self.ours else torch_features
            self.held.append((f(self.W, self.b, self.data(BATCHES[0][:, :3])), arg))
        elif kind == "combine":
            scalars = [h for h in self.held if not isinstance(h, tuple)]
            if len(scalars) < 2:
                return
            a, b = scalars[-1], scalars[-2]
            combined = [a + 0.5 * b, a * b, (a - b) / 3.0, sum([a, b]) ** 2][arg]
            self.held.append(combined)
        elif kind == "backward":
            if not self.held:
                return
            last = self.held[-1]
            if isinstance(last, tuple):  # a non-scalar result: backward(gradient=...)
                result, seed = last
                result.backward(self.data(SEEDS[seed]), retain_graph=arg)
            else:
                last.backward(retain_graph=arg)
        elif kind == "zero_grad":
            self.opt.zero_grad(set_to_none=arg)
        elif kind == "step":
            self.opt.step()
        elif kind == "no_grad":
            with (no_grad() if self.ours else torch.no_grad()):
                value = (loss if self.ours else torch_loss)(self.W, self.b,
                                                            self.data(BATCHES[arg]))
            assert not value.requires_grad


def grad_of(p, ours: bool):
    g = p.grad
    if g is None:
        return None
    return np.asarray(g) if ours else g.detach().numpy()


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS)
def test_a_sequence_of_pytorch_habits_does_what_pytorch_does(actions):
    ours, theirs = Side(True), Side(False)
    for k, (kind, arg) in enumerate(actions):
        outcomes = []
        for side in (ours, theirs):
            try:
                side.act(kind, arg)
                outcomes.append(None)
            except RuntimeError as err:
                outcomes.append(err)
        where = f"action {k} {kind}({arg}) of {actions}"
        assert (outcomes[0] is None) == (outcomes[1] is None), \
            f"{where}: gradfuse raised {outcomes[0]!r}, PyTorch {outcomes[1]!r}"
        for name in ("W", "b"):
            ours_grad = grad_of(getattr(ours, name), True)
            their_grad = grad_of(getattr(theirs, name), False)
            assert (ours_grad is None) == (their_grad is None), f"{where}: {name}.grad"
            if ours_grad is not None:
                np.testing.assert_allclose(ours_grad, their_grad, rtol=1e-12, atol=1e-14,
                                           err_msg=f"{where}: {name}.grad")
            np.testing.assert_allclose(np.asarray(getattr(ours, name).data),
                                       getattr(theirs, name).detach().numpy(),
                                       rtol=1e-12, atol=1e-14, err_msg=f"{where}: {name}")
