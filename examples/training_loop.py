"""Training loops with backward() and an optimizer, as in PyTorch's tutorials.

    Linear(10, 5) - ReLU - Linear(5, 1), MSE, SGD lr 0.01, 20 samples: the loss falls over 5 epochs
    Linear(1, 1) fitting y = 2x with lr 0.1: the loss after one update is lower than before
"""

import numpy as np

from compiler import compile_grad
from runtime import functional as F
from runtime import init, optim


@compile_grad
def mlp_loss(params, X, y):
    return F.mse_loss(init.mlp(params, X), y)


@compile_grad
def linear_loss(w, b, x, y):
    return F.mse_loss(x @ w + b, y)


def main() -> dict:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 10)).astype(np.float32)
    y = rng.normal(size=(20, 1)).astype(np.float32)
    params = init.mlp_params([10, 5, 1], rng)
    optimizer = optim.SGD(params, lr=0.01)
    losses = []
    for epoch in range(5):
        optimizer.zero_grad()
        loss = mlp_loss(params, X, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        print(f"epoch {epoch}: loss {loss.item():.6f}")

    w, b = init.linear_params(1, 1, rng)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(-1, 1)
    target = 2 * x
    sgd = optim.SGD([w, b], lr=0.1)
    before = linear_loss(w, b, x, target)
    before.backward()
    sgd.step()
    after = linear_loss(w, b, x, target)
    print(f"fitting y = 2x: loss {before.item():.6f} before one update, {after.item():.6f} after")
    return {"losses": losses, "before": before.item(), "after": after.item()}


if __name__ == "__main__":
    main()
