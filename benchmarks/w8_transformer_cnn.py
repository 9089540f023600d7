"""W8: a transformer block and a small CNN, float32: value and gradient w.r.t. every parameter.

(a) A pre-norm transformer block, B=8, T=32, C=64, 4 heads: layer norm, causal
self-attention (softmax under a mask), a GELU MLP (tanh form) of width 4C, residuals,
MSE to a target. (b) A small CNN: 16 images 3x16x16, 8 filters 3x3 (valid), ReLU, 2x2
max-pool, a linear layer to 10 classes, cross-entropy; the convolution is nine shifted
slices, each contracted with its filter tap by np.einsum. Both are written as a NumPy
user writes them; PyTorch and JAX use their own layers (F.conv2d, lax.conv_general_dilated).
"""

from __future__ import annotations

import numpy as np

from benchmarks import peers, reference
from benchmarks.gradients import ParamsFunction
from benchmarks.harness import Config, Tolerance, WorkloadResult, run_case
from compiler import compile_grad
from runtime import functional as F

ID = "W8"
TITLE = "transformer block and small CNN, float32: value and gradient"
TRANSFORMER, CNN = "transformer block", "small CNN"
B, T, C, HEADS = 8, 32, 64, 4
IMAGES, CHANNELS, SIDE, FILTERS, CLASSES = 16, 3, 16, 8, 10


def layer_norm(x, gain, bias):
    centered = x - np.mean(x, axis=-1, keepdims=True)
    return centered / np.sqrt(np.mean(centered * centered, axis=-1, keepdims=True) + 1e-5) \
        * gain + bias


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))


@compile_grad
def transformer_block(p, x, target):
    b, t, c = x.shape
    d = c // HEADS
    qkv = layer_norm(x, p["ln1_g"], p["ln1_b"]) @ p["W_qkv"] + p["b_qkv"]
    q, k, v = (qkv[:, :, i * c:(i + 1) * c].reshape(b, t, HEADS, d).transpose(0, 2, 1, 3)
               for i in range(3))
    scores = np.where(np.tri(t, dtype=bool), (q @ k.transpose(0, 1, 3, 2)) * d ** -0.5, -np.inf)
    y = (F.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
    x = x + y @ p["W_o"] + p["b_o"]
    x = x + gelu(layer_norm(x, p["ln2_g"], p["ln2_b"]) @ p["W_1"] + p["b_1"]) @ p["W_2"] \
        + p["b_2"]
    return np.mean((x - target) ** 2)


@compile_grad
def small_cnn(p, images, labels):
    n, _, height, width = images.shape
    W = p["conv_W"]
    kh, kw = W.shape[2:]
    oh, ow = height - kh + 1, width - kw + 1
    conv = p["conv_b"][:, None, None]
    for di in range(kh):
        for dj in range(kw):
            patch = images[:, :, di:di + oh, dj:dj + ow]
            conv = conv + np.einsum("nchw,oc->nohw", patch, W[:, :, di, dj])
    h = F.relu(conv).reshape(n, W.shape[0], oh // 2, 2, ow // 2, 2).max(axis=(3, 5))
    return F.cross_entropy(h.reshape(n, -1) @ p["fc_W"] + p["fc_b"], labels)


TRANSFORMER_FUNCTION = ParamsFunction(
    transformer_block, lambda p, x, t: reference.transformer_block(p, x, t, HEADS),
    peers.torch_transformer(HEADS), peers.jax_transformer(HEADS))
CNN_FUNCTION = ParamsFunction(small_cnn, reference.cnn_cross_entropy, peers.torch_cnn,
                              peers.jax_cnn)


def _weights(rng, *shape, fan_in):
    return (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)


def transformer_problem() -> tuple[dict, tuple]:
    rng = np.random.default_rng(0)
    params = {}
    for norm in ("ln1", "ln2"):
        params[f"{norm}_g"] = (1 + 0.1 * rng.normal(size=C)).astype(np.float32)
        params[f"{norm}_b"] = (0.1 * rng.normal(size=C)).astype(np.float32)
    for name, (n_in, n_out) in {"qkv": (C, 3 * C), "o": (C, C), "1": (C, 4 * C),
                                "2": (4 * C, C)}.items():
        params[f"W_{name}"] = _weights(rng, n_in, n_out, fan_in=n_in)
        params[f"b_{name}"] = (0.1 * rng.normal(size=n_out)).astype(np.float32)
    x = rng.normal(size=(B, T, C)).astype(np.float32)
    target = rng.normal(size=(B, T, C)).astype(np.float32)
    return params, (x, target)


def cnn_problem() -> tuple[dict, tuple]:
    rng = np.random.default_rng(1)
    pooled = FILTERS * ((SIDE - 2) // 2) ** 2
    params = {"conv_W": _weights(rng, FILTERS, CHANNELS, 3, 3, fan_in=CHANNELS * 9),
              "conv_b": (0.1 * rng.normal(size=FILTERS)).astype(np.float32),
              "fc_W": _weights(rng, pooled, CLASSES, fan_in=pooled),
              "fc_b": (0.1 * rng.normal(size=CLASSES)).astype(np.float32)}
    images = rng.normal(size=(IMAGES, CHANNELS, SIDE, SIDE)).astype(np.float32)
    labels = rng.integers(0, CLASSES, IMAGES)
    return params, (images, labels)


# float32 sums over thousands of terms (attention, the MLP's 256-wide hidden layer) against
# the float64 reference: 1e-3 relative, on the scale of each gradient's largest entry.
TOLERANCE = Tolerance(rtol=1e-3, scale=1e-3)


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    for label, function, problem in ((TRANSFORMER, TRANSFORMER_FUNCTION, transformer_problem),
                                     (CNN, CNN_FUNCTION, cnn_problem)):
        params, data = problem()
        expected = function.reference(params, data)
        tolerances = {key: TOLERANCE for key in expected}
        run_case(result, label, "ms", function.rows(params, data, config, result.notes),
                 expected, config, tolerances, max_number=500)
    return result
