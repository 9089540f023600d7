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
import math
import warnings
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
            # Lists are data here (labels [0, 2]), not trees of traced numbers.
            args = tuple(_listed(a) for a in args)
            kwargs = {k: _listed(v) for k, v in kwargs.items()}
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
    _check_reduction(reduction)
    if reduction == "mean":
        return np.mean(loss)
    return np.sum(loss) if reduction == "sum" else loss


def _check_reduction(reduction: Any, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    # A string test first: PyTorch's third positional parameter is often `weight`, and an
    # array compared with "mean" is an array, whose truth value is an error of its own.
    if not isinstance(reduction, str) or reduction not in allowed:
        got = repr(reduction) if isinstance(reduction, str) else f"a {type(reduction).__name__}"
        raise ValueError(f"{got} is not a valid value for reduction; use one of {allowed} "
                         "(weights and the other options are keywords here)")


def _axis(axis: int | None, dim: int | None, default: int | None) -> int | None:
    """PyTorch's `dim=` or NumPy's `axis=`, not both."""
    if dim is not None and axis is not None:
        raise TypeError("pass the axis as axis= or as PyTorch's dim=, not both")
    return dim if dim is not None else axis if axis is not None else default


def _keepdims(keepdims: bool | None, keepdim: bool | None) -> bool:
    if keepdim is not None and keepdims is not None:
        raise TypeError("pass keepdims= or PyTorch's keepdim=, not both")
    return bool(keepdim if keepdim is not None else keepdims)


def _no_inplace(name: str, inplace: bool) -> None:
    if inplace:
        raise ValueError(f"F.{name}(x, inplace=True) is not supported: arrays here are values; "
                         f"write x = F.{name}(x)")


# -- activations ---------------------------------------------------------------------


@_takes_tensors
def relu(x: Array, inplace: bool = False) -> Array:
    """max(x, 0), written with np.where so that relu'(0) = 0 (PyTorch's choice); NaN stays NaN."""
    _no_inplace("relu", inplace)
    # np.maximum(x, 0) would split the gradient at the tie x == 0; where(x > 0, x, 0) would
    # turn a NaN into 0 (PyTorch's relu keeps it, and anomaly checks then find it).
    return np.where(x <= 0, 0, x)


@_takes_tensors
def leaky_relu(x: Array, negative_slope: float = 0.01, inplace: bool = False) -> Array:
    """x where x > 0, else negative_slope * x (the slope's side at 0, as PyTorch)."""
    _no_inplace("leaky_relu", inplace)
    return np.where(x > 0, x, negative_slope * x)


@_takes_tensors
def elu(x: Array, alpha: float = 1.0, inplace: bool = False) -> Array:
    """x where x > 0, else alpha * (exp(x) - 1) (derivative alpha at 0, as PyTorch)."""
    _no_inplace("elu", inplace)
    # expm1 of the negative part only: exp of a large x would be inf, and inf times the
    # where's zero cotangent a NaN gradient.
    return np.where(x > 0, x, alpha * np.expm1(np.where(x > 0, 0, x)))


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
def silu(x: Array, inplace: bool = False) -> Array:
    """x * sigmoid(x) (swish)."""
    _no_inplace("silu", inplace)
    return x * sigmoid(x)


@_takes_tensors
def softplus(x: Array, beta: float = 1.0, threshold: float = 20.0) -> Array:
    """log(1 + exp(beta x)) / beta, stable for large |x|; x itself where beta x > threshold,
    as PyTorch."""
    # At x = 0 the derivative is still sigmoid(0) = 0.5: maximum splits its tie
    # evenly and abs'(0) = 0 (the compiler's kink table).
    unscaled = isinstance(beta, int | float) and beta == 1  # no two ops by 1 in kernels
    z = x if unscaled else beta * x
    smooth = _log1p_exp(z)
    return np.where(z > threshold, x, smooth if unscaled else smooth / beta)


def _log1p_exp(z: Array) -> Array:
    """log(1 + exp(z)) as max(z, 0) + log1p(exp(-|z|)): never overflowing, and no log of a
    probability rounded to 0."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


@_takes_tensors
def logsigmoid(x: Array) -> Array:
    """log(sigmoid(x)) = -log(1 + exp(-x)), finite far in the negative tail."""
    return -_log1p_exp(-x)


_ERF = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf; the compiler binds this one to its own


def _erf(z: Array) -> Array:
    out = _ERF(z)
    # On arrays frompyfunc gives objects (a Python float for 0-d input); traced, a float.
    return np.asarray(out, dtype=np.result_type(z)) if isinstance(out, float) else out.astype(
        z.dtype)


@_takes_tensors
def gelu(x: Array, approximate: str = "none") -> Array:
    """x * Phi(x), Phi the standard normal CDF; approximate="tanh" is PyTorch's tanh form."""
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return 0.5 * x * (1 + np.tanh(inner))
    if approximate != "none":
        raise ValueError(f"approximate={approximate!r}: use 'none' or 'tanh'")
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _shift(x: Array, axis: int | None, keepdims: bool) -> Array:
    """max(x) along axis with infinities replaced by 0, the shift that keeps exp() finite."""
    m = np.max(x, axis=axis, keepdims=keepdims)
    # Subtracting an infinite max would give inf - inf = nan; with 0 instead the
    # result is the correct +-inf (PyTorch does the same).
    return np.where(np.abs(m) == np.inf, 0, m)


@_takes_tensors
def logsumexp(x: Array, axis: int | None = None, keepdims: bool | None = None, *,
              dim: int | None = None, keepdim: bool | None = None) -> Array:
    """log(sum(exp(x))) along axis (all axes by default), computed after subtracting the max;
    PyTorch's dim= and keepdim= are taken too."""
    axis, keepdims = _axis(axis, dim, None), _keepdims(keepdims, keepdim)
    # The max is a constant shift: its gradient terms cancel exactly, so the
    # derivative is softmax(x) whichever element wins a tie.
    total = np.sum(np.exp(x - _shift(x, axis, True)), axis=axis, keepdims=keepdims)
    return np.log(total) + _shift(x, axis, keepdims)


def _as_dtype(x: Array, dtype: Any) -> Array:
    return x if dtype is None else x.astype(dtype)


@_takes_tensors
def softmax(x: Array, axis: int | None = None, *, dim: int | None = None,
            dtype: Any = None) -> Array:
    """exp(x) / sum(exp(x)) along axis (the last by default; PyTorch's dim= too), in `dtype`
    if given (x is cast first, as PyTorch)."""
    axis, x = _axis(axis, dim, -1), _as_dtype(x, dtype)
    e = np.exp(x - _shift(x, axis, True))
    return e / np.sum(e, axis=axis, keepdims=True)


@_takes_tensors
def log_softmax(x: Array, axis: int | None = None, *, dim: int | None = None,
                dtype: Any = None) -> Array:
    """x - logsumexp(x) along axis (the last by default; PyTorch's dim= too): log-probabilities
    without forming small probabilities."""
    axis, x = _axis(axis, dim, -1), _as_dtype(x, dtype)
    # (x - m) - log(sum(exp(x - m))), not x - logsumexp(x): adding the max m back before
    # subtracting it rounds log(sum) away when |m| is large (float32 logits of 3e4 lost
    # 1e-3; [1e308, 1e308, 0] gave log-probabilities 0, 0 instead of -log 2).
    shifted = x - _shift(x, axis, True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@_takes_tensors
def one_hot(labels: Array, num_classes: int) -> Array:
    """int64 rows with a 1 at each label: shape labels.shape + (num_classes,).

    num_classes is required (PyTorch's -1, the largest label plus one, would depend on the
    values, which a compiled function does not know when it is traced)."""
    if not isinstance(num_classes, int | np.integer) or num_classes < 0:
        raise ValueError(f"one_hot needs num_classes, a count of classes (got {num_classes!r}); "
                         "it cannot be read from the labels' values inside compiled functions")
    return (np.expand_dims(labels, -1) == np.arange(num_classes)).astype(np.int64)


# -- layers --------------------------------------------------------------------------


@_takes_tensors
def linear(x: Array, W: Array, b: Array | None = None) -> Array:
    """x @ W + b, with W of shape (in_features, out_features) and b of shape (out_features,)."""
    y = x @ W
    return y if b is None else y + b


# -- losses --------------------------------------------------------------------------


def _same_shape(pred: Array, target: Array, name: str, must: bool = False) -> None:
    """PyTorch's check of a target's shape: a warning for the regression losses (a (N, 1)
    prediction against (N,) targets broadcasts to (N, N), silently the wrong loss), an error
    for the binary cross entropies. A Python number as the target is taken as meant."""
    if isinstance(target, int | float) or tuple(np.shape(pred)) == tuple(np.shape(target)):
        return
    words = (f"{name}: the target's shape {tuple(np.shape(target))} is not the input's "
             f"{tuple(np.shape(pred))}")
    if must:
        raise ValueError(words)
    warnings.warn(f"{words}; they broadcast, which will likely give the wrong loss",
                  UserWarning, stacklevel=4)


@_takes_tensors
def mse_loss(pred: Array, target: Array, reduction: str = "mean") -> Array:
    """(pred - target)**2, reduced."""
    _same_shape(pred, target, "mse_loss")
    return _reduce((pred - target) ** 2, reduction)


@_takes_tensors
def l1_loss(pred: Array, target: Array, reduction: str = "mean") -> Array:
    """|pred - target|, reduced."""
    _same_shape(pred, target, "l1_loss")
    return _reduce(np.abs(pred - target), reduction)


@_takes_tensors
def huber_loss(pred: Array, target: Array, reduction: str = "mean", delta: float = 1.0) -> Array:
    """0.5 d**2 where |d| < delta, else delta * (|d| - delta/2), with d = pred - target."""
    _check_reduction(reduction)
    _same_shape(pred, target, "huber_loss")
    d = np.abs(pred - target)
    return _reduce(np.where(d < delta, 0.5 * d**2, delta * (d - 0.5 * delta)), reduction)


@_takes_tensors
def smooth_l1_loss(pred: Array, target: Array, reduction: str = "mean",
                   beta: float = 1.0) -> Array:
    """0.5 d**2 / beta where |d| < beta, else |d| - beta/2, with d = pred - target (the Huber
    loss divided by beta; beta = 0 is the L1 loss)."""
    _check_reduction(reduction)
    _same_shape(pred, target, "smooth_l1_loss")
    d = np.abs(pred - target)
    # beta may be 0, where the quadratic side is never taken: divide by 1 there, so that
    # no 0/0 reaches the gradient through the side not taken.
    # (A number stays a Python number: np.where would make it a float64 array.)
    divisor = (beta if beta > 0 else 1) if isinstance(beta, int | float) \
        else np.where(beta > 0, beta, 1).astype(_dtype(d))
    quadratic = 0.5 * d**2 / divisor
    return _reduce(np.where(d < beta, quadratic, d - 0.5 * beta), reduction)


def _class_weights(weight: Array | None, safe_labels: Array, keep: Array,
                   log_probs: Array) -> Array:
    """Each row's class weight, 0 for ignored rows."""
    if weight is None:
        return keep.astype(_dtype(log_probs))
    # Read along the class axis of a weight broadcast to the logits, not np.take(weight,
    # labels): a constant weight (an ndarray) cannot be indexed by traced labels.
    by_class = np.zeros_like(log_probs) + weight
    return np.where(keep, np.sum(np.take_along_axis(by_class, np.expand_dims(safe_labels, -1),
                                                    axis=-1), axis=-1), 0)


def _picked_loss(log_probs: Array, labels: Array, weight: Array | None, ignore_index: int,
                 label_smoothing: Any, reduction: str) -> Array:
    """nll_loss on class indices (the last axis is the class axis), with cross_entropy's label
    smoothing, reduced as PyTorch: a weighted mean divides by the kept rows' weights."""
    if tuple(np.shape(labels)) != tuple(np.shape(log_probs)[:-1]):
        raise ValueError(
            f"class-index labels have the logits' shape without the class axis, the last one "
            f"here (PyTorch's is axis 1: move it last, np.moveaxis(logits, 1, -1)): got labels "
            f"of shape {tuple(np.shape(labels))} for logits of shape "
            f"{tuple(np.shape(log_probs))}")
    keep = labels != ignore_index
    safe = np.where(keep, labels, 0)  # an ignored row reads class 0, then counts for nothing
    row_weight = _class_weights(weight, safe, keep, log_probs)
    picked = -np.sum(np.take_along_axis(log_probs, np.expand_dims(safe, -1), axis=-1), axis=-1)
    loss = np.where(keep, picked * row_weight, 0)
    if label_smoothing is not None:
        n_classes = log_probs.shape[-1]
        spread = -np.sum(log_probs if weight is None else log_probs * weight, axis=-1)
        loss = (1 - label_smoothing) * loss \
            + label_smoothing / n_classes * np.where(keep, spread, 0)
    if reduction == "mean":
        return np.sum(loss) / np.sum(row_weight)
    return _reduce(loss, reduction)


@_takes_tensors
def nll_loss(log_probs: Array, labels: Array, reduction: str = "mean", *,
             weight: Array | None = None, ignore_index: int = -100) -> Array:
    """-log_probs[label], reduced, for log-probabilities (N, C) and integer labels (N,).

    weight (C,) scales each class's terms; a mean then divides by the weights of the rows'
    classes, as PyTorch. Rows labelled ignore_index count for nothing. The class axis is
    the last one."""
    _check_reduction(reduction)
    labels = _listed(labels)
    _check_labels(labels, "nll_loss")
    return _picked_loss(log_probs, labels, weight, ignore_index, None, reduction)


def _listed(labels: Any) -> Any:
    """Labels given as a Python list or tuple, as an array (an array or traced value as is)."""
    return np.asarray(labels) if isinstance(labels, list | tuple) else labels


def _dtype(x: Any) -> np.dtype:
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _check_labels(labels: Any, name: str) -> None:
    if _dtype(labels).kind not in "iu":
        raise TypeError(f"{name} takes class indices as integers, got {_dtype(labels)} labels")


@_takes_tensors
def cross_entropy(logits: Array, labels: Array, reduction: str = "mean", *,
                  weight: Array | None = None, ignore_index: int = -100,
                  label_smoothing: float = 0.0) -> Array:
    """-log softmax(logits)[label] for logits (N, C) and integer labels (N,), reduced.

    The class axis is the last one; labels have the logits' shape without it. Float labels
    of the logits' shape are class probabilities (PyTorch's soft targets). As PyTorch:
    weight (C,) scales each class (a mean of class indices divides by the weights of the
    rows' classes, of probabilities by the row count), rows labelled ignore_index count for
    nothing, and label_smoothing mixes the targets with the uniform distribution.
    """
    _check_reduction(reduction)
    labels = _listed(labels)
    log_probs = log_softmax(logits, axis=-1)
    smoothing = None if isinstance(label_smoothing, int | float) and label_smoothing == 0 \
        else label_smoothing
    if _dtype(labels).kind == "f":
        if ignore_index != -100:
            raise ValueError("ignore_index is for class-index labels, not probabilities")
        if np.ndim(labels) != np.ndim(logits):
            raise ValueError("float labels are class probabilities, of the logits' shape; "
                             "class indices are integers")
        if smoothing is not None:
            labels = (1 - smoothing) * labels + smoothing / logits.shape[-1]
        terms = log_probs * labels if weight is None else log_probs * labels * weight
        loss = -np.sum(terms, axis=-1)
        return _reduce(loss, reduction)
    _check_labels(labels, "cross_entropy")
    return _picked_loss(log_probs, labels, weight, ignore_index, smoothing, reduction)


@_takes_tensors
def binary_cross_entropy_with_logits(
    logits: Array, targets: Array, reduction: str = "mean", *,
    weight: Array | None = None, pos_weight: Array | None = None,
) -> Array:
    """-[p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], in the form that never overflows;
    p is pos_weight (per class, broadcast along the last axis; 1 by default), and weight
    scales each term, as PyTorch."""
    _check_reduction(reduction)
    _same_shape(logits, targets, "binary_cross_entropy_with_logits", must=True)
    # = (1 - t) x + (1 + (p - 1) t) log(1 + exp(-x)), log(1 + exp(-x)) written as
    # max(-x, 0) + log1p(exp(-|x|)): no log of a rounded-to-zero probability.
    if pos_weight is None:  # max(x, 0) - x t + ..., the form W5 was measured with
        loss = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    else:
        loss = (1 - targets) * logits + (1 + (pos_weight - 1) * targets) * _log1p_exp(-logits)
    return _reduce(loss if weight is None else loss * weight, reduction)


@_takes_tensors
def binary_cross_entropy(probs: Array, targets: Array, reduction: str = "mean", *,
                         weight: Array | None = None) -> Array:
    """-[t log p + (1 - t) log(1 - p)] with each log clamped at -100, as PyTorch (prefer
    binary_cross_entropy_with_logits on logits: it loses no precision near 0 and 1)."""
    _check_reduction(reduction)
    _same_shape(probs, targets, "binary_cross_entropy", must=True)
    # The log of a p of exactly 0 or 1 reads 1 instead, so that no infinite derivative
    # meets the clamp's zero (a NaN); its clamped value is -100 as PyTorch's.
    log_p = np.where(probs > 0, np.log(np.where(probs > 0, probs, 1)), -100.0)
    log_q = np.where(probs < 1, np.log1p(-np.where(probs < 1, probs, 0)), -100.0)
    loss = -(targets * np.maximum(log_p, -100) + (1 - targets) * np.maximum(log_q, -100))
    return _reduce(loss if weight is None else loss * weight, reduction)


@_takes_tensors
def kl_div(log_probs: Array, targets: Array, reduction: str = "mean",
           log_target: bool = False) -> Array:
    """sum of t (log t - log_probs), the divergence of the targets from the model's
    log-probabilities, as PyTorch: 0 where t = 0; "batchmean" divides the sum by the rows
    (the true KL divergence; "mean", PyTorch's default, divides by all entries)."""
    _check_reduction(reduction, (*_REDUCTIONS, "batchmean"))
    if log_target:
        loss = np.exp(targets) * (targets - log_probs)
    else:
        positive = targets > 0
        log_t = np.log(np.where(positive, targets, 1))
        loss = np.where(positive, targets * (log_t - log_probs), 0)
    if reduction == "batchmean":
        if np.ndim(loss) == 0:
            return loss
        return np.mean(np.sum(loss, axis=tuple(range(1, np.ndim(loss)))))
    return _reduce(loss, reduction)
