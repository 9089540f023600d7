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


# --- W8: a transformer block and a small CNN -----------------------------------------------
GELU_C = 0.7978845608028654  # sqrt(2 / pi): GELU's tanh form


def _layernorm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray, eps: float = 1e-5):
    """Layer norm over the last axis; the normalized values and 1/std, for backward."""
    centered = x - x.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    normalized = centered * rstd
    return normalized * gain + bias, (normalized, rstd)


def _layernorm_backward(d_out: np.ndarray, gain: np.ndarray, saved) -> tuple:
    """(d_x, d_gain, d_bias) of _layernorm."""
    normalized, rstd = saved
    d_norm = d_out * gain
    d_x = rstd * (d_norm - d_norm.mean(axis=-1, keepdims=True)
                  - normalized * (d_norm * normalized).mean(axis=-1, keepdims=True))
    return d_x, (d_out * normalized).sum(axis=(0, 1)), d_out.sum(axis=(0, 1))


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])


def transformer_block(params: Params, x: np.ndarray, target: np.ndarray,
                      heads: int) -> tuple[float, Params]:
    """W8a: pre-norm block (causal self-attention, tanh-GELU MLP, residuals), MSE to target."""
    B, T, C = x.shape
    D = C // heads
    scale = D ** -0.5
    h1, ln1 = _layernorm(x, params["ln1_g"], params["ln1_b"])
    qkv = h1 @ params["W_qkv"] + params["b_qkv"]
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, heads, D).transpose(0, 2, 1, 3)
               for i in range(3))
    scores = np.where(np.tri(T, dtype=bool), (q @ k.transpose(0, 1, 3, 2)) * scale, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    x1 = x + y @ params["W_o"] + params["b_o"]
    h2, ln2 = _layernorm(x1, params["ln2_g"], params["ln2_b"])
    z = h2 @ params["W_1"] + params["b_1"]
    t = np.tanh(GELU_C * (z + 0.044715 * z ** 3))
    a = 0.5 * z * (1 + t)
    residual = x1 + a @ params["W_2"] + params["b_2"] - target
    loss = np.mean(residual * residual)

    grads = {}
    d_x2 = residual * (2 / residual.size)
    grads["W_2"], grads["b_2"] = _rows(a).T @ _rows(d_x2), d_x2.sum(axis=(0, 1))
    d_z = (d_x2 @ params["W_2"].T) * (0.5 * (1 + t) + 0.5 * z * (1 - t * t) * GELU_C
                                      * (1 + 3 * 0.044715 * z * z))
    grads["W_1"], grads["b_1"] = _rows(h2).T @ _rows(d_z), d_z.sum(axis=(0, 1))
    d_ln2, grads["ln2_g"], grads["ln2_b"] = _layernorm_backward(
        d_z @ params["W_1"].T, params["ln2_g"], ln2)
    d_x1 = d_x2 + d_ln2
    grads["W_o"], grads["b_o"] = _rows(y).T @ _rows(d_x1), d_x1.sum(axis=(0, 1))
    d_heads = (d_x1 @ params["W_o"].T).reshape(B, T, heads, D).transpose(0, 2, 1, 3)
    d_p = d_heads @ v.transpose(0, 1, 3, 2)
    d_v = p.transpose(0, 1, 3, 2) @ d_heads
    d_scores = p * (d_p - (d_p * p).sum(axis=-1, keepdims=True)) * scale  # masked: p = 0
    d_q, d_k = d_scores @ k, d_scores.transpose(0, 1, 3, 2) @ q
    d_qkv = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, C) for d in (d_q, d_k, d_v)],
                           axis=-1)
    grads["W_qkv"], grads["b_qkv"] = _rows(h1).T @ _rows(d_qkv), d_qkv.sum(axis=(0, 1))
    _, grads["ln1_g"], grads["ln1_b"] = _layernorm_backward(
        d_qkv @ params["W_qkv"].T, params["ln1_g"], ln1)
    return loss, grads


def cnn_cross_entropy(params: Params, images: np.ndarray,
                      labels: np.ndarray) -> tuple[float, Params]:
    """W8b: 3x3 convolution (valid), ReLU, 2x2 max-pool, linear, softmax cross-entropy."""
    W = params["conv_W"]
    n, _, height, width = images.shape
    kh, kw = W.shape[2:]
    oh, ow = height - kh + 1, width - kw + 1
    patches = [(di, dj, images[:, :, di:di + oh, dj:dj + ow])
               for di in range(kh) for dj in range(kw)]
    conv = params["conv_b"][:, None, None] + sum(
        np.einsum("nchw,oc->nohw", patch, W[:, :, di, dj]) for di, dj, patch in patches)
    relu = np.maximum(conv, 0)
    windows = relu.reshape(n, W.shape[0], oh // 2, 2, ow // 2, 2)
    pooled = windows.max(axis=(3, 5))
    flat = pooled.reshape(n, -1)
    logits = flat @ params["fc_W"] + params["fc_b"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])

    d_logits = exp / total
    d_logits[rows, labels] -= 1
    d_logits /= n
    grads = {"fc_W": flat.T @ d_logits, "fc_b": d_logits.sum(axis=0)}
    d_pooled = (d_logits @ params["fc_W"].T).reshape(pooled.shape)[:, :, :, None, :, None]
    # Ties share the gradient (as JAX's max); after ReLU only zeros tie, where relu' = 0.
    hit = windows == pooled[:, :, :, None, :, None]
    d_conv = (hit * d_pooled / hit.sum(axis=(3, 5), keepdims=True)).reshape(conv.shape)
    d_conv = d_conv * (conv > 0)
    grads["conv_b"] = d_conv.sum(axis=(0, 2, 3))
    d_W = np.empty_like(W)
    for di, dj, patch in patches:
        d_W[:, :, di, dj] = np.einsum("nohw,nchw->oc", d_conv, patch)
    grads["conv_W"] = d_W
    return loss, grads
