"""Matrix functions on LAPACK, for generated kernels: solve, inv, det, slogdet, cholesky, svd.

Kernels call `lapack.solve(a, b, out)` and its siblings (compiler/ops/solvers.py) on one
matrix at a time, looping over batch axes themselves. Each is a small numba function over
four LAPACK routines, `getrf` (LU with partial pivoting), `getrs` (solves with its
factors), `potrf` (Cholesky) and `gesdd` (singular values, and vectors), found where
compiler/codegen/blas.py finds gemm: in the
OpenBLAS that NumPy's wheels bundle (which exports LAPACK too, `scipy_dgetrf_64_`), else
in SciPy's `cython_lapack`. Kernels name them by symbols of their own (`gradfuse_dgetrf`),
bound when this module is imported; `ABI` is part of every kernel's cache key.

LAPACK is column-major: a C-contiguous (n, n) array is, to it, the transpose of the
matrix. So getrf is given a C-ordered copy of A^T, which it reads as A (the matrix NumPy
factors: the same pivots, so the same answers where NaN, inf or rounding would make LU of
A^T differ); `getrs` with "N" then solves A x = b for a column-major b, and against the
identity gives A^-1 column-major, its transpose row by row; and potrf("U") of
A^T reads the lower triangle of A (all NumPy reads) and leaves L = U^T there; gesdd of
A^T = U' S V'^T gives A = V' S U'^T, so LAPACK's V'^T, read row by row, is A's U and its U'
is A's V^T. Failures raise NumPy's `LinAlgError` with NumPy's messages.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import intrinsic

from compiler.codegen.blas import bind_symbols

_ROUTINES = ("getrf", "getrs", "potrf", "gesdd")
_PREFIX = {types.float32: "s", types.float64: "d"}
SYMBOLS = {(dtype, routine): f"gradfuse_{prefix}{routine}"
           for dtype, prefix in _PREFIX.items() for routine in _ROUTINES}
try:
    ABI, _INT_BITS = bind_symbols({symbol: f"{_PREFIX[dtype]}{routine}"
                                   for (dtype, routine), symbol in SYMBOLS.items()},
                                  "scipy.linalg.cython_lapack", "LAPACK for linear algebra")
    MISSING: str | None = None
except ImportError as error:  # kernels that need LAPACK say so; everything else works
    ABI, _INT_BITS, MISSING = "none", 64, str(error)
PIVOTS = np.int64 if _INT_BITS == 64 else np.int32  # getrf's pivot indices


# --- the routines, as numba intrinsics ------------------------------------------------------
def _square_float(x) -> bool:
    return isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" \
        and x.dtype in _PREFIX


def _pivots_ok(x) -> bool:
    return isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" \
        and x.dtype == numba.from_dtype(np.dtype(PIVOTS))


class _Call:
    """Builds one LAPACK call: arguments by pointer (Fortran), integers of the ABI's width,
    and the hidden lengths of character arguments at the end (Fortran compilers add them;
    OpenBLAS's own C routines ignore them)."""

    def __init__(self, context, builder) -> None:
        self.context, self.builder = context, builder
        self.integer = ir.IntType(_INT_BITS)
        self.args: list = []
        self.lengths: list = []

    def _slot(self, ir_type, value):
        slot = cgutils.alloca_once(self.builder, ir_type)
        self.builder.store(value, slot)
        return slot

    def char(self, letter: str) -> None:
        char = ir.IntType(8)
        self.args.append(self._slot(char, ir.Constant(char, ord(letter))))
        self.lengths.append(ir.Constant(ir.IntType(64), 1))

    def int(self, value) -> None:  # an intp value
        if _INT_BITS != 64:
            value = self.builder.trunc(value, self.integer)
        self.args.append(self._slot(self.integer, value))

    def data(self, array_type, value):
        array = self.context.make_array(array_type)(self.context, self.builder, value)
        self.args.append(array.data)
        return array

    def info(self):
        slot = cgutils.alloca_once(self.builder, self.integer)
        self.args.append(slot)
        return slot

    def call(self, symbol: str, info_slot):
        types_ = [a.type for a in self.args] + [x.type for x in self.lengths]
        function = cgutils.get_or_insert_function(
            self.builder.module, ir.FunctionType(ir.VoidType(), types_), symbol)
        self.builder.call(function, self.args + self.lengths)
        return self.builder.sext(self.builder.load(info_slot), ir.IntType(64)) \
            if _INT_BITS != 64 else self.builder.load(info_slot)


def _shape(context, builder, array_type, value):
    array = context.make_array(array_type)(context, builder, value)
    return cgutils.unpack_tuple(builder, array.shape)


@intrinsic
def _getrf(typingctx, a, pivots):
    """LU of the column-major matrix in `a` (so of A^T), in place; returns LAPACK's info."""
    if not (_square_float(a) and _pivots_ok(pivots)):
        return None

    def codegen(context, builder, sig, args):
        n = _shape(context, builder, a, args[0])[0]
        call = _Call(context, builder)
        call.int(n)
        call.int(n)
        call.data(a, args[0])
        call.int(builder.select(builder.icmp_signed("<", n, ir.Constant(n.type, 1)),
                                ir.Constant(n.type, 1), n))
        call.data(pivots, args[1])
        return call.call(SYMBOLS[a.dtype, "getrf"], call.info())

    return signature(types.int64, a, pivots), codegen


@intrinsic
def _getrs(typingctx, transposed, lu, pivots, rhs):
    """Solves with getrf's factors in `lu`: op(M) X = B for the k x n C array `rhs`, which
    column-major is B (n x k); op is the transpose when `transposed`. Returns info."""
    if not (_square_float(lu) and _pivots_ok(pivots) and _square_float(rhs)
            and rhs.dtype == lu.dtype and isinstance(transposed, types.BooleanLiteral)):
        return None
    letter = "T" if transposed.literal_value else "N"

    def codegen(context, builder, sig, args):
        n = _shape(context, builder, lu, args[1])[0]
        k = _shape(context, builder, rhs, args[3])[0]
        one = ir.Constant(n.type, 1)
        lead = builder.select(builder.icmp_signed("<", n, one), one, n)
        call = _Call(context, builder)
        call.char(letter)
        call.int(n)
        call.int(k)
        call.data(lu, args[1])
        call.int(lead)
        call.data(pivots, args[2])
        call.data(rhs, args[3])
        call.int(lead)
        return call.call(SYMBOLS[lu.dtype, "getrs"], call.info())

    return signature(types.int64, transposed, lu, pivots, rhs), codegen


@intrinsic
def _potrf(typingctx, a):
    """Cholesky of the column-major matrix in `a` from its upper triangle, in place."""
    if not _square_float(a):
        return None

    def codegen(context, builder, sig, args):
        n = _shape(context, builder, a, args[0])[0]
        one = ir.Constant(n.type, 1)
        call = _Call(context, builder)
        call.char("U")
        call.int(n)
        call.data(a, args[0])
        call.int(builder.select(builder.icmp_signed("<", n, one), one, n))
        return call.call(SYMBOLS[a.dtype, "potrf"], call.info())

    return signature(types.int64, a), codegen


def _vector(x, dtype=None) -> bool:
    return isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C" \
        and (dtype is None or x.dtype == dtype)


@intrinsic
def _gesdd(typingctx, vectors, a, s, u, vt, work, lwork, iwork):
    """Singular values of the column-major matrix in `a` (destroyed) into `s`, and with
    `vectors` (a literal bool: jobz "S", else "N") LAPACK's U and V^T into the C arrays `u`
    (k x m', its U column-major) and `vt` (n' x k, its V^T). `lwork` -1 asks for the size of
    `work` in work[0]. Returns info."""
    if not (_square_float(a) and _vector(s, a.dtype) and _square_float(u) and _square_float(vt)
            and _vector(work, a.dtype) and isinstance(lwork, types.Integer)
            and _pivots_ok(iwork) and isinstance(vectors, types.BooleanLiteral)):
        return None
    letter = "S" if vectors.literal_value else "N"

    def codegen(context, builder, sig, args):
        n, m = _shape(context, builder, a, args[1])  # LAPACK's m x n matrix is our n x m
        one = ir.Constant(m.type, 1)
        at_least_one = lambda x: builder.select(builder.icmp_signed("<", x, one), one, x)  # noqa: E731
        k = builder.select(builder.icmp_signed("<", m, n), m, n)
        call = _Call(context, builder)
        call.char(letter)
        call.int(m)
        call.int(n)
        call.data(a, args[1])
        call.int(at_least_one(m))
        call.data(s, args[2])
        call.data(u, args[3])
        call.int(at_least_one(m))
        call.data(vt, args[4])
        call.int(at_least_one(k))
        call.data(work, args[5])
        call.int(context.cast(builder, args[6], lwork, types.intp))
        call.data(iwork, args[7])
        return call.call(SYMBOLS[a.dtype, "gesdd"], call.info())

    return signature(types.int64, vectors, a, s, u, vt, work, lwork, iwork), codegen


# --- what kernels call: one matrix each ------------------------------------------------------
@numba.njit
def _factored(a):
    """(LU factors of A, pivots, info) for a square `a`: LAPACK reads the C-ordered copy of
    A^T as A, column-major. NumPy factors A too, so pivots agree with its, and so do the
    answers where rounding, NaN or inf make LU of A and of A^T differ."""
    lu = np.ascontiguousarray(a.T).copy()
    pivots = np.empty(a.shape[0], PIVOTS)
    info = _getrf(lu, pivots)
    return lu, pivots, info


@numba.njit
def solve(a, b, out):
    """out (n, k) = the x with a @ x = b; raises LinAlgError for a singular a."""
    lu, pivots, info = _factored(a)
    if info > 0:
        raise np.linalg.LinAlgError("Singular matrix")
    n, k = b.shape
    columns = np.empty((k, n), lu.dtype)  # column-major B
    for i in range(n):
        for j in range(k):
            columns[j, i] = b[i, j]
    _getrs(False, lu, pivots, columns)
    for i in range(n):
        for j in range(k):
            out[i, j] = columns[j, i]


@numba.njit
def inv(a, out):
    """out = a^-1; raises LinAlgError for a singular a."""
    lu, pivots, info = _factored(a)
    if info > 0:
        raise np.linalg.LinAlgError("Singular matrix")
    n = a.shape[0]
    inverse = np.zeros((n, n), lu.dtype)
    for i in range(n):
        inverse[i, i] = 1
    _getrs(False, lu, pivots, inverse)  # A^-1 column-major: its transpose row by row
    out[...] = inverse.T


@numba.njit
def slogdet(a, out):
    """out[0] = the sign of det(a) (0 when singular), out[1] = log|det(a)| (-inf then)."""
    lu, pivots, _ = _factored(a)  # det of [[nan, 0], [0, 1]] is NaN, as NumPy's (not 0)
    sign = 1.0
    log_det = 0.0
    for i in range(a.shape[0]):
        u = lu[i, i]
        if pivots[i] != i + 1:
            sign = -sign
        if u < 0:
            sign = -sign
        elif u == 0:
            sign = 0.0
        log_det += np.log(np.abs(np.float64(u)))
    out[0] = sign
    out[1] = log_det if sign != 0 else -np.inf


@numba.njit
def det(a):
    """det(a), as NumPy computes it: sign * exp(log|det|)."""
    parts = np.empty(2, np.float64)
    slogdet(a, parts)
    return parts[0] * np.exp(parts[1])


@numba.njit
def cholesky(a, out):
    """out = L, lower triangular, with a = L @ L.T, from a's lower triangle; raises
    LinAlgError when a is not positive definite."""
    n = a.shape[0]
    factor = np.empty((n, n), out.dtype)
    for i in range(n):
        for j in range(n):
            factor[i, j] = a[i, j] if j <= i else 0
    if _potrf(factor) > 0:
        raise np.linalg.LinAlgError("Matrix is not positive definite")
    out[...] = factor


@numba.njit
def _singular(vectors, a, s, u, vt):
    """gesdd of `a` with its workspace, for `svd` and `svdvals`."""
    work_matrix = np.ascontiguousarray(a).copy()
    iwork = np.empty(max(1, 8 * min(a.shape)), PIVOTS)
    size = np.empty(1, work_matrix.dtype)
    _gesdd(vectors, work_matrix, s, u, vt, size, -1, iwork)
    work = np.empty(max(1, int(size[0])), work_matrix.dtype)
    # info < 0 too: gesdd refuses a matrix holding NaN as an illegal argument (-4), leaving
    # s unwritten; NumPy raises this error for it
    if _gesdd(vectors, work_matrix, s, u, vt, work, work.size, iwork) != 0:
        raise np.linalg.LinAlgError("SVD did not converge")


@numba.njit
def svdvals(a, out):
    """out = the singular values of a (m, n), largest first."""
    s = np.empty(min(a.shape), a.dtype)
    unused = np.empty((1, 1), a.dtype)
    _singular(False, a, s, unused, unused)
    out[...] = s


@numba.njit
def svd(a, out):
    """out = U (m, k) and V^T (k, n) of a = U diag(s) V^T, k = min(m, n), flattened one after
    the other (LAPACK's V^T, read row by row, is U; its U is V^T)."""
    m, n = a.shape
    k = min(m, n)
    s = np.empty(k, a.dtype)
    u = np.empty((m, k), a.dtype)
    vt = np.empty((k, n), a.dtype)
    _singular(True, a, s, vt, u)
    out[:m * k] = u.ravel()
    out[m * k:] = vt.ravel()
