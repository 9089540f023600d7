"""In-place Tensor updates, as PyTorch users write them: `p -= lr * p.grad` under no_grad.

    with no_grad():
        for p in params:
            p -= lr * p.grad          # or p.sub_(p.grad, alpha=lr), p.mul_(0.9), p.zero_()

Each writes into the Tensor's own array, keeps its dtype and shape (a result that
cannot be cast to the dtype, or does not broadcast to the shape, is an error, as in
PyTorch) and adds one to its version counter, so a graph that saved the array
before raises "modified by an inplace operation" at backward(). What PyTorch would
record in its graph, an in-place op on a Tensor that requires grad while grad mode
is on, is an error here: PyTorch's own for a leaf, and for any other Tensor one
that says to write the op out of place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arithmetic import BINARY
from .grad_mode import _mode
from .tensor import Tensor

_SYMBOLS = {"add": "+=", "sub": "-=", "mul": "*=", "div": "/=", "pow": "**="}


def update(name: str, x: Tensor, other: Any, alpha: Any = 1) -> Tensor:
    """`x <name>= alpha * other` in place (alpha only for add and sub); returns x."""
    ufunc, symbol = BINARY[name][0], _SYMBOLS[name]  # the ufunc of `x <name> other`
    _check_recordable(x, other, symbol)
    operand = other.data if isinstance(other, Tensor) else other
    if alpha != 1:
        operand = np.multiply(operand, alpha)
    _write(x, symbol, lambda data: ufunc(data, operand, out=data, casting="same_kind"))
    return x


def fill(x: Tensor, value: Any, what: str) -> Tensor:
    """`x[...] = value`, broadcast to x's shape and cast to its dtype (zero_, copy_, fill_)."""
    _check_recordable(x, value, what)
    source = value.data if isinstance(value, Tensor) else value
    _write(x, what, lambda data: np.copyto(data, source, casting="unsafe"))
    return x


def _check_recordable(x: Tensor, other: Any, what: str) -> None:
    if not _mode.enabled:
        return
    if x.requires_grad and x.is_leaf:
        raise RuntimeError(
            "a leaf Variable that requires grad is being used in an in-place operation "
            f"({what}); update parameters under `with no_grad():`")
    if x.requires_grad or (isinstance(other, Tensor) and other.requires_grad):
        raise RuntimeError(
            f"in-place {what} on a Tensor that requires grad is not recorded for backward in "
            "gradfuse: write it out of place (`x = x + y`), or run it under `with no_grad():`")


def _write(x: Tensor, what: str, write) -> None:
    data = x.data
    try:
        with np.errstate(all="ignore"):  # inf and nan are values, as in PyTorch
            write(data)
    except TypeError as err:  # NumPy's casting error: a float result into an int Tensor
        raise RuntimeError(f"in-place {what}: the result cannot be stored in a Tensor of "
                           f"dtype {data.dtype} ({err})") from None
    except ValueError as err:  # does not broadcast to x's shape, or x is read-only
        raise RuntimeError(f"in-place {what} on a Tensor of shape {data.shape}: {err}") from None
    x._version += 1
