"""Layout primitives: reshape, transpose, broadcast_to, basic slicing and its adjoint, concatenate.

`expand_dims`, `squeeze`, `stack`, `swapaxes` and `.T` are composites of these
(compiler/numpy_api/layout.py).
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import Shape, Sym, TensorType
from compiler.ops.lowering import Call, Choice, Scatter, View
from compiler.ops.reduce import sum_to_shape
from compiler.ops.registry import DimConflict, OpDef, ShapeError, bind, register
from compiler.ops.shapes import broadcast_dims, fmt_shape, same_dim


def _static_part(shape: Shape) -> tuple[int, list[Sym]]:
    syms = sorted(d for d in shape if isinstance(d, Sym))
    return math.prod(d for d in shape if isinstance(d, int)), syms


def _reshape_infer(x: TensorType, *, shape: Shape) -> TensorType:
    (n_in, syms_in), (n_out, syms_out) = _static_part(x.shape), _static_part(shape)
    if syms_in != syms_out:
        sym = (set(syms_in) ^ set(syms_out)).pop()
        raise DimConflict(sym, None)
    if n_in != n_out:
        raise ShapeError(f"cannot reshape an array of shape {fmt_shape(x.shape)} "
                         f"into shape {fmt_shape(shape)}")
    return TensorType(x.dtype, shape)


def without_ones(shape: Shape) -> Shape:
    return tuple(d for d in shape if d != 1)


def is_unit_reshape(node) -> bool:
    """A reshape that only adds or removes size-1 axes: every element stays where it is."""
    return without_ones(node.inputs[0].shape) == without_ones(node.shape)


def _read_unit_reshape(reader, view, index):
    x = view.inputs[0]
    kept = iter(i for i, d in zip(index, view.shape) if d != 1)
    return reader.read(x, tuple("0" if d == 1 else next(kept) for d in x.shape))


def _unit_reshape_axes(node) -> tuple[int | None, ...]:
    """For each axis of a size-1 reshape, the input axis it is (None: an added size-1 axis)."""
    kept = iter(a for a, d in enumerate(node.inputs[0].shape) if d != 1)
    return tuple(None if d == 1 else next(kept) for d in node.shape)


def _emit_reshape(k, node) -> None:
    """x.reshape(shape): new strides over the same C-contiguous array, no copy."""
    from compiler.codegen.reading import shape_text

    source = k.names[node.inputs[0].id]
    k.line(f"{k.name_of(node)} = {source}.reshape({shape_text(node.shape)})", k.comment(node))


register(OpDef(
    "reshape", "layout", _reshape_infer,
    lambda x, *, shape: np.reshape(x, shape),
    lambda g, out, x, *, shape: (bind("reshape", g, shape=x.type.shape),),
    lowering=Choice(is_unit_reshape,
                    View(_read_unit_reshape, unit=True, keeps_all=True,
                         materialize=Call(_emit_reshape, aliases_input=True),
                         axes=_unit_reshape_axes),
                    Call(_emit_reshape, array_inputs=True, aliases_input=True)),
))


def _transpose_infer(x: TensorType, *, perm: tuple[int, ...]) -> TensorType:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"axes {perm} don't match an array of dimension {x.ndim}")
    return TensorType(x.dtype, tuple(x.shape[p] for p in perm))


def _read_transpose(reader, view, index):
    mapped = [""] * len(index)
    for axis, source in enumerate(view.attrs["perm"]):
        mapped[source] = index[axis]
    return reader.read(view.inputs[0], tuple(mapped))


register(OpDef(
    "transpose", "layout", _transpose_infer,
    lambda x, *, perm: np.transpose(x, perm),
    lambda g, out, x, *, perm: (bind("transpose", g, perm=tuple(np.argsort(perm).tolist())),),
    lowering=View(_read_transpose, keeps_all=True, axes=lambda node: node.attrs["perm"]),
))


def _broadcast_to_infer(x: TensorType, *, shape: Shape) -> TensorType:
    lead = len(shape) - x.ndim
    if lead < 0:
        raise ShapeError(f"cannot broadcast shape {fmt_shape(x.shape)} to {fmt_shape(shape)}")
    for d, target in zip(x.shape, shape[lead:]):
        if d != 1 and broadcast_dims(d, target) != target:
            raise ShapeError(f"cannot broadcast shape {fmt_shape(x.shape)} to "
                             f"{fmt_shape(shape)}")
    return TensorType(x.dtype, shape)


def _read_broadcast(reader, view, index):
    from compiler.codegen.reading import broadcast_index

    x = view.inputs[0]
    return reader.read(x, broadcast_index(x.shape, index))


register(OpDef(
    "broadcast_to", "layout", _broadcast_to_infer,
    lambda x, *, shape: np.broadcast_to(x, shape),
    lambda g, out, x, *, shape: (sum_to_shape(g, x.type.shape),),
    lowering=View(_read_broadcast, keeps_all=True),
))


# --- basic slicing --------------------------------------------------------------
# `index` holds one normalized (start, stop, step) per axis, as from slice.indices(),
# so a negative stop means "run past the front" (only with a negative step). A
# symbolic axis can only be taken whole: (0, N, 1).
def _slice_len(start: int, stop, step: int, dim) -> object:
    if isinstance(dim, Sym):
        return dim
    return len(range(start, stop, step))


def _slice_infer(x: TensorType, *, index) -> TensorType:
    if len(index) != x.ndim:
        raise ShapeError(f"slice of rank {len(index)} for an array of dimension {x.ndim}")
    return TensorType(x.dtype, tuple(_slice_len(*ix, d) for ix, d in zip(index, x.shape)))


def as_slices(index) -> tuple[slice, ...]:
    """Normalized `index` as Python slices (resolving symbolic stops to 'to the end')."""
    return tuple(
        slice(start, None if isinstance(stop, Sym) or stop < 0 else stop, step)
        for start, stop, step in index
    )


def _pad_slice_impl(g, *, shape, index):
    out = np.zeros(shape, dtype=np.asarray(g).dtype)
    out[as_slices(index)] = g
    return out


def _sliced(index, at):
    """Where element `at` of a slice (or of what pad_slice writes) is in the whole array."""
    from compiler.codegen.reading import offset

    return tuple(offset(start, step, i) for (start, _, step), i in zip(index, at))


register(OpDef(
    "slice", "layout", _slice_infer,
    lambda x, *, index: np.asarray(x)[as_slices(index)],
    lambda g, out, x, *, index: (bind("pad_slice", g, shape=x.type.shape, index=index),),
    lowering=View(lambda reader, view, at: reader.read(view.inputs[0],
                                                       _sliced(view.attrs["index"], at))),
))
register(OpDef(
    "pad_slice", "layout",
    lambda g, *, shape, index: TensorType(g.dtype, shape),
    _pad_slice_impl,
    lambda g, out, x, *, shape, index: (bind("slice", g, index=index),),
    doc="zeros of `shape` with the input written at `index`: the adjoint of slice",
    lowering=Scatter(lambda reader, node, at: _sliced(node.attrs["index"], at)),
))


# --- concatenate ----------------------------------------------------------------
def _concatenate_infer(*xs: TensorType, axis: int) -> TensorType:
    first = xs[0]
    total = 0
    mismatch = ("all the input array dimensions except for the concatenation axis must match "
                f"exactly, got {', '.join(fmt_shape(t.shape) for t in xs)}")
    for x in xs:
        if x.ndim != first.ndim:
            raise ShapeError(mismatch)
        for i, (d, e) in enumerate(zip(x.shape, first.shape)):
            if i != axis:
                same_dim(d, e, mismatch)
        if isinstance(x.shape[axis], Sym):
            raise DimConflict(x.shape[axis], None)
        total += x.shape[axis]
    dtype = np.result_type(*(x.dtype for x in xs))
    return TensorType(dtype, first.shape[:axis] + (total,) + first.shape[axis + 1:])


def _concatenate_vjp(g, out, *xs, axis):
    grads, start = [], 0
    for x in xs:
        n = x.type.shape[axis]
        index = tuple((start, start + n, 1) if i == axis else (0, d, 1)
                      for i, d in enumerate(g.type.shape))
        grads.append(bind("slice", g, index=index))
        start += n
    return tuple(grads)


def _emit_concatenate(k, node) -> None:
    """Each part copied into its place of the result, element by element."""
    from compiler.codegen.reading import offset, subscript

    k.alloc(node)
    axis, start = node.attrs["axis"], 0
    for part in node.inputs:
        with k.loops(part.shape) as index:
            target = index[:axis] + (offset(start, 1, index[axis]),) + index[axis + 1:]
            value = k.reader.operand(part, index).as_dtype(node.dtype)
            k.line(f"{subscript(k.names[node.id], target)} = {value}", k.comment(node))
        start += part.shape[axis]


register(OpDef(
    "concatenate", "layout", _concatenate_infer,
    lambda *xs, axis: np.concatenate(xs, axis=axis),
    _concatenate_vjp,
    lowering=Call(_emit_concatenate),
))
