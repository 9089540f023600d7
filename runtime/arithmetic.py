"""Tensor arithmetic outside compiled functions: what PyTorch users write around their calls.

    loss = loss_fn(params, X, y) + 0.01 * penalty(params)   # two compiled calls, combined
    total = sum([l1, l2]) / 2
    if loss < best: ...                                        # a comparison, for logging

Each op runs at once with NumPy on the Tensors' arrays. When grad mode is on and
an operand requires grad, it is recorded (`record`) with its vector-Jacobian
product, written here in NumPy, so `backward()` flows through it into the
compiled calls whose results it combines. Python numbers, NumPy scalars and
arrays are constants.

Result dtypes follow PyTorch's promotion: within the highest category among the
operands (bool < integer < float), the dtype of the dimensioned Tensors wins over
that of 0-d Tensors, which wins over Python numbers; so `x32 * 0.5` and
`x32 + loss64` (a 0-d float64 loss) stay float32. A Python float counts as
float64, gradfuse's default float (PyTorch's default is float32): that is the
dtype of `int_tensor * 0.5` and of `int_tensor / 2`. Gradients come back in each
input's dtype, summed over the axes it was broadcast along, as PyTorch's do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import autograd  # its `record`, looked up at call time: autograd imports Tensor
from .grad_mode import _mode
from .tensor import Tensor

DEFAULT_FLOAT = np.dtype(np.float64)  # what a Python float is
_WRAPPED = {bool: np.dtype(bool), int: np.dtype(np.int64), float: DEFAULT_FLOAT}


def _category(dtype: np.dtype) -> int:
    return 0 if dtype.kind == "b" else 2 if dtype.kind == "f" else 1


def result_dtype(*operands: Any) -> np.dtype:
    """PyTorch's promotion (see the module doc) over Tensors, arrays and numbers."""
    groups: tuple[list[np.dtype], list[np.dtype], list[np.dtype]] = ([], [], [])
    for x in operands:
        data = x.data if isinstance(x, Tensor) else x
        if isinstance(data, np.ndarray):
            groups[0 if data.ndim else 1].append(data.dtype)
        else:
            groups[2].append(_number_dtype(x))
    highest = max(_category(d) for group in groups for d in group)
    for group in groups:
        members = [d for d in group if _category(d) == highest]
        if members:
            return np.result_type(*members)
    raise AssertionError("no operands")


def _number_dtype(x: Any) -> np.dtype:
    if isinstance(x, np.generic):
        dtype = x.dtype
        return DEFAULT_FLOAT if dtype.kind == "f" else np.dtype(np.int64) if dtype.kind in "iu" \
            else np.dtype(bool)
    for kind in (bool, int, float):  # bool first: a bool is an int too
        if isinstance(x, kind):
            return _WRAPPED[kind]
    raise _Unsupported(f"unsupported operand type for Tensor arithmetic: {type(x).__name__}")


class _Unsupported(TypeError):
    """An operand Tensor arithmetic does not take (`binary` leaves it to the other one)."""


def _array(x: Any, dtype: np.dtype) -> np.ndarray:
    """`x` (a Tensor, array or number) as an array of `dtype`; callers ignore overflow
    (1e300 into float32 is inf, silently as in PyTorch)."""
    data = x.data if isinstance(x, Tensor) else x
    return np.asarray(data).astype(dtype, copy=False)


def _tensor_or_none(x: Any) -> Tensor | None:
    return x if isinstance(x, Tensor) else None


def _kept(operand: np.ndarray, given: Any) -> np.ndarray:
    """`operand` as backward may read it: a copy where it is the caller's own array. A
    Tensor's array has a version counter that backward checks; a plain array has none, so
    refilling it before backward() (a batch buffer, a mask) would change the gradient."""
    if isinstance(given, np.ndarray) and np.may_share_memory(operand, given):
        return operand.copy()
    return operand


def _sum_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo broadcasting: sum `grad` over the axes along which an input of `shape` was
    broadcast to the result's shape."""
    if grad.shape == shape:
        return grad
    leading = grad.ndim - len(shape)
    axes = tuple(range(leading)) + tuple(
        leading + i for i, n in enumerate(shape) if n == 1 and grad.shape[leading + i] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)


