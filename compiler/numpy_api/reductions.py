"""Reductions: sum, prod, max, min, the composites mean, var and std, and running sums."""

from __future__ import annotations

import numpy as np

from compiler.numpy_api.dispatch import axes_of, implements, no_out, traced
from compiler.numpy_api.elementwise import astype
from compiler.numpy_api.layout import reshape
from compiler.ops import bind


def _reduce(op, x, axis, keepdims):
    x = traced(x)
    return bind(op, x, axes=axes_of(x, axis), keepdims=bool(keepdims))


@implements(np.sum)
def sum(a, axis=None, dtype=None, out=None, keepdims=False, **kw):  # noqa: A001
    no_out("sum", out, **kw)
    result = _reduce("sum", a, axis, keepdims)
    return astype(result, dtype) if dtype is not None else result


@implements(np.prod)
def prod(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    no_out("prod", out, **kw)
    result = _reduce("prod", a, axis, keepdims)
    return astype(result, dtype) if dtype is not None else result


@implements(np.max, np.amax)
def amax(a, axis=None, out=None, keepdims=False, **kw):
    no_out("max", out, **kw)
    return _reduce("max", a, axis, keepdims)


@implements(np.min, np.amin)
def amin(a, axis=None, out=None, keepdims=False, **kw):
    no_out("min", out, **kw)
    return _reduce("min", a, axis, keepdims)


def _count(x, axes, dtype):
    return bind("size", x, axes=axes, dtype=np.dtype(dtype))


def _float_dtype(x):
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


@implements(np.mean)
def mean(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    no_out("mean", out, **kw)
    a = traced(a)
    axes = axes_of(a, axis)
    dtype = np.dtype(dtype) if dtype is not None else _float_dtype(a)
    total = bind("sum", astype(a, dtype) if a.dtype != dtype else a, axes=axes,
                 keepdims=bool(keepdims))
    return total / _count(a, axes, dtype)


@implements(np.var)
def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    no_out("var", out, **kw)
    a = traced(a)
    axes = axes_of(a, axis)
    centered = a - mean(a, axis=axes, dtype=dtype, keepdims=True)
    squares = bind("sum", centered * centered, axes=axes, keepdims=bool(keepdims))
    return squares / (_count(a, axes, squares.dtype) - ddof)


@implements(np.std)
def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    return np.sqrt(var(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, **kw))


@implements(np.cumsum)
def cumsum(a, axis=None, dtype=None, out=None):
    no_out("cumsum", out)
    a = traced(a)
    if axis is None or a.ndim == 0:
        a, axis = reshape(a, (-1,)), 0
    result = bind("cumsum", a, axis=axes_of(a, axis)[0])
    return astype(result, dtype) if dtype is not None else result
