"""Matrix functions on LAPACK: solve, inv, det, slogdet, cholesky and singular values, batched over
leading axes, with the standard matrix-calculus VJPs.

Each op takes arrays whose last two axes are the matrices (equal batch axes: the NumPy
bindings broadcast them first) and computes in the inputs' float dtype (integers as
float64, as NumPy does). Generated code calls compiler/codegen/lapack.py once per matrix.
The VJPs, with X = solve(A, B), Ai = inv(A), L = cholesky(A) and g the cotangent:

    solve:    gB = solve(A^T, g),  gA = -gB X^T
    inv:      gA = -Ai^T g Ai^T
    det:      gA = g det(A) Ai^T        (at a singular A, inv raises LinAlgError)
    slogdet:  gA = g_logabsdet Ai^T     (the sign has no gradient)
    cholesky: gA = sym(L^-T Phi(L^T g) L^-1), Phi: the lower triangle with half its diagonal,
              sym(S) = (S + S^T) / 2: symmetric, as in PyTorch and JAX (NumPy reads only
              A's lower triangle; a symmetric perturbation changes both)
    svdvals:  gA = U diag(g) V^T, with U and V^T from `svd_factors` (one decomposition, so
              their signs agree); where singular values repeat or vanish this is one of the
              subgradients. Second derivatives of singular values are refused.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import TensorType
from compiler.ops.lowering import Call
from compiler.ops.registry import DimConflict, OpDef, ShapeError, bind, register
from compiler.ops.shapes import fmt_shape, same_dim


def _float(dtype) -> np.dtype:
    """The dtype LAPACK computes in: float32 stays, everything else is float64."""
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def _check_square(a: TensorType, name: str) -> None:
    if a.ndim < 2:
        raise ShapeError(f"{name}: {a.ndim}-dimensional array given. Array must be at least "
                         "two-dimensional")
    same_dim(a.shape[-1], a.shape[-2], f"{name}: last 2 dimensions of the array must be "
             f"square, got {fmt_shape(a.shape)}")
    if a.dtype == np.bool_:
        raise ShapeError(f"{name} of a boolean array is not supported")


def transpose_last(x):
    n = x.type.ndim
    return bind("transpose", x, perm=tuple(range(n - 2)) + (n - 1, n - 2))


def _matrices(k, node, call: str, scalar: bool) -> None:
    """One `lapack.<call>(a[i], ..., out[i])` per matrix of the batch axes; `scalar`: the
    call returns one value per matrix instead (det)."""
    from compiler.codegen import lapack
    from compiler.codegen.reading import subscript
    from compiler.codegen.scalars import Operand
    from compiler.errors import UnsupportedError

    if lapack.MISSING is not None:
        raise UnsupportedError(f"{node.op} needs LAPACK in a compiled kernel, and "
                               f"{lapack.MISSING} (backend='interpreter' runs it with NumPy)",
                               node.loc)
    if node.shape != ():
        k.alloc(node)
    function = k.helpers.lapack(call)
    with k.loops(node.inputs[0].shape[:-2]) as at:
        operands = [subscript(k.names[x.id], at) for x in node.inputs]
        target = subscript(k.name_of(node), at)
        if scalar:
            value = Operand(f"{function}({', '.join(operands)})", np.dtype(np.float64))
            k.line(f"{target} = {value.as_dtype(node.dtype)}", k.comment(node))
        else:
            k.line(f"{function}({', '.join(operands + [target])})", k.comment(node))


def _lapack_call(call: str, scalar: bool = False) -> Call:
    return Call(lambda k, node: _matrices(k, node, call, scalar), array_inputs=True,
                fills_result=True)


# --- solve -------------------------------------------------------------------------------------
def _solve_infer(a: TensorType, b: TensorType) -> TensorType:
    _check_square(a, "solve")
    if b.ndim != a.ndim:
        raise ShapeError(f"solve: b {fmt_shape(b.shape)} must be a batch of matrices like a "
                         f"{fmt_shape(a.shape)}")
    message = f"solve: shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} do not match"
    for d, e in zip(a.shape[:-1], b.shape[:-1]):
        same_dim(d, e, message)
    return TensorType(_float(np.result_type(a.dtype, b.dtype)), b.shape)


def _solve_vjp(g, out, a, b):
    gb = bind("solve", transpose_last(a), g)
    return -(gb @ transpose_last(out)), gb


register(OpDef("solve", "linalg", _solve_infer,
               lambda a, b: np.linalg.solve(a, b).astype(_float(np.result_type(a, b))),
               _solve_vjp, lowering=_lapack_call("solve"),
               doc="x with a @ x = b, for a batch of square a and of matrices b (LU, getrs)"))


# --- inv ---------------------------------------------------------------------------------------
def _inv_infer(a: TensorType) -> TensorType:
    _check_square(a, "inv")
    return TensorType(_float(a.dtype), a.shape)


def _inv_vjp(g, out, a):
    inverse_t = transpose_last(out)
    return (-(inverse_t @ g @ inverse_t),)


register(OpDef("inv", "linalg", _inv_infer,
               lambda a: np.linalg.inv(a).astype(_float(np.asarray(a).dtype)), _inv_vjp,
               lowering=_lapack_call("inv"), doc="the inverse of each square matrix"))


# --- det and slogdet -----------------------------------------------------------------------------
def _det_infer(a: TensorType) -> TensorType:
    _check_square(a, "det")
    return TensorType(_float(a.dtype), a.shape[:-2])


def _matrix_scale(g, a):
    """g (one value per matrix) as (..., 1, 1), to scale each matrix of `a`'s shape."""
    return bind("reshape", g, shape=g.type.shape + (1, 1))


