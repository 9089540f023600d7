"""Sliding windows along an axis (`sliding_window_view`), a view, and its scatter-add adjoint.

`sliding_window(x, axis, window)` has x's shape with `axis` shortened to n - window + 1 and a
new last axis of length `window`: element [..., i, ..., j] is x[..., i + j, ...]. It is a
view: generated code reads x at `i + j`, so a convolution written as
`np.sum(windows * kernel, axis=...)` is one fused loop nest that never stores the windows.
Several axes are several windows, each adding its axis at the end, as NumPy orders them.
Its adjoint adds each window's cotangent back where its elements came from.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Sym, TensorType
from compiler.ops.lowering import Scatter, View
from compiler.ops.registry import DimConflict, OpDef, ShapeError, bind, register


def _infer(x: TensorType, *, axis: int, window: int) -> TensorType:
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of bounds for an array of dimension {x.ndim}")
    n = x.shape[axis]
    if isinstance(n, Sym):
        raise DimConflict(n, None)  # the window count needs the length: specialize it
    if not 1 <= window <= n:
        raise ShapeError(f"window shape {window} cannot be larger than the input's axis "
                         f"{axis} of length {n}, nor smaller than 1")
    shape = x.shape[:axis] + (n - window + 1,) + x.shape[axis + 1:] + (window,)
    return TensorType(x.dtype, shape)


def _impl(x, *, axis: int, window: int):
    return np.lib.stride_tricks.sliding_window_view(np.asarray(x), window, axis=axis).copy()


def _grad_infer(g: TensorType, *, axis: int, window: int, shape) -> TensorType:
    return TensorType(g.dtype, tuple(shape))


def _grad_impl(g, *, axis: int, window: int, shape):
    g = np.asarray(g)
    out = np.zeros(shape, dtype=g.dtype)
    starts = g.shape[axis]
    for j in range(window):
        place = (slice(None),) * axis + (slice(j, j + starts),)
        out[place] += g[..., j]
    return out


def _source(at, axis: int) -> tuple:
    """Where element `at` of the windows (or of their cotangent) is in the input: the window's
    start plus the position in it."""
    from compiler.codegen.reading import atom

    start, step = at[axis], at[-1]
    if start.isdigit() and step.isdigit():
        position = str(int(start) + int(step))
    elif step == "0":
        position = start
    elif start == "0":
        position = step
    else:
        position = f"{atom(start)} + {atom(step)}"
    return at[:axis] + (position,) + at[axis + 1:-1]


def _read(reader, view, at):
    return reader.read(view.inputs[0], _source(at, view.attrs["axis"]))


register(OpDef(
    "sliding_window", "layout", _infer, _impl,
    lambda g, out, x, *, axis, window: (
        bind("sliding_window_grad", g, axis=axis, window=window, shape=x.type.shape),),
    doc="windows of `window` elements along `axis`, as a new last axis (a view)",
    lowering=View(_read),
))
register(OpDef(
    "sliding_window_grad", "layout", _grad_infer, _grad_impl,
    lambda g, out, gw, *, axis, window, shape: (
        bind("sliding_window", g, axis=axis, window=window),),
    doc="each window's cotangent added back where its elements came from: the adjoint",
    lowering=Scatter(lambda reader, node, at: _source(at, node.attrs["axis"]), adds=True),
))
