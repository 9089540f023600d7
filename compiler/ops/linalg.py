"""Matrix products: `matmul` (NumPy's semantics: 1-D, 2-D and batched, broadcast operands) and
`contract` (batched tensor products, which einsum and matmul's gradients reduce to)."""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import TensorType
from compiler.ops import gemm
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
    ga = _operand_grad(g2, _swap_last(b2), a2, batch=g2.type.shape[:-2])
    gb = _operand_grad(_swap_last(a2), g2, b2, batch=g2.type.shape[:-2])
    if a.type.ndim == 1:
        ga = bind("reshape", ga, shape=a.type.shape)
    if b.type.ndim == 1:
        gb = bind("reshape", gb, shape=b.type.shape)
    return ga, gb


def _operand_grad(x, y, operand, batch):
    """x @ y summed to `operand`'s shape over the batch axes that `operand` was broadcast
    along (`batch` is the product's)."""
    own = (1,) * (len(batch) - (operand.type.ndim - 2)) + operand.type.shape[:-2]
    if not any(d == 1 and e != 1 for d, e in zip(own, batch)):
        return sum_to_shape(bind("matmul", x, y), operand.type.shape)
    # summed_product reads both factors with all of the product's batch axes; the other
    # operand may have fewer ((2, 1, 3, 4) @ (5, 4, 2): b has one batch axis, the product two)
    x, y = (v if v.type.shape[:-2] == batch else
            bind("broadcast_to", v, shape=tuple(batch) + v.type.shape[-2:]) for v in (x, y))
    return summed_product(x, y, 1, batch, own, operand.type.shape)


# --- generated code -----------------------------------------------------------------------
# Matrix products call BLAS (compiler/codegen/blas.py, through compiler/ops/gemm.py) when
# any of their matrices' dimensions is symbolic or they are larger than
# gemm.LOOP_MAX_FLOPS multiply-adds per matrix; smaller ones (and every product that sums
# at most gemm.LOOP_MAX_INNER terms per element) are an explicit loop inside the consumer's
# nest, with no array and no call. Measured on 2-D float32 products (N,K)@(K,M), numba loops
# vs np.dot through OpenBLAS: at N=20 the loops win (K=M=16: 2.0 vs 3.0 us), but at N=256
# BLAS already wins for K=10, M=5 (4.3 vs 7.1 us) and at N=4096 by 3x, and loops fall off a
# cliff past K=M=32 (K=M=64: 840 vs 27 us). A batch size is unknown when the kernel is
# generated, so symbolic dims always mean BLAS.


def matmul_gemm(node) -> gemm.Gemm:
    """matmul's axes as a product: the batch axes are looped over, except that the batch
    axes of `a` times a matrix `b` are rows of one product: (B, T, C) @ (C, D) is one gemm
    of (B*T, C) @ (C, D)."""
    a, b = node.inputs
    m = a.shape[-2:-1] if a.type.ndim > 1 else ()
    n = b.shape[-1:] if b.type.ndim > 1 else ()
    k = a.shape[-1:]
    n_batch = len(node.shape) - len(m) - len(n)
    batch = node.shape[:n_batch]
    a_batch, b_batch = max(a.type.ndim - 2, 0), max(b.type.ndim - 2, 0)
    b_roles = gemm.roles(b_batch, "k", 1, "n", len(n), range(n_batch - b_batch, n_batch))
    if a_batch and not b_batch:
        return gemm.Gemm((), batch + m, k, n, gemm.roles(0, "m", a_batch + 1, "k", 1), b_roles)
    a_roles = gemm.roles(a_batch, "m", len(m), "k", 1, range(n_batch - a_batch, n_batch))
    return gemm.Gemm(batch, m, k, n, a_roles, b_roles)


def uses_blas(node) -> bool:
    """BLAS for float products (of any batch) that are symbolic or large; loops otherwise."""
    a, b = node.inputs
    if not (a.dtype == b.dtype == node.dtype and node.type.is_float):
        return False
    return matmul_gemm(node).worth_blas()


def _matrices(node, product: gemm.Gemm, is_array):
    a, b = node.inputs
    return (gemm.matrix(a, product.a, ("m", "k"), is_array),
            gemm.matrix(b, product.b, ("k", "n"), is_array))


