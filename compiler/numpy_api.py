"""The NumPy surface of traced arrays: which ufuncs, functions and indexing forms map to which ops.

Primitives bind one op; composites (mean, var, std, clip, square, stack,
expand_dims, ...) are plain NumPy-style code over primitives and need no rules
of their own. Anything not listed raises an error naming the function.
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ir import Sym
from compiler.ops import bind
from compiler.ops.registry import ShapeError
from compiler.ops.shapes import normalize_axes
from compiler.tracer import SymDim, Tracer, current_builder, user_loc


def _axes(x, axis):
    try:
        return normalize_axes(axis, x.ndim)
    except ShapeError as err:
        raise TraceError(str(err), user_loc()) from None


def _no_out(name, out=None, dtype=None, **kwargs):
    if out is not None:
        raise UnsupportedError(f"{name}(out=...) is not supported: traced arrays are immutable",
                               user_loc())
    unknown = {k: v for k, v in kwargs.items() if v is not None and k not in ("where",)}
    if kwargs.get("where") not in (None, True):
        raise UnsupportedError(f"{name}(where=...) is not supported; use np.where", user_loc())
    if unknown:
        raise UnsupportedError(f"{name}() argument(s) {sorted(unknown)} are not supported",
                               user_loc())


def _traced(x) -> Tracer:
    if isinstance(x, Tracer):
        return x
    builder = current_builder()
    return builder.wrap(builder.lift(x, []))


# --- elementwise -------------------------------------------------------------------------
def unary(op, x):
    return bind(op, x)


def binary(op, x, y):
    return bind(op, x, y)


def logical(op, x, y):
    for v in (x, y):
        if isinstance(v, Tracer) and v.dtype != np.bool_:
            raise UnsupportedError("&, | and ^ are supported on boolean arrays only (bitwise "
                                   "integer operations have no gradient)", user_loc())
    return bind(op, x, y)


def logical_not(x):
    if x.dtype != np.bool_:
        raise UnsupportedError("~ is supported on boolean arrays only", user_loc())
    return bind("logical_not", x)


def power(x, y):
    return bind("pow", x, y)


def astype(x, dtype):
    return bind("cast", x, dtype=np.dtype(dtype))


def where(cond, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedError("np.where(condition) with one argument returns indices whose "
                               "number depends on the data; use np.where(condition, a, b)",
                               user_loc())
    return bind("where", cond, x, y)


def clip(x, a_min=None, a_max=None, out=None, **kwargs):
    # where() rather than maximum/minimum: PyTorch's clamp passes the gradient at
    # the bounds themselves (lo <= x <= hi), while a maximum tie would halve it.
    _no_out("clip", out, **kwargs)
    if a_min is not None:
        x = np.where(x < a_min, a_min, x)
    if a_max is not None:
        x = np.where(x > a_max, a_max, x)
    return x


def _logaddexp(x, y):
    m = np.maximum(x, y)
    return m + np.log1p(np.exp(-np.abs(x - y)))


UFUNCS = {
    np.add: lambda x, y: binary("add", x, y),
    np.subtract: lambda x, y: binary("sub", x, y),
    np.multiply: lambda x, y: binary("mul", x, y),
    np.true_divide: lambda x, y: binary("div", x, y),
    np.power: power,
    np.maximum: lambda x, y: binary("maximum", x, y),
    np.minimum: lambda x, y: binary("minimum", x, y),
    np.less: lambda x, y: binary("lt", x, y),
    np.less_equal: lambda x, y: binary("le", x, y),
    np.greater: lambda x, y: binary("gt", x, y),
    np.greater_equal: lambda x, y: binary("ge", x, y),
    np.equal: lambda x, y: binary("eq", x, y),
    np.not_equal: lambda x, y: binary("ne", x, y),
    np.logical_and: lambda x, y: bind("logical_and", x, y),
    np.logical_or: lambda x, y: bind("logical_or", x, y),
    np.logical_xor: lambda x, y: bind("logical_xor", x, y),
    np.logical_not: lambda x: bind("logical_not", x),
    np.bitwise_and: lambda x, y: logical("logical_and", x, y),
    np.bitwise_or: lambda x, y: logical("logical_or", x, y),
    np.bitwise_xor: lambda x, y: logical("logical_xor", x, y),
    np.invert: logical_not,
    np.matmul: lambda x, y: matmul(x, y),
    np.negative: lambda x: unary("neg", x),
    np.positive: lambda x: x,
    np.absolute: lambda x: unary("abs", x),
    np.square: lambda x: x * x,
    np.reciprocal: lambda x: 1 / x,
    np.logaddexp: _logaddexp,
    np.exp2: lambda x: np.exp(x * math.log(2.0)),  # Python floats stay weak: f32 stays f32
    np.log2: lambda x: np.log(x) * (1 / math.log(2.0)),
    np.log10: lambda x: np.log(x) * (1 / math.log(10.0)),
}
for _name in ("sign", "exp", "expm1", "log", "log1p", "sqrt", "sin", "cos", "tan", "tanh",
              "arctan", "sinh", "cosh"):
    UFUNCS[getattr(np, _name)] = (lambda op: lambda x: unary(op, x))(_name)


def apply_ufunc(ufunc, method, inputs, kwargs):
    if method != "__call__":
        raise UnsupportedError(f"np.{ufunc.__name__}.{method} is not supported; use the "
                               "matching NumPy function (np.sum, np.max, ...)", user_loc())
    handler = UFUNCS.get(ufunc)
    if handler is None:
        raise UnsupportedError(f"np.{ufunc.__name__} is not supported by gradfuse", user_loc())
    out = kwargs.pop("out", None)
    if out is not None and out != (None,) * len(out):
        raise UnsupportedError(f"np.{ufunc.__name__}(out=...) is not supported: traced arrays "
                               "are immutable", user_loc())
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise UnsupportedError(f"np.{ufunc.__name__}() argument(s) {sorted(kwargs)} are not "
                               "supported", user_loc())
    result = handler(*inputs)
    return astype(result, dtype) if dtype is not None else result


# --- reductions --------------------------------------------------------------------------
def _reduce(op, x, axis, keepdims):
    x = _traced(x)
    return bind(op, x, axes=_axes(x, axis), keepdims=bool(keepdims))


def sum(a, axis=None, dtype=None, out=None, keepdims=False, **kw):  # noqa: A001
    _no_out("sum", out, **kw)
    result = _reduce("sum", a, axis, keepdims)
    return astype(result, dtype) if dtype is not None else result


def prod(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    _no_out("prod", out, **kw)
    result = _reduce("prod", a, axis, keepdims)
    return astype(result, dtype) if dtype is not None else result


def amax(a, axis=None, out=None, keepdims=False, **kw):
    _no_out("max", out, **kw)
    return _reduce("max", a, axis, keepdims)


def amin(a, axis=None, out=None, keepdims=False, **kw):
    _no_out("min", out, **kw)
    return _reduce("min", a, axis, keepdims)


def _count(x, axes, dtype):
    return bind("size", x, axes=axes, dtype=np.dtype(dtype))


def _float_dtype(x):
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def mean(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
    _no_out("mean", out, **kw)
    a = _traced(a)
    axes = _axes(a, axis)
    dtype = np.dtype(dtype) if dtype is not None else _float_dtype(a)
    total = bind("sum", astype(a, dtype) if a.dtype != dtype else a, axes=axes,
                 keepdims=bool(keepdims))
    return total / _count(a, axes, dtype)


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    _no_out("var", out, **kw)
    a = _traced(a)
    axes = _axes(a, axis)
    centered = a - mean(a, axis=axes, dtype=dtype, keepdims=True)
    squares = bind("sum", centered * centered, axes=axes, keepdims=bool(keepdims))
    return squares / (_count(a, axes, squares.dtype) - ddof)


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    return np.sqrt(var(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims, **kw))


# --- layout ------------------------------------------------------------------------------
def _dims(shape) -> tuple:
    if isinstance(shape, (int, np.integer, SymDim)):
        shape = (shape,)
    dims = []
    for d in shape:
        if isinstance(d, SymDim):
            dims.append(d.sym)
        elif isinstance(d, (int, np.integer)):
            dims.append(int(d))
        else:
            raise TraceError(f"shape entries must be ints, got {type(d).__name__}", user_loc())
    return tuple(dims)


def reshape(a, newshape=None, order="C", *, shape=None):
    if order != "C":
        raise UnsupportedError("only C-order reshape is supported", user_loc())
    a = _traced(a)
    dims = list(_dims(shape if shape is not None else newshape))
    if dims.count(-1) > 1:
        raise TraceError("can only specify one unknown dimension (-1) in reshape", user_loc())
    if -1 in dims:
        known_syms = [d for d in dims if isinstance(d, Sym)]
        for d in a.type.shape:  # a symbolic dim must appear as itself for -1 to stay static
            if isinstance(d, Sym) and d not in known_syms:
                a.shape[a.type.shape.index(d)].__index__()
        total = 1
        for d in a.type.shape:
            total *= d if isinstance(d, int) else 1
        rest = 1
        for d in dims:
            rest *= d if isinstance(d, int) and d != -1 else 1
        if rest == 0 or total % rest:
            raise TraceError(f"cannot reshape an array of shape {a.shape} into shape "
                             f"{tuple(newshape if shape is None else shape)}", user_loc())
        dims[dims.index(-1)] = total // rest
    return bind("reshape", a, shape=tuple(dims))


def transpose(a, axes=None):
    a = _traced(a)
    perm = tuple(reversed(range(a.ndim))) if axes is None else _axes_list(a, axes)
    return bind("transpose", a, perm=perm)


def _axes_list(a, axes):
    return tuple(int(x) % max(a.ndim, 1) for x in axes)


def swapaxes(a, axis1, axis2):
    a = _traced(a)
    perm = list(range(a.ndim))
    i, j = axis1 % a.ndim, axis2 % a.ndim
    perm[i], perm[j] = perm[j], perm[i]
    return bind("transpose", a, perm=tuple(perm))


def moveaxis(a, source, destination):
    a = _traced(a)
    perm = [i for i in range(a.ndim) if i != source % a.ndim]
    perm.insert(destination % a.ndim, source % a.ndim)
    return bind("transpose", a, perm=tuple(perm))


def broadcast_to(a, shape, subok=False):
    return bind("broadcast_to", a, shape=_dims(shape))


def expand_dims(a, axis):
    a = _traced(a)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    ndim = a.ndim + len(axes)
    axes = {x % ndim for x in axes}
    it = iter(a.type.shape)
    return bind("reshape", a, shape=tuple(1 if i in axes else next(it) for i in range(ndim)))


def squeeze(a, axis=None):
    a = _traced(a)
    shape = a.type.shape
    if axis is None:
        axes = {i for i, d in enumerate(shape) if d == 1}
    else:
        axes = set(_axes(a, axis))
        for i in axes:
            if shape[i] != 1:
                raise TraceError("cannot select an axis to squeeze out which has size not "
                                 f"equal to one (axis {i} has size {a.shape[i]})", user_loc())
    return bind("reshape", a, shape=tuple(d for i, d in enumerate(shape) if i not in axes))


def concatenate(arrays, axis=0, out=None, **kw):
    _no_out("concatenate", out, **kw)
    arrays = [_traced(a) for a in arrays]
    if axis is None:
        arrays, axis = [reshape(a, (-1,)) for a in arrays], 0
    return bind("concatenate", *arrays, axis=axis % arrays[0].ndim)


def stack(arrays, axis=0, out=None, **kw):
    arrays = [_traced(a) for a in arrays]
    axis = axis % (arrays[0].ndim + 1)
    return concatenate([expand_dims(a, axis) for a in arrays], axis=axis, out=out, **kw)


def matmul(a, b):
    return bind("matmul", a, b)


def dot(a, b, out=None):
    _no_out("dot", out)
    a, b = _traced(a), _traced(b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if a.ndim > 2 or b.ndim > 2:
        raise UnsupportedError("np.dot of arrays with more than two dimensions is not "
                               "supported; use np.matmul (@) for batched products", user_loc())
    return bind("matmul", a, b)


def take(a, indices, axis=None, out=None, mode=None):
    _no_out("take", out)
    a = _traced(a)
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    return bind("take", a, _index_array(indices), axis=axis % a.ndim)


def take_along_axis(arr, indices, axis):
    arr = _traced(arr)
    return bind("take_along_axis", arr, _index_array(indices), axis=axis % arr.ndim)


def _index_array(indices):
    if isinstance(indices, Tracer):
        return indices
    array = np.asarray(indices)
    if not np.issubdtype(array.dtype, np.integer):
        raise TraceError(f"indices must be integers, got {array.dtype}", user_loc())
    return array.astype(np.int64)


def like(fill):
    def make(a, dtype=None, order="K", subok=True, shape=None):
        a = _traced(a)
        dtype = np.dtype(dtype) if dtype is not None else a.dtype
        return broadcast_to(np.asarray(fill, dtype=dtype), a.shape if shape is None else shape)

    return make


def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    return like(fill_value)(a, dtype, order, subok, shape)


FUNCTIONS = {
    np.sum: sum, np.prod: prod, np.max: amax, np.amax: amax, np.min: amin, np.amin: amin,
    np.mean: mean, np.var: var, np.std: std, np.where: where, np.clip: clip,
    np.reshape: reshape, np.ravel: lambda a, order="C": reshape(a, (-1,), order),
    np.transpose: transpose, np.swapaxes: swapaxes, np.moveaxis: moveaxis,
    np.broadcast_to: broadcast_to, np.expand_dims: expand_dims, np.squeeze: squeeze,
    np.concatenate: concatenate, np.stack: stack, np.dot: dot, np.take: take,
    np.take_along_axis: take_along_axis, np.zeros_like: like(0), np.ones_like: like(1),
    np.full_like: full_like, np.shape: lambda a: a.shape, np.ndim: lambda a: a.ndim,
}


def apply_function(func, args, kwargs):
    handler = FUNCTIONS.get(func)
    if handler is None:
        name = getattr(func, "__name__", repr(func))
        raise UnsupportedError(f"np.{name} is not supported by gradfuse", user_loc())
    return handler(*args, **kwargs)


# --- indexing ------------------------------------------------------------------------------
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

