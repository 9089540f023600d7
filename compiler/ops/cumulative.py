"""Running sums and products along an axis (`cumsum`, `cumprod`): each element the sum (product)
of those before it and itself.

The reference accumulates floats in float64 and rounds each result once, as the reductions
do; generated code runs one accumulator along the axis per position of the other axes. The
VJP of cumsum is the running sum of the cotangent taken from the other end: element i of x is
in results i, i+1, ..., n-1, so its cotangent is g[i] + g[i+1] + ... + g[n-1]. cumprod's is
written without dividing by x, so that zeros get their true gradient (see `_cumprod_vjp`).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.lowering import Call
from compiler.ops.registry import OpDef, ShapeError, bind, register


def _infer(x: TensorType, *, axis: int) -> TensorType:
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of bounds for an array of dimension {x.ndim}")
    dtype = x.dtype if x.is_float else np.cumsum(np.ones(1, x.dtype)).dtype
    return TensorType(dtype, x.shape)


def _accumulating(np_running):
    def impl(x, *, axis: int):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            return np_running(x, axis=axis, dtype=np.float64).astype(x.dtype)
        return np_running(x, axis=axis)

    return impl


def _reversed(g, axis: int):
    """g with `axis` reversed: a slice with step -1 (a view in generated code)."""
    index = tuple((d - 1, -1, -1) if a == axis else (0, d, 1)
                  for a, d in enumerate(g.type.shape))
    return bind("slice", g, index=index)


def _vjp(g, out, x, *, axis: int):
    return (_sum_from_end(g, axis),)


def _sum_from_end(g, axis: int):
    """g[i] + g[i+1] + ... + g[n-1] along `axis`."""
    if isinstance(g.type.shape[axis], int):
        return _reversed(bind("cumsum", _reversed(g, axis), axis=axis), axis)
    # A symbolic axis (a batch) cannot be reversed by a slice: the sum of g from the end is
    # the total less the running sum before each element.
    total = bind("sum", g, axes=(axis,), keepdims=True)
    return total - bind("cumsum", g, axis=axis) + g


def _cumprod_vjp(g, out, x, *, axis: int):
    # out[i] = x[0] * ... * x[i], so d out[i] / d x[k] (k <= i) is the product of the others.
    # Before the first zero z that is out[i] / x[k] (later results are 0, as are their
    # derivatives: they hold x[z]); at z it is the running product with x[z] taken as 1; after
    # z every such product holds x[z], so it is 0. Dividing out / x at every k instead would
    # give 0/0 at the zeros. Those zeros are written as x[z]'s value (`first`, 0 with a
    # derivative of 1 to x[z]), not as constants, so that a second derivative sees them: after
    # z the partial is x[z] times the running product without it, over x[k]; at the second
    # zero, x[z] times the running product without both.
    is_zero = x == 0
    zeros_so_far = bind("cumsum", is_zero, axis=axis)
    before = zeros_so_far == 0
    first_zero = is_zero & (zeros_so_far == 1)
    second_zero = is_zero & (zeros_so_far == 2)
    first = bind("cumsum", np.where(first_zero, x, 0), axis=axis)
    head = _sum_from_end(g * out, axis) / np.where(before, x, 1)
    skipped = bind("cumprod", np.where(first_zero, 1, x), axis=axis)
    at_zero = _sum_from_end(g * skipped, axis)
    after = first * at_zero / np.where(is_zero, 1, x)
    skipped_both = bind("cumprod", np.where(first_zero | second_zero, 1, x), axis=axis)
    at_second = first * _sum_from_end(g * skipped_both, axis)
    return (np.where(before, head, np.where(
        first_zero, at_zero, np.where(zeros_so_far == 1, after,
                                      np.where(second_zero, at_second, 0)))),)


def _running(update: str, identity: int):
    def emit(k, node) -> None:
        """One accumulator per position of the other axes, run along `axis`:

            for i0 in range(...):              # the other axes
                acc = 0.0
                for i1 in range(n):            # the running axis
                    acc += x[i0, i1]
                    out[i0, i1] = acc
        """
        from compiler.codegen.reading import subscript
        from compiler.codegen.scalars import Operand, literal

        x, axis = node.inputs[0], node.attrs["axis"]
        acc_dtype = np.dtype(np.float64) if x.type.is_float else node.dtype
        k.alloc(node)
        acc = k.namer.fresh(f"{k.name_of(node)}_acc")
        others = x.shape[:axis] + x.shape[axis + 1:]
        with k.loops(others) as outer:
            k.line(f"{acc} = {literal(identity, acc_dtype)}")
            with k.loops((x.shape[axis],)) as (step,):
                at = outer[:axis] + (step,) + outer[axis:]
                value = k.reader.operand(x, at).as_dtype(acc_dtype)
                k.line(f"{acc} {update} {value}", k.comment(node))
                k.line(f"{subscript(k.names[node.id], at)} = "
                       f"{Operand(acc, acc_dtype).as_dtype(node.dtype)}")

    return emit


register(OpDef(
    "cumsum", "cumulative", _infer, _accumulating(np.cumsum), _vjp,
    lowering=Call(_running("+=", 0)),
    doc="running sums along `axis`; its VJP is the running sum from the other end",
))
register(OpDef(
    "cumprod", "cumulative", _infer, _accumulating(np.cumprod), _cumprod_vjp,
    lowering=Call(_running("*=", 1)),
    doc="running products along `axis`; its VJP needs no division, so zeros are exact",
))
