"""Matrix products with NumPy's `matmul` semantics: 1-D, 2-D and batched (broadcast) operands."""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.reduce import sum_to_shape
from compiler.ops.registry import OpDef, ShapeError, bind, register
from compiler.ops.shapes import broadcast_shapes, fmt_shape, same_dim


def _matmul_infer(a: TensorType, b: TensorType) -> TensorType:
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("input operand does not have enough dimensions "
                         "(use * to multiply by a scalar)")
    a_shape = (1,) + a.shape if a.ndim == 1 else a.shape
    b_shape = b.shape + (1,) if b.ndim == 1 else b.shape
    same_dim(a_shape[-1], b_shape[-2],
             f"shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} are not aligned: "
             f"{a_shape[-1]} (dim {a.ndim - 1}) != {b_shape[-2]} (dim {max(b.ndim - 2, 0)})")
    batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
    shape = batch + (a_shape[-2], b_shape[-1])
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    if a.dtype == np.bool_ or b.dtype == np.bool_:
        raise ShapeError("matmul of boolean arrays is not supported")
    return TensorType(np.result_type(a.dtype, b.dtype), shape)


def _swap_last(x):
    perm = tuple(range(x.type.ndim - 2)) + (x.type.ndim - 1, x.type.ndim - 2)
    return bind("transpose", x, perm=perm)


def _as_matrix(x, row: bool):
    """A 1-D operand as the 2-D matrix matmul treats it as: a row (1, k) or a column (k, 1)."""
    (k,) = x.type.shape
    return bind("reshape", x, shape=(1, k) if row else (k, 1))


def _matmul_vjp(g, out, a, b):
    a2 = _as_matrix(a, row=True) if a.type.ndim == 1 else a
    b2 = _as_matrix(b, row=False) if b.type.ndim == 1 else b
    g2 = g
    if a.type.ndim == 1:  # the row axis that matmul removed
        g2 = bind("reshape", g2, shape=g2.type.shape[:-1] + (1,) + g2.type.shape[-1:])
    if b.type.ndim == 1:  # the column axis that matmul removed
        g2 = bind("reshape", g2, shape=g2.type.shape + (1,))
    ga = sum_to_shape(bind("matmul", g2, _swap_last(b2)), a2.type.shape)
    gb = sum_to_shape(bind("matmul", _swap_last(a2), g2), b2.type.shape)
    if a.type.ndim == 1:
        ga = bind("reshape", ga, shape=a.type.shape)
    if b.type.ndim == 1:
        gb = bind("reshape", gb, shape=b.type.shape)
    return ga, gb


register(OpDef("matmul", "matmul", _matmul_infer, np.matmul, _matmul_vjp,
               doc="a @ b; generated code calls BLAS for large products"))
