"""Indexing: basic slicing, integers, None and Ellipsis, integer-array gathers, np.take."""

from __future__ import annotations

import builtins

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ir import Sym
from compiler.numpy_api.dispatch import implements, no_out, traced
from compiler.numpy_api.layout import reshape
from compiler.ops import bind
from compiler.tracer import Tracer, user_loc


@implements(np.take)
def take(a, indices, axis=None, out=None, mode=None):
    no_out("take", out)
    a = traced(a)
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    return bind("take", a, _index_array(indices), axis=axis % a.ndim)


@implements(np.take_along_axis)
def take_along_axis(arr, indices, axis):
    arr = traced(arr)
    return bind("take_along_axis", arr, _index_array(indices), axis=axis % arr.ndim)


def _index_array(indices):
    if isinstance(indices, Tracer):
        return indices
    array = np.asarray(indices)
    if not np.issubdtype(array.dtype, np.integer):
        raise TraceError(f"indices must be integers, got {array.dtype}", user_loc())
    return array.astype(np.int64)


def getitem(x: Tracer, key):
    """Basic slicing, integers, None and Ellipsis, plus one integer-array index (a gather)."""
    key = _expand_key(x, key if isinstance(key, tuple) else (key,))
    specs, array_axis, array_index = [], None, None
    for axis, k in enumerate(k for k in key if k is not None):
        d = x.type.shape[axis]
        if isinstance(k, slice):
            specs.append(_slice_spec(k, d, x.shape[axis]))
        elif _is_int(k):
            n = x.shape[axis].__index__()
            if not -n <= k < n:
                raise TraceError(f"index {k} is out of bounds for axis {axis} with size {n}",
                                 user_loc())
            specs.append((int(k) % n, int(k) % n + 1, 1))
        elif _is_index_array(k):
            if array_axis is not None:
                raise UnsupportedError("only one integer-array index is supported; use "
                                       "np.take_along_axis for paired indices", user_loc())
            array_axis, array_index = axis, k
            specs.append((0, d, 1))
        else:
            raise UnsupportedError(f"indexing with {type(k).__name__} is not supported "
                                   "(boolean masks have a data-dependent shape: use np.where)",
                                   user_loc())
    if array_axis is not None and any(_is_int(k) for k in key):
        raise UnsupportedError("mixing integer and integer-array indices is not supported; "
                               "index in two steps", user_loc())

    result = x
    if any(spec != (0, d, 1) for spec, d in zip(specs, x.type.shape)):
        result = bind("slice", x, index=tuple(specs))
    sliced = result.type.shape
    if array_axis is not None:
        result = bind("take", result, _index_array(array_index), axis=array_axis)
        gathered = result.type.shape[array_axis:array_axis + result.type.ndim - x.ndim + 1]

    shape, axis = [], 0
    for k in key:
        if k is None:
            shape.append(1)
            continue
        if _is_index_array(k):
            shape.extend(gathered)
        elif not _is_int(k):
            shape.append(sliced[axis])
        axis += 1
    if result.type.shape != tuple(shape):
        result = bind("reshape", result, shape=tuple(shape))
    return result


def _expand_key(x: Tracer, key: tuple) -> tuple:
    """The key with Ellipsis expanded and trailing full slices added."""
    used = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > x.ndim:
        raise TraceError(f"too many indices for array: array is {x.ndim}-dimensional, but "
                         f"{used} were indexed", user_loc())
    fill = (slice(None),) * (x.ndim - used)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        return key[:i] + fill + key[i + 1:]
    return key + fill


def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, bool)


def _is_index_array(k) -> bool:
    if isinstance(k, Tracer):
        return np.issubdtype(k.dtype, np.integer)
    if isinstance(k, (list, np.ndarray)):
        return np.issubdtype(np.asarray(k).dtype, np.integer)
    return False


def _slice_spec(k: slice, d, dim_value):
    if isinstance(d, Sym):
        if k.start in (None, 0) and k.stop is None and k.step in (None, 1):
            return (0, d, 1)
        dim_value.__index__()  # a partial slice of a symbolic axis: specialize the size
    start, stop, step = k.indices(d)
    return (start, stop, step)
