"""Shape arithmetic shared by the op rules: broadcasting, axes, reductions, with symbolic dims."""

from __future__ import annotations

import operator

import numpy as np

from compiler.ir import Dim, Shape, Sym
from compiler.ops.registry import DimConflict, ShapeError


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    if a == b:
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, Sym):
        raise DimConflict(a, b)
    if isinstance(b, Sym):
        raise DimConflict(b, a)
    raise ShapeError("incompatible")


def same_dim(a: Dim, b: Dim, message: str) -> Dim:
    """Dims that must be equal (no broadcasting), e.g. matmul's contracted axis."""
    if a == b:
        return a
    if isinstance(a, Sym):
        raise DimConflict(a, b)
    if isinstance(b, Sym):
        raise DimConflict(b, a)
    raise ShapeError(message)


def broadcast_shapes(*shapes: Shape) -> Shape:
    ndim = max((len(s) for s in shapes), default=0)
    result: list[Dim] = [1] * ndim
    for shape in shapes:
        padded = (1,) * (ndim - len(shape)) + tuple(shape)
        try:
            result = [broadcast_dims(r, d) for r, d in zip(result, padded)]
        except ShapeError:
            pretty = " and ".join(_fmt(s) for s in shapes)
            raise ShapeError(f"shapes {pretty} cannot be broadcast together") from None
    return tuple(result)


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


fmt_shape = _fmt


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """NumPy's `axis=` (None, int or tuple, negatives allowed) as sorted non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):  # np.int64 counts
            got = "an array" if hasattr(a, "shape") else repr(a)
            raise ShapeError(f"axis must be an int or a tuple of ints, got {got}")
        a = operator.index(a)
        if not -ndim <= a < max(ndim, 1):
            raise ShapeError(f"axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def reduced_shape(shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def resolve(shape: Shape, sizes: dict[str, int]) -> tuple[int, ...]:
    """A concrete shape, given the run-time size of each symbolic dim."""
    return tuple(sizes[d.name] if isinstance(d, Sym) else d for d in shape)
