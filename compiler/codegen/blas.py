"""Matrix products through BLAS's gemm, as one numba intrinsic that kernels call.

Generated kernels write `blas.matmul(X, W, out)` (and `blas.matmul(X.T, g, out)`
for a transposed operand) where they would write `out = np.dot(X, W)`. The
product is the same BLAS call numba's `np.dot` makes (SciPy's `sgemm`/`dgemm`,
through `scipy.linalg.cython_blas`), but numba compiles its generic `np.dot`
implementation once per combination of layouts, about 0.3-0.5 s each on a cold
start, while this intrinsic is a handful of LLVM instructions. The result goes
into an array the kernel allocated, so it can also be any other C-contiguous
array of the right shape.

Operands are 1-D or 2-D, of one float dtype, and either C-contiguous or the
transpose of a C-contiguous matrix (numba's layout "F"): in row-major terms
`out = a @ b` is, in BLAS's column-major terms, `out^T = b^T @ a^T`, and a
transposed operand is the other BLAS transpose flag. A 1-D `a` is one row, a
1-D `b` one column.

The kernels name BLAS by a symbol of their own (`gradfuse_sgemm`) that this
module binds to SciPy's function when it is imported, which every generated
module does before numba compiles it or loads it from the disk cache; an
address baked into machine code would not survive into another process.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import get_cython_function_address, intrinsic

SYMBOLS = {types.float32: "gradfuse_sgemm", types.float64: "gradfuse_dgemm"}


def _bind_symbols() -> None:
    for dtype, symbol in SYMBOLS.items():
        routine = "sgemm" if dtype == types.float32 else "dgemm"
        llvm.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_blas", routine))


_bind_symbols()


def _operand_ok(x, dtype) -> bool:
    return isinstance(x, types.Array) and x.dtype == dtype and x.ndim in (1, 2) \
        and x.layout in ("C", "F")


@intrinsic
def matmul(typingctx, a, b, out):
    """out[...] = a @ b, for 1-D/2-D float arrays (see the module docstring)."""
    dtype = getattr(out, "dtype", None)
    if dtype not in SYMBOLS or not all(_operand_ok(x, dtype) for x in (a, b)) \
            or out.layout != "C" or not (a.ndim == 2 or b.ndim == 2):
        return None

    def codegen(context, builder, sig, args):
        _gemm(context, builder, sig.args, args)
        return context.get_dummy_value()

    return signature(types.none, a, b, out), codegen


def _gemm(context, builder, arg_types, args) -> None:
    a_type, b_type, out_type = arg_types
    a, b, out = (context.make_array(t)(context, builder, v) for t, v in zip(arg_types, args))
    a_shape = cgutils.unpack_tuple(builder, a.shape)
    b_shape = cgutils.unpack_tuple(builder, b.shape)
    one = context.get_constant(types.intp, 1)
    m, k = (a_shape if a_type.ndim == 2 else [one, a_shape[0]])
    n = b_shape[1] if b_type.ndim == 2 else one
    # Leading dimensions of the row-major operands as they lie in memory.
    a_transposed, b_transposed = a_type.layout == "F", b_type.layout == "F"
    ld_a = m if a_transposed else k
    ld_b = k if b_transposed else n

    value = context.get_value_type(out_type.dtype)
    int32 = ir.IntType(32)
    char = ir.IntType(8)
    pointer = lambda t: t.as_pointer()  # noqa: E731
    gemm_type = ir.FunctionType(ir.VoidType(), [
        pointer(char), pointer(char), pointer(int32), pointer(int32), pointer(int32),
        pointer(value), pointer(value), pointer(int32), pointer(value), pointer(int32),
        pointer(value), pointer(value), pointer(int32)])
    gemm = cgutils.get_or_insert_function(builder.module, gemm_type, SYMBOLS[out_type.dtype])

    def local(ir_type, constant):
        slot = cgutils.alloca_once(builder, ir_type)
        builder.store(constant, slot)
        return slot

    def dim(x):  # BLAS takes 32-bit ints, and leading dimensions of at least 1
        return local(int32, builder.trunc(x, int32))

    def ld(x):
        return dim(builder.select(builder.icmp_signed("<", x, one), one, x))

    transposes = [local(char, ir.Constant(char, ord("T" if t else "N")))
                  for t in (b_transposed, a_transposed)]
    size = builder.mul(m, n)
    with builder.if_then(builder.icmp_signed(">", size, context.get_constant(types.intp, 0))):
        with builder.if_else(builder.icmp_signed("==", k, context.get_constant(types.intp, 0))
                             ) as (empty, full):
            with empty:  # a sum of no products: gemm might leave `out` as it was
                cgutils.memset(builder, out.data, builder.mul(size, out.itemsize), 0)
            with full:
                alpha = local(value, ir.Constant(value, 1.0))
                beta = local(value, ir.Constant(value, 0.0))
                builder.call(gemm, [transposes[0], transposes[1], dim(n), dim(m), dim(k), alpha,
                                    b.data, ld(ld_b), a.data, ld(ld_a), beta, out.data, ld(n)])
