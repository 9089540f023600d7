"""Methods of ufuncs on traced arrays: `np.add.reduce`, `np.logaddexp.reduce`, `.accumulate` ...

A ufunc's `reduce` folds it along an axis (axis 0 unless told): for the ufuncs below that
is a reduction gradfuse has (`add` is `sum`, `logaddexp` is a max-shifted log-sum-exp);
`accumulate` keeps every partial result (`add` is `cumsum`). Other ufuncs' methods are
refused with the list of those supported (compiler/numpy_api/dispatch.py).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import UnsupportedError
from compiler.numpy_api import reductions
from compiler.numpy_api.dispatch import UFUNC_METHODS, axes_of, no_out, traced
from compiler.numpy_api.elementwise import astype
from compiler.user_code import user_loc

_NO_INITIAL = np._NoValue


def _logsumexp(a, axis, keepdims):
    """log(sum(exp(a))) with the max taken out first (no overflow); an all -inf lane gives
    -inf, and so does an empty one (as NumPy: -inf is logaddexp's identity, so the max's own
    -inf there is kept). The max is a constant shift: its gradient terms cancel, leaving
    softmax(a)."""
    top = np.max(a, axis=axis, keepdims=True, initial=-np.inf)
    shift = np.where(np.isfinite(top), top, 0.0)
    total = np.sum(np.exp(a - shift), axis=axis, keepdims=keepdims)
    return np.log(total) + (shift if keepdims else np.squeeze(shift, axis=axis))


def _reducer(name, reduce, identity=None):
    def method(array, axis=0, dtype=None, out=None, keepdims=False, initial=_NO_INITIAL,
               where=True):
        no_out(f"np.{name}.reduce", out)
        a = traced(array)
        if dtype is not None:
            a = astype(a, dtype)
        axes = axes_of(a, axis)
        if where is not True:
            if identity is None:
                raise UnsupportedError(f"np.{name}.reduce(where=...) is not supported (it "
                                       "needs initial=); use np.where first", user_loc())
            a = np.where(where, a, identity)
        # sum and prod take dtype= to sum in (an int8 sum wraps in int8, where their default
        # would sum small ints in int64)
        in_dtype = {"dtype": dtype} if dtype is not None and name in ("add", "multiply") else {}
        result = reduce(a, axis=axes, keepdims=keepdims, **in_dtype)
        if initial is not _NO_INITIAL and initial is not None:
            result = getattr(np, name)(result, initial)
        return result

    return method


def _accumulator(name, running):
    def method(array, axis=0, dtype=None, out=None):
        no_out(f"np.{name}.accumulate", out)
        return running(array, axis=axis, dtype=dtype)

    return method


UFUNC_METHODS.update({
    (np.add, "reduce"): _reducer("add", reductions.sum, 0),
    (np.multiply, "reduce"): _reducer("multiply", reductions.prod, 1),
    (np.maximum, "reduce"): _reducer("maximum", reductions.amax),
    (np.minimum, "reduce"): _reducer("minimum", reductions.amin),
    (np.logaddexp, "reduce"): _reducer("logaddexp", _logsumexp, -np.inf),
    (np.logical_and, "reduce"): _reducer("logical_and", reductions.all_, True),
    (np.logical_or, "reduce"): _reducer("logical_or", reductions.any_, False),
    (np.add, "accumulate"): _accumulator("add", reductions.cumsum),
    (np.multiply, "accumulate"): _accumulator("multiply", reductions.cumprod),
})