# --- binary ops ---------------------------------------------------------------------------
# The gradient with respect to one operand, from (cotangent, result, a, b): each computed
# only for an operand that requires grad (`loss / 4` needs no gradient for the 4).
Vjp = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _pow_base_vjp(g, out, a, b):
    return g * np.where(b == 0, 0, b * a ** np.where(b == 0, 1, b - 1))  # 0 where b is 0


def _pow_exponent_vjp(g, out, a, b):
    return g * np.where((a == 0) & (b >= 0), 0, out * np.log(a))  # 0 at a = 0, as PyTorch


# name -> (NumPy's function, the gradient for a, the gradient for b)
BINARY: dict[str, tuple[Callable, Vjp, Vjp]] = {
    "add": (np.add, lambda g, out, a, b: g, lambda g, out, a, b: g),
    "sub": (np.subtract, lambda g, out, a, b: g, lambda g, out, a, b: -g),
    "mul": (np.multiply, lambda g, out, a, b: g * b, lambda g, out, a, b: g * a),
    "div": (np.true_divide, lambda g, out, a, b: g / b, lambda g, out, a, b: -g * a / (b * b)),
    "pow": (np.power, _pow_base_vjp, _pow_exponent_vjp),
}
# The ops whose gradient reads their result: backward reads a copy of it, since the result's
# Tensor is the user's to update in place (under no_grad), and that bumps no version this
# node checks (it checks its inputs'); PyTorch raises there, and we compute as at forward.
READS_RESULT = frozenset({"pow", "sqrt", "exp", "tanh", "sigmoid"})
COMPARISONS = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
               "eq": np.equal, "ne": np.not_equal}


def binary(name: str, x: Any, y: Any) -> Tensor:
    """`x <name> y` with at least one Tensor operand, recorded for backward; NotImplemented
    for an operand that is neither a Tensor, an array nor a number, so that Python asks the
    other operand (a traced value, inside a compiled function, refuses a Tensor clearly)."""
    forward, vjp_a, vjp_b = BINARY[name]
    try:
        dtype = result_dtype(x, y)
    except _Unsupported:
        return NotImplemented
    if name == "div" and dtype.kind != "f":  # true division of integers gives floats
        dtype = DEFAULT_FLOAT
    with np.errstate(all="ignore"):  # inf and nan are values, as in PyTorch
        a, b = _array(x, dtype), _array(y, dtype)
        out = np.asarray(forward(a, b))
    tx, ty = _tensor_or_none(x), _tensor_or_none(y)
    if not _needs_record(tx, ty):
        return Tensor(out)
    a, b = _kept(a, x), _kept(b, y)
    result = out.copy() if name in READS_RESULT else out
    operands = ((tx, vjp_a, np.shape(a)), (ty, vjp_b, np.shape(b)))

    def backward(cotangents):
        g = cotangents[0]
        with np.errstate(all="ignore"):
            return [None if t is None or not t.requires_grad
                    else _sum_to(np.asarray(vjp(g, result, a, b)), shape)
                    for t, vjp, shape in operands]

    return autograd.record([out], [tx, ty], backward, name)[0]


def compare(name: str, x: Any, y: Any) -> Tensor:
    """`x <op> y` elementwise, a bool Tensor that needs no gradient (as in PyTorch); as
    `binary`, NotImplemented for an operand of another kind."""
    try:
        dtype = result_dtype(x, y)
    except _Unsupported:
        return NotImplemented
    with np.errstate(over="ignore"):
        a, b = _array(x, dtype), _array(y, dtype)
    return Tensor(np.asarray(COMPARISONS[name](a, b)))


def _needs_record(*tensors: Tensor | None) -> bool:
    return _mode.enabled and any(t is not None and t.requires_grad for t in tensors)


# --- unary ops and reductions ---------------------------------------------------------------
def neg(x: Tensor) -> Tensor:
    out = np.negative(x.data)
    if not _needs_record(x):
        return Tensor(out)
    return autograd.record([out], [x], lambda cts: [-cts[0]], "neg")[0]


