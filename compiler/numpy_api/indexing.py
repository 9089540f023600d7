"""Indexing: basic slicing, integers, None and Ellipsis, integer-array and constant boolean-mask
(advanced) indices in any combination, with NumPy's result shapes; np.take, np.take_along_axis.

Advanced indices need no op of their own. Basic entries are a `slice` (and a `reshape`); the
axes that integer arrays index are merged into one, and a `take` along it reads the
position the arrays name together (`x[i, j]` on an (A, B) array reads `x.reshape(A * B)` at
`i * B + j`). Each traced index array is first read through `np.arange(d)[i]`, a take that
wraps negative indices and that the kernel checks against the axis; constant indices are
checked when the function is traced, naming the user's line.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from compiler.errors import IndexTypeError, TraceError, UnsupportedError
from compiler.ir import Sym
from compiler.numpy_api.dispatch import axes_of, implements, no_out, traced
from compiler.numpy_api.layout import reshape, transpose
from compiler.ops import bind
from compiler.tracer import Tracer
from compiler.user_code import user_loc


@implements(np.take)
def take(a, indices, axis=None, out=None, mode=None):
    no_out("take", out)
    if mode not in (None, "raise", "clip", "wrap"):
        raise UnsupportedError(f"np.take(mode={mode!r}): mode must be 'raise', 'clip' or "
                               "'wrap'", user_loc())
    a = traced(a)
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    axis = axes_of(a, axis)[0]
    if mode in ("clip", "wrap"):
        indices = _into_range(indices, a.shape[axis], mode)
    return bind("take", a, index_array(indices, a, axis), axis=axis)


def _into_range(indices, n, mode):
    """np.take's modes: 'clip' moves an index to the nearest end (negative ones to 0, as
    NumPy's clip does), 'wrap' takes it modulo the axis length."""
    if not isinstance(indices, Tracer):
        indices = np.asarray(indices)
        if indices.dtype == object:  # a list holding traced values
            indices = traced(indices)
        elif isinstance(n, int):  # constants into a static axis: done now
            return np.clip(indices, 0, n - 1) if mode == "clip" else np.mod(indices, n)
        else:
            indices = traced(indices)
    if not np.issubdtype(indices.dtype, np.integer):
        raise IndexTypeError(f"indices must be integers, got {indices.dtype}", user_loc())
    last = n - 1  # a symbolic n stays symbolic: a traced size
    return np.clip(indices, 0, last) if mode == "clip" else np.mod(indices, n)


@implements(np.take_along_axis)
def take_along_axis(arr, indices, axis):
    arr = traced(arr)
    axis = axes_of(arr, axis)[0]
    return bind("take_along_axis", arr, index_array(indices, arr, axis), axis=axis)


def index_array(indices, x: Tracer, axis: int):
    """Integer indices into `axis` of `x`: a traced array as it is (the kernel checks it), a
    constant as int64, checked against a static axis now."""
    if isinstance(indices, Tracer):
        if not np.issubdtype(indices.dtype, np.integer):
            raise IndexTypeError(f"indices must be integers, got {indices.dtype}", user_loc())
        return indices
    array = np.asarray(indices)
    if array.dtype == object:  # a list holding traced values: np.array([i, j])
        return index_array(traced(array), x, axis)
    if not np.issubdtype(array.dtype, np.integer):
        if array.size == 0:  # np.array([]) is float64: an empty index
            return array.astype(np.int64)
        raise IndexTypeError(f"indices must be integers, got {array.dtype}", user_loc())
    _check_bounds(array, x.type.shape[axis], axis)
    return array.astype(np.int64)


def _check_bounds(array: np.ndarray, n, axis: int) -> None:
    """Constant indices against a static axis length, at the user's line (a symbolic axis is
    checked by the kernel)."""
    if isinstance(n, Sym) or array.size == 0:
        return
    bad = array[(array < -n) | (array >= n)]
    if bad.size:
        raise TraceError(f"index {bad.flat[0]} is out of bounds for axis {axis} with size {n}",
                         user_loc())


def getitem(x: Tracer, key):
    """x[key] with NumPy's rules: basic entries view, integer arrays (and ints beside them)
    gather, broadcasting together; the gathered axes come first when a slice separates them."""
    entries = key if isinstance(key, tuple) else (key,)
    key = expand_key(x, key)
    if any(_is_index_array(k) for k in key):
        return _advanced(x, key)
    result = _basic(x, key)
    if result.ndim == 0 and result is not x and not any(k is Ellipsis for k in entries):
        _not_a_view(result)  # x[i, j] is a NumPy scalar: a copy, blind to later changes of x
    return result


