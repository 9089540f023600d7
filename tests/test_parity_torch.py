"""Training parity with PyTorch: same float64 weights, same data, 20 steps of each optimizer;
losses, gradients and parameters agree (the issue asks for 1e-5 relative; we hold 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from runtime import Parameter, optim
from runtime import functional as F

torch = pytest.importorskip("torch")

SIZES = [4, 6, 3]
OPTIMIZERS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
]


@compile_grad
def mlp_loss(params, X, y):
    h = np.tanh(F.linear(X, params["W0"], params["b0"]))
    return F.mse_loss(F.linear(h, params["W1"], params["b1"]), y)


def initial_weights():
    rng = np.random.default_rng(0)
    weights = {}
    for i, (n_in, n_out) in enumerate(zip(SIZES, SIZES[1:])):
        weights[f"W{i}"] = rng.normal(0, 0.5, (n_in, n_out))
        weights[f"b{i}"] = rng.normal(0, 0.1, n_out)
    return weights


def torch_model(weights):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(SIZES, SIZES[1:])):
        linear = torch.nn.Linear(n_in, n_out, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(weights[f"W{i}"].T))  # torch stores (out, in)
            linear.bias.copy_(torch.tensor(weights[f"b{i}"]))
        layers += [linear, torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("name, options", OPTIMIZERS,
                         ids=[f"{n}-{'-'.join(o)}" for n, o in OPTIMIZERS])
def test_twenty_steps_match_pytorch(name, options):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(8, SIZES[0])), rng.normal(size=(8, SIZES[-1]))
    weights = initial_weights()
    params = {k: Parameter(v) for k, v in weights.items()}
    ours = getattr(optim, name)(params, **options)
    model = torch_model(weights)
    theirs = getattr(torch.optim, name)(model.parameters(), **options)
    X_t, y_t = torch.tensor(X), torch.tensor(y)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    counterparts = torch_counterparts(linears)
    assert set(counterparts) == set(params)  # every parameter is compared

    for step in range(20):
        ours.zero_grad()
        loss = mlp_loss(params, X, y)
        loss.backward()
        theirs.zero_grad()
        torch_loss = torch.nn.functional.mse_loss(model(X_t), y_t)
        torch_loss.backward()
        assert loss.item() == pytest.approx(torch_loss.item(), rel=1e-9), f"step {step}"
        for name, (tensor, as_ours) in counterparts.items():
            np.testing.assert_allclose(params[name].grad, as_ours(tensor.grad.numpy()),
                                       rtol=1e-9, atol=1e-12, err_msg=f"{name}.grad, step {step}")
        ours.step()
        theirs.step()
        for name, (tensor, as_ours) in counterparts.items():
            np.testing.assert_allclose(params[name].data, as_ours(tensor.detach().numpy()),
                                       rtol=1e-9, atol=1e-12, err_msg=f"{name}, step {step}")


def torch_counterparts(linears):
    """Our parameter name -> (the torch Parameter, how to turn its arrays into our layout)."""
    pairs = {}
    for i, linear in enumerate(linears):
        pairs[f"W{i}"] = (linear.weight, np.transpose)  # torch stores (out, in)
        pairs[f"b{i}"] = (linear.bias, np.asarray)
    return pairs
