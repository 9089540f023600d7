"""NumPy 2's array-API spellings, `np.nan_to_num` and `np.float_power`: names users meet in
newer code, each a composite of what gradfuse has.

`np.matrix_transpose` and `np.linalg.matrix_transpose` swap the last two axes;
`np.vecdot` (a ufunc) and `np.linalg.vecdot` sum the product over one axis (the last by
default); `np.matvec` and `np.vecmat` (ufuncs) multiply stacks of matrices and vectors;
np.linalg's `matmul`, `tensordot`, `outer`, `trace` and `diagonal` are np.matmul,
np.tensordot, np.outer (of 1-D arrays only, as NumPy requires), and np.trace and np.diagonal
over the LAST two axes (a stack of matrices), where the older functions default to the first
two. `np.nan_to_num` replaces NaN and the infinities by numbers (their gradient is 0 there, 1
elsewhere); `np.float_power` is np.power computed in float64.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import TraceError
from compiler.numpy_api.dispatch import implements, implements_ufunc, traced
from compiler.numpy_api.elementwise import astype, power
from compiler.numpy_api.layout import swapaxes
from compiler.user_code import user_loc


def _at_least(name: str, x, ndim: int):
    x = traced(x)
    if x.ndim < ndim:
        raise TraceError(f"{name} needs an array of at least {ndim} dimensions, got "
                         f"{x.ndim}", user_loc())
    return x


@implements(np.matrix_transpose, np.linalg.matrix_transpose)
def matrix_transpose(x):
    return swapaxes(_at_least("matrix_transpose", x, 2), -1, -2)


@implements_ufunc(np.vecdot)
def vecdot_ufunc(x1, x2):
    return vecdot(x1, x2)


@implements(np.linalg.vecdot)
def vecdot(x1, x2, /, *, axis=-1):
    product = _at_least("vecdot", x1, 1) * _at_least("vecdot", x2, 1)
    # summed in the product's dtype, as NumPy's vecdot: np.sum's default would make int8s and
    # bools int64 (vecdot of bools is their logical dot product, a bool)
    return np.sum(product, axis=axis, dtype=product.dtype)


@implements(np.linalg.matmul)
def linalg_matmul(x1, x2, /):
    return np.matmul(x1, x2)


@implements(np.linalg.tensordot)
def linalg_tensordot(x1, x2, /, *, axes=2):
    return np.tensordot(x1, x2, axes=axes)


@implements_ufunc(np.matvec)
def matvec(x1, x2):
    """x1 (..., m, n) times the vectors x2 (..., n): (..., m), batch axes broadcast."""
    x1, x2 = _at_least("matvec", x1, 2), _at_least("matvec", x2, 1)
    return np.matmul(x1, x2[..., None])[..., 0]


@implements_ufunc(np.vecmat)
def vecmat(x1, x2):
    """The vectors x1 (..., n) times x2 (..., n, m): (..., m) (real, so no conjugate)."""
    x1, x2 = _at_least("vecmat", x1, 1), _at_least("vecmat", x2, 2)
    return np.matmul(x1[..., None, :], x2)[..., 0, :]


@implements(np.linalg.outer)
def linalg_outer(x1, x2, /):
    for x in (x1, x2):
        if np.ndim(x) != 1:
            raise TraceError("np.linalg.outer takes 1-D arrays only (np.outer flattens), got "
                             f"{np.ndim(x)}-D", user_loc())
    return np.outer(x1, x2)


@implements(np.linalg.trace)
def linalg_trace(x, /, *, offset=0, dtype=None):
    x = _at_least("np.linalg.trace", x, 2)
    return np.trace(x, offset=offset, axis1=-2, axis2=-1, dtype=dtype)


@implements(np.linalg.diagonal)
def linalg_diagonal(x, /, *, offset=0):
    return np.diagonal(_at_least("np.linalg.diagonal", x, 2), offset=offset, axis1=-2, axis2=-1)


@implements(np.nan_to_num)
def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    x = traced(x)
    if x.dtype.kind != "f":
        return x  # no NaN or infinity to replace
    info = np.finfo(x.dtype)
    top = info.max if posinf is None else posinf
    bottom = info.min if neginf is None else neginf
    finite = np.where(x == np.inf, x.dtype.type(top), np.where(x == -np.inf,
                                                               x.dtype.type(bottom), x))
    return np.where(np.isnan(x), x.dtype.type(nan), finite)


@implements_ufunc(np.float_power)
def float_power(x1, x2):
    return power(astype(traced(x1), np.float64), astype(traced(x2), np.float64))