def _not_a_view(value: Tracer) -> None:
    builder = value.builder
    builder.view_sources.pop(id(value), None)
    if builder.copies is not None:
        builder.copies.views.pop(id(value), None)


def _basic(x: Tracer, key: tuple) -> Tracer:
    """Slices, integers and None: one `slice` and a `reshape` that drops and adds axes."""
    specs, shape = basic_region(x, key)
    result = _sliced(x, specs)
    if result.type.shape != shape:
        result = bind("reshape", result, shape=shape)
    return result


def basic_region(x: Tracer, key: tuple) -> tuple[list, tuple]:
    """For an expanded key of slices, integers and None: the (start, stop, step) it takes of
    each axis of `x`, and the shape of x[key]."""
    specs = []
    for axis, k in enumerate(k for k in key if k is not None):
        if isinstance(k, slice):
            specs.append(_slice_spec(k, x.type.shape[axis], x.shape[axis]))
        else:
            i = _int_index(x, axis, k)
            specs.append((i, i + 1, 1))
    shape, axis = [], 0
    for k in key:
        if k is None:
            shape.append(1)
            continue
        if isinstance(k, slice):
            start, stop, step = specs[axis]
            d = x.type.shape[axis]
            shape.append(d if isinstance(d, Sym) else len(range(start, stop, step)))
        axis += 1
    return specs, tuple(shape)


def is_basic(x: Tracer, key) -> bool:
    """Whether `key` holds only slices, integers, None and Ellipsis."""
    return not any(_is_index_array(k) for k in expand_key(x, key))


def _advanced(x: Tracer, key: tuple) -> Tracer:
    """Integer arrays (and integers beside them) index their axes together: the axes are
    merged into one and a `take` reads the position the indices name in it."""
    if any(k is None for k in key):  # a new axis is a full slice of a size-1 axis
        dims = iter(x.type.shape)
        x = bind("reshape", x, shape=tuple(1 if k is None else next(dims) for k in key))
        key = tuple(slice(None) if k is None else k for k in key)
    x = _sliced(x, [_slice_spec(k, x.type.shape[a], x.shape[a]) if isinstance(k, slice)
                    else (0, x.type.shape[a], 1) for a, k in enumerate(key)])
    gathered = [a for a, k in enumerate(key) if not isinstance(k, slice)]
    if len(gathered) == 1:  # one index array: take reads, wraps and checks it itself
        a = gathered[0]
        return bind("take", x, index_array(key[a], x, a), axis=a)
    if gathered != list(range(gathered[0], gathered[-1] + 1)):
        # Separated by a slice: NumPy puts the gathered axes first.
        rest = [a for a in range(x.ndim) if a not in gathered]
        x = transpose(x, gathered + rest)
        key = tuple(key[a] for a in gathered + rest)
        gathered = list(range(len(gathered)))
    first, last = gathered[0], gathered[-1]
    dims = [x.shape[a].__index__() for a in gathered]  # merged axes need static sizes
    position = 0
    for a, stride in zip(gathered, _strides(dims)):
        position = position + _checked_position(key[a], x, a) * stride
    shape = x.type.shape
    merged = bind("reshape", x, shape=shape[:first] + (math.prod(dims),) + shape[last + 1:])
    return bind("take", merged, position, axis=first)


def _checked_position(k, x: Tracer, axis: int):
    """Index entry `k` of `axis` as positions in 0..d-1: a constant is checked and wrapped
    now; a traced array is read through arange(d), which wraps it, and which the kernel
    checks (an index into a merged axis could otherwise land in a neighbouring row)."""
    d = x.type.shape[axis]
    if _is_int(k):
        return _int_index(x, axis, k)
    if isinstance(k, Tracer):
        return bind("take", np.arange(d, dtype=np.int64), index_array(k, x, axis), axis=0)
    array = index_array(k, x, axis)
    return np.where(array < 0, array + d, array)


def _strides(dims: list[int]) -> list[int]:
    """C-order strides, in elements, of an array of shape `dims`."""
    return [math.prod(dims[i + 1:]) for i in range(len(dims))]


def _sliced(x: Tracer, specs: list) -> Tracer:
    if all(spec == (0, d, 1) for spec, d in zip(specs, x.type.shape)):
        return x
    return bind("slice", x, index=tuple(specs))