def _operand_ok(product_of):
    """BLAS reads an operand in place when it is an array, or a view that relabels an
    array's axes into a layout gemm takes (compiler/ops/gemm.py)."""
    def ok(node, operand, is_array) -> bool:
        matrices = _matrices(node, product_of(node), is_array)
        return all(m is not None for x, m in zip(node.inputs, matrices) if x is operand)

    return ok


def _emitter(product_of):
    def emit(k, node) -> None:
        product = product_of(node)
        a, b = _matrices(node, product, lambda x: x.id not in k.plan.views)
        gemm.emit(k, node, product, a, b)

    return emit


def _write_contraction(nests, node, index, acc: str) -> None:
    """acc = the product's element at `index`: a loop over the contracted axis."""
    from compiler.codegen.reading import broadcast_index
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
    _write_summed_product(k, node, acc, (a, a_index), (b, b_index),
                          [] if length == 1 else [(i_k, length)])


def _write_summed_product(k, node, acc: str, a_at: tuple, b_at: tuple, loops: list) -> None:
    """acc = the sum over `loops` ((index, length) of each summed axis longer than 1) of the
    products of two operands' elements, `a_at` and `b_at` each (operand, index): multiplied
    and summed in `summed_in`'s dtype, narrowed to the node's after."""
    from compiler.codegen.reading import dim_text
    from compiler.codegen.scalars import literal

    wide = summed_in(node.dtype)
    product = " * ".join(k.reader.operand(x, at).as_dtype(wide) for x, at in (a_at, b_at))
    if not loops:
        k.line(f"{acc} = {narrowed(product, wide, node.dtype)}", k.comment(node))
        return
    k.line(f"{acc} = {literal(0, wide)}")
    for depth, (i, d) in enumerate(loops):
        k.line(f"{'    ' * depth}for {i} in range({dim_text(d)}):")
    k.line(f"{'    ' * len(loops)}{acc} += {product}", k.comment(node))
    if wide != node.dtype:
        k.line(f"{acc} = {narrowed(acc, wide, node.dtype)}")


def summed_in(dtype: np.dtype) -> np.dtype:
    """The dtype a product's loop multiplies and sums in: int64 for a narrower integer, whose
    products numba computes in int64 anyway (an accumulator of the narrow type changed type
    in the loop: numba refused a 0-d result, and a fused use read the sum unwrapped, int8
    [100, 100, 100] @ itself giving 30000 where NumPy wraps to 48); cast back after."""
    return np.dtype(np.int64) if dtype.kind in "iu" and dtype.itemsize < 8 else np.dtype(dtype)


def narrowed(text: str, wide: np.dtype, dtype: np.dtype) -> str:
    """`text` (of dtype `wide`) in `dtype`: a truncating cast, which wraps as NumPy's sum in a
    narrow integer does (sums modulo 2**64 agree modulo 2**bits)."""
    from compiler.codegen.scalars import dtype_name

    return text if wide == dtype else f"{dtype_name(dtype)}({text})"


def _blas_call(product_of) -> Call:
    return Call(_emitter(product_of), operand_ok=_operand_ok(product_of), calls_blas=True,
                fills_result=True)


register(OpDef("matmul", "matmul", _matmul_infer, np.matmul, _matmul_vjp,
               doc="a @ b; generated code calls BLAS for large products",
               lowering=Choice(uses_blas, _blas_call(matmul_gemm), Member(_write_contraction))))


# --- matmul_add: a product added into the accumulator it is stored in -----------------------
# Never traced: code generation makes `acc + a @ b` one (compiler/codegen/accumulate.py) when
# the sum is stored into `acc` itself, as a scan's backward accumulates a weight's gradient
# step after step; BLAS adds the product into the array (gemm's beta = 1), with no temporary
# for the product and no loop adding it.
def _matmul_add_infer(acc: TensorType, a: TensorType, b: TensorType) -> TensorType:
    product = _matmul_infer(a, b)
    if product != acc:
        raise ShapeError(f"matmul_add: the product {product} does not fit the accumulator {acc}")
    return acc


def _product_of(node):
    """The matmul that a matmul_add adds: a node of its own, for the product's layout."""
    from compiler.ir import Node

    return Node("matmul", node.inputs[1:], {}, node.type)


