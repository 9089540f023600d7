"""NaN-ignoring reductions and scans (np.nansum, nanmean, nanmax, nanmin, nanprod, nanvar,
nanstd, nanargmax, nanargmin, nancumsum, nancumprod) as composites of the plain ones.

Each replaces its NaNs by the value that leaves its reduction unchanged (0 for sums, 1 for
products, -inf for max, ...) through `np.where`, so the NaN entries get an exact zero gradient
(as in JAX). Arrays that cannot hold NaN (integers, booleans) go to the plain function, as
NumPy does. Lanes holding only NaN give what NumPy gives (0 for nansum, 1 for nanprod, NaN
for the others), except nanargmax/nanargmin: NumPy raises ValueError, which a kernel cannot
do for data it has not seen, so gradfuse answers -1 there, as JAX does.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.numpy_api.dispatch import implements, no_out, traced
from compiler.numpy_api.reductions import float_dtype, root_of_variance
from compiler.user_code import user_loc


def _can_hold_nan(a) -> bool:
    return a.dtype.kind in "fc"


def _inexact(name, dtype):
    """NumPy's TypeError for nanmean/nanvar of floats in an int dtype= (it would hold no NaN)."""
    if dtype is not None and np.dtype(dtype).kind not in "fc":
        raise TraceError(f"np.{name}: if a is inexact, then dtype must be inexact (NumPy's "
                         "TypeError)", user_loc())


def _selected(a, where):
    """True where an entry takes part: not NaN, and chosen by `where=` (if given)."""
    present = a == a  # only NaN differs from itself
    if where is None or where is True:
        return present
    return present & where


def _filled(a, value, where=None):
    """`a` with its NaNs (and entries `where` leaves out) replaced by `value`."""
    return np.where(_selected(a, where), a, value)


def _nan_filled(name, plain, identity):
    def nan_filled(a, axis=None, dtype=None, out=None, keepdims=False, initial=None,
                   where=None):
        no_out(name, out)
        a = traced(a)
        if _can_hold_nan(a):
            a = _filled(a, identity)
        return plain(a, axis=axis, dtype=dtype, keepdims=keepdims, initial=initial, where=where)

    nan_filled.__name__ = nan_filled.__qualname__ = name
    nan_filled.__doc__ = f"np.{name}: NaNs counted as {identity}, the reduction's identity."
    return nan_filled


nansum = implements(np.nansum)(_nan_filled("nansum", np.sum, 0))
nanprod = implements(np.nanprod)(_nan_filled("nanprod", np.prod, 1))


def _nan_extreme(name, plain, fmax_or_fmin, empty):
    def nan_extreme(a, axis=None, out=None, keepdims=False, initial=None, where=None):
        no_out(name, out)
        a = traced(a)
        if not _can_hold_nan(a):
            return plain(a, axis=axis, keepdims=keepdims, initial=initial, where=where)
        if where is not None and where is not True and initial is None:
            plain(a, where=where)  # NumPy's error: where= needs initial=
        # NaNs (and unchosen entries) become the reduction's identity; a lane with none left
        # is NaN, which initial= then replaces (NumPy's nanmax is np.fmax.reduce).
        chosen = _selected(a, where)
        result = plain(np.where(chosen, a, empty), axis=axis, keepdims=keepdims)
        result = np.where(np.any(chosen, axis=axis, keepdims=keepdims), result, np.nan)
        return result if initial is None else fmax_or_fmin(result, initial)

    nan_extreme.__name__ = nan_extreme.__qualname__ = name
    nan_extreme.__doc__ = (f"np.{name}: NaNs ignored; a lane with nothing left is NaN (or "
                           "`initial`).")
    return nan_extreme


nanmax = implements(np.nanmax)(_nan_extreme("nanmax", np.max, np.fmax, -np.inf))
nanmin = implements(np.nanmin)(_nan_extreme("nanmin", np.min, np.fmin, np.inf))


