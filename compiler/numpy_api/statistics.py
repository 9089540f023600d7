"""Order statistics: np.median, quantile, percentile and their NaN-ignoring forms (nanmedian,
nanquantile, nanpercentile), with NumPy's methods "linear" (the default), "lower", "higher",
"nearest" and "midpoint", as composites of np.sort.

The reduced axes are moved last and merged into one lane, which is sorted (NaNs last, ties in
the stable order); the result reads the one or two order statistics it needs and interpolates
between them with NumPy's own formula, so the gradient goes to those entries (weights 1 - t and
t, as in PyTorch's quantile and JAX's; all of it to the one entry a discrete method picks, half
to each for "midpoint") and back through the sorting permutation. For the plain
functions a lane's length is known when tracing, so the statistics are slices (a symbolic
reduced axis becomes static: traced once per size, as np.argmax does); a lane holding a NaN
gives NaN with a zero gradient, as in JAX. The NaN-ignoring ones count each lane's numbers in
the kernel and gather the statistics at those counts (a batch axis stays symbolic); a lane of
NaNs only gives NaN.
"""

from __future__ import annotations

import operator

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.numpy_api.dispatch import axes_of, implements, no_out, traced
from compiler.tracer import Tracer
from compiler.user_code import user_loc


def _lanes(a, axis):
    """`a` with the axes `axis` names moved last and merged into one, and those axes."""
    a = traced(a)
    axes = axes_of(a, axis)
    kept = [k for k in range(a.ndim) if k not in axes]
    moved = np.transpose(a, kept + list(axes)) if a.ndim else a
    if len(axes) != 1:
        length = 1
        for k in axes:
            length *= operator.index(a.shape[k])
        moved = np.reshape(moved, tuple(a.shape[k] for k in kept) + (length,))
    return moved, axes


def _nan_padded(lanes):
    """Lanes that may be empty (of length 0, or a symbolic batch that is 0 at run time) with
    a NaN after their entries: the NaN-ignoring forms, which gather at indices below the count
    of numbers or at 0, then read an entry of an empty lane and count none, giving NumPy's
    NaN (NumPy warns; only np.quantile raises) where the gather went out of bounds."""
    n = lanes.shape[-1]
    if isinstance(n, int) and n > 0:
        return lanes
    return np.pad(lanes, [(0, 0)] * (lanes.ndim - 1) + [(0, 1)], constant_values=np.nan)


def _finish(result, q_ndim, axes, keepdims):
    """`result` (q's axes, then the kept axes) with the reduced axes back as 1s for keepdims."""
    if not keepdims or not axes:
        return result
    return np.expand_dims(result, tuple(q_ndim + k for k in axes))


def _nan_to_nan(ordered, result):
    """NaN where the sorted lane ends in a NaN (it holds one), with no gradient, as JAX."""
    if ordered.dtype.kind != "f":
        return result
    return np.where(np.isnan(ordered[..., -1]), np.nan, result)


METHODS = ("linear", "lower", "higher", "nearest", "midpoint")  # PyTorch's too
# the discrete methods: NumPy's virtual index, rounded to an order statistic
_PICK = {"lower": np.floor, "higher": np.ceil, "nearest": np.around}


def _method(name, method, weights, interpolation) -> str:
    """The method asked for (`interpolation` is its old name), if gradfuse computes it."""
    if interpolation is not None:
        method = interpolation
    if method not in METHODS:
        raise UnsupportedError(f"np.{name}(method={method!r}) is not supported: gradfuse "
                               f"computes the methods {', '.join(map(repr, METHODS))}",
                               user_loc())
    if weights is not None:
        raise UnsupportedError(f"np.{name}(weights=...) is not supported (NumPy allows it only "
                               "with method='inverted_cdf')", user_loc())
    return method


