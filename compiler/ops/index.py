"""Integer-array indexing: gathers (`take`, `take_along_axis`), their scatter-add adjoints, and
`last_write`, which says which of several writes to one place comes last (assignment at
integer-array indices, compiler/numpy_api/assignment.py)."""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.lowering import Scatter, View
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


# Generated code reads a gather's element straight from x at the gathered position (a view),
# and a scatter-add adds each element of g at its position in zeros of the result's shape.
# Indices that come from the caller are checked against the axis before the kernel runs.
def _gather_indices(node):
    return node.inputs[1], node.inputs[0].shape[node.attrs["axis"]]


def _scatter_indices(node):
    return node.inputs[1], node.attrs["shape"][node.attrs["axis"]]


def _taken_at(reader, indices, axis: int, n, at):
    """`at` (an element of take's result) with the axes of `indices` replaced by the position
    they hold: where that element is in the gathered array."""
    k = indices.type.ndim
    return at[:axis] + (reader.gathered(indices, at[axis:axis + k], n),) + at[axis + k:]


def _read_take(reader, view, at):
    x, indices = view.inputs
    axis = view.attrs["axis"]
    return reader.read(x, _taken_at(reader, indices, axis, x.shape[axis], at))


register(OpDef(
    "take", "index", _take_infer,
    lambda x, idx, *, axis: np.take(x, idx, axis=axis),
    lambda g, out, x, idx, *, axis: (
        bind("take_grad", g, idx, axis=axis, shape=x.type.shape), None),
    doc="x[..., idx, ...] along `axis` (a gather); indices wrap like NumPy's",
    lowering=View(_read_take, indices=_gather_indices),
))
register(OpDef(
    "take_grad", "index", _take_grad_infer, _take_grad_impl,
    lambda g, out, gx, idx, *, axis, shape: (bind("take", g, idx, axis=axis), None),
    doc="scatter-add of `g` into zeros of `shape` at `idx` along `axis`: the adjoint of take",
    lowering=Scatter(lambda reader, node, at: _taken_at(
        reader, node.inputs[1], node.attrs["axis"], node.attrs["shape"][node.attrs["axis"]],
        at), adds=True, indices=_scatter_indices),
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


def _along_index(idx, axis: int, shape, target) -> tuple:
    """Full fancy index addressing x[..., idx, ...] along `axis` for an `idx` of `shape`, in an
    x of shape `target` whose size-1 axes were broadcast (every element lands on index 0)."""
    grids = [np.zeros_like(grid) if d == 1 else grid
             for grid, d in zip(np.ogrid[tuple(slice(n) for n in shape)], target)]
    grids[axis] = np.broadcast_to(idx, shape)
    return tuple(grids)


def _take_along_grad_impl(g, idx, *, axis, shape):
    g = np.asarray(g)
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, _along_index(idx, axis, g.shape, shape), g)
    return out


def _read_take_along(reader, view, at):
    from compiler.codegen.reading import broadcast_index

    x, indices = view.inputs
    axis = view.attrs["axis"]
    position = reader.gathered(indices, broadcast_index(indices.shape, at), x.shape[axis])
    mapped = broadcast_index(x.shape, at)
    return reader.read(x, mapped[:axis] + (position,) + mapped[axis + 1:])


def _along_target(reader, node, at):
    """Where element `at` of g lands: g broadcasts over the result's size-1 axes."""
    from compiler.codegen.reading import broadcast_index

    indices, axis, shape = node.inputs[1], node.attrs["axis"], node.attrs["shape"]
    position = reader.gathered(indices, broadcast_index(indices.shape, at), shape[axis])
    return tuple(position if a == axis else ("0" if d == 1 else at[a])
                 for a, d in enumerate(shape))


register(OpDef(
    "take_along_axis", "index", _take_along_infer,
    lambda x, idx, *, axis: np.take_along_axis(x, idx, axis=axis),
    lambda g, out, x, idx, *, axis: (
        bind("take_along_axis_grad", g, idx, axis=axis, shape=x.type.shape), None),
    lowering=View(_read_take_along, indices=_gather_indices),
))
register(OpDef(
    "take_along_axis_grad", "index", _take_grad_infer, _take_along_grad_impl,
    lambda g, out, gx, idx, *, axis, shape: (bind("take_along_axis", g, idx, axis=axis), None),
    doc="scatter-add adjoint of take_along_axis",
    lowering=Scatter(_along_target, adds=True, indices=_scatter_indices),
))


# --- the last of several writes to one place -------------------------------------------------
# `y[idx] = v` at traced indices: where idx repeats, NumPy keeps the value written last. The
# assignment is composed of a gather of v at the last writer of each place, which this op
# finds: it writes the ordinals 1, 2, ... of the writes in order, serially, so the last wins.
def _last_write_infer(ordinals: TensorType, positions: TensorType, *, size: int) -> TensorType:
    _check_indices(positions)
    if ordinals.ndim != 1 or positions.shape != ordinals.shape:
        raise ShapeError("last_write needs ordinals and positions of one shape (m,), got "
                         f"{ordinals.shape} and {positions.shape}")
    return TensorType(ordinals.dtype, (size,))


def _last_write_impl(ordinals, positions, *, size):
    out = np.zeros(size, dtype=np.asarray(ordinals).dtype)
    np.maximum.at(out, np.asarray(positions), ordinals)  # ordinals count up: the largest is last
    return out


register(OpDef(
    "last_write", "index", _last_write_infer, _last_write_impl, None,
    doc="for each of `size` places, the ordinal (counting up from 1) of the last of `positions` "
        "that names it, 0 where none does; no derivative (integers)",
    lowering=Scatter(lambda reader, node, at: (
        reader.gathered(node.inputs[1], at, node.attrs["size"]),), ordered=True,
        indices=lambda node: (node.inputs[1], node.attrs["size"])),
))
