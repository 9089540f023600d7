"""Matrix products through BLAS's gemm, as one numba intrinsic that kernels call.

Generated kernels write `blas.matmul(X, W, out)` (and `blas.matmul(X.T, g, out)`
for a transposed operand) where they would write `out = np.dot(X, W)`. The
product is BLAS's `sgemm`/`dgemm`, as with numba's `np.dot`, but numba compiles
its generic `np.dot` implementation once per combination of layouts, about
0.3-0.5 s each on a cold start, while this intrinsic is a handful of LLVM
instructions (W1's cold first call went from 2.8-3.5 s to 1.3-1.5 s). The result goes
into an array the kernel allocated, so it can also be any other C-contiguous
array of the right shape.

Operands are 1-D or 2-D, of one float dtype, with one axis of unit stride: C-contiguous,
the transpose of a C-contiguous matrix (numba's layout "F"), or a strided slice such as
`q[i, :, h, :]` of a batch (layout "A": the strides are read at run time, and a slice
with no unit stride raises ValueError; compiler/ops/gemm.py never passes one). In
row-major terms `out = a @ b` is, in BLAS's column-major terms, `out^T = b^T @ a^T`: a
matrix stored by columns is the other BLAS transpose flag, and the distance between its
rows (or columns) is the leading dimension. A 1-D `a` is one row, a 1-D `b` one column.
The result's rows must be contiguous (a slice of a C-contiguous array).

Which BLAS: the OpenBLAS that NumPy's wheels bundle (`numpy.libs/libscipy_openblas64_*`,
ILP64: 64-bit integer arguments), so gradfuse needs nothing but NumPy and numba;
else SciPy's (`scipy.linalg.cython_blas`, 32-bit integers), which is what numba's own
`np.dot` needs. Kernels name it by a symbol of their own (`gradfuse_sgemm`) that this
module binds when it is imported, which every generated module does before numba
compiles it or loads it from the disk cache (an address baked into machine code
would not survive into another process); `ABI` names the choice, and is part of
every kernel's cache key, since the integer width is compiled into the calls.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import intrinsic

SYMBOLS = {types.float32: "gradfuse_sgemm", types.float64: "gradfuse_dgemm"}


def _numpy_openblas(names: tuple[str, ...]) -> tuple[dict[str, int], int] | None:
    """Addresses of BLAS/LAPACK functions `names` in the OpenBLAS bundled with NumPy, and its
    integer width."""
    here = os.path.dirname(np.__file__)
    patterns = [os.path.join(here, os.pardir, "numpy.libs", "libscipy_openblas*"),
                os.path.join(here, ".dylibs", "libscipy_openblas*")]
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            library = ctypes.CDLL(path)  # already loaded by NumPy: this only finds it
        except OSError:
            continue
        for suffix, bits in (("_64_", 64), ("_", 32)):
            try:
                found = {name: ctypes.cast(getattr(library, f"scipy_{name}{suffix}"),
                                           ctypes.c_void_p).value for name in names}
            except AttributeError:
                continue
            return found, bits
    return None


def _scipy(module: str, names: tuple[str, ...]) -> tuple[dict[str, int], int] | None:
    try:
        from numba.extending import get_cython_function_address

        return {name: get_cython_function_address(module, name) for name in names}, 32
    except (ImportError, ValueError):
        return None


def bind_symbols(symbols: dict[str, str], scipy_module: str, what: str) -> tuple[str, int]:
    """Bind each of `symbols` (our symbol -> the BLAS/LAPACK function it names, `sgemm`) to
    that function in NumPy's OpenBLAS, else in SciPy's `scipy_module`; returns the ABI
    ("numpy-openblas-int64") and the integer width."""
    names = tuple(sorted(set(symbols.values())))
    for source, find in (("numpy-openblas", lambda: _numpy_openblas(names)),
                         ("scipy", lambda: _scipy(scipy_module, names))):
        found = find()
        if found is not None:
            addresses, bits = found
            for symbol, name in symbols.items():
                llvm.add_symbol(symbol, addresses[name])
            return f"{source}-int{bits}", bits
    raise ImportError(
        f"gradfuse found no {what}: neither the OpenBLAS that NumPy's wheels "
        f"bundle (NumPy {np.__version__} at {os.path.dirname(np.__file__)}, Python "
        f"{sys.version.split()[0]}) nor SciPy's; install NumPy from PyPI, or SciPy")


def _bind_symbols() -> tuple[str, int]:
    return bind_symbols({symbol: "sgemm" if dtype == types.float32 else "dgemm"
                         for dtype, symbol in SYMBOLS.items()},
                        "scipy.linalg.cython_blas", "BLAS for matrix products")


ABI, _INT_BITS = _bind_symbols()


def _operand_ok(x, dtype) -> bool:
    return isinstance(x, types.Array) and x.dtype == dtype and x.ndim in (1, 2)


@intrinsic
def matmul(typingctx, a, b, out):
    """out[...] = a @ b, for 1-D/2-D float arrays (see the module docstring)."""
    dtype = getattr(out, "dtype", None)
    if dtype not in SYMBOLS or not all(_operand_ok(x, dtype) for x in (a, b, out)) \
            or not (a.ndim == 2 or b.ndim == 2) or out.ndim != a.ndim + b.ndim - 2:
        return None

    def codegen(context, builder, sig, args):
        _gemm(context, builder, sig.args, args)
        return context.get_dummy_value()

    return signature(types.none, a, b, out), codegen


@intrinsic
def matmul_add(typingctx, a, b, out):
    """out[...] += a @ b (gemm's beta = 1), for 2-D float arrays: a gradient that a loop
    accumulates takes each step's product with no temporary and no pass of its own."""
    dtype = getattr(out, "dtype", None)
    if dtype not in SYMBOLS or not all(_operand_ok(x, dtype) for x in (a, b, out)) \
            or not a.ndim == b.ndim == out.ndim == 2:
        return None

    def codegen(context, builder, sig, args):
        _gemm(context, builder, sig.args, args, accumulate=True)
        return context.get_dummy_value()

    return signature(types.none, a, b, out), codegen


class _Matrix:
    """A 1-D or 2-D operand as BLAS sees a row-major matrix: rows, columns, and the strides
    (in elements) that say whether it is stored by rows ("N") or by columns ("T").

    A 1-D `a` is one row, a 1-D `b` (and the result of `matrix @ vector`) one column. The
    stride of an axis of length 1 is never used, so it is taken as whatever makes the
    matrix valid: C-contiguous, transposed and strided views (`x[i, :, j, :]`, numba's
    layout "A") all need no copy as long as one axis has unit stride.
    """

    def __init__(self, context, builder, array_type, value, as_row: bool) -> None:
        self.builder = builder
        array = context.make_array(array_type)(context, builder, value)
        self.data = array.data
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
            context.get_data_type(array_type.dtype)))
        shape = cgutils.unpack_tuple(builder, array.shape)
        strides = [builder.sdiv(s, itemsize) for s in cgutils.unpack_tuple(builder, array.strides)]
        one = context.get_constant(types.intp, 1)
        if array_type.ndim == 2:
            self.rows, self.cols = shape
            row_stride, col_stride = strides
        elif as_row:
            self.rows, self.cols = one, shape[0]
            row_stride, col_stride = shape[0], strides[0]
        else:
            self.rows, self.cols = shape[0], one
            row_stride, col_stride = strides[0], one
        is_one = lambda x: builder.icmp_signed("==", x, one)  # noqa: E731
        # A length-1 axis's stride is free: 1 for the columns, the row length for the rows.
        col_stride = builder.select(is_one(self.cols), one, col_stride)
        row_stride = builder.select(is_one(self.rows), builder.select(
            is_one(col_stride), _at_least_one(builder, self.cols, one), one), row_stride)
        self.by_rows = is_one(col_stride)  # gemm's "N": row-major with leading dim row_stride
        by_columns = is_one(row_stride)  # gemm's "T": column-major with leading dim col_stride
        self.valid = builder.or_(self.by_rows, by_columns)
        self.leading = builder.select(self.by_rows, row_stride, col_stride)