def _constant_q(name, q, scale=1):
    """q as a NumPy array (divided by `scale`, 100 for percentiles), checked as NumPy checks
    it, and whether it promotes weakly (a Python int or float: float32 data stays float32)."""
    if isinstance(q, Tracer) or np.asarray(q).dtype == object:
        raise UnsupportedError(f"np.{name}: q must be a constant (numbers, not traced values)",
                               user_loc())
    weak = type(q) in (int, float)
    q = np.asanyarray(q) if scale == 1 else np.true_divide(q, scale)
    if q.ndim > 2:
        raise TraceError("q must be a scalar or 1d", user_loc())
    if q.size and not (q.min() >= 0 and q.max() <= 1):
        what = "Quantiles must be in the range [0, 1]" if scale == 1 else \
            "Percentiles must be in the range [0, 100]"
        raise TraceError(what, user_loc())
    return q, weak


def _lerp(low, high, t, dtype=None):
    """NumPy's linear interpolation (numpy/lib/_function_base_impl.py, _lerp): from the
    nearer end, so t = 1 gives `high` exactly. A traced t is cast to `dtype` (if given) after
    1 - t is formed, as NumPy rounds a Python float t where it meets the data."""
    diff = high - low
    if not isinstance(t, Tracer):
        return high - diff * (1 - t) if t >= 0.5 else low + diff * t
    from_high, from_low = 1 - t, t
    if dtype is not None:
        from_high, from_low = from_high.astype(dtype), from_low.astype(dtype)
    return np.where(t >= 0.5, high - diff * from_high, low + diff * from_low)


def _static_quantile(ordered, n, q, weak, method):
    """The q-quantile of each sorted lane of static length n: slices and NumPy's lerp."""
    virtual = (n - 1) * q  # NumPy's virtual index, in q's dtype
    if np.issubdtype(virtual.dtype, np.integer):  # q of 0s and 1s: the statistic itself
        return ordered[..., int(virtual)]
    if method in _PICK:
        return ordered[..., int(_PICK[method](virtual))]
    if method == "midpoint":  # halfway between the statistics around the index, if two
        below, above = int(np.floor(virtual)), int(np.ceil(virtual))
        half = np.asarray(0.5, dtype=virtual.dtype)
        return ordered[..., below] if below == above else \
            _lerp(ordered[..., below], ordered[..., above], 0.5 if weak else half[()])
    if virtual >= n - 1:
        below = above = -1
    else:
        below = int(np.floor(virtual))
        above = below + 1
    gamma = np.asarray(virtual - below, dtype=virtual.dtype)
    t = float(gamma) if weak else gamma[()]
    return _lerp(ordered[..., below], ordered[..., above], t)


def _quantiles(name, a, q, weak, axis, keepdims, ignore_nan, method):
    lanes, axes = _lanes(a, axis)
    if ignore_nan:
        lanes = _nan_padded(lanes)
    ordered = np.sort(lanes, axis=-1)
    if ignore_nan:
        count = np.sum(lanes == lanes, axis=-1, keepdims=True)
        per_q = [_counted_quantile(ordered, count, value, weak, method)
                 for value in q.ravel()]
    else:
        n = operator.index(lanes.shape[-1])
        if n == 0:
            raise TraceError(f"np.{name} of an empty lane: index -1 is out of bounds for axis "
                             "0 with size 0", user_loc())
        per_q = [_nan_to_nan(ordered, _static_quantile(ordered, n, value, weak, method))
                 for value in q.ravel()]
    if q.ndim == 0:
        return _finish(per_q[0], 0, axes, keepdims)
    result = np.stack(per_q)
    if q.ndim == 2:
        result = np.reshape(result, q.shape + tuple(result.shape[1:]))
    return _finish(result, q.ndim, axes, keepdims)


