"""Matrix products with NumPy's `matmul` semantics: 1-D, 2-D and batched (broadcast) operands."""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import Sym, TensorType
from compiler.ops.lowering import Call, Choice, Member
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


# --- generated code -----------------------------------------------------------------------
# Matrix products call BLAS (compiler/codegen/blas.py) when any of their dimensions
# is symbolic or they are larger than this many multiply-adds; smaller ones (and every product
# with a contraction of length 1, an outer product) are an explicit loop inside
# the consumer's nest, with no array and no call. Measured on 2-D float32
# products (N,K)@(K,M), numba loops vs np.dot through OpenBLAS: at N=20 the
# loops win (K=M=16: 2.0 vs 3.0 us), but at N=256 BLAS already wins for K=10,
# M=5 (4.3 vs 7.1 us) and at N=4096 by 3x, and loops fall off a cliff past
# K=M=32 (K=M=64: 840 vs 27 us). A batch size is unknown when the kernel is
# generated, so symbolic dims always mean BLAS.
MATMUL_LOOP_MAX_FLOPS = 8192


def uses_blas(node) -> bool:
    """BLAS for 1-D/2-D float products that are symbolic or large; explicit loops otherwise."""
    a, b = node.inputs
    if not (a.dtype == b.dtype == node.dtype and node.type.is_float):
        return False
    if a.type.ndim > 2 or b.type.ndim > 2 or (a.type.ndim == 1 and b.type.ndim == 1):
        return False
    k = a.shape[-1]
    if k == 1:
        return False
    dims = (k,) + node.shape
    if any(isinstance(d, Sym) for d in dims):
        return True
    return math.prod(dims) > MATMUL_LOOP_MAX_FLOPS


def _blas_operand_ok(node, operand, is_array) -> bool:
    """BLAS takes arrays and their 2-D transposes (F-contiguous views) as they are."""
    return operand.op == "transpose" and len(operand.shape) == 2 and is_array(operand.inputs[0])


def _blas_operand(k, x) -> str:
    if x.id in k.plan.views:  # a 2-D transpose: BLAS takes the F-ordered view
        return f"{_blas_operand(k, x.inputs[0])}.T"
    return k.names[x.id]


def _emit_blas(k, node) -> None:
    a, b = (_blas_operand(k, x) for x in node.inputs)
    k.alloc(node)
    k.line(f"{k.helpers.blas_matmul()}({a}, {b}, {k.name_of(node)})", k.comment(node))


def _write_contraction(nests, node, index, acc: str) -> None:
    """acc = the product's element at `index`: a loop over the contracted axis."""
    from compiler.codegen.reading import broadcast_index, dim_text
    from compiler.codegen.scalars import literal
    from compiler.names import contraction_index

    k = nests.k
    a, b = node.inputs
    i_k = contraction_index()
    length = a.shape[-1]
    at = "0" if length == 1 else i_k
    batch = len(node.shape) - (a.type.ndim > 1) - (b.type.ndim > 1)
    a_index = (broadcast_index(a.shape[:-2], index[:batch]) + (index[batch], at)
               if a.type.ndim > 1 else (at,))
    b_index = (broadcast_index(b.shape[:-2], index[:batch]) + (at, index[-1])
               if b.type.ndim > 1 else (at,))
    product = (f"{k.reader.operand(a, a_index).as_dtype(node.dtype)} * "
               f"{k.reader.operand(b, b_index).as_dtype(node.dtype)}")
    if length == 1:
        k.line(f"{acc} = {product}", k.comment(node))
        return
    k.line(f"{acc} = {literal(0, node.dtype)}")
    k.line(f"for {i_k} in range({dim_text(length)}):")
    k.line(f"    {acc} += {product}", k.comment(node))


register(OpDef("matmul", "matmul", _matmul_infer, np.matmul, _matmul_vjp,
               doc="a @ b; generated code calls BLAS for large products",
               lowering=Choice(uses_blas,
                               Call(_emit_blas, operand_ok=_blas_operand_ok, calls_blas=True,
                                    fills_result=True),
                               Member(_write_contraction))))
