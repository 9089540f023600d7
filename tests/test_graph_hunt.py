"""Compiled calls composed in the runtime's autograd graph, against PyTorch: seeds and hooks
of any layout, several outputs, losses combined by runtime arithmetic, the fast paths."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(7)
X = RNG.normal(size=(6, 3))
Y = RNG.normal(size=(6, 2))
W0 = RNG.normal(size=(3, 2))
B0 = RNG.normal(size=2)


@compile_grad
def layer(W, b, x):
    return np.tanh(x @ W + b)


@compile_grad
def mse(h, y):
    return np.mean((h - y) ** 2)


def torch_layer(W, b, x):
    return torch.tanh(torch.as_tensor(x) @ W + b)


def torch_mse(h, y):
    return torch.mean((h - torch.as_tensor(y)) ** 2)


def leaves():
    """The same Parameters for gradfuse and for PyTorch."""
    return (Parameter(W0.copy()), Parameter(B0.copy()),
            torch.tensor(W0, requires_grad=True), torch.tensor(B0, requires_grad=True))


def assert_grads(ours, theirs):
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-14)


G = RNG.normal(size=(2, 6))
GRADIENTS = {  # backward(gradient=...) as users pass them: numba's kernels take C order only
    "transposed": (G.T, torch.tensor(G).T),
    "broadcast": (np.broadcast_to(np.array([1.0, -2.0]), (6, 2)),
                  torch.tensor([1.0, -2.0]).expand(6, 2)),
    "strided": (np.repeat(G.T, 2, axis=1)[:, ::2], torch.tensor(G.T.copy())),
    "read-only": (np.frombuffer(G.T.tobytes()).reshape(6, 2), torch.tensor(G.T.copy())),
    "float32 transposed": (G.T.astype(np.float32), torch.tensor(G.T.astype(np.float32))),
}


@pytest.mark.parametrize("kind", GRADIENTS)
def test_a_seed_of_any_layout_reaches_the_kernels(kind):
    # backward(gradient=g.T) failed with numba's bare 'No matching definition for argument
    # type(s) ... array(float64, 2d, F)'; PyTorch takes any strides
    gradient, torch_gradient = GRADIENTS[kind]
    W, b, Wt, bt = leaves()
    for _ in range(3):  # the first call, and the fast paths of the next ones
        h, ht = layer(W, b, X), torch_layer(Wt, bt, X)
        h.backward(gradient=gradient, retain_graph=True)
        h.backward(gradient=gradient)  # the same graph again, accumulating
        ht.backward(gradient=torch_gradient.double(), retain_graph=True)
        ht.backward(gradient=torch_gradient.double())
        assert_grads((W, b), (Wt, bt))


def test_a_hook_returning_another_layout_reaches_the_kernels():
    # a hook on a compiled call's output gave a Fortran-ordered gradient: the same TypeError
    W, b, Wt, bt = leaves()
    for _ in range(3):
        h, ht = layer(W, b, X), torch_layer(Wt, bt, X)
        h.register_hook(lambda g: np.asfortranarray(2 * g))
        ht.register_hook(lambda g: 2 * g)
        mse(h, Y).backward()
        torch_mse(ht, Y).backward()
        assert_grads((W, b), (Wt, bt))
