"""Linear algebra: `@`, np.matmul, np.dot, np.tensordot, np.inner, np.outer, np.vdot, np.cross,
np.kron, and np.linalg's norms, svdvals, solve, inv, det, slogdet and cholesky (np.einsum:
einsum.py).

Products are `matmul` or `contract` (BLAS where they are large: compiler/ops/gemm.py);
norms are composites of sums, maxima and singular values; the matrix functions are ops on
LAPACK (compiler/ops/solvers.py).
"""

from __future__ import annotations

import operator

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.numpy_api.dispatch import UFUNCS, axes_of, implements, no_out, traced
from compiler.numpy_api.elementwise import astype
from compiler.numpy_api.layout import reshape
from compiler.ops import bind
from compiler.ops.linalg import product
from compiler.ops.registry import DimConflict, ShapeError
from compiler.ops.shapes import broadcast_shapes, fmt_shape, same_dim
from compiler.symdim import Concretize
from compiler.user_code import user_loc


def numeric_factors(a, b):
    """a and b, traced; a boolean one beside a number array in the other's dtype, which is
    what NumPy's product computes in (mask @ W). Two booleans stay (refused by the ops)."""
    a, b = traced(a), traced(b)
    if (a.dtype == np.bool_) != (b.dtype == np.bool_):
        a, b = (astype(x, y.dtype) if x.dtype == np.bool_ else x for x, y in ((a, b), (b, a)))
    return a, b


def matmul(a, b):
    return bind("matmul", *numeric_factors(a, b))


UFUNCS[np.matmul] = matmul


