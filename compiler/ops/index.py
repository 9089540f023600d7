"""Integer-array indexing: gathers (`take`, `take_along_axis`) and their scatter-add adjoints."""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.registry import OpDef, ShapeError, bind, register
from compiler.ops.shapes import broadcast_dims


def _check_indices(idx: TensorType) -> None:
    if not np.issubdtype(idx.dtype, np.integer):
        raise ShapeError(f"indices must be integers, got {idx.dtype}")


def _take_infer(x: TensorType, idx: TensorType, *, axis: int) -> TensorType:
    _check_indices(idx)
    return TensorType(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def _take_grad_infer(g: TensorType, idx: TensorType, *, axis: int, shape) -> TensorType:
    return TensorType(g.dtype, shape)


def _take_grad_impl(g, idx, *, axis, shape):
    out = np.zeros(shape, dtype=np.asarray(g).dtype)
    g = np.moveaxis(np.asarray(g).reshape(
        shape[:axis] + (np.size(idx),) + tuple(shape[axis + 1:])), axis, 0)
    np.add.at(np.moveaxis(out, axis, 0), np.ravel(idx), g)
    return out


register(OpDef(
    "take", "index", _take_infer,
    lambda x, idx, *, axis: np.take(x, idx, axis=axis),
    lambda g, out, x, idx, *, axis: (
        bind("take_grad", g, idx, axis=axis, shape=x.type.shape), None),
    doc="x[..., idx, ...] along `axis` (a gather); indices wrap like NumPy's",
))
register(OpDef(
    "take_grad", "index", _take_grad_infer, _take_grad_impl,
    lambda g, out, gx, idx, *, axis, shape: (bind("take", g, idx, axis=axis), None),
    doc="scatter-add of `g` into zeros of `shape` at `idx` along `axis`: the adjoint of take",
))


def _take_along_infer(x: TensorType, idx: TensorType, *, axis: int) -> TensorType:
    _check_indices(idx)
    if idx.ndim != x.ndim:
        raise ShapeError("take_along_axis needs indices with as many dimensions as the "
                         f"array ({x.ndim}), got {idx.ndim}")
    shape = tuple(
        i if a == axis else broadcast_dims(d, i)
        for a, (d, i) in enumerate(zip(x.shape, idx.shape))
    )
    return TensorType(x.dtype, shape)


def _along_index(idx, axis: int, shape) -> tuple:
    """Full fancy index addressing x[..., idx, ...] along `axis` for an `idx` of `shape`."""
    grids = list(np.ogrid[tuple(slice(n) for n in shape)])
    grids[axis] = np.broadcast_to(idx, shape)
    return tuple(grids)


def _take_along_grad_impl(g, idx, *, axis, shape):
    g = np.asarray(g)
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, _along_index(idx, axis, g.shape), g)
    return out


register(OpDef(
    "take_along_axis", "index", _take_along_infer,
    lambda x, idx, *, axis: np.take_along_axis(x, idx, axis=axis),
    lambda g, out, x, idx, *, axis: (
        bind("take_along_axis_grad", g, idx, axis=axis, shape=x.type.shape), None),
))
register(OpDef(
    "take_along_axis_grad", "index", _take_grad_infer, _take_along_grad_impl,
    lambda g, out, gx, idx, *, axis, shape: (bind("take_along_axis", g, idx, axis=axis), None),
    doc="scatter-add adjoint of take_along_axis",
))