def _det_vjp(g, out, a):
    return (_matrix_scale(g * out, a) * transpose_last(bind("inv", a)),)


register(OpDef("det", "linalg", _det_infer,
               lambda a: np.asarray(np.linalg.det(a)).astype(_float(np.asarray(a).dtype)),
               _det_vjp, lowering=_lapack_call("det", scalar=True),
               doc="the determinant of each square matrix, as sign * exp(log|det|)"))


def _slogdet_infer(a: TensorType) -> TensorType:
    _check_square(a, "slogdet")
    return TensorType(_float(a.dtype), a.shape[:-2] + (2,))


def _slogdet_impl(a):
    sign, logabsdet = np.linalg.slogdet(a)
    return np.stack([sign, logabsdet], axis=-1).astype(_float(np.asarray(a).dtype))


def _slogdet_vjp(g, out, a):
    batch = g.type.shape[:-1]
    log_g = bind("slice", g, index=tuple((0, d, 1) for d in batch) + ((1, 2, 1),))
    log_g = bind("reshape", log_g, shape=batch)  # the cotangent of log|det|; the sign has none
    return (_matrix_scale(log_g, a) * transpose_last(bind("inv", a)),)


register(OpDef("slogdet", "linalg", _slogdet_infer, _slogdet_impl, _slogdet_vjp,
               lowering=_lapack_call("slogdet"),
               doc="(sign, log|det|) of each square matrix, stacked on a last axis of 2"))


# --- cholesky ----------------------------------------------------------------------------------
def _cholesky_infer(a: TensorType) -> TensorType:
    _check_square(a, "cholesky")
    return TensorType(_float(a.dtype), a.shape)


def _cholesky_vjp(g, out, a):
    n = a.type.shape[-1]
    # Phi: the lower triangle with half the diagonal
    phi = (np.tril(np.ones((n, n))) - 0.5 * np.eye(n)).astype(out.dtype)
    inverse = bind("inv", out)
    s = transpose_last(inverse) @ ((transpose_last(out) @ g) * phi) @ inverse
    return (0.5 * (s + transpose_last(s)),)


register(OpDef("cholesky", "linalg", _cholesky_infer,
               lambda a: np.linalg.cholesky(a).astype(_float(np.asarray(a).dtype)),
               _cholesky_vjp, lowering=_lapack_call("cholesky"),
               doc="the lower-triangular L with a = L @ L^T, from a's lower triangle"))


# --- singular values -----------------------------------------------------------------------------
def _svd_infer(a: TensorType, what: str) -> tuple[TensorType, int, int, int]:
    if a.ndim < 2:
        raise ShapeError(f"{what}: {a.ndim}-dimensional array given. Array must be at least "
                         "two-dimensional")
    m, n = a.shape[-2:]
    for d in (m, n):
        if not isinstance(d, int):  # the count of singular values needs it: specialize it
            raise DimConflict(d, None)
    if a.dtype == np.bool_:
        raise ShapeError(f"{what} of a boolean array is not supported")
    return a, m, n, min(m, n)


def _svdvals_infer(a: TensorType) -> TensorType:
    _, m, n, k = _svd_infer(a, "svdvals")
    return TensorType(_float(a.dtype), a.shape[:-2] + (k,))


def _svdvals_vjp(g, out, a):
    m, n = a.type.shape[-2:]
    k = min(m, n)
    factors = bind("svd_factors", a)
    batch = a.type.shape[:-2]

    def part(start, stop, shape):
        index = tuple((0, d, 1) for d in batch) + ((start, stop, 1),)
        return bind("reshape", bind("slice", factors, index=index), shape=batch + shape)

    u, vt = part(0, m * k, (m, k)), part(m * k, m * k + k * n, (k, n))
    scaled = u * bind("reshape", g, shape=batch + (1, k))  # U diag(g)
    return (scaled @ vt,)


register(OpDef("svdvals", "linalg", _svdvals_infer,
               lambda a: np.linalg.svd(a, compute_uv=False).astype(_float(np.asarray(a).dtype)),
               _svdvals_vjp, lowering=_lapack_call("svdvals"),
               doc="the singular values of each matrix, largest first (gesdd)"))


def _svd_factors_infer(a: TensorType) -> TensorType:
    _, m, n, k = _svd_infer(a, "svd")
    return TensorType(_float(a.dtype), a.shape[:-2] + (m * k + k * n,))


def _svd_factors_impl(a):
    a = np.asarray(a)
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    batch = a.shape[:-2]
    # explicit sizes: reshape cannot infer a -1 next to an empty batch axis
    flat = np.concatenate([u.reshape(batch + (u.shape[-2] * u.shape[-1],)),
                           vt.reshape(batch + (vt.shape[-2] * vt.shape[-1],))], axis=-1)
    return flat.astype(_float(a.dtype))


def _svd_factors_vjp(g, out, a):
    from compiler.errors import UnsupportedError

    raise UnsupportedError("second derivatives of singular values (np.linalg.norm with ord 2, "
                           "-2 or 'nuc', np.linalg.svdvals) are not supported")


register(OpDef("svd_factors", "linalg", _svd_factors_infer, _svd_factors_impl,
               _svd_factors_vjp, lowering=_lapack_call("svd"),
               doc="U (m, k) and V^T (k, n) of the reduced SVD, flattened one after the other: "
                   "what the gradient of the singular values needs"))
