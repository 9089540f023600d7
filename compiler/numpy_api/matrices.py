"""Matrix layout: `tril`, `triu`, `diag`, `diagonal`, `trace` on traced arrays.

All composites: a triangle is `np.where` with a constant mask, a diagonal is a gather of one
element per row (`take_along_axis` on a slice: a view, read in place by its consumer), and
`diag` of a vector puts it on a diagonal with `np.where`. Their gradients come from those.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import TraceError
from compiler.numpy_api.dispatch import axes_of, implements, no_out, traced
from compiler.numpy_api.elementwise import astype
from compiler.numpy_api.layout import reshape, transpose
from compiler.user_code import user_loc


def static_length(a, axis: int) -> int:
    """The length of `axis` as an int (a symbolic batch axis is specialized to its size)."""
    return a.shape[axis].__index__()


def _triangle(m, keep):
    m = traced(m)
    if m.ndim == 0:
        raise TraceError("tril/triu need an array of at least one dimension", user_loc())
    rows, cols = (static_length(m, -2), static_length(m, -1)) if m.ndim > 1 else \
        (static_length(m, -1),) * 2
    return np.where(keep(rows, cols), m, 0)


@implements(np.tril)
def tril(m, k=0):
    """The lower triangle, k-th diagonal included (a 1-D input is broadcast to a square)."""
    return _triangle(m, lambda rows, cols: np.tri(rows, cols, k, dtype=bool))


@implements(np.triu)
def triu(m, k=0):
    """The upper triangle, k-th diagonal included."""
    return _triangle(m, lambda rows, cols: ~np.tri(rows, cols, k - 1, dtype=bool))


@implements(np.diagonal)
def diagonal(a, offset=0, axis1=0, axis2=1):
    """a[..., i, i + offset] over axes axis1 and axis2, as the last axis of the result."""
    a = traced(a)
    if a.ndim < 2:
        raise TraceError("diag requires an array of at least two dimensions", user_loc())
    first, second = (axes_of(a, axis)[0] for axis in (axis1, axis2))
    if first == second:
        raise TraceError("axis1 and axis2 cannot be the same", user_loc())
    others = tuple(i for i in range(a.ndim) if i not in (first, second))
    moved = transpose(a, others + (first, second))
    rows, cols = static_length(a, first), static_length(a, second)
    row0, col0 = max(0, -offset), max(0, offset)
    length = max(0, min(rows - row0, cols - col0))
    if length == 0:  # NumPy's empty diagonal (of a 0x0 matrix, or an offset past the corner)
        empty = moved[..., :0, :0]
        return reshape(empty, empty.shape[:-1])
    block = moved[..., row0:row0 + length, col0:col0 + length]
    picks = np.arange(length).reshape((1,) * (a.ndim - 2) + (length, 1))
    picked = np.take_along_axis(block, picks, axis=-1)  # (..., length, 1): a view
    return reshape(picked, picked.shape[:-1])


@implements(np.diag)
def diag(v, k=0):
    """A vector on the k-th diagonal of a square matrix, or a matrix's k-th diagonal."""
    v = traced(v)
    if v.ndim == 2:
        return diagonal(v, k)
    if v.ndim != 1:
        raise TraceError("Input must be 1- or 2-d.", user_loc())
    n = static_length(v, 0)
    size = n + abs(k)
    if n == 0:  # nothing to gather from: NumPy's |k| x |k| zeros
        return np.zeros_like(v, shape=(size, size))
    rows, cols = np.indices((size, size))
    # Row i of the result holds v[i] (k >= 0; column j holds v[j] for k < 0), on the diagonal.
    values = np.take(v, np.minimum(np.arange(size), n - 1))
    values = values[:, None] if k >= 0 else values[None, :]
    return np.where(cols - rows == k, values, 0)


@implements(np.trace)
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    no_out("trace", out)
    total = np.sum(diagonal(a, offset, axis1, axis2), axis=-1)
    return astype(total, dtype) if dtype is not None else total
