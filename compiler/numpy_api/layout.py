"""Layout: reshape, transpose and its relatives, broadcasting, size-1 axes, joining arrays,
and arrays shaped like others."""

from __future__ import annotations

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ir import Sym
from compiler.numpy_api.dispatch import FUNCTIONS, axes_of, implements, no_out, traced
from compiler.ops import bind
from compiler.ops.registry import ShapeError
from compiler.ops.shapes import normalize_axes
from compiler.symdim import SymDim
from compiler.tracer import Tracer
from compiler.user_code import user_loc


def _dims(shape) -> tuple:
    if isinstance(shape, (int, np.integer, SymDim)):
        shape = (shape,)
    dims = []
    for d in shape:
        if isinstance(d, SymDim):
            dims.append(d.sym)
        elif isinstance(d, Sym):  # a traced array's own shape, as gradfuse passes it
            dims.append(d)
        elif isinstance(d, (int, np.integer)):
            dims.append(int(d))
        else:
            if isinstance(d, Tracer):  # x.reshape(k, -1) with k a Python int argument: static
                d.builder.concretize(d)
            raise TraceError(f"shape entries must be ints, got {type(d).__name__}", user_loc())
    return tuple(dims)


@implements(np.reshape)
def reshape(a, newshape=None, order="C", *, shape=None):
    if order == "F":  # read and written first index fastest: C order of the reversed axes
        dims = tuple(_dims(shape if shape is not None else newshape))
        return np.transpose(reshape(np.transpose(traced(a)), dims[::-1]))
    if order != "C":
        raise UnsupportedError(f"reshape(order={order!r}) is not supported (order='A' and 'K' "
                               "follow the memory layout, which a traced array does not "
                               "have): use order='C' or 'F'", user_loc())
    a = traced(a)
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


@implements(np.transpose)
def transpose(a, axes=None):
    a = traced(a)
    perm = tuple(reversed(range(a.ndim))) if axes is None else _axes_list(a, axes)
    return bind("transpose", a, perm=perm)


def _axes_list(a, axes):
    return tuple(int(x) % max(a.ndim, 1) for x in axes)


@implements(np.swapaxes)
def swapaxes(a, axis1, axis2):
    a = traced(a)
    perm = list(range(a.ndim))
    i, j = axis1 % a.ndim, axis2 % a.ndim
    perm[i], perm[j] = perm[j], perm[i]
    return bind("transpose", a, perm=tuple(perm))


@implements(np.moveaxis)
def moveaxis(a, source, destination):
    a = traced(a)
    perm = [i for i in range(a.ndim) if i != source % a.ndim]
    perm.insert(destination % a.ndim, source % a.ndim)
    return bind("transpose", a, perm=tuple(perm))


@implements(np.broadcast_to)
def broadcast_to(a, shape, subok=False):
    return bind("broadcast_to", a, shape=_dims(shape))


@implements(np.expand_dims)
def expand_dims(a, axis):
    a = traced(a)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    ndim = a.ndim + len(axes)
    axes = {x % ndim for x in axes}
    it = iter(a.type.shape)
    return bind("reshape", a, shape=tuple(1 if i in axes else next(it) for i in range(ndim)))


@implements(np.size)
def size(a, axis=None):
    """np.size(x) is x.size (a batch axis made static); np.size(x, k) is x.shape[k], which
    stays symbolic in arithmetic with traced values, as x.shape[k] does."""
    a = traced(a)
    return a.size if axis is None else a.shape[axes_of(a, axis)[0]]


@implements(np.squeeze)
def squeeze(a, axis=None):
    a = traced(a)
    shape = a.type.shape
    if axis is None:
        axes = {i for i, d in enumerate(shape) if d == 1}
        for d in shape:  # a batch axis is kept: the kernels refuse a batch of 1, NumPy drops it
            if isinstance(d, Sym):
                d.assume_not_one()
    else:
        axes = set(axes_of(a, axis))
        for i in axes:
            if shape[i] != 1:
                raise TraceError("cannot select an axis to squeeze out which has size not "
                                 f"equal to one (axis {i} has size {a.shape[i]})", user_loc())
    return bind("reshape", a, shape=tuple(d for i, d in enumerate(shape) if i not in axes))


@implements(np.concatenate)
def concatenate(arrays, axis=0, out=None, **kw):
    no_out("concatenate", out, **kw)
    arrays = [traced(a) for a in arrays]
    if axis is None:
        arrays, axis = [reshape(a, (-1,)) for a in arrays], 0
    return bind("concatenate", *arrays, axis=_one_axis(axis, arrays[0].ndim))


def _one_axis(axis, ndim: int) -> int:
    """One axis of an array of `ndim` dimensions, made non-negative; NumPy's AxisError (or its
    TypeError for a float or an array) as a TraceError at the user's line."""
    try:
        (axis,) = normalize_axes((axis,), ndim)
    except ShapeError as err:
        raise TraceError(str(err), user_loc()) from None
    return axis


@implements(np.stack)
def stack(arrays, axis=0, out=None, **kw):
    arrays = [traced(a) for a in arrays]
    axis = _one_axis(axis, arrays[0].ndim + 1)
    return concatenate([expand_dims(a, axis) for a in arrays], axis=axis, out=out, **kw)


def like(fill):
    def make(a, dtype=None, order="K", subok=True, shape=None):
        from compiler.numpy_api.assignment import writable  # a new array: it may be assigned into

        a = traced(a)
        dtype = np.dtype(dtype) if dtype is not None else a.dtype
        return writable(broadcast_to(np.asarray(fill, dtype=dtype),
                                     a.shape if shape is None else shape))

    return make


@implements(np.full_like)
def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    return like(fill_value)(a, dtype, order, subok, shape)


FUNCTIONS.update({
    np.ravel: lambda a, order="C": reshape(a, (-1,), order),
    np.zeros_like: like(0), np.ones_like: like(1),
    np.shape: lambda a: a.shape, np.ndim: lambda a: a.ndim,
})