# --- products ----------------------------------------------------------------------------------
@implements(np.dot)
def dot(a, b, out=None):
    no_out("np.dot", out)
    a, b = numeric_factors(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if a.ndim <= 2 and b.ndim <= 2:
        return bind("matmul", a, b)
    # dot(a, b)[i, j, k, m] = sum(a[i, j, :] * b[k, :, m]): the last axis of a with the
    # second-to-last of b
    return _summed_over(a, b, (-1,), (max(b.ndim - 2, 0),), "np.dot")


@implements(np.tensordot)
def tensordot(a, b, axes=2):
    a, b = numeric_factors(a, b)
    if isinstance(axes, (int, np.integer)):
        if axes > min(a.ndim, b.ndim):
            raise TraceError(f"np.tensordot: axes={axes} sums more axes than the operands "
                             f"{fmt_shape(a.type.shape)} and {fmt_shape(b.type.shape)} have",
                             user_loc())
        a_axes, b_axes = tuple(range(a.ndim - axes, a.ndim)), tuple(range(axes))
    else:
        a_axes, b_axes = ((x,) if isinstance(x, (int, np.integer)) else tuple(x) for x in axes)
    return _summed_over(a, b, a_axes, b_axes, "np.tensordot")


def _summed_over(a, b, a_axes, b_axes, name: str):
    """The product of `a` and `b` summed over the pairs of `a_axes` and `b_axes` (a's free axes,
    then b's), as np.tensordot; errors name the NumPy function `name` the user called."""
    if len(a_axes) != len(b_axes):
        raise TraceError(f"{name}: shape-mismatch for sum (the axes lists differ in length)",
                         user_loc())
    # checked, not wrapped: axes=([2], [0]) of a matrix is NumPy's IndexError, and `2 % 2`
    # would silently sum over axis 0 instead
    a_axes = _summed_axes(a, a_axes, "first", name)
    b_axes = _summed_axes(b, b_axes, "second", name)
    for i, j in zip(a_axes, b_axes):
        m, n = a.type.shape[i], b.type.shape[j]
        _same_length(m, n, f"{name}: shape-mismatch for sum: axis {i} of "
                     f"{fmt_shape(a.type.shape)} has length {m}, axis {j} of "
                     f"{fmt_shape(b.type.shape)} has length {n}")
    a_free = tuple(i for i in range(a.ndim) if i not in a_axes)
    b_free = tuple(i for i in range(b.ndim) if i not in b_axes)
    a = _permuted(a, a_free + a_axes)
    b = _permuted(b, b_axes + b_free)
    return product(a, b, 0, len(a_axes))


def _same_length(m, n, message: str):
    """Two lengths that must be equal, else a TraceError with `message` at the user's line; a
    symbolic one is made a number (traced again) when it is compared with another."""
    try:
        same_dim(m, n, message)
    except ShapeError as err:
        raise TraceError(str(err), user_loc()) from None
    except DimConflict as conflict:
        raise Concretize(conflict.sym) from None


def _summed_axes(x, axes, which: str, name: str) -> tuple[int, ...]:
    """Summed `axes` of `x` as non-negative ints, each in range and named once."""
    result = []
    for axis in axes:
        axis = operator.index(axis)
        if not -x.ndim <= axis < x.ndim:
            raise TraceError(f"{name}: axis {axis} is out of bounds for the {which} operand, "
                             f"of shape {fmt_shape(x.type.shape)}", user_loc())
        result.append(axis % x.ndim)
    if len(set(result)) != len(result):
        raise TraceError(f"{name}: duplicate axes are not allowed (the {which} operand's "
                         f"{tuple(axes)})", user_loc())
    return tuple(result)


def _permuted(x, perm):
    return x if perm == tuple(range(x.ndim)) else bind("transpose", x, perm=perm)


@implements(np.inner)
def inner(a, b):
    a, b = numeric_factors(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    return _summed_over(a, b, (-1,), (-1,), "np.inner")


@implements(np.outer)
def outer(a, b, out=None):
    no_out("np.outer", out)
    a, b = reshape(a, (-1, 1)), reshape(b, (1, -1))
    return a * b


@implements(np.vdot)
def vdot(a, b):
    a, b = (reshape(x, (-1,)) for x in numeric_factors(a, b))
    return product(a, b, 0, 1)


# --- norms -------------------------------------------------------------------------------------
def _sqrt(x):
    """sqrt whose gradient at 0 is 0, not inf * 0: a norm's gradient at the zero vector is 0
    (the subgradient PyTorch gives), not NaN. Only 0 is special-cased: a NaN stays NaN."""
    zero = x == 0
    return np.where(zero, 0, np.sqrt(np.where(zero, 1, x)))


def _root(x, p):
    zero = x == 0
    return np.where(zero, 0, np.where(zero, 1, x) ** (1.0 / p))


def _vector_norm(x, ord, axis: tuple[int, ...], keepdims: bool):
    kept = {"axis": axis, "keepdims": keepdims}
    if ord is None or ord == 2:
        return _sqrt(np.sum(x * x, **kept))
    if isinstance(ord, str):
        raise TraceError(f"np.linalg.norm: invalid norm order {ord!r} for vectors", user_loc())
    if ord == np.inf:  # NumPy's is 0 for no entries (|x| >= 0, so the same max elsewhere)
        return np.max(np.abs(x), **kept, initial=0.0)
    if ord == -np.inf:
        return np.min(np.abs(x), **kept)
    if ord == 0:
        return np.sum((x != 0).astype(x.dtype), **kept)
    if ord == 1:
        return np.sum(np.abs(x), **kept)
    # |x|^p at an entry 0 is 0 (inf for p < 0) with gradient 0, the subgradient PyTorch gives:
    # for p < 1, p |x|^(p-1) sign(x) there was inf * 0 = NaN
    magnitude = np.abs(x)
    zero = magnitude == 0
    powered = np.where(zero, np.inf if ord < 0 else 0.0, np.where(zero, 1, magnitude) ** ord)
    return _root(np.sum(powered, **kept), ord)


def _extreme_sum(largest: bool, sums, axis: int):
    """The largest (NumPy's 0 for none: the sums are >= 0) or smallest of `sums` along `axis`."""
    if largest:
        return np.max(sums, axis=axis, keepdims=True, initial=0.0)
    return np.min(sums, axis=axis, keepdims=True)


def _matrix_norm(x, ord, row: int, col: int, keepdims: bool):
    if ord in (None, "fro"):
        result = _sqrt(np.sum(x * x, axis=(row, col), keepdims=True))
    elif ord in (2, -2, "nuc"):  # the largest, smallest, sum of the singular values
        others = tuple(a for a in range(x.ndim) if a not in (row, col))
        values = svdvals(_permuted(x, others + (row, col)))
        result = {2: np.max, -2: np.min, "nuc": np.sum}[ord](values, axis=-1)
        result = np.expand_dims(result, (row, col) if row < col else (col, row))
    elif ord in (1, -1):  # the largest (smallest) sum of |x| down a column
        sums = np.sum(np.abs(x), axis=row, keepdims=True)
        result = _extreme_sum(ord == 1, sums, col)
    elif ord in (np.inf, -np.inf):  # ... along a row
        sums = np.sum(np.abs(x), axis=col, keepdims=True)
        result = _extreme_sum(ord == np.inf, sums, row)
    else:
        raise TraceError(f"np.linalg.norm: invalid norm order {ord!r} for matrices",
                         user_loc())
    if keepdims:
        return result
    return reshape(result, tuple(d for i, d in enumerate(result.shape) if i not in (row, col)))


@implements(np.linalg.norm)
def norm(x, ord=None, axis=None, keepdims=False):
    """Vector norms (ord None/2, 1, inf, -inf, 0, any p) and matrix norms ('fro', 'nuc', 1, -1,
    2, -2, inf, -inf); gradients at kinks as README's table: 0 at the zero vector, ties of max
    shared."""
    x = traced(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = astype(x, np.float64)
    if axis is None:
        if ord is None:  # the 2-norm of all the entries
            return _vector_norm(x, None, tuple(range(x.ndim)), keepdims)
        if x.ndim not in (1, 2):
            raise TraceError("np.linalg.norm: improper number of dimensions to norm (give "
                             "axis= for arrays of more than 2)", user_loc())
        axis = tuple(range(x.ndim))
    elif isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    axis = tuple(axis)
    if len(axis) == 1:
        return _vector_norm(x, ord, axes_of(x, axis), keepdims)
    if len(axis) == 2:
        row, col = (int(a) % max(x.ndim, 1) for a in axis)
        if row == col or not all(-x.ndim <= a < x.ndim for a in axis):
            raise TraceError(f"np.linalg.norm: invalid axes {axis} for a {x.ndim}-dimensional "
                             "array", user_loc())
        return _matrix_norm(x, ord, row, col, keepdims)
    raise TraceError("np.linalg.norm: improper number of dimensions to norm", user_loc())


@implements(np.linalg.vector_norm)
def vector_norm(x, /, *, axis=None, keepdims=False, ord=2):
    """NumPy 2's vector norm: over `axis` (an int or a tuple), all entries by default."""
    x = traced(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = astype(x, np.float64)
    return _vector_norm(x, ord, axes_of(x, axis), keepdims)


@implements(np.linalg.matrix_norm)
def matrix_norm(x, /, *, keepdims=False, ord="fro"):
    return norm(x, ord, (-2, -1), keepdims)


@implements(np.linalg.svdvals)
def svdvals(x, /):
    x = traced(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = astype(x, np.float64)
    return bind("svdvals", x)


# --- square matrices (LAPACK) ---------------------------------------------------------------------
def _batched(*arrays):
    """The arrays broadcast to one batch shape over their last two axes."""
    try:
        batch = broadcast_shapes(*(a.type.shape[:-2] for a in arrays))
    except ShapeError:
        raise TraceError("np.linalg: the batch axes of " + " and ".join(
            str(a.shape) for a in arrays) + " cannot be broadcast together", user_loc()) from None
    except DimConflict as conflict:
        raise Concretize(conflict.sym) from None
    return [a if a.type.shape[:-2] == batch else
            bind("broadcast_to", a, shape=batch + a.type.shape[-2:]) for a in arrays]


def _floats(a):
    """`a` as LAPACK reads it: integers (and bools, which the ops refuse) as float64, as
    NumPy converts them; float32 and float64 as they are."""
    a = traced(a)
    return a if a.dtype.kind == "f" or a.dtype == np.bool_ else astype(a, np.float64)


@implements(np.linalg.solve)
def solve(a, b):
    """x with a @ x = b; as NumPy 2, b is a vector only when it is 1-D."""
    a, b = _floats(a), _floats(b)
    vector = b.ndim == 1
    if vector:
        b = reshape(b, (b.shape[0], 1))
    a, b = _batched(a, b)
    x = bind("solve", a, b)
    return reshape(x, x.type.shape[:-1]) if vector else x


@implements(np.linalg.inv)
def inv(a):
    return bind("inv", _floats(a))


@implements(np.linalg.det)
def det(a):
    return bind("det", _floats(a))


class SlogdetResult(tuple):
    """(sign, logabsdet) as NumPy gives them: unpacked, or as attributes. A plain tuple
    subclass, not a namedtuple, so that a function may return it (as a tuple)."""

    sign = property(lambda self: self[0])
    logabsdet = property(lambda self: self[1])


@implements(np.linalg.slogdet)
def slogdet(a):
    pair = bind("slogdet", _floats(a))
    batch = pair.type.shape[:-1]

    def part(k):
        index = tuple((0, d, 1) for d in batch) + ((k, k + 1, 1),)
        return bind("reshape", bind("slice", pair, index=index), shape=batch)

    return SlogdetResult((part(0), part(1)))


@implements(np.linalg.cholesky)
def cholesky(a, /, *, upper=False):
    L = bind("cholesky", _floats(a))
    if upper:
        n = L.ndim
        return bind("transpose", L, perm=tuple(range(n - 2)) + (n - 1, n - 2))
    return L


# --- products of several matrices, powers ------------------------------------------------------
@implements(np.linalg.multi_dot)
def multi_dot(arrays, *, out=None):
    """Left to right: each product goes to BLAS when it is large."""
    no_out("np.linalg.multi_dot", out)
    arrays = [traced(a) for a in arrays]
    if len(arrays) < 2:
        raise TraceError("np.linalg.multi_dot needs at least two arrays", user_loc())
    result = arrays[0]
    for a in arrays[1:]:
        result = dot(result, a)
    return result


@implements(np.linalg.matrix_power)
def matrix_power(a, n):
    """a @ a @ ... (n times, by repeated squaring); negative n inverts first."""
    a = traced(a)
    if not isinstance(n, (int, np.integer)):
        raise TraceError("np.linalg.matrix_power: the exponent must be an int", user_loc())
    # NumPy's LinAlgErrors, at trace time: a vector would otherwise give a @ a, a number
    if a.ndim < 2:
        raise TraceError(f"np.linalg.matrix_power: {a.ndim}-dimensional array given; the "
                         "array must be at least two-dimensional", user_loc())
    _same_length(a.type.shape[-2], a.type.shape[-1], "np.linalg.matrix_power: the last 2 "
                 f"dimensions of the array must be square, got {fmt_shape(a.type.shape)}")
    if n == 0:
        eye = np.eye(a.type.shape[-1], dtype=a.dtype)
        return bind("broadcast_to", traced(eye), shape=a.type.shape)
    if n < 0:
        a, n = inv(a), -n
    result, power = None, a
    while n:
        if n & 1:
            result = power if result is None else result @ power
        n >>= 1
        if n:
            power = power @ power
    return result


# --- cross and Kronecker products ---------------------------------------------------------------
@implements(np.cross)
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors along `axis` (the last by default), broadcast over the
    other axes; 2-vectors are taken as 3-vectors with z = 0 (two 2-vectors give z alone, as
    NumPy)."""
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = np.moveaxis(traced(a), axisa, -1), np.moveaxis(traced(b), axisb, -1)
    n, m = operator.index(a.shape[-1]), operator.index(b.shape[-1])  # a symbolic one: static
    if n not in (2, 3) or m not in (2, 3):
        raise TraceError(f"incompatible dimensions for cross product (dimension must be 2 or "
                         f"3), got {n} and {m}", user_loc())
    if n == m == 2:
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    a, b = _as_3d(a), _as_3d(b)
    x = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    y = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    z = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return np.moveaxis(np.stack([x, y, z], axis=-1), -1, axisc)


@implements(np.linalg.cross)
def linalg_cross(x1, x2, /, *, axis=-1):
    """np.cross of 3-vectors only (NumPy 2's np.linalg.cross refuses 2-vectors)."""
    for x in (x1, x2):
        n = operator.index(traced(x).shape[axis])
        if n != 3:
            raise TraceError(f"np.linalg.cross takes 3-vectors only, got vectors of {n}",
                             user_loc())
    return cross(x1, x2, axis=axis)


def _as_3d(v):
    """A stack of 2-vectors as 3-vectors with z = 0 (3-vectors as they are)."""
    if operator.index(v.shape[-1]) == 3:
        return v
    return np.concatenate([v, np.zeros_like(v[..., :1])], axis=-1)


@implements(np.kron)
def kron(a, b):
    """The Kronecker product: every entry of `a` times all of `b`, blocks laid out along each
    axis (the lower-rank operand gets leading axes of length 1, as NumPy)."""
    a, b = traced(a), traced(b)
    ndim = max(a.ndim, b.ndim)
    # every length as a number (a symbolic axis becomes static): the result's are products
    shape_a = (1,) * (ndim - a.ndim) + tuple(map(operator.index, a.shape))
    shape_b = (1,) * (ndim - b.ndim) + tuple(map(operator.index, b.shape))
    # a's axes interleaved with b's: (a0, b0, a1, b1, ...), then each pair merged
    spread_a = reshape(a, tuple(d for n in shape_a for d in (n, 1)))
    spread_b = reshape(b, tuple(d for n in shape_b for d in (1, n)))
    return reshape(spread_a * spread_b, tuple(p * q for p, q in zip(shape_a, shape_b)))


def _refuse(name: str, instead: str):
    def refuse(*args, **kwargs):
        raise UnsupportedError(f"np.linalg.{name} is not supported by gradfuse; {instead}",
                               user_loc())

    return refuse


for _function, _instead in [
    ("svd", "np.linalg.svdvals gives the singular values (with their gradient)"),
    ("eig", "eigendecompositions are not; np.linalg.svdvals gives singular values"),
    ("eigh", "eigendecompositions are not; np.linalg.svdvals gives singular values (for a "
             "positive semidefinite matrix, its eigenvalues)"),
    ("eigvals", "eigendecompositions are not; np.linalg.svdvals gives singular values"),
    ("eigvalsh", "np.linalg.svdvals gives the singular values (for a positive semidefinite "
                 "matrix, its eigenvalues)"),
    ("qr", "np.linalg.cholesky of a.T @ a gives R.T"),
    ("pinv", "use np.linalg.solve(a.T @ a, a.T) for a matrix of full column rank"),
    ("lstsq", "use np.linalg.solve(a.T @ a, a.T @ b) for a matrix of full column rank"),
    ("matrix_rank", "the rank has no gradient: compute it outside the traced function"),
    ("tensorsolve", "reshape to matrices and use np.linalg.solve"),
    ("tensorinv", "reshape to a matrix and use np.linalg.inv"),
]:
    implements(getattr(np.linalg, _function))(_refuse(_function, _instead))
del _function, _instead
