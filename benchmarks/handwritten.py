"""Hand-written numba kernels of every workload: an expert's fused loops, the goals' yardstick.

Each kernel does in one call what gradfuse's generated code does: the forward
pass, the gradients, and (for training steps) the SGD update in place, with
the loops fused by hand, float32 arithmetic and no temporaries beyond what the
gradients need. Training loops run entirely inside numba. W3 uses `prange` and
fastmath; `elementwise_libmvec` is the same loop calling glibc's vector math
through gradfuse's intrinsics (numba alone no longer reaches libmvec with
LLVM 22, see compiler/codegen/vecmath.py), the variant BENCHMARKS.md quotes. Matrix
products call BLAS's gemm through gradfuse's intrinsic (`blas.matmul`), the same OpenBLAS
that numba's `np.dot` would reach through SciPy, which a fresh install does not have.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from compiler.codegen import blas

_JIT = dict(cache=True, fastmath=True, error_model="numpy")


# --- W1: MLP 10-5-1, MSE, SGD ------------------------------------------------------------
@numba.njit(**_JIT)
def mlp_mse_sgd_step(W0, b0, W1, b1, X, y, lr):
    """One SGD step of mean((relu(X@W0 + b0)@W1 + b1 - y)**2), parameters updated in place."""
    n, n_in = X.shape
    n_hidden, n_out = W1.shape
    z = np.empty((n, n_hidden), np.float32)
    residual = np.empty((n, n_out), np.float32)
    total = np.float32(0.0)
    for i in range(n):
        for j in range(n_hidden):
            acc = b0[j]
            for k in range(n_in):
                acc += X[i, k] * W0[k, j]
            z[i, j] = acc
        for o in range(n_out):
            acc = b1[o]
            for j in range(n_hidden):
                acc += max(z[i, j], np.float32(0.0)) * W1[j, o]
            r = acc - y[i, o]
            residual[i, o] = r
            total += r * r
    scale = np.float32(2.0 / (n * n_out))
    gW0 = np.zeros((n_in, n_hidden), np.float32)
    gb0 = np.zeros(n_hidden, np.float32)
    gW1 = np.zeros((n_hidden, n_out), np.float32)
    gb1 = np.zeros(n_out, np.float32)
    for i in range(n):
        for o in range(n_out):
            d = residual[i, o] * scale
            gb1[o] += d
            for j in range(n_hidden):
                gW1[j, o] += max(z[i, j], np.float32(0.0)) * d
        for j in range(n_hidden):
            if z[i, j] > 0:
                dh = np.float32(0.0)
                for o in range(n_out):
                    dh += residual[i, o] * scale * W1[j, o]
                gb0[j] += dh
                for k in range(n_in):
                    gW0[k, j] += X[i, k] * dh
    _sgd(W0, gW0, lr)
    _sgd(b0, gb0, lr)
    _sgd(W1, gW1, lr)
    _sgd(b1, gb1, lr)
    return total / (n * n_out)


@numba.njit(**_JIT)
def _sgd(param, grad, lr):
    flat, g = param.reshape(-1), grad.reshape(-1)
    step = np.float32(lr)
    for k in range(flat.size):
        flat[k] -= step * g[k]


@numba.njit(**_JIT)
def mlp_mse_sgd_loop(W0, b0, W1, b1, X, y, lr, losses):
    """len(losses) steps of mlp_mse_sgd_step on the same batch, inside one call."""
    for k in range(losses.size):
        losses[k] = mlp_mse_sgd_step(W0, b0, W1, b1, X, y, lr)


# --- W2: mean absolute error -------------------------------------------------------------
@numba.njit(**_JIT)
def mae_value_and_grad(params, inputs, targets):
    """mean(|inputs @ params - targets|) and its gradient: one fused pass over the rows for the
    loss and the residuals' signs, then the gradient signs @ inputs as one BLAS gemv (faster
    here than accumulating ten running sums per row by hand)."""
    n, d = inputs.shape
    signs = np.empty(n, np.float32)
    total = np.float32(0.0)
    for i in range(n):
        pred = np.float32(0.0)
        for j in range(d):
            pred += inputs[i, j] * params[j]
        r = pred - targets[i]
        total += abs(r)
        signs[i] = np.sign(r)
    inv_n = np.float32(1.0 / n)
    grad = np.empty(d, np.float32)
    blas.matmul(signs, inputs, grad)  # a gemv
    for j in range(d):
        grad[j] *= inv_n
    return total * inv_n, grad


# --- W3: elementwise ---------------------------------------------------------------------
@numba.njit(parallel=True, **_JIT)
def elementwise_value_and_grad(w, b, x, y):
    """mean(log(1 + exp(-y*tanh(w*x + b))) + 0.01*(w*x)**2), d/dw and d/db: one parallel pass."""
    n = x.shape[0]
    dw = np.empty(n, np.float32)
    db = np.empty(n, np.float32)
    inv_n = np.float32(1.0 / n)
    total = 0.0
    one, two = np.float32(1.0), np.float32(2.0)
    for i in prange(n):
        wx = w[i] * x[i]
        t = one - two / (np.exp(two * (wx + b[i])) + one)  # tanh: 2x faster than np.tanh here
        e = np.exp(-y[i] * t)
        total += np.log(one + e) + np.float32(0.01) * wx * wx
        d_z = e / (one + e) * -y[i] * (one - t * t) * inv_n
        db[i] = d_z
        dw[i] = d_z * x[i] + np.float32(0.02) * inv_n * wx * x[i]
    return np.float32(total / n), dw, db


def _elementwise_libmvec():
    """The W3 kernel with exp/log from libmvec (None when gradfuse's intrinsics are missing)."""
    try:
        from compiler.codegen import vecmath as vm
    except ImportError:
        return None

    @numba.njit(parallel=True, **_JIT)
    def elementwise_libmvec(w, b, x, y):
        n = x.shape[0]
        dw = np.empty(n, np.float32)
        db = np.empty(n, np.float32)
        inv_n = np.float32(1.0 / n)
        one, two = np.float32(1.0), np.float32(2.0)
        total = 0.0
        for i in prange(n):
            wx = w[i] * x[i]
            t = one - two / (vm.exp(two * (wx + b[i])) + one)  # tanh through exp
            e = vm.exp(-y[i] * t)
            total += vm.log(one + e) + np.float32(0.01) * wx * wx
            d_z = e / (one + e) * -y[i] * (one - t * t) * inv_n
            db[i] = d_z
            dw[i] = d_z * x[i] + np.float32(0.02) * inv_n * wx * x[i]
        return np.float32(total / n), dw, db

    return elementwise_libmvec


elementwise_libmvec = _elementwise_libmvec()


# --- W4: MLP 784-512-512-10, softmax cross-entropy, SGD ----------------------------------
@numba.njit(**_JIT)
def _dot(a, b):
    """a @ b for 2-D float32 operands (C-contiguous or transposed), one gemm."""
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    blas.matmul(a, b, out)
    return out


@numba.njit(**_JIT)
def _bias_relu(z, b):
    """z + b, then relu, in place."""
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = v if v > 0 else np.float32(0.0)


@numba.njit(**_JIT)
def _relu_grad(d, h):
    """d * relu'(pre-activation), reading the sign off the activation h, in place."""
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            if h[i, j] <= 0:
                d[i, j] = np.float32(0.0)


@numba.njit(**_JIT)
def _column_sums(d):
    out = np.zeros(d.shape[1], np.float32)
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            out[j] += d[i, j]
    return out


@numba.njit(**_JIT)
def _softmax_cross_entropy(logits, b, labels):
    """Adds the bias, then returns the mean loss and overwrites logits with d loss / d logits."""
    n, c = logits.shape
    total = 0.0
    inv_n = np.float32(1.0 / n)
    for i in range(n):
        m = np.float32(-np.inf)
        for j in range(c):
            logits[i, j] += b[j]
            m = max(m, logits[i, j])
        label = labels[i]
        total += m - logits[i, label]  # -log softmax = log(sum exp(z - m)) + m - z[label]
        s = np.float32(0.0)
        for j in range(c):
            e = np.exp(logits[i, j] - m)
            logits[i, j] = e
            s += e
        total += np.log(s)
        for j in range(c):
            logits[i, j] = logits[i, j] / s * inv_n
        logits[i, label] -= inv_n
    return np.float32(total / n)


@numba.njit(**_JIT)
def mlp3_cross_entropy_sgd_step(W0, b0, W1, b1, W2, b2, X, labels, lr):
    """One SGD step of the W4 MLP: three GEMMs forward, five backward, fused loops between."""
    h0 = _dot(X, W0)
    _bias_relu(h0, b0)
    h1 = _dot(h0, W1)
    _bias_relu(h1, b1)
    d2 = _dot(h1, W2)
    loss = _softmax_cross_entropy(d2, b2, labels)
    gW2 = _dot(h1.T, d2)
    d1 = _dot(d2, W2.T)
    _relu_grad(d1, h1)
    gW1 = _dot(h0.T, d1)
    d0 = _dot(d1, W1.T)
    _relu_grad(d0, h0)
    gW0 = _dot(X.T, d0)
    _sgd(W2, gW2, lr)
    _sgd(b2, _column_sums(d2), lr)
    _sgd(W1, gW1, lr)
    _sgd(b1, _column_sums(d1), lr)
    _sgd(W0, gW0, lr)
    _sgd(b0, _column_sums(d0), lr)
    return loss


# --- W5: logistic regression, the whole training loop ------------------------------------
@numba.njit(**_JIT)
def logistic_sgd_loop(w, b, X, y, lr, batch_size, losses):
    """len(losses) SGD steps of binary cross-entropy on X @ w + b, step k on minibatch
    k mod (rows / batch_size) (contiguous rows), parameters updated in place."""
    n_batches = X.shape[0] // batch_size
    n_features = X.shape[1]
    grad = np.empty(n_features, np.float32)
    step = np.float32(lr)
    inv_b = np.float32(1.0 / batch_size)
    for k in range(losses.size):
        start = (k % n_batches) * batch_size
        grad[:] = 0
        grad_b = np.float32(0.0)
        total = np.float32(0.0)
        for i in range(start, start + batch_size):
            logit = b[0]
            for j in range(n_features):
                logit += X[i, j] * w[j]
            e = np.exp(-abs(logit))  # one exp for the loss and the sigmoid, never overflowing
            total += max(logit, np.float32(0.0)) - logit * y[i] + np.log1p(e)
            sigmoid = np.float32(1.0) / (np.float32(1.0) + e)
            if logit < 0:
                sigmoid = e * sigmoid
            d = (sigmoid - y[i]) * inv_b
            grad_b += d
            for j in range(n_features):
                grad[j] += d * X[i, j]
        for j in range(n_features):
            w[j] -= step * grad[j]
        b[0] -= step * grad_b
        losses[k] = total * inv_b