def absolute(x: Tensor) -> Tensor:
    a = x.data
    out = np.abs(a)
    if not _needs_record(x):
        return Tensor(out)
    return autograd.record([out], [x], lambda cts: [cts[0] * np.sign(a)], "abs")[0]


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-a)) to full relative precision in both tails, as PyTorch computes it."""
    e = np.exp(-np.abs(a))  # <= 1: never overflows
    return np.where(a >= 0, 1, e) / (1 + e)


# name -> (NumPy's function, the gradient from (cotangent, result, input))
UNARY: dict[str, tuple[Callable, Callable]] = {
    "sqrt": (np.sqrt, lambda g, out, a: g / (2 * out)),
    "exp": (np.exp, lambda g, out, a: g * out),
    "log": (np.log, lambda g, out, a: g / a),
    "tanh": (np.tanh, lambda g, out, a: g * (1 - out * out)),
    "sigmoid": (_sigmoid, lambda g, out, a: g * out * (1 - out)),
}


def unary(name: str, x: Tensor) -> Tensor:
    """`x.<name>()` (sqrt, exp, log, tanh, sigmoid), recorded for backward; an integer or
    bool Tensor gives floats (DEFAULT_FLOAT), as PyTorch gives its default float."""
    forward, vjp = UNARY[name]
    a = x.data if x.data.dtype.kind == "f" else x.data.astype(DEFAULT_FLOAT)
    with np.errstate(all="ignore"):  # inf and nan are values, as in PyTorch
        out = np.asarray(forward(a)).astype(a.dtype, copy=False)
    if not _needs_record(x):
        return Tensor(out)
    result = out.copy() if name in READS_RESULT else out

    def backward(cotangents):
        with np.errstate(all="ignore"):
            return [np.asarray(vjp(cotangents[0], result, a)).astype(x.data.dtype, copy=False)]

    return autograd.record([out], [x], backward, name)[0]


def _index_key(key: Any) -> Any:
    """A Tensor key (or Tensors in a tuple key) read as its array."""
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    return key.data if isinstance(key, Tensor) else key


def _kept_key(key: Any) -> Any:
    """`key` with each array or list in it copied (a list as the array NumPy reads it as):
    backward scatters at the places the key names when it runs, and the caller may refill
    an index array before that; nothing counts writes into it."""
    if isinstance(key, tuple):
        return tuple(map(_kept_key, key))
    return np.array(key) if isinstance(key, np.ndarray | list) else key


def index(x: Tensor, key: Any) -> Tensor:
    """`x[key]` as NumPy indexes (slices, integers, None, Ellipsis, integer and boolean
    arrays), a new Tensor (a copy: in-place updates of it leave `x` alone), recorded for
    backward: the cotangent is added back at the places read, repeated ones summed."""
    key = _index_key(key)
    a = x.data
    out = np.array(a[key])
    if not _needs_record(x):
        return Tensor(out)
    key = _kept_key(key)

    def backward(cotangents):
        grad = np.zeros_like(a)
        np.add.at(grad, key, cotangents[0])
        return [grad]

    return autograd.record([out], [x], backward, "index")[0]


def _axes(dim: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    axes = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-max(ndim, 1)}, {max(ndim, 1) - 1}], but got {d})")
        axes.append(d % max(ndim, 1))
    return tuple(a for a in axes if a < ndim)


def reduce(name: str, x: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """`x.sum(dim, keepdim)` or `x.mean(dim, keepdim)`, recorded for backward."""
    a = x.data
    axes = _axes(dim, a.ndim)
    if name == "mean" and a.dtype.kind != "f":
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {a.dtype}")
    dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.int64)  # sums of ints are int64
    out = np.asarray(np.sum(a, axis=axes, keepdims=keepdim, dtype=dtype))
    count = int(np.prod([a.shape[i] for i in axes]))
    if name == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.asarray(out / dtype.type(count)).astype(dtype)
    if not _needs_record(x):
        return Tensor(out)
    shape = a.shape

    def backward(cotangents):
        g = cotangents[0]
        if not keepdim:
            g = np.expand_dims(g, axes)
        if name == "mean":
            g = g / dtype.type(count)
        return [np.broadcast_to(g, shape).copy()]

    return autograd.record([out], [x], backward, name)[0]
