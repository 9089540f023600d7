"""`backward(inputs=...)` as in PyTorch (a GAN's generator step, say): gradients go into the
named leaves' and results' `.grad`s only; other leaves, and leaves the graph does not reach,
keep theirs."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(2)
G0, D0, X = RNG.normal(size=(3, 3)), RNG.normal(size=3), RNG.normal(size=(4, 3))


@compile_grad
def generate(G, X):
    return np.tanh(X @ G)


@compile_grad
def discriminate(D, fake):
    return np.mean(np.log1p(np.exp(-(fake @ D))))


def test_only_the_named_tensors_get_gradients_like_pytorch():
    G, D, unused = Parameter(G0.copy()), Parameter(D0.copy()), Parameter(np.ones(2))
    tG, tD = torch.tensor(G0, requires_grad=True), torch.tensor(D0, requires_grad=True)
    tunused = torch.ones(2, dtype=torch.float64, requires_grad=True)
    fake, tfake = generate(G, X), torch.tanh(torch.tensor(X) @ tG)
    loss = discriminate(D, fake)
    tloss = torch.log1p(torch.exp(-(tfake @ tD))).mean()
    loss.backward(inputs=[G, fake, unused], retain_graph=True)
    tloss.backward(inputs=[tG, tfake, tunused], retain_graph=True)
    np.testing.assert_allclose(G.grad, tG.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(fake.grad, tfake.grad.numpy(), rtol=1e-12)
    assert D.grad is None and tD.grad is None
    assert unused.grad is None and tunused.grad is None
    loss.backward(inputs=D)  # one Tensor, and a second pass that accumulates nowhere else
    tloss.backward(inputs=tD)
    np.testing.assert_allclose(D.grad, tD.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(G.grad, tG.grad.numpy(), rtol=1e-12)


def test_empty_inputs_is_pytorchs_error():
    loss = discriminate(Parameter(D0.copy()), X)
    with pytest.raises(RuntimeError, match="cannot be empty"):
        loss.backward(inputs=[])