def _nan_arg_extreme(name, arg, empty):
    def nan_arg(a, axis=None, out=None, *, keepdims=False):
        no_out(name, out)
        a = traced(a)
        if not _can_hold_nan(a):
            return arg(a, axis=axis, keepdims=keepdims)
        present = a == a
        # NumPy's own definition: the arg of the array with NaN replaced by -inf (+inf)
        position = arg(np.where(present, a, empty), axis=axis, keepdims=keepdims)
        return np.where(np.any(present, axis=axis, keepdims=keepdims), position, -1)

    nan_arg.__name__ = nan_arg.__qualname__ = name
    nan_arg.__doc__ = (f"np.{name}: NaNs ignored; -1 for a lane of NaNs only (NumPy raises "
                       "ValueError, as a kernel cannot), as JAX.")
    return nan_arg


nanargmax = implements(np.nanargmax)(_nan_arg_extreme("nanargmax", np.argmax, -np.inf))
nanargmin = implements(np.nanargmin)(_nan_arg_extreme("nanargmin", np.argmin, np.inf))


def _count(chosen, axis, keepdims, dtype):
    return np.sum(chosen, axis=axis, keepdims=keepdims).astype(dtype)


@implements(np.nanmean)
def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=None):
    """The mean of the entries that are not NaN; NaN for a lane of NaNs only (0 / 0)."""
    no_out("nanmean", out)
    a = traced(a)
    if not _can_hold_nan(a):
        return np.mean(a, axis=axis, dtype=dtype, keepdims=keepdims, where=where)
    _inexact("nanmean", dtype)
    chosen = _selected(a, where)
    total = np.sum(a, axis=axis, dtype=dtype, keepdims=keepdims, where=chosen)
    # NumPy divides the total, in its dtype, by the count
    return total / _count(chosen, axis, keepdims, total.dtype)


@implements(np.nanvar)
def nanvar(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None,
           mean=None, correction=None):
    """The variance of the entries that are not NaN, over count - ddof; NaN where that is not
    positive (NumPy's rule for nanvar, unlike var's)."""
    no_out("nanvar", out)
    if mean is not None:
        raise UnsupportedError("np.nanvar(mean=...) is not supported; it is computed",
                               user_loc())
    if correction is not None:
        ddof = correction  # NumPy 2's Array API name for ddof
    float_dtype("nanvar", dtype)
    a = traced(a)
    if not _can_hold_nan(a):
        return np.var(a, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims,
                      where=where)
    chosen = _selected(a, where)
    total = np.sum(a, axis=axis, dtype=dtype, keepdims=True, where=chosen)
    average = total / _count(chosen, axis, True, total.dtype)
    deviations = a - average
    if deviations.dtype != a.dtype:  # NumPy subtracts into a copy of `a`, in a's dtype
        deviations = deviations.astype(a.dtype)
    centered = np.where(chosen, deviations, 0)
    squares = np.sum(centered * centered, axis=axis, dtype=dtype, keepdims=keepdims)
    dof = _count(chosen, axis, keepdims, squares.dtype) - ddof
    return np.where(dof > 0, squares / dof, np.nan)


@implements(np.nanstd)
def nanstd(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=None,
           mean=None, correction=None):
    """The square root of np.nanvar (with np.std's gradient where it is 0)."""
    float_dtype("nanstd", dtype)
    return root_of_variance(nanvar(a, axis=axis, dtype=dtype, out=out, ddof=ddof,
                                   keepdims=keepdims, where=where, mean=mean,
                                   correction=correction))


@implements(np.nancumsum)
def nancumsum(a, axis=None, dtype=None, out=None):
    """Running sums with NaNs counted as 0."""
    no_out("nancumsum", out)
    a = traced(a)
    return np.cumsum(_filled(a, 0) if _can_hold_nan(a) else a, axis=axis, dtype=dtype)


@implements(np.nancumprod)
def nancumprod(a, axis=None, dtype=None, out=None):
    """Running products with NaNs counted as 1."""
    no_out("nancumprod", out)
    a = traced(a)
    return np.cumprod(_filled(a, 1) if _can_hold_nan(a) else a, axis=axis, dtype=dtype)
