"""Joining and splitting: `vstack`, `hstack`, `column_stack`, `dstack`, `atleast_1d/2d/3d`,
`split`, `array_split`, `hsplit`, `vsplit`, `dsplit`.

Composites of `concatenate` (after NumPy's own promotion to enough dimensions) and of basic
slices, so their gradients are slices and sums of the pieces' cotangents.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import TraceError
from compiler.numpy_api.dispatch import axes_of, implements, traced
from compiler.numpy_api.layout import concatenate, reshape
from compiler.numpy_api.matrices import static_length
from compiler.tracer import Tracer
from compiler.user_code import user_loc


def _at_least(ndim: int, a):
    """NumPy's atleast_{1,2,3}d of one array: 0-d -> (1,)*ndim, (n,) -> (1, n) / (1, n, 1),
    (m, n) -> (m, n, 1)."""
    a = traced(a)
    shape = a.shape
    if a.ndim >= ndim:
        return a
    if a.ndim == 0:
        return reshape(a, (1,) * ndim)
    if ndim == 2 or a.ndim == 2:  # (n,) -> (1, n); (m, n) -> (m, n, 1)
        shape = (1,) + shape if a.ndim == 1 else shape
        return reshape(a, shape + (1,) * (ndim - len(shape)))
    return reshape(a, (1,) + shape + (1,))  # (n,) -> (1, n, 1)


def _at_least_all(ndim: int):
    def at_least(*arys):
        results = tuple(_at_least(ndim, a) for a in arys)
        return results[0] if len(results) == 1 else results

    return at_least


atleast_1d = implements(np.atleast_1d)(_at_least_all(1))
atleast_2d = implements(np.atleast_2d)(_at_least_all(2))
atleast_3d = implements(np.atleast_3d)(_at_least_all(3))


def _joined(tup, axis, ndim, dtype):
    arrays = [_at_least(ndim, a) for a in tup]
    joined = concatenate(arrays, axis=axis)
    return joined.astype(dtype) if dtype is not None else joined


@implements(np.vstack)
def vstack(tup, *, dtype=None, casting="same_kind"):
    return _joined(tup, 0, 2, dtype)


@implements(np.hstack)
def hstack(tup, *, dtype=None, casting="same_kind"):
    arrays = [_at_least(1, a) for a in tup]
    return _joined(arrays, 0 if arrays[0].ndim == 1 else 1, 1, dtype)


@implements(np.dstack)
def dstack(tup):
    return _joined(tup, 2, 3, None)


@implements(np.column_stack)
def column_stack(tup):
    columns = []
    for a in tup:
        a = traced(a)
        columns.append(reshape(a, (a.shape[0], 1)) if a.ndim == 1 else _at_least(2, a))
    return concatenate(columns, axis=1)


def _split_points(n: int, indices_or_sections, even: bool) -> list[int]:
    if isinstance(indices_or_sections, Tracer):
        raise TraceError("split points must be known at trace time, not traced", user_loc())
    if np.ndim(indices_or_sections) == 0:
        sections = int(indices_or_sections)
        if sections <= 0:
            raise TraceError("number sections must be larger than 0.", user_loc())
        if even and n % sections:
            raise TraceError("array split does not result in an equal division", user_loc())
        each, extras = divmod(n, sections)
        sizes = [each + 1] * extras + [each] * (sections - extras)
        return np.cumsum([0] + sizes).tolist()
    return [0] + [int(i) for i in indices_or_sections] + [n]


def _pieces(ary, indices_or_sections, axis, even: bool) -> list:
    a = traced(ary)
    axis = axes_of(a, axis)[0]
    n = static_length(a, axis)
    points = _split_points(n, indices_or_sections, even)
    lead = (slice(None),) * axis
    return [a[lead + (slice(start, stop),)] for start, stop in zip(points[:-1], points[1:])]


@implements(np.split)
def split(ary, indices_or_sections, axis=0):
    return _pieces(ary, indices_or_sections, axis, even=True)


@implements(np.array_split)
def array_split(ary, indices_or_sections, axis=0):
    return _pieces(ary, indices_or_sections, axis, even=False)


@implements(np.hsplit)
def hsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, axis=1 if traced(ary).ndim > 1 else 0)


@implements(np.vsplit)
def vsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, axis=0)


@implements(np.dsplit)
def dsplit(ary, indices_or_sections):
    return split(ary, indices_or_sections, axis=2)
