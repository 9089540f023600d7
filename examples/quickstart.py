"""gradfuse in one page: compile a NumPy loss, get value and gradient, read the backward code."""

import numpy as np

from compiler import compile_grad


@compile_grad
def loss(params, X, y):
    h = np.maximum(X @ params["W1"] + params["b1"], 0.0)
    pred = h @ params["W2"] + params["b2"]
    return np.mean((pred - y) ** 2)


rng = np.random.default_rng(0)
params = {
    "W1": rng.normal(0, 0.3, (10, 5)).astype(np.float32),
    "b1": np.zeros(5, np.float32),
    "W2": rng.normal(0, 0.3, (5, 1)).astype(np.float32),
    "b2": np.zeros(1, np.float32),
}
X = rng.normal(size=(20, 10)).astype(np.float32)
y = rng.normal(size=(20, 1)).astype(np.float32)

value, grads = loss.value_and_grad(params, X, y)
print(f"loss = {value:.6f}")
for name, g in grads.items():
    print(f"d loss / d {name}: shape {g.shape}, norm {np.linalg.norm(g):.6f}")

# A new batch size reuses the same trace and kernel: nothing is recompiled. (A plain call,
# loss(params, X, y), would compile the forward kernel, once, for every batch size.)
value7, _ = loss.value_and_grad(params, X[:7], y[:7])
print(f"loss on 7 samples = {value7:.6f}")

print("\n# --- generated backward kernel " + "-" * 40)
print(loss.source("backward"))
