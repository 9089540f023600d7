"""Gradient clipping, exploding gradients, and gradient accumulation over micro-batches.

    clip_grad_norm_(max_norm=1.0) leaves a total gradient norm of 1.0
    a 20-layer linear network initialized with std 1.0: per-layer gradient norms explode
    4 micro-batches with loss / 4 accumulate to the full-batch gradient
"""

import numpy as np

from compiler import compile_grad
from runtime import Parameter, utils
from runtime import functional as F


@compile_grad
def deep_linear_loss(layers, x):
    h = x
    for W in layers:  # unrolled at trace time: 20 matrix products
        h = h @ W
    return np.mean(h**2)


@compile_grad
def regression_loss(w, X, y, scale):
    return F.mse_loss(X @ w, y) * scale


def main() -> dict:
    rng = np.random.default_rng(0)
    layers = [Parameter(rng.normal(0.0, 1.0, (8, 8))) for _ in range(20)]
    x = rng.normal(size=(4, 8))
    deep_linear_loss(layers, x).backward()
    norms = utils.grad_norms(layers)
    for i, norm in enumerate(norms):
        print(f"layer {i:2d}: gradient norm {norm:.3e}")
    total = utils.clip_grad_norm_(layers, max_norm=1.0)
    clipped = np.sqrt(sum(np.sum(p.grad**2) for p in layers))
    print(f"total norm {total:.3e} before clipping, {clipped:.6f} after clip_grad_norm_(1.0)")

    X, y = rng.normal(size=(16, 3)), rng.normal(size=(16, 1))
    w = Parameter(rng.normal(size=(3, 1)))
    regression_loss(w, X, y, 1.0).backward()
    full = w.grad.copy()
    w.zero_grad()
    for chunk in range(4):
        rows = slice(4 * chunk, 4 * chunk + 4)
        regression_loss(w, X[rows], y[rows], 0.25).backward()
    print(f"full-batch gradient {full.ravel()}, accumulated {w.grad.ravel()}")
    return {"norms": norms, "total": total, "clipped": clipped, "full": full,
            "accumulated": w.grad.copy()}


if __name__ == "__main__":
    main()
