"""Reductions: sum, prod, max, min, the composites mean, var and std, any and all, argmax and
argmin; running sums and products, sorting, and differences along an axis."""

from __future__ import annotations

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.numpy_api.dispatch import axes_of, implements, no_out, traced
from compiler.numpy_api.elementwise import astype
from compiler.numpy_api.layout import broadcast_to, concatenate, reshape
from compiler.ops import bind
from compiler.tracer import Tracer
from compiler.user_code import user_loc


def _reduced_axes(x, axis):
    """The axes a sum, prod, max or min reduces: NumPy lets an int axis 0 or -1 of a 0-d
    array through, reducing nothing (a tuple holding one is an error)."""
    if x.ndim == 0 and axis is not None:
        if axis in (0, -1) and not isinstance(axis, tuple) or axis == ():
            return ()
        raise TraceError(f"axis {axis} is out of bounds for array of dimension 0", user_loc())
    return axes_of(x, axis)


def _reduce(op, x, axis, keepdims):
    x = traced(x)
    return bind(op, x, axes=_reduced_axes(x, axis), keepdims=bool(keepdims))


def in_dtype(a, dtype):
    """`a` converted to a reduction's `dtype=`, which NumPy accumulates in: np.sum(ints,
    dtype=np.float64) adds floats (no int64 overflow), np.sum(x32, dtype=np.float64) keeps
    the float64 total (the result, not only the sum, is float64)."""
    a = traced(a)
    return a if dtype is None or a.dtype == np.dtype(dtype) else astype(a, dtype)


def _as_initial(initial, result):
    """`initial=` in the reduction's dtype, as NumPy casts it (np.sum(ints, initial=0.5) adds
    0; a float64 initial leaves a float32 sum float32)."""
    if isinstance(initial, Tracer):
        return initial if initial.dtype == result.dtype else astype(initial, result.dtype)
    return np.asarray(initial).astype(result.dtype)


def _masked(a, where, fill):
    """`a` with the entries `where` leaves out replaced by `fill` (NumPy's where= of reductions)."""
    if where is None or where is True:
        return a
    return np.where(where, a, fill)


@implements(np.sum)
def sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):  # noqa: A001
    no_out("sum", out)
    a = in_dtype(a, dtype)
    result = _reduce("sum", _masked(a, where, 0), axis, keepdims)
    result = result if initial is None else result + _as_initial(initial, result)
    return astype(result, dtype) if dtype is not None else result


@implements(np.prod)
def prod(a, axis=None, dtype=None, out=None, keepdims=False, initial=None, where=None):
    no_out("prod", out)
    a = in_dtype(a, dtype)
    result = _reduce("prod", _masked(a, where, 1), axis, keepdims)
    result = result if initial is None else result * _as_initial(initial, result)
    return astype(result, dtype) if dtype is not None else result


def _extreme(op, a, axis, keepdims, initial, where):
    """max or min; `where=` leaves entries out (NumPy then needs `initial`), and `initial`
    takes part as one more entry (np.maximum's tie rule splits a tie with it)."""
    a = traced(a)
    if where is not None and where is not True:
        if initial is None:
            ufunc = "maximum" if op == "max" else "minimum"
            raise TraceError(f"reduction operation '{ufunc}' does not have an identity, so to "
                             "use a where mask one has to specify 'initial'", user_loc())
        a = np.where(where, a, _bound(a.dtype, lowest=op == "max"))
    if initial is not None:
        result = _reduce(op, a, axis, keepdims)
    else:
        result = _nonempty_extreme(op, a, axis, keepdims)
    if initial is None:
        return result
    initial = np.asarray(initial).astype(a.dtype)  # NumPy casts initial to the array's dtype
    return np.maximum(result, initial) if op == "max" else np.minimum(result, initial)


def _nonempty_extreme(op, a, axis, keepdims):
    """max or min without an initial value, as NumPy: an error where a reduced axis is empty,
    when traced for a static axis, and by the kernel for a symbolic (batch) one."""
    axes = _reduced_axes(a, axis)
    dims = [a.type.shape[k] for k in axes]
    if 0 in dims:
        ufunc = "maximum" if op == "max" else "minimum"
        raise TraceError(f"zero-size array to reduction operation {ufunc} which has no "
                         "identity", user_loc())
    nonempty = {"nonempty": True} if any(not isinstance(d, int) for d in dims) else {}
    return bind(op, a, axes=axes, keepdims=bool(keepdims), **nonempty)


def _bound(dtype, lowest):
    """The value no entry of `dtype` is below (lowest) or above: a max's or min's identity."""
    if dtype.kind == "f":
        return -np.inf if lowest else np.inf
    if dtype == np.bool_:
        return not lowest
    info = np.iinfo(dtype)
    return info.min if lowest else info.max


@implements(np.max, np.amax)
def amax(a, axis=None, out=None, keepdims=False, initial=None, where=None):
    no_out("max", out)
    return _extreme("max", a, axis, keepdims, initial, where)