def _emit_matmul_add(k, node) -> None:
    from compiler.codegen.reading import subscript

    acc = node.inputs[0]
    product = _product_of(node)
    layout = matmul_gemm(product)
    a, b = _matrices(product, layout, lambda x: x.id not in k.plan.views)
    k.alloc(node)
    out = k.name_of(node)
    if node.id not in k.preallocated or out != k.arrays.get(acc.id):
        with k.loops(node.shape) as index:  # not stored in place: start from a copy
            k.line(f"{subscript(out, index)} = {k.reader.read(acc, index)}")
    a_text, b_text = gemm._operand_text(k, a, ()), gemm._operand_text(k, b, ())
    k.line(f"{k.helpers.blas_matmul_add()}({a_text}, {b_text}, {out})", k.comment(node))


def _matmul_add_operand_ok(node, operand, is_array) -> bool:
    if operand is node.inputs[0]:
        return True  # read element by element (or it is the result's own array)
    product = _product_of(node)
    matrices = _matrices(product, matmul_gemm(product), is_array)
    return all(m is not None for x, m in zip(product.inputs, matrices) if x is operand)


register(OpDef("matmul_add", "matmul", _matmul_add_infer,
               lambda acc, a, b: acc + np.matmul(a, b), None,
               doc="acc + a @ b on BLAS, for a sum stored into acc (made by code generation)",
               lowering=Call(_emit_matmul_add, operand_ok=_matmul_add_operand_ok,
                             calls_blas=True, accumulates=True)))


# --- contract: the product that einsum and matmul's gradients reduce to ------------------------
# contract(a, b, batch=nb, k=nk): a has axes (batch..., m..., k...) and b (batch..., k...,
# n...); the result (batch..., m..., n...) sums a * b over the k axes. A batch axis of length
# 1 in one operand broadcasts (einsum's 'nchw,oc->nohw' is W (1, o, c) times x (n, c, h, w)).
# Its operands are always laid out so (the NumPy bindings transpose them first, which costs
# nothing when BLAS reads the transpose in place), so its lowering needs no axis bookkeeping.
def _contract_parts(a_shape, b_shape, batch: int, k: int):
    """(batch, m, k, n) dims of contract's operands and result (batch broadcast)."""
    return (broadcast_shapes(a_shape[:batch], b_shape[:batch]),
            a_shape[batch:len(a_shape) - k], a_shape[len(a_shape) - k:], b_shape[batch + k:])


def _contract_infer(a: TensorType, b: TensorType, *, batch: int, k: int) -> TensorType:
    if a.ndim < batch + k or b.ndim < batch + k:
        raise ShapeError(f"contract over {batch} batch and {k} summed axes needs operands of "
                         f"at least {batch + k} dimensions, got {fmt_shape(a.shape)} and "
                         f"{fmt_shape(b.shape)}")
    if a.dtype == np.bool_ or b.dtype == np.bool_:
        raise ShapeError("products of boolean arrays are not supported")
    batch_dims, m, summed, n = _contract_parts(a.shape, b.shape, batch, k)
    for d, e in zip(summed, b.shape[batch:batch + k]):
        same_dim(d, e, f"shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} do not match "
                       "in their summed axes")
    return TensorType(np.result_type(a.dtype, b.dtype), batch_dims + m + n)


def _contract_impl(a, b, *, batch: int, k: int):
    a, b = np.asarray(a), np.asarray(b)
    batch_dims, m, summed, n = _contract_parts(a.shape, b.shape, batch, k)
    rows, inner, cols = math.prod(m), math.prod(summed), math.prod(n)
    product = np.matmul(a.reshape(a.shape[:batch] + (rows, inner)),
                        b.reshape(b.shape[:batch] + (inner, cols)))
    return product.reshape(batch_dims + m + n)


def product(x, y, batch: int, k: int):
    """contract(x, y), or for k == 0 (no axis summed) the broadcast product it would be."""
    if k:
        return bind("contract", x, y, batch=batch, k=k)
    nx, ny = x.type.ndim - batch, y.type.ndim - batch
    x = bind("reshape", x, shape=x.type.shape + (1,) * ny)
    y = bind("reshape", y, shape=y.type.shape[:batch] + (1,) * nx + y.type.shape[batch:])
    return x * y


