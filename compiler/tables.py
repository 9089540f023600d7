"""Arrays given by address: how a kernel reads a table of many arrays in one call.

Passing arrays to a numba function costs per array, in compile time (the code
that unboxes each argument) and at every call; a table of addresses is one
int64 array, whatever the number of arrays in it. `array_at(address, shape,
dtype)` is the array of `shape` and `dtype` whose data starts at `address`, as
`numba.carray` makes it: no copy, no ownership.

The caller guarantees what numba cannot check: each address is the data of a
C-contiguous, writable array of that dtype and at least that size, kept alive
(and still the array the caller means) for as long as the table is used.
compiler/update_kernels.py holds the arrays and checks, before every call, that
they are still the ones in the table.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


def address_of(array: np.ndarray) -> int:
    """The address of `array`'s first element."""
    return array.__array_interface__["data"][0]


@intrinsic
def _pointer(typingctx, address, dtype):
    """(address: int64, dtype: a NumPy scalar class) -> a pointer to elements of dtype."""
    element = dtype.dtype
    signature = types.CPointer(element)(address, dtype)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(element)))

    return signature, codegen


@numba.njit(inline="always")
def array_at(address, shape, dtype):
    """The C-contiguous array of `shape` (a tuple) and `dtype` at `address`."""
    return numba.carray(_pointer(address, dtype), shape)


@numba.njit(inline="always")
def scalar_array_at(address, dtype):
    """The 0-d array of `dtype` at `address`."""
    return numba.carray(_pointer(address, dtype), (1,)).reshape(())
