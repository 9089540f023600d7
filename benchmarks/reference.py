"""Each workload's loss and gradients written by hand in NumPy: the float64 oracle, and a timed row.

Called with float64 arrays these functions are the reference every
implementation is checked against; called with float32 arrays (NumPy keeps
float32 throughout: Python scalars are weak) they are the "NumPy
(hand-written)" row of the tables. Gradients are derived by hand, the way one
writes them before using an autograd library.
"""

from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]


def as_float64(params: Params) -> Params:
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


# --- W1 and W4: MLPs ---------------------------------------------------------------------
def _mlp_forward(params: Params, X: np.ndarray):
    """Activations of a ReLU MLP with layers W0/b0, W1/b1, ...: (inputs, pre-activations, out)."""
    layers = sum(1 for k in params if k.startswith("W"))
    inputs, pre = [], []
    h = X
    for i in range(layers):
        inputs.append(h)
        z = h @ params[f"W{i}"] + params[f"b{i}"]
        pre.append(z)
        h = np.maximum(z, 0) if i < layers - 1 else z
    return inputs, pre, h


def _mlp_backward(params: Params, inputs: list, pre: list, d_out: np.ndarray) -> Params:
    grads = {}
    d = d_out
    for i in reversed(range(len(inputs))):
        grads[f"W{i}"] = inputs[i].T @ d
        grads[f"b{i}"] = d.sum(axis=0)
        if i > 0:
            d = (d @ params[f"W{i}"].T) * (pre[i - 1] > 0)  # relu'(0) = 0
    return grads


def mlp_mse(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """W1's loss mean((mlp(X) - y)**2) and its gradients."""
    inputs, pre, pred = _mlp_forward(params, X)
    residual = pred - y
    loss = np.mean(residual * residual)
    return loss, _mlp_backward(params, inputs, pre, residual * (2 / residual.size))


def mlp_cross_entropy(params: Params, X: np.ndarray, labels: np.ndarray) -> tuple[float, Params]:
    """W4's loss mean(-log_softmax(mlp(X))[label]) and its gradients."""
    inputs, pre, logits = _mlp_forward(params, X)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    d_logits = exp / total
    d_logits[rows, labels] -= 1
    return loss, _mlp_backward(params, inputs, pre, d_logits / len(labels))


# --- W2: mean absolute error -------------------------------------------------------------
def mae(params: np.ndarray, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """mean(|(inputs*params).sum(1) - targets|) and its gradient w.r.t. params."""
    residual = (inputs * params).sum(axis=1) - targets
    return np.mean(np.abs(residual)), (np.sign(residual) @ inputs) / len(targets)


# --- W3: elementwise ---------------------------------------------------------------------
def elementwise(w, b, x, y) -> tuple[float, np.ndarray, np.ndarray]:
    """mean(log(1 + exp(-y*tanh(w*x + b))) + 0.01*(w*x)**2) and its gradients w.r.t. w, b."""
    t = np.tanh(w * x + b)
    e = np.exp(-y * t)
    wx = w * x
    loss = np.mean(np.log(1 + e) + 0.01 * wx * wx)
    n = len(x)
    d_z = (e / (1 + e)) * -y * (1 - t * t) / n
    return loss, d_z * x + (0.02 / n) * wx * x, d_z


# --- W5: logistic regression -------------------------------------------------------------
def logistic(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """Binary cross-entropy with logits X @ w + b, and its gradients."""
    logits = X @ params["w"] + params["b"]
    loss = np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits))))
    d = (0.5 * (1 + np.tanh(0.5 * logits)) - y) / len(y)  # sigmoid, overflow-free
    return loss, {"w": X.T @ d, "b": d.sum(keepdims=True)}


# --- training with plain SGD -------------------------------------------------------------
def sgd_step(loss_and_grads, params: Params, lr: float, *data) -> float:
    """One SGD step in place; returns the loss before it."""
    loss, grads = loss_and_grads(params, *data)
    for k, g in grads.items():
        params[k] -= lr * g
    return loss


def sgd_loop(loss_and_grads, params: Params, lr: float, batches: list[tuple],
             steps: int) -> np.ndarray:
    """`steps` SGD steps in place, step k on batches[k % len(batches)]; the losses."""
    losses = np.empty(steps)
    for k in range(steps):
        losses[k] = sgd_step(loss_and_grads, params, lr, *batches[k % len(batches)])
    return losses