def summed_product(x, y, nq: int, batch, own, shape):
    """contract(x, y) over its last `nq` axes of x, summed over the batch axes where `own`
    (the operand's batch dims) is 1 and `batch` (the product's) is not, reshaped to `shape`.

    The broadcast batch axes are folded into the contraction: the gradient of W in
    `(B, T, C) @ W` is one product over B*T rows, not B products and a sum."""
    n = len(batch)
    folded = tuple(j for j, (d, e) in enumerate(zip(own, batch)) if d == 1 and e != 1)
    kept = tuple(j for j in range(n) if j not in folded)
    x, y = (bind("broadcast_to", v, shape=batch + v.type.shape[n:])
            if v.type.shape[:n] != batch else v for v in (x, y))
    np_, nr = x.type.ndim - n - nq, y.type.ndim - n - nq
    p_axes = tuple(range(n, n + np_))
    q_axes = tuple(range(n + np_, n + np_ + nq))
    # x as (kept, P, folded, Q) and y as (kept, folded, Q, R), contracted over (folded, Q)
    x = bind("transpose", x, perm=kept + p_axes + folded + q_axes)
    y = bind("transpose", y, perm=kept + folded + tuple(range(n, n + nq + nr)))
    summed = product(x, y, len(kept), len(folded) + nq)
    return bind("reshape", summed, shape=shape)  # (kept, P, R): the shape, up to size-1 axes


def _contract_vjp(g, out, a, b, *, batch: int, k: int):
    nm, nn = a.type.ndim - batch - k, b.type.ndim - batch - k
    lead = tuple(range(batch))
    full = g.type.shape[:batch]
    # ga[batch, m, k] = sum over n of g[batch, m, n] * b[batch, k, n]
    b_t = bind("transpose", b, perm=lead + tuple(range(batch + k, batch + k + nn))
               + tuple(range(batch, batch + k)))
    # gb[batch, k, n] = sum over m of a[batch, m, k] * g[batch, m, n]
    a_t = bind("transpose", a, perm=lead + tuple(range(batch + nm, batch + nm + k))
               + tuple(range(batch, batch + nm)))
    grads = []
    for x, y, nq, operand in ((g, b_t, nn, a), (a_t, g, nm, b)):
        own = operand.type.shape[:batch]
        if any(d == 1 and e != 1 for d, e in zip(own, full)):  # a broadcast operand
            grads.append(summed_product(x, y, nq, full, own, operand.type.shape))
        else:
            grads.append(product(x, y, batch, nq))
    return tuple(grads)


def contract_gemm(node) -> gemm.Gemm:
    a, b = node.inputs
    nb, nk = node.attrs["batch"], node.attrs["k"]
    batch, m, k, n = _contract_parts(a.shape, b.shape, nb, nk)
    return gemm.Gemm(batch, m, k, n, gemm.roles(nb, "m", len(m), "k", nk),
                     gemm.roles(nb, "k", nk, "n", len(n)))


def _contract_uses_blas(node) -> bool:
    a, b = node.inputs
    return a.dtype == b.dtype == node.dtype and node.type.is_float \
        and contract_gemm(node).worth_blas()


def _write_contract_loop(nests, node, index, acc: str) -> None:
    """acc = the element at `index`: loops over the summed axes."""
    from compiler.codegen.reading import broadcast_index
    from compiler.names import contraction_index

    k = nests.k
    a, b = node.inputs
    nb, nk = node.attrs["batch"], node.attrs["k"]
    nm = a.type.ndim - nb - nk
    summed = a.shape[a.type.ndim - nk:]
    at = tuple("0" if d == 1 else contraction_index(j) for j, d in enumerate(summed))
    a_at = broadcast_index(a.shape[:nb], index[:nb]) + index[nb:nb + nm] + at
    b_at = broadcast_index(b.shape[:nb], index[:nb]) + at + index[nb + nm:]
    _write_summed_product(k, node, acc, (a, a_at), (b, b_at),
                          [(i, d) for i, d in zip(at, summed) if d != 1])


register(OpDef("contract", "matmul", _contract_infer, _contract_impl, _contract_vjp,
               doc="a (batch, m, k) times b (batch, k, n) summed over k: einsum's products",
               lowering=Choice(_contract_uses_blas, _blas_call(contract_gemm),
                               Member(_write_contract_loop))))