def _at_least_one(builder, x, one):
    return builder.select(builder.icmp_signed("<", x, one), one, x)


def _gemm(context, builder, arg_types, args, accumulate: bool = False) -> None:
    a_type, b_type, out_type = arg_types
    a = _Matrix(context, builder, a_type, args[0], as_row=True)
    b = _Matrix(context, builder, b_type, args[1], as_row=False)
    out = _Matrix(context, builder, out_type, args[2], as_row=a_type.ndim == 1)
    m, k, n = a.rows, a.cols, b.cols

    def check(valid):  # empty arrays have zero strides: only filled operands are checked
        with builder.if_then(builder.not_(valid), likely=False):
            context.call_conv.return_user_exc(builder, ValueError, (
                "blas.matmul: an operand has no unit stride (a bug in gradfuse)",))

    value = context.get_value_type(out_type.dtype)
    integer = ir.IntType(_INT_BITS)
    char = ir.IntType(8)
    pointer = lambda t: t.as_pointer()  # noqa: E731
    gemm_type = ir.FunctionType(ir.VoidType(), [
        pointer(char), pointer(char), pointer(integer), pointer(integer), pointer(integer),
        pointer(value), pointer(value), pointer(integer), pointer(value), pointer(integer),
        pointer(value), pointer(value), pointer(integer)])
    gemm = cgutils.get_or_insert_function(builder.module, gemm_type, SYMBOLS[out_type.dtype])
    one = context.get_constant(types.intp, 1)
    zero = context.get_constant(types.intp, 0)

    def local(ir_type, constant):
        slot = cgutils.alloca_once(builder, ir_type)
        builder.store(constant, slot)
        return slot

    def dim(x):  # BLAS's integers, by pointer; leading dimensions of at least 1
        return local(integer, x if _INT_BITS == 64 else builder.trunc(x, integer))

    def transpose_flag(matrix):  # row-major "by rows" is column-major untransposed
        return local(char, builder.select(matrix.by_rows, ir.Constant(char, ord("N")),
                                          ir.Constant(char, ord("T"))))

    size = builder.mul(m, n)
    with builder.if_then(builder.icmp_signed(">", size, zero)):
        check(out.by_rows)
        with builder.if_else(builder.icmp_signed("==", k, zero)) as (empty, full):
            with empty:  # a sum of no products: gemm might leave `out` as it was
                if not accumulate:  # (which adding nothing to it should)
                    row_bytes = builder.mul(n, context.get_constant(
                        types.intp, context.get_abi_sizeof(value)))
                    with cgutils.for_range(builder, m) as loop:
                        row = builder.gep(out.data, [builder.mul(loop.index, out.leading)])
                        cgutils.memset(builder, row, row_bytes, 0)
            with full:
                check(builder.and_(a.valid, b.valid))
                alpha = local(value, ir.Constant(value, 1.0))
                beta = local(value, ir.Constant(value, 1.0 if accumulate else 0.0))
                # Row-major out = a @ b is column-major out^T = b^T @ a^T.
                builder.call(gemm, [transpose_flag(b), transpose_flag(a), dim(n), dim(m), dim(k),
                                    alpha, b.data, dim(_at_least_one(builder, b.leading, one)),
                                    a.data, dim(_at_least_one(builder, a.leading, one)), beta,
                                    out.data, dim(_at_least_one(builder, out.leading, one))])