@implements(np.min, np.amin)
def amin(a, axis=None, out=None, keepdims=False, initial=None, where=None):
    no_out("min", out)
    return _extreme("min", a, axis, keepdims, initial, where)


def _count(x, axes, dtype):
    return bind("size", x, axes=axes, dtype=np.dtype(dtype))


def _float_dtype(x):
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def _counted_axes(a, axis):
    """The axes a mean or var reduces; unlike sum, NumPy refuses any axis of a 0-d array."""
    if a.ndim == 0 and axis is not None and axis != ():
        raise TraceError(f"axis {axis} is out of bounds for array of dimension 0", user_loc())
    return axes_of(a, axis)


@implements(np.mean)
def mean(a, axis=None, dtype=None, out=None, keepdims=False, where=None):
    no_out("mean", out)
    a = traced(a)
    axes = _counted_axes(a, axis)
    dtype = np.dtype(dtype) if dtype is not None else _float_dtype(a)
    if dtype.kind != "f":  # NumPy sums in dtype= (wrapping), divides, casts back (truncating)
        total = sum(a, axis=axes, dtype=dtype, keepdims=keepdims, where=where)
        quotient = total / _mean_count(a, axes, np.dtype(np.float64), keepdims, where)
        return astype(quotient, dtype)
    total = bind("sum", _masked(astype(a, dtype) if a.dtype != dtype else a, where, 0),
                 axes=axes, keepdims=bool(keepdims))
    return total / _mean_count(a, axes, dtype, keepdims, where)


def float_dtype(name: str, dtype) -> None:
    """Refuse an int or bool dtype= of a variance: NumPy computes in it with wrapping,
    truncated steps (np.var(int8s, dtype=np.int8) is 13 where the variance is 1378)."""
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise UnsupportedError(f"np.{name} with dtype={np.dtype(dtype)} is not supported (NumPy "
                               "truncates the mean and wraps the squares in it); pass a float "
                               "dtype, or take .astype() of the result", user_loc())


def _mean_count(a, axes, dtype, keepdims, where):
    """How many entries a mean divides by, in `dtype`: those `where=` chooses."""
    if where is None or where is True:
        return _count(a, axes, dtype)
    chosen = broadcast_to(traced(where), a.shape)  # a batch axis stays symbolic
    return bind("sum", astype(chosen, dtype), axes=axes, keepdims=bool(keepdims))


@implements(np.var)
def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    no_out("var", out, **kw)
    float_dtype("var", dtype)
    a = traced(a)
    axes = _counted_axes(a, axis)
    centered = a - mean(a, axis=axes, dtype=dtype, keepdims=True)
    # NumPy sums the squares in dtype= too (int data minus a float32 mean is float64)
    squares = bind("sum", in_dtype(centered * centered, dtype), axes=axes, keepdims=bool(keepdims))
    # NumPy divides by max(count - ddof, 0): more ddof than entries is inf (NaN for a constant
    # lane), not a negative variance; a batch axis may be short only when the kernel runs
    return squares / np.maximum(_count(a, axes, squares.dtype) - ddof, 0)


@implements(np.std)
def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    float_dtype("std", dtype)
    return root_of_variance(var(a, axis=axis, dtype=dtype, out=out, ddof=ddof,
                                keepdims=keepdims, **kw))


def root_of_variance(variance):
    """sqrt(variance), whose gradient is 0 where the variance is 0 (a constant lane), as
    PyTorch's std gives: sqrt' is inf there, times the centered values' zeros, NaN."""
    return np.where(variance == 0, 0, np.sqrt(variance))


@implements(np.cumsum)
def cumsum(a, axis=None, dtype=None, out=None):
    no_out("cumsum", out)
    a = in_dtype(a, dtype)
    if axis is None or a.ndim == 0:
        a, axis = reshape(a, (-1,)), 0
    result = bind("cumsum", a, axis=axes_of(a, axis)[0])
    return astype(result, dtype) if dtype is not None else result


@implements(np.cumprod)
def cumprod(a, axis=None, dtype=None, out=None):
    no_out("cumprod", out)
    a = in_dtype(a, dtype)
    if axis is None or a.ndim == 0:
        a, axis = reshape(a, (-1,)), 0
    result = bind("cumprod", a, axis=axes_of(a, axis)[0])
    return astype(result, dtype) if dtype is not None else result


def _along(a, axis):
    """`a` and one axis of it: flattened for axis=None, as NumPy's sort and arg functions do."""
    a = traced(a)
    if axis is None or a.ndim == 0:
        return reshape(a, (-1,)), 0
    return a, axes_of(a, axis)[0]


@implements(np.argsort)
def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """The stable order (ties keep their order, NaNs last), whatever `kind` asks for."""
    if order is not None:
        raise UnsupportedError("np.argsort(order=...) sorts structured arrays, which gradfuse "
                               "does not trace", user_loc())
    a, axis = _along(a, axis)
    return bind("argsort", a, axis=axis)


