"""Small arrays on the kernel's stack: reduction accumulators that LLVM keeps in registers,
and temporaries that need no malloc.

A reduction that keeps some axes (`sum(x, axis=0)` of an (N, 10) array, every
bias gradient) accumulates into an array of the result's shape. Allocated with
`np.zeros`, that array is heap memory that LLVM must assume any other array may
alias, so `acc[0, i1] += v` is a load, an add and a store per element, and the
loop around it does not vectorize. The same array on the stack cannot alias
anything, and once LLVM unrolls the short loop over its axes it lives in
registers, and the loop vectorizes across rows: W2's gradient loop (1000 x 10
float32 into a (1, 10) float64 accumulator) went from 5.8 to 3.9 us, column
sums of (N, 5) to (N, 32) float32 values ran 1.5-2x faster, and from about 48
columns on (loops no longer unrolled) the two were level.

Generated code writes `t8_acc = _stack_zeros((1, 10), np.float64)` where it
would write `np.zeros` (and `_stack_full` for `np.full`), importing `zeros`
and `full` from here under those names. The memory belongs to the kernel's
frame: such an array must never be returned or stored in anything that
outlives the call, so the generator copies the result out (`.astype(...)`,
`.copy()`) when the loops end.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array, store_item

# Results of at most this many elements accumulate on the stack (512 bytes of float64).
MAX_ELEMENTS = 64

# Static arrays of a kernel that nothing outside it sees (not results, not returned by a
# loop's body) live on the stack up to these sizes: a malloc and a free cost about 60 ns,
# the whole step of a small simulation (16 masses) 400 ns, and its body made six such
# arrays a step. The memory is the function's frame, reused by every step of a loop.
TEMPORARY_MAX_BYTES = 8192
TEMPORARIES_MAX_BYTES = 1 << 17  # per function, far below any thread's stack


def fits(shape) -> bool:
    """Whether an accumulator of `shape` may live on the stack: static and small."""
    return all(isinstance(d, int) for d in shape) and math.prod(shape) <= MAX_ELEMENTS


def temporary_bytes(shape, itemsize: int) -> int | None:
    """The bytes of a temporary of `shape` that may live on the stack, else None."""
    if not all(isinstance(d, int) for d in shape):
        return None
    size = math.prod(shape) * itemsize
    return size if 0 < size <= TEMPORARY_MAX_BYTES else None


def _static_shape(shape) -> tuple[int, ...] | None:
    if not isinstance(shape, types.BaseTuple):
        return None
    dims = [getattr(d, "literal_value", None) for d in shape]
    return tuple(dims) if all(isinstance(d, int) for d in dims) else None


def _stack_array(context, builder, array_type: types.Array, dims: tuple[int, ...], fill):
    """A C-contiguous array of `dims` in the function's frame, every element set to `fill`
    (or left as it is, for None)."""
    element = context.get_data_type(array_type.dtype)
    count = math.prod(dims)
    # alloca_once puts the memory in the entry block, so a call inside a loop does not grow
    # the stack; the elements are set here, at every call.
    storage = cgutils.alloca_once(builder, ir.ArrayType(element, count))
    data = builder.gep(storage, [cgutils.int32_t(0), cgutils.int32_t(0)])
    if fill is not None:
        with cgutils.for_range(builder, context.get_constant(types.intp, count)) as loop:
            store_item(context, builder, array_type, fill, builder.gep(data, [loop.index]))
    itemsize = context.get_abi_sizeof(element)
    strides = [math.prod(dims[a + 1:]) * itemsize for a in range(len(dims))]
    intp = lambda value: context.get_constant(types.intp, value)  # noqa: E731
    array = make_array(array_type)(context, builder)
    populate_array(array, data=data, shape=[intp(d) for d in dims],
                   strides=[intp(s) for s in strides], itemsize=intp(itemsize), meminfo=None)
    return array._getvalue()


@intrinsic(prefer_literal=True)
def full(typingctx, shape, fill_value, dtype):
    """`np.full(shape, fill_value, dtype)` on the stack; `shape` is a tuple of int literals."""
    dims = _static_shape(shape)
    if dims is None or not isinstance(dtype, types.NumberClass):
        return None
    array_type = types.Array(dtype.dtype, len(dims), "C")

    def codegen(context, builder, sig, args):
        fill = context.cast(builder, args[1], sig.args[1], array_type.dtype)
        return _stack_array(context, builder, array_type, dims, fill)

    return array_type(shape, fill_value, dtype), codegen


@intrinsic(prefer_literal=True)
def empty(typingctx, shape, dtype):
    """`np.empty(shape, dtype)` on the stack; `shape` is a tuple of int literals."""
    dims = _static_shape(shape)
    if dims is None or not isinstance(dtype, types.NumberClass):
        return None
    array_type = types.Array(dtype.dtype, len(dims), "C")

    def codegen(context, builder, sig, args):
        return _stack_array(context, builder, array_type, dims, None)

    return array_type(shape, dtype), codegen


@intrinsic(prefer_literal=True)
def zeros(typingctx, shape, dtype):
    """`np.zeros(shape, dtype)` on the stack; `shape` is a tuple of int literals."""
    dims = _static_shape(shape)
    if dims is None or not isinstance(dtype, types.NumberClass):
        return None
    array_type = types.Array(dtype.dtype, len(dims), "C")

    def codegen(context, builder, sig, args):
        zero = context.get_constant(array_type.dtype, 0)
        return _stack_array(context, builder, array_type, dims, zero)

    return array_type(shape, dtype), codegen
