"""Arrays rearranged from one input: `pad`, `roll`, `tile`, `repeat`, `sliding_window_view`.

Each output element is some input element (or a constant), at positions known at trace
time. So `roll`, `tile`, `repeat` and the edge/reflect/symmetric/wrap modes of `pad` are a
gather per axis with constant indices, computed by NumPy itself on `np.arange(n)` (so they
are NumPy's own semantics): a view that consumers read in place, whose adjoint is a
scatter-add. `pad` with a constant writes the input into zeros (`pad_slice`, the adjoint
of slicing) and fills the border with `np.where`. Sliding windows are a view of their own
(compiler/ops/windows.py).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.numpy_api.dispatch import axes_of, fresh, implements, traced
from compiler.numpy_api.layout import reshape
from compiler.numpy_api.matrices import static_length
from compiler.ops import bind
from compiler.tracer import Tracer
from compiler.user_code import user_loc


def gather(a, positions, axis: int):
    """a[..., positions, ...] along `axis` for constant `positions` (the input itself when they
    are 0, 1, ..., n-1)."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.ndim == 1 and positions.shape[0] == a.shape[axis] and \
            np.array_equal(positions, np.arange(positions.shape[0])):
        return fresh(a)  # NumPy's np.roll, np.pad, np.tile copy
    return bind("take", a, positions, axis=axis)


def _pad_widths(pad_width, ndim: int) -> np.ndarray:
    """NumPy's forms of pad widths (n, (before, after), ((b0, a0), (b1, a1), ...)) as one
    (before, after) row per axis."""
    if isinstance(pad_width, Tracer):
        raise TraceError("pad widths must be known at trace time, not traced", user_loc())
    widths = np.asarray(pad_width)
    if not np.issubdtype(widths.dtype, np.integer):
        raise TraceError(f"pad widths must be integers, got {pad_width!r}", user_loc())
    try:
        widths = np.broadcast_to(widths, (ndim, 2))
    except ValueError:
        raise TraceError(f"pad widths {pad_width!r} do not fit an array of {ndim} dimensions",
                         user_loc()) from None
    if (widths < 0).any():
        raise TraceError("index can't contain negative values", user_loc())
    return widths.astype(int)


_GATHER_MODES = ("edge", "reflect", "symmetric", "wrap")


@implements(np.pad)
def pad(array, pad_width, mode="constant", **kwargs):
    a = traced(array)
    widths = _pad_widths(pad_width, a.ndim)
    if mode == "constant":
        return _pad_constant(a, widths, kwargs.pop("constant_values", 0), kwargs)
    if mode not in _GATHER_MODES:
        raise UnsupportedError(f"np.pad(mode={mode!r}) is not supported; gradfuse pads with "
                               f"modes 'constant', {', '.join(map(repr, _GATHER_MODES))}",
                               user_loc())
    if kwargs.get("reflect_type", "even") != "even":
        raise UnsupportedError("np.pad(reflect_type='odd') is not supported", user_loc())
    kwargs.pop("reflect_type", None)
    _no_more(mode, kwargs)
    padded = fresh(a)
    for axis, (before, after) in enumerate(widths):
        if before or after:
            n = static_length(a, axis)
            padded = gather(padded, np.pad(np.arange(n), (before, after), mode=mode), axis)
    return padded


def _no_more(mode, kwargs) -> None:
    if kwargs:
        raise UnsupportedError(f"np.pad(mode={mode!r}) argument(s) {sorted(kwargs)} are not "
                               "supported", user_loc())


def _pad_constant(a, widths, constant_values, kwargs):
    _no_more("constant", kwargs)
    if not widths.any():
        return fresh(a)
    # Unpadded axes keep their length (a batch axis stays symbolic); the border's mask and
    # fill are constants over the padded axes, of size 1 along the others.
    padded_axes = [bool(before or after) for before, after in widths]
    lengths = [static_length(a, axis) if padded else d
               for axis, (padded, d) in enumerate(zip(padded_axes, a.type.shape))]
    index = tuple((int(before), int(before) + n, 1) if padded else (0, n, 1)
                  for (before, _), n, padded in zip(widths, lengths, padded_axes))
    shape = tuple(n + int(before) + int(after) if padded else n
                  for (before, after), n, padded in zip(widths, lengths, padded_axes))
    padded = bind("pad_slice", a, shape=shape, index=index)  # the input written into zeros
    if isinstance(constant_values, Tracer):
        if constant_values.ndim != 0:
            raise UnsupportedError("a traced constant_values must be a scalar", user_loc())
    elif not np.asarray(constant_values).any():
        return padded
    small = [n if padded else 1 for n, padded in zip(lengths, padded_axes)]
    pairs = [tuple(w) for w in widths]
    inside = np.pad(np.ones(small, dtype=bool), pairs, constant_values=False)
    fill = constant_values
    if not isinstance(fill, Tracer):  # NumPy casts the constants to the array's dtype
        fill = np.pad(np.zeros(small), pairs, constant_values=fill).astype(a.dtype)
    return np.where(inside, padded, fill)


