"""Traceable NumPy building blocks: activations, softmax family, `linear`, and losses.

Every function here is written only with NumPy operations that the compiler's
tracer understands (arithmetic, `@`, ufuncs such as np.exp/np.log1p/np.tanh,
np.where, reductions with axis/keepdims, np.take_along_axis), so the same code
runs eagerly on arrays and symbolically inside `@compile_grad`. Rules that keep
it traceable: no Python `if` on array values (use np.where), and no Python
arithmetic on shapes, which may hold a symbolic batch size.

Losses take `reduction="mean" | "sum" | "none"` and match PyTorch's values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # an ndarray, or the compiler's symbolic value standing in for one

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Array, reduction: str) -> Array:
    if reduction == "mean":
        return np.mean(loss)
    if reduction == "sum":
        return np.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction!r} is not a valid value for reduction; use one of {_REDUCTIONS}")


# -- activations ---------------------------------------------------------------------


def relu(x: Array) -> Array:
    """max(x, 0), written with np.where so that relu'(0) = 0 (PyTorch's choice)."""
    # np.maximum(x, 0) would split the gradient at the tie x == 0.
    return np.where(x > 0, x, 0)


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)), never overflowing and to full relative precision in both tails."""
    # e = exp(-|x|) <= 1. The tanh form 0.5 * (1 + tanh(x / 2)) rounds sigmoid(-40) ~ 4e-18
    # to 0 (then log(sigmoid(x)) is -inf and its gradient NaN, where PyTorch gives -40 and 1).
    # -|x| is a where, not np.abs: at x = 0 it takes the x >= 0 side's derivative, where
    # abs'(0) = 0 (the compiler's kink table) would make sigmoid'(0) = 0 instead of 1/4.
    e = np.exp(np.where(x >= 0, -x, x))
    return np.where(x >= 0, 1, e) / (1 + e)


def softplus(x: Array) -> Array:
    """log(1 + exp(x)), stable for large |x|."""
    # At x = 0 the derivative is still sigmoid(0) = 0.5: maximum splits its tie
    # evenly and abs'(0) = 0 (the compiler's kink table).
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _shift(x: Array, axis: int | None, keepdims: bool) -> Array:
    """max(x) along axis with infinities replaced by 0, the shift that keeps exp() finite."""
    m = np.max(x, axis=axis, keepdims=keepdims)
    # Subtracting an infinite max would give inf - inf = nan; with 0 instead the
    # result is the correct +-inf (PyTorch does the same).
    return np.where(np.abs(m) == np.inf, 0, m)


def logsumexp(x: Array, axis: int | None = None, keepdims: bool = False) -> Array:
    """log(sum(exp(x))) along axis, computed after subtracting the max."""
    # The max is a constant shift: its gradient terms cancel exactly, so the
    # derivative is softmax(x) whichever element wins a tie.
    total = np.sum(np.exp(x - _shift(x, axis, True)), axis=axis, keepdims=keepdims)
    return np.log(total) + _shift(x, axis, keepdims)


def softmax(x: Array, axis: int = -1) -> Array:
    """exp(x) / sum(exp(x)) along axis."""
    e = np.exp(x - _shift(x, axis, True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """x - logsumexp(x) along axis: log-probabilities without forming small probabilities."""
    return x - logsumexp(x, axis=axis, keepdims=True)


# -- layers --------------------------------------------------------------------------


def linear(x: Array, W: Array, b: Array | None = None) -> Array:
    """x @ W + b, with W of shape (in_features, out_features) and b of shape (out_features,)."""
    y = x @ W
    return y if b is None else y + b


# -- losses --------------------------------------------------------------------------


def mse_loss(pred: Array, target: Array, reduction: str = "mean") -> Array:
    """(pred - target)**2, reduced."""
    return _reduce((pred - target) ** 2, reduction)


def l1_loss(pred: Array, target: Array, reduction: str = "mean") -> Array:
    """|pred - target|, reduced."""
    return _reduce(np.abs(pred - target), reduction)


def huber_loss(pred: Array, target: Array, delta: float = 1.0, reduction: str = "mean") -> Array:
    """0.5 d**2 where |d| < delta, else delta * (|d| - delta/2), with d = pred - target."""
    d = np.abs(pred - target)
    return _reduce(np.where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta)), reduction)


def cross_entropy(logits: Array, labels: Array, reduction: str = "mean") -> Array:
    """-log softmax(logits)[label] for logits (N, C) and integer labels (N,), reduced.

    The class axis is the last one; labels have the logits' shape without it.
    """
    log_probs = log_softmax(logits, axis=-1)
    picked = np.take_along_axis(log_probs, np.expand_dims(labels, -1), axis=-1)
    # Summing the length-1 class axis drops it without indexing.
    return _reduce(-np.sum(picked, axis=-1), reduction)


def binary_cross_entropy_with_logits(
    logits: Array, targets: Array, reduction: str = "mean"
) -> Array:
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], in the form that never overflows."""
    # = max(x, 0) - x t + log(1 + exp(-|x|)); no log of a rounded-to-zero probability.
    loss = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return _reduce(loss, reduction)
