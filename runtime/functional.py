"""Traceable NumPy building blocks: activations, softmax family, `linear`, and losses.

Every function here is written only with NumPy operations that the compiler's
tracer understands (arithmetic, `@`, ufuncs such as np.exp/np.log1p/np.tanh,
np.where, reductions with axis/keepdims, np.take_along_axis), so the same code
runs eagerly on arrays and symbolically inside `@compile_grad`. Rules that keep
it traceable: no Python `if` on array values (use np.where), and no Python
arithmetic on shapes, which may hold a symbolic batch size.

Losses take `reduction="mean" | "sum" | "none"` and match PyTorch's values.

Called with runtime Tensors outside a compiled function (`F.cross_entropy(model(params,
X), y)`), a function runs as a compiled call recorded in the graph, so `backward()` goes
through it: the compiler registers how (`set_tensor_call`); the runtime never imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .grad_mode import is_grad_enabled
from .tensor import Tensor

Array = Any  # an ndarray, or the compiler's symbolic value standing in for one

# How a function of this module runs on Tensors: `factory(fn)` gives a callable taking
# fn's arguments, Tensors included, that returns a Tensor recorded in the graph. The
# compiler registers compile_grad (compiler/__init__.py).
_tensor_call: Callable[[Callable], Callable] | None = None


def set_tensor_call(factory: Callable[[Callable], Callable] | None) -> None:
    """Register (or, with None, remove) how the functions here run on runtime Tensors."""
    global _tensor_call
    _tensor_call = factory


def _takes_tensors(fn: Callable) -> Callable:
    """fn as it is on arrays and inside compiled functions; on runtime Tensors, a recorded
    compiled call (NumPy would read a Tensor's array through __array__ and drop it from the
    graph: F.relu(h).sum().backward() left h's producers without a gradient)."""

    @functools.wraps(fn)
    def on_arrays_or_tensors(*args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, Tensor) for a in (*args, *kwargs.values())):
            return fn(*args, **kwargs)
        if _tensor_call is not None:
            return _tensor_call(fn)(*args, **kwargs)
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        if is_grad_enabled() and any(t.requires_grad for t in tensors):
            raise RuntimeError(
                f"F.{fn.__name__} of a Tensor that requires grad runs as a compiled call: "
                "import compiler first (or call it inside a compiled function)")
        unwrap = lambda a: a.data if isinstance(a, Tensor) else a  # noqa: E731
        return Tensor(np.asarray(fn(*map(unwrap, args),
                                    **{k: unwrap(v) for k, v in kwargs.items()})))

    return on_arrays_or_tensors

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


@_takes_tensors
def relu(x: Array) -> Array:
    """max(x, 0), written with np.where so that relu'(0) = 0 (PyTorch's choice)."""
    # np.maximum(x, 0) would split the gradient at the tie x == 0.
    return np.where(x > 0, x, 0)


@_takes_tensors
def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)), never overflowing and to full relative precision in both tails."""
    # e = exp(-|x|) <= 1. The tanh form 0.5 * (1 + tanh(x / 2)) rounds sigmoid(-40) ~ 4e-18
    # to 0 (then log(sigmoid(x)) is -inf and its gradient NaN, where PyTorch gives -40 and 1).
    # -|x| is a where, not np.abs: at x = 0 it takes the x >= 0 side's derivative, where
    # abs'(0) = 0 (the compiler's kink table) would make sigmoid'(0) = 0 instead of 1/4.
    e = np.exp(np.where(x >= 0, -x, x))
    return np.where(x >= 0, 1, e) / (1 + e)


@_takes_tensors
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


@_takes_tensors
def logsumexp(x: Array, axis: int | None = None, keepdims: bool = False) -> Array:
    """log(sum(exp(x))) along axis, computed after subtracting the max."""
    # The max is a constant shift: its gradient terms cancel exactly, so the
    # derivative is softmax(x) whichever element wins a tie.
    total = np.sum(np.exp(x - _shift(x, axis, True)), axis=axis, keepdims=keepdims)
    return np.log(total) + _shift(x, axis, keepdims)


@_takes_tensors
def softmax(x: Array, axis: int = -1) -> Array:
    """exp(x) / sum(exp(x)) along axis."""
    e = np.exp(x - _shift(x, axis, True))
    return e / np.sum(e, axis=axis, keepdims=True)


@_takes_tensors
def log_softmax(x: Array, axis: int = -1) -> Array:
    """x - logsumexp(x) along axis: log-probabilities without forming small probabilities."""
    return x - logsumexp(x, axis=axis, keepdims=True)


# -- layers --------------------------------------------------------------------------


@_takes_tensors
def linear(x: Array, W: Array, b: Array | None = None) -> Array:
    """x @ W + b, with W of shape (in_features, out_features) and b of shape (out_features,)."""
    y = x @ W
    return y if b is None else y + b


# -- losses --------------------------------------------------------------------------


@_takes_tensors
def mse_loss(pred: Array, target: Array, reduction: str = "mean") -> Array:
    """(pred - target)**2, reduced."""
    return _reduce((pred - target) ** 2, reduction)


@_takes_tensors
def l1_loss(pred: Array, target: Array, reduction: str = "mean") -> Array:
    """|pred - target|, reduced."""
    return _reduce(np.abs(pred - target), reduction)


@_takes_tensors
def huber_loss(pred: Array, target: Array, delta: float = 1.0, reduction: str = "mean") -> Array:
    """0.5 d**2 where |d| < delta, else delta * (|d| - delta/2), with d = pred - target."""
    d = np.abs(pred - target)
    return _reduce(np.where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta)), reduction)


@_takes_tensors
def cross_entropy(logits: Array, labels: Array, reduction: str = "mean") -> Array:
    """-log softmax(logits)[label] for logits (N, C) and integer labels (N,), reduced.

    The class axis is the last one; labels have the logits' shape without it.
    """
    log_probs = log_softmax(logits, axis=-1)
    picked = np.take_along_axis(log_probs, np.expand_dims(labels, -1), axis=-1)
    # Summing the length-1 class axis drops it without indexing.
    return _reduce(-np.sum(picked, axis=-1), reduction)


@_takes_tensors
def binary_cross_entropy_with_logits(
    logits: Array, targets: Array, reduction: str = "mean"
) -> Array:
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], in the form that never overflows."""
    # = max(x, 0) - x t + log(1 + exp(-|x|)); no log of a rounded-to-zero probability.
    loss = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return _reduce(loss, reduction)