@implements(np.sort)
def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """The values gathered in their sorted order: the gradient goes back through the
    permutation (ties by NumPy's stable order)."""
    a, axis = _along(a, axis)
    return np.take_along_axis(a, argsort(a, axis=axis), axis=axis)


def _arg_extreme(extreme):
    def arg(a, axis=None, out=None, *, keepdims=False):
        no_out(f"arg{extreme.__name__[1:]}", out)
        a = traced(a)
        shape = a.type.shape
        flat, axis_ = _along(a, axis)
        n = flat.shape[axis_].__index__()
        if n == 0:
            raise TraceError(f"attempt to get arg{extreme.__name__[1:]} of an "
                             "empty sequence", user_loc())
        top = extreme(flat, axis=axis_, keepdims=True)
        # The first position that holds the extreme; a NaN is the extreme (max and min propagate
        # it), and NumPy answers the first NaN.
        hit = (flat == top) | (flat != flat)
        positions = np.arange(n).reshape([n if i == axis_ else 1 for i in range(flat.ndim)])
        first = bind("min", np.where(hit, positions, n), axes=(axis_,), keepdims=bool(keepdims))
        if keepdims and axis is None:
            return reshape(first, (1,) * len(shape))
        return first

    return arg


argmax = implements(np.argmax)(_arg_extreme(amax))
argmin = implements(np.argmin)(_arg_extreme(amin))


def _truth(reduction):
    def truth(a, axis=None, out=None, keepdims=False, *, where=None):
        no_out(f"np.{reduction}", out)
        a = traced(a)
        truths = a if a.dtype == np.bool_ else a != 0
        if where is not None and where is not True:
            truths = np.where(where, truths, reduction == "all")
        return bind("max" if reduction == "any" else "min", truths, axes=_reduced_axes(a, axis),
                    keepdims=bool(keepdims))

    return truth


any_ = implements(np.any)(_truth("any"))
all_ = implements(np.all)(_truth("all"))


@implements(np.diff)
def diff(a, n=1, axis=-1, prepend=None, append=None):
    """n-th differences along `axis`: slices subtracted, n times."""
    a = traced(a)
    if a.ndim == 0:
        raise TraceError("diff requires input that is at least one dimensional", user_loc())
    if n < 0:
        raise TraceError(f"order must be non-negative but got {n}", user_loc())
    axis = axes_of(a, axis)[0]
    parts = []
    for extra in (prepend, append):
        if extra is None:
            parts.append(None)
            continue
        if not isinstance(extra, Tracer) and np.ndim(extra) == 0 or \
                isinstance(extra, Tracer) and extra.ndim == 0:
            shape = list(a.shape)
            shape[axis] = 1
            extra = np.broadcast_to(extra, tuple(shape))
        parts.append(extra)
    pieces = [p for p in (parts[0], a, parts[1]) if p is not None]
    if len(pieces) > 1:
        a = concatenate(pieces, axis=axis)
    for _ in range(n):
        later = a[(slice(None),) * axis + (slice(1, None),)]
        earlier = a[(slice(None),) * axis + (slice(None, -1),)]
        # booleans differ where they change, as NumPy's diff (not_equal) has them
        a = later != earlier if a.dtype == np.bool_ else later - earlier
    return a


@implements(np.ptp)
def ptp(a, axis=None, out=None, keepdims=False):
    """Peak to peak: max - min (a tie's gradient split as max's and min's split it)."""
    no_out("ptp", out)
    return np.max(a, axis=axis, keepdims=keepdims) - np.min(a, axis=axis, keepdims=keepdims)


@implements(np.average)
def average(a, axis=None, weights=None, returned=False, *, keepdims=False):
    """The mean, or the weighted mean sum(a * w) / sum(w) (weights 1-D along `axis`, or of
    a's shape, as NumPy allows); with `returned`, also the sum of the weights."""
    a = traced(a)
    if weights is None:
        result = np.mean(a, axis=axis, keepdims=keepdims)
        total = np.sum(np.ones_like(a), axis=axis, keepdims=keepdims)
    else:
        w = weights if isinstance(weights, Tracer) else np.asarray(weights)
        if np.ndim(w) != a.ndim:
            if axis is None or np.ndim(w) != 1:
                raise TraceError("average: weights of another shape than the array need an "
                                 "axis and one dimension", user_loc())
            axis_index = axes_of(a, axis)[0]
            w = np.reshape(w, tuple(-1 if k == axis_index else 1 for k in range(a.ndim)))
            w = np.broadcast_to(w, a.shape)
        total = np.sum(w, axis=axis, keepdims=keepdims)
        result = np.sum(a * w, axis=axis, keepdims=keepdims) / total
    if returned:
        return result, np.broadcast_to(total, np.shape(result)) if np.ndim(result) else total
    return result