def _int_index(x: Tracer, axis: int, k) -> int:
    n = x.shape[axis].__index__()
    if not -n <= k < n:
        raise TraceError(f"index {k} is out of bounds for axis {axis} with size {n}", user_loc())
    return int(k) % n


def expand_key(x: Tracer, key) -> tuple:
    """The key (a tuple of entries, or one entry) with Ellipsis expanded, trailing full slices
    added, and constant boolean masks as the integer arrays of their True entries (NumPy's
    meaning of a mask)."""
    key = tuple(_entry(k) for k in (key if isinstance(key, tuple) else (key,)))
    if builtins.sum(k is Ellipsis for k in key) > 1:
        raise TraceError("an index can only have a single ellipsis ('...')", user_loc())
    used = builtins.sum(_width(k) for k in key)
    if used > x.ndim:
        raise TraceError(f"too many indices for array: array is {x.ndim}-dimensional, but "
                         f"{used} were indexed", user_loc())
    fill = (slice(None),) * (x.ndim - used)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + fill + tuple(k for k in key[i + 1:] if k is not Ellipsis)
    else:
        key = key + fill
    expanded, axis = [], 0
    for k in key:
        if _is_mask(k):
            for j, n in enumerate(k.shape):
                d = x.shape[axis + j].__index__()
                if d != n:
                    raise TraceError(f"boolean index did not match indexed array along axis "
                                     f"{axis + j}; size of axis is {d} but size of "
                                     f"corresponding boolean axis is {n}", user_loc())
            expanded.extend(k.nonzero())
        else:
            expanded.append(k)
        axis += _width(k)
    return tuple(expanded)


def _entry(k):
    """An index entry as getitem reads it: lists as arrays, traced values among them traced."""
    if isinstance(k, Tracer):
        if k.dtype == np.bool_:
            raise UnsupportedError("reading x[mask] with a traced boolean mask is not "
                                   "supported (boolean masks have a data-dependent shape): "
                                   "use np.where(mask, x, 0), e.g. "
                                   "np.sum(np.where(mask, x, 0)) to sum the masked entries",
                                   user_loc())
        return k
    if isinstance(k, (list, np.ndarray)):
        array = np.asarray(k)
        if array.dtype == object:  # a list holding traced values: x[[i, j]]
            return traced(array)
        if array.dtype == np.bool_ and array.ndim == 0:
            raise UnsupportedError("indexing with a 0-d boolean is not supported", user_loc())
        return array
    return k


def _width(k) -> int:
    """How many axes of the array an entry indexes."""
    if k is None or k is Ellipsis:
        return 0
    return k.ndim if _is_mask(k) else 1


def _is_mask(k) -> bool:
    return isinstance(k, np.ndarray) and k.dtype == np.bool_


def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, bool)


def _is_index_array(k) -> bool:
    if isinstance(k, Tracer):
        if not np.issubdtype(k.dtype, np.integer):
            raise TraceError(f"arrays used as indices must be of integer type, got {k.dtype}",
                             user_loc())
        return True
    if isinstance(k, (list, np.ndarray)):
        array = np.asarray(k)
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise TraceError("arrays used as indices must be of integer (or boolean) type, "
                             f"got {array.dtype}", user_loc())
        return True
    if k is None or k is Ellipsis or isinstance(k, slice) or _is_int(k):
        return False
    raise UnsupportedError(f"indexing with {type(k).__name__} is not supported", user_loc())


def _slice_spec(k: slice, d, dim_value):
    if any(isinstance(bound, Tracer) for bound in (k.start, k.stop, k.step)):
        for bound in (k.start, k.stop, k.step):
            if isinstance(bound, Tracer):  # x[:n] with n a Python int argument: static
                bound.builder.concretize(bound)
        raise UnsupportedError(
            "a slice whose bounds are traced values (x[i:i + 2] with i an argument or a loop "
            "index) is not supported: the length of the result must be known when tracing. "
            "Take the positions instead, np.take(x, i + np.arange(2), axis=0), which checks "
            "them against the axis when the kernel runs", user_loc())
    if isinstance(d, Sym):
        if k.start in (None, 0) and k.stop is None and k.step in (None, 1):
            return (0, d, 1)
        dim_value.__index__()  # a partial slice of a symbolic axis: specialize the size
    start, stop, step = k.indices(d)
    return (start, stop, step)
