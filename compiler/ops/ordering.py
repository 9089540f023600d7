"""Ordering along an axis: `argsort`, the stable sorting permutation (integers, no gradient).

`np.sort` is a composite of it, `take_along_axis(x, argsort(x))`, so its gradient is the
cotangent sent back through the permutation (a scatter) with no rule of its own. The order
is NumPy's `kind="stable"`: ties keep their original order, and NaNs go last. Generated code
copies each lane into a buffer and sorts it with numba's merge sort (stable too).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.lowering import Call
from compiler.ops.registry import OpDef, ShapeError, register


def _infer(x: TensorType, *, axis: int) -> TensorType:
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of bounds for an array of dimension {x.ndim}")
    return TensorType(np.dtype(np.int64), x.shape)


def _impl(x, *, axis: int):
    return np.argsort(x, axis=axis, kind="stable").astype(np.int64)


def _emit(k, node) -> None:
    """Per position of the other axes: the lane copied into a buffer, argsorted, stored.

        lane = np.empty(n, x.dtype)
        for i0 in range(...):              # the other axes
            for i1 in range(n):
                lane[i1] = x[i0, i1]
            order = np.argsort(lane, kind="mergesort")
            for i1 in range(n):
                out[i0, i1] = order[i1]
    """
    from compiler.codegen.reading import dim_text, subscript
    from compiler.codegen.scalars import dtype_name

    x, axis = node.inputs[0], node.attrs["axis"]
    n = x.shape[axis]
    k.alloc(node)
    out = k.names[node.id]
    lane = k.namer.fresh(f"{k.name_of(node)}_lane")
    order = k.namer.fresh(f"{k.name_of(node)}_order")
    k.line(f"{lane} = np.empty({dim_text(n)}, {dtype_name(x.dtype)})", k.comment(node))
    with k.loops(x.shape[:axis] + x.shape[axis + 1:]) as outer:
        with k.loops((n,)) as (step,):
            k.line(f"{lane}[{step}] = {k.reader.read(x, outer[:axis] + (step,) + outer[axis:])}")
        k.line(f'{order} = np.argsort({lane}, kind="mergesort")')
        with k.loops((n,)) as (step,):
            k.line(f"{subscript(out, outer[:axis] + (step,) + outer[axis:])} = {order}[{step}]")


register(OpDef(
    "argsort", "index", _infer, _impl, None, lowering=Call(_emit),
    doc="the stable sorting permutation along `axis` (int64); no gradient",
))