def _counted_quantile(ordered, count, q, weak, method):
    """The q-quantile of the first `count` entries of each sorted lane (its numbers, NaNs
    sorted after them), `count` traced: NumPy's index rules computed by the kernel."""
    last = count - 1
    virtual = last.astype(q.dtype) * q if q.dtype.kind == "f" else last * q
    if virtual.dtype.kind != "f":  # q of 0s and 1s: the statistic itself
        low = high = np.maximum(virtual, 0)
        t = None
    elif method in _PICK:
        low = high = np.maximum(_PICK[method](virtual).astype(np.int64), 0)
        t = None
    elif method == "midpoint":
        floor = np.floor(virtual)
        low = np.maximum(floor.astype(np.int64), 0)
        high = np.maximum(np.ceil(virtual).astype(np.int64), 0)
        t = np.where(floor == virtual, 0, 0.5).astype(virtual.dtype)
    else:
        floor = np.floor(virtual)
        at_end = virtual >= last.astype(virtual.dtype)
        t = virtual - np.where(at_end, -1, floor)  # NumPy counts the last index as -1 here
        low = np.maximum(np.where(at_end, last, floor.astype(np.int64)), 0)
        high = np.maximum(np.where(at_end, last, floor.astype(np.int64) + 1), 0)
    low_value = np.take_along_axis(ordered, low, axis=-1)
    if t is None:
        result = low_value
    else:
        high_value = np.take_along_axis(ordered, high, axis=-1)
        # a weak q makes NumPy's t a Python float: it takes the data's float type
        result = _lerp(low_value, high_value, t,
                       np.result_type(ordered.dtype, 1.0) if weak else None)
    return np.where(count == 0, np.nan, result)[..., 0]


def _quantile_call(name, a, q, axis, out, method, keepdims, weights, interpolation, scale=1,
                   nan=False):
    """np.`name`'s arguments checked as NumPy checks them, then its quantiles (q divided by
    `scale`; the NaN-ignoring form with `nan`)."""
    no_out(name, out)
    method = _method(name, method, weights, interpolation)
    q, weak = _constant_q(name, q, scale)
    return _quantiles(name, a, q, weak, axis, keepdims, nan and _ignoring_nan(a), method)


@implements(np.quantile)
def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False,
             *, weights=None, interpolation=None):
    """The q-quantiles of `a` along `axis` (q's axes first), by one of METHODS."""
    return _quantile_call("quantile", a, q, axis, out, method, keepdims, weights, interpolation)


@implements(np.percentile)
def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
               keepdims=False, *, weights=None, interpolation=None):
    """np.quantile of q / 100."""
    return _quantile_call("percentile", a, q, axis, out, method, keepdims, weights,
                          interpolation, scale=100)


@implements(np.median)
def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """The middle of each sorted lane, or the mean of its two middle entries (each gets half
    the gradient)."""
    no_out("median", out)
    lanes, axes = _lanes(a, axis)
    n = operator.index(lanes.shape[-1])
    ordered = np.sort(lanes, axis=-1)
    # NumPy takes the mean of the middle one or two: the mean of nothing, NaN, for n = 0
    middle = np.mean(ordered[..., (n - 1) // 2:n // 2 + 1], axis=-1)
    if n:
        middle = _nan_to_nan(ordered, middle)
    return _finish(middle, 0, axes, keepdims)


def _ignoring_nan(a) -> bool:
    return traced(a).dtype.kind == "f"


@implements(np.nanquantile)
def nanquantile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                keepdims=False, *, weights=None, interpolation=None):
    """np.quantile of each lane's numbers (NaNs left out); NaN for a lane of NaNs only."""
    return _quantile_call("nanquantile", a, q, axis, out, method, keepdims, weights,
                          interpolation, nan=True)


@implements(np.nanpercentile)
def nanpercentile(a, q, axis=None, out=None, overwrite_input=False, method="linear",
                  keepdims=False, *, weights=None, interpolation=None):
    """np.nanquantile of q / 100."""
    return _quantile_call("nanpercentile", a, q, axis, out, method, keepdims, weights,
                          interpolation, scale=100, nan=True)


@implements(np.nanmedian)
def nanmedian(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """np.median of each lane's numbers (NaNs left out); NaN for a lane of NaNs only."""
    no_out("nanmedian", out)
    if not _ignoring_nan(a):
        return median(a, axis=axis, keepdims=keepdims)
    lanes, axes = _lanes(a, axis)
    lanes = _nan_padded(lanes)
    ordered = np.sort(lanes, axis=-1)
    count = np.sum(lanes == lanes, axis=-1, keepdims=True)
    upper = count // 2
    odd = count % 2 == 1
    lower = np.maximum(np.where(odd, upper, upper - 1), 0)
    low = np.take_along_axis(ordered, lower, axis=-1)
    high = np.take_along_axis(ordered, upper, axis=-1)
    middle = np.where(odd, low, (low + high) / 2.0)
    return _finish(np.where(count == 0, np.nan, middle)[..., 0], 0, axes, keepdims)