@implements(np.roll)
def roll(a, shift, axis=None):
    a = traced(a)
    if isinstance(shift, Tracer):
        raise TraceError("np.roll's shift must be known at trace time, not traced", user_loc())
    if axis is None:
        return reshape(roll(reshape(a, (-1,)), shift, 0), a.shape)
    shifts, axes = np.broadcast_arrays(np.asarray(shift), np.asarray(axis))
    total: dict[int, int] = {}
    for s, ax in zip(shifts.ravel(), axes.ravel()):
        ax = axes_of(a, int(ax))[0]
        total[ax] = total.get(ax, 0) + int(s)
    for ax, s in sorted(total.items()):
        a = gather(a, np.roll(np.arange(static_length(a, ax)), s), ax)
    return a


@implements(np.tile)
def tile(A, reps):
    a = traced(A)
    reps = tuple(int(r) for r in np.atleast_1d(reps))
    if len(reps) > a.ndim:
        a = reshape(a, (1,) * (len(reps) - a.ndim) + a.shape)
    reps = (1,) * (a.ndim - len(reps)) + reps
    a = fresh(a)
    for axis, r in enumerate(reps):
        if r != 1:
            a = gather(a, np.tile(np.arange(static_length(a, axis)), r), axis)
    return a


@implements(np.repeat)
def repeat(a, repeats, axis=None):
    a = traced(a)
    if isinstance(repeats, Tracer):
        raise TraceError("np.repeat's repeats must be known at trace time: traced repeats "
                         "would give a result whose shape depends on the data", user_loc())
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    axis = axes_of(a, axis)[0]
    return gather(a, np.repeat(np.arange(static_length(a, axis)), repeats), axis)


@implements(np.lib.stride_tricks.sliding_window_view)
def sliding_window_view(x, window_shape, axis=None, *, subok=False, writeable=False):
    """Windows as a view (compiler/ops/windows.py): each window's axis appended at the end."""
    if writeable:
        raise UnsupportedError("sliding_window_view(writeable=True): traced arrays are "
                               "immutable", user_loc())
    x = traced(x)
    window_shape = tuple(int(w) for w in np.atleast_1d(window_shape))
    if axis is None:
        if len(window_shape) != x.ndim:
            raise TraceError(f"Since axis is `None`, must provide window_shape for all "
                             f"dimensions of `x`; got {len(window_shape)} window_shape "
                             f"elements and `x.ndim` is {x.ndim}.", user_loc())
        axes = tuple(range(x.ndim))
    else:
        axes = tuple(np.atleast_1d(axis).tolist())
        if len(axes) != len(window_shape):
            raise TraceError(f"Must provide matching length window_shape and axis; got "
                             f"{len(window_shape)} window_shape elements and {len(axes)} "
                             "axes elements.", user_loc())
    ndim = x.ndim
    for ax, window in zip(axes, window_shape):
        x = bind("sliding_window", x, axis=axes_of(x, ax if ax >= 0 else ax + ndim)[0],
                 window=window)
    return x


@implements(np.flip)
def flip(m, axis=None):
    """The array reversed along `axis` (every axis by default): a view, as in NumPy."""
    m = traced(m)
    axes = range(m.ndim) if axis is None else axes_of(m, axis)
    key = tuple(slice(None, None, -1) if k in set(axes) else slice(None) for k in range(m.ndim))
    return m[key]


@implements(np.fliplr)
def fliplr(m):
    return flip(m, 1)


@implements(np.flipud)
def flipud(m):
    return flip(m, 0)
