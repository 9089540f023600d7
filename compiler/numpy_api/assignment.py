"""Assignment into traced arrays: copies that may be assigned into, `y[key] = v` and `y[key] += v`
on them, `np.add.at`, and the views of a copy that an assignment would change.

Traced values are immutable: an assignment builds a new value and rebinds the copy to it,
so the code after it reads the update, as in NumPy. `x.copy()`, `np.copy(x)`,
`np.zeros_like` (and `ones_like`, `full_like`, `empty_like`) give such a copy (a `Copy`);
function arguments and computed arrays refuse assignment and say to copy first, because
NumPy would change the caller's array, or the array a view belongs to.

What an assignment is made of (each with the derivative it needs: the overwritten elements
get no gradient from the old value):

- slices and integers: `where(region, pad_slice(v), y)`;
- a boolean mask and a value that does not depend on how many entries are True (a scalar,
  or one per trailing axis): `where(mask, v, y)`;
- integer arrays: each element of y takes the value of the last write that names it (as
  NumPy does when indices repeat), a gather of v at the ordinals that `last_write` finds
  (computed now when the indices are constants): along the axis for one traced 1-D index
  array (a symbolic batch of indices stays symbolic), else at flat positions of y.

`np.add.at(a, idx, v)` adds with repeats (a scatter-add: `take_grad`) and, as NumPy does,
changes `a`, which must be a copy; it returns None.

NumPy's views see later assignments into their base; a traced view holds the values it
was taken from. So a view of a copy (a slice, reshape, transpose, broadcast) that is read
after an assignment changed elements it shows is an error naming both lines, never a
silently different value. A `Views` registry per trace follows which traced values view
which copy, and at which of the copy's versions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ir import SourceLoc
from compiler.numpy_api.dispatch import UFUNC_METHODS, implements, traced
from compiler.numpy_api.elementwise import astype, where
from compiler.numpy_api.indexing import basic_region, expand_key, getitem, is_basic
from compiler.numpy_api.layout import broadcast_to, full_like, reshape
from compiler.ops import bind, get
from compiler.ops.layout import as_slices
from compiler.tracer import VIEW_OPS, Tracer, current_builder
from compiler.user_code import user_loc

# Copies up to this size have their elements' positions followed through views, so that
# only an assignment that changes what a view shows makes reading the view an error.
MAX_TRACKED_ELEMENTS = 1 << 16


class Copy(Tracer):
    """A traced array that may be assigned into: x.copy(), np.copy(x), np.zeros_like(x), ...

    Each assignment (or in-place operator) rebinds it to a new value and counts a version."""

    __slots__ = ("version", "writes")

    def __init__(self, builder, node) -> None:
        super().__init__(builder, node)
        self.version = 0
        # (version, flat positions written or None for unknown, the user's line)
        self.writes: list[tuple[int, np.ndarray | None, SourceLoc | None]] = []

    def __setitem__(self, key, value) -> None:
        assign(self, key, value)

    def __getitem__(self, key):
        result = getitem(self, key)
        view = self.builder.copies._view_of(result) if self.builder.copies else None
        if view is not None and view.positions is None and is_basic(self, key):
            view.key = key  # `y[:, 1] *= 2` on a symbolic copy: assigned there (in_place.py)
        return result

    # (`y += v`, the Tracer's in-place operators, come here: compiler/numpy_api/in_place.py)
    def _in_place(self, result: Tracer) -> Copy:
        """`y op= v`: the result, cast to y's dtype, becomes y (it must keep y's shape)."""
        check_in_place_result(self, result)
        self.rebind(_as_dtype(result, self.dtype), None)
        return self

    def rebind(self, value: Tracer, written: np.ndarray | None) -> None:
        """Make `value` this copy's new value; `written` are the flat positions changed."""
        if self.builder is not current_builder():
            raise TraceError("assignment into a copy made outside this traced function (a "
                             "scan or loop body): make the copy inside the body", user_loc())
        self.version += 1
        self.writes.append((self.version, written, user_loc()))
        self.node = value.node


def writable(x: Tracer) -> Copy:
    """A copy of `x` that may be assigned into (no node: values are immutable), in the
    current trace (a loop body copying a value of the enclosing function captures it)."""
    builder = current_builder()
    node = builder.lift(x, [])  # (a view read after its copy changed is refused here)
    if builder.copies is None:
        builder.copies = Views()
    return Copy(builder, node)


@implements(np.copy)
def copy(a, order="K", subok=False):
    return writable(traced(a))


@implements(np.copyto)
def copyto(dst, src, casting="same_kind", where=True):
    """Refused, saying what to write: NumPy stores into `dst` in place, and np.full(shape, x,
    dtype=...) fills a NumPy array it made with it, which cannot hold traced values."""
    if isinstance(dst, Tracer):
        raise UnsupportedError("np.copyto(dst, src) into a traced array: assign into a copy "
                               "instead, y = dst.copy(); y[...] = src (np.where(where, src, y) "
                               "for where=)", user_loc())
    raise UnsupportedError("np.copyto stores traced values into a NumPy array here (np.full(shape, "
                           "x, dtype=...) of a traced x fills a NumPy array with it), which can "
                           "only hold numbers: write np.full(shape, x.astype(dtype)), or "
                           "np.broadcast_to(x.astype(dtype), shape)", user_loc())


@implements(np.empty_like)
def empty_like(prototype, dtype=None, order="K", subok=True, shape=None, **kwargs):
    return full_like(prototype, 0, dtype, order, subok, shape)  # any values will do: zeros


# --- views of copies -----------------------------------------------------------------------
@dataclass
class _View:
    tracer: Tracer  # kept, so that its id stays its own
    copy: Copy
    version: int  # the copy's version it shows
    positions: np.ndarray | None  # the copy's flat positions it shows (None: unknown)
    loc: SourceLoc | None
    key: Any = None  # the basic index it was read with from the copy itself, if unknown


class Views:
    """The traced values of one trace that view a copy: `Builder.emit` reports each op made
    (`derived`), `Builder.lift` asks before a value is used (`check`)."""

    def __init__(self) -> None:
        self.views: dict[int, _View] = {}

    def derived(self, op: str, attrs: dict, inputs: tuple, result: Tracer) -> None:
        if op not in VIEW_OPS or not inputs:
            return
        source = inputs[0]
        if isinstance(source, Copy):
            base, version, positions = source, source.version, _positions(source)
        else:
            view = self._view_of(source)
            if view is None:
                return
            base, version, positions = view.copy, view.version, view.positions
        if positions is not None:
            positions = np.asarray(get(op).impl(positions, **attrs))
        self.views[id(result)] = _View(result, base, version, positions, result.node.loc)

    def check(self, value) -> None:
        """Refuse to read a view after an assignment into its copy changed what it shows."""
        view = self._view_of(value)
        if view is None or view.version == view.copy.version:
            return
        for version, written, loc in view.copy.writes:
            if version > view.version and _overlap(view.positions, written):
                raise TraceError(
                    f"this reads a view of a copy (taken at {view.loc}) after an assignment "
                    f"into the copy (at {loc}) changed elements it shows: a NumPy view would "
                    "show the new values, a traced one keeps the old ones; index the copy "
                    "again after the assignment, or take .copy() of the view before it",
                    user_loc())
        view.version = view.copy.version

    def copy_viewed_by(self, value) -> Copy | None:
        view = self._view_of(value)
        return None if view is None else view.copy

    def _view_of(self, value) -> _View | None:
        view = self.views.get(id(value))
        return view if view is not None and view.tracer is value else None


def _positions(y: Copy) -> np.ndarray | None:
    """Each element's flat position in `y` (None when y is symbolic or large)."""
    shape = y.type.shape
    if not all(isinstance(d, int) for d in shape) or math.prod(shape) > MAX_TRACKED_ELEMENTS:
        return None
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)


def _overlap(shown: np.ndarray | None, written: np.ndarray | None) -> bool:
    if shown is None or written is None:
        return True
    return bool(np.isin(shown, written).any())


# --- y[key] = v ----------------------------------------------------------------------------

def check_in_place_result(target: Tracer, result: Tracer) -> None:
    """NumPy's rules for `out=` and `op=`: the result keeps the array's shape and casts to its
    dtype (same kind)."""
    if result.type.shape != target.type.shape:
        raise TraceError(f"non-broadcastable output operand with shape {target.shape} "
                         f"doesn't match the broadcast shape {result.shape}", user_loc())
    if not np.can_cast(result.dtype, target.dtype, "same_kind"):
        raise TraceError(f"cannot cast the result ({result.dtype}) to the array's dtype "
                         f"({target.dtype}) in an in-place operation", user_loc())


def assign(y: Copy, key, value) -> None:
    """`y[key] = value` on a copy: y becomes the updated value."""
    value = traced(value)
    mask = _mask_of(y, key)
    if mask is not None and _count_free(y, mask, value):
        new = _assign_where(y, mask, value)
    elif is_basic(y, key):
        new = _assign_region(y, expand_key(y, key), value)
    elif mask is not None and isinstance(mask, Tracer):
        raise UnsupportedError(
            "y[mask] = v with a traced mask needs a v that does not depend on how many "
            "entries are True (a scalar, or values for the trailing axes); write "
            "y = np.where(mask, new_values, y)", user_loc())
    elif (along := _one_axis(y, key)) is not None:
        new = _assign_along(y, *along, value)
    else:
        new = _assign_gathered(y, key, value)
    y.rebind(new, _written(y, key))


def _written(y: Copy, key) -> np.ndarray | None:
    """The flat positions `key` names in y, when they are known now."""
    positions = _positions(y)
    if positions is None or _holds_traced(key):
        return None
    return positions[key]


def _assign_region(y: Copy, key: tuple, value: Tracer) -> Tracer:
    """Slices and integers: the region is replaced by the value, the rest kept."""
    specs, shape = basic_region(y, key)
    region = tuple(_spec_len(spec, d) for spec, d in zip(specs, y.type.shape))
    value = reshape(_value_for(value, y.dtype, shape), region)
    if all(spec == (0, d, 1) for spec, d in zip(specs, y.type.shape)):
        return broadcast_to(value, y.shape)
    padded = bind("pad_slice", value, shape=y.type.shape, index=tuple(specs))
    mask_shape = tuple(1 if spec == (0, d, 1) else d for spec, d in zip(specs, y.type.shape))
    inside = np.zeros(mask_shape, dtype=bool)
    inside[tuple(slice(None) if n == 1 else s for n, s in zip(mask_shape, as_slices(specs)))] = True
    return where(inside, padded, y)


def _spec_len(spec, d):
    start, stop, step = spec
    return d if spec == (0, d, 1) else len(range(start, stop, step))


def _assign_where(y: Copy, mask, value: Tracer) -> Tracer:
    """`y[mask] = v` where v does not depend on the number of True entries."""
    rest = y.type.shape[np.ndim(mask):]
    value = _as_dtype(value, y.dtype)
    if value.ndim > len(rest):  # the leading axis counts the True entries: it is 1 here
        value = reshape(value, value.type.shape[1:])
    mask = reshape(traced(mask), tuple(np.shape(mask)) + (1,) * len(rest))
    return where(mask, value, y)


def _one_axis(y: Tracer, key) -> tuple[int, Tracer] | None:
    """(axis, indices) for a key that is one traced 1-D index array along an axis, the
    others whole (`y[idx] = v`, `y[:, idx] = v`): done along the axis, with no flat
    positions, so a symbolic batch of indices stays symbolic."""
    entries = expand_key(y, key)
    arrays = [a for a, k in enumerate(entries) if isinstance(k, Tracer)]
    if len(arrays) != 1 or len(entries) != y.ndim or entries[arrays[0]].ndim != 1:
        return None
    axis = arrays[0]
    if not all(isinstance(k, slice) and k == slice(None)
               for a, k in enumerate(entries) if a != axis):
        return None
    return axis, entries[axis]


def _assign_along(y: Copy, axis: int, indices: Tracer, value: Tracer) -> Tracer:
    """`y[..., idx, ...] = v` along one axis: each slice of y along it takes the value of the
    last write that names it."""
    shape = y.type.shape
    values = _value_for(value, y.dtype, shape[:axis] + indices.type.shape + shape[axis + 1:])
    ordinals = np.cumsum(np.ones_like(indices, dtype=np.int64), axis=0)
    last = bind("last_write", ordinals, indices, size=y.shape[axis].__index__())
    written = last > 0
    taken = bind("take", values, where(written, last - 1, 0), axis=axis)
    along = tuple(d if a == axis else 1 for a, d in enumerate(shape))
    return where(reshape(written, along), taken, y)


def _assign_gathered(y: Copy, key, value: Tracer) -> Tracer:
    """Integer arrays: each element of y takes the value of the last write that names it."""
    positions, size = _flat_positions(y, key)
    n_writes = math.prod(d.__index__() for d in positions.shape)  # static: counted now
    values = reshape(_value_for(value, y.dtype, positions.type.shape
                                if isinstance(positions, Tracer) else positions.shape),
                     (n_writes,))
    ordinals = np.arange(1, n_writes + 1, dtype=np.int64)
    if isinstance(positions, Tracer):
        last = bind("last_write", ordinals, reshape(positions, (n_writes,)), size=size)
    else:  # known now: which write is last where
        last = np.zeros(size, dtype=np.int64)
        np.maximum.at(last, positions.ravel(), ordinals)
    written = last > 0
    source = where(written, last - 1, 0)  # unwritten places read any value: the first
    new = where(written, bind("take", values, source, axis=0), reshape(y, (size,)))
    return reshape(new, y.type.shape)


def _flat_positions(y: Tracer, key):
    """Where each element of y[key] is in y's flat array: constants computed now (the bounds
    checked at the user's line), else traced; and y's size (y's shape becomes static)."""
    dims = tuple(d.__index__() for d in y.shape)
    size = int(np.prod(dims))
    grid = np.arange(size, dtype=np.int64).reshape(dims)
    if _holds_traced(key):
        return getitem(traced(grid), key), size
    try:
        return grid[key], size
    except IndexError as err:
        raise TraceError(str(err), user_loc()) from None


def _value_for(value: Tracer, dtype: np.dtype, shape: tuple) -> Tracer:
    """The assigned value as NumPy stores it into y[key] of `shape`: cast to y's dtype,
    leading size-1 axes dropped, broadcast."""
    value = _as_dtype(value, dtype)
    while value.ndim > len(shape) and value.type.shape[0] == 1:
        value = reshape(value, value.type.shape[1:])
    static = all(isinstance(d, int) for d in (*value.type.shape, *shape))
    try:  # (a symbolic dim is left to broadcast_to, which specializes it where it must)
        if static and np.broadcast_shapes(value.type.shape, tuple(shape)) != tuple(shape):
            raise ValueError
    except ValueError:
        raise TraceError(f"could not broadcast input array from shape {value.shape} into "
                         f"shape {tuple(shape)}", user_loc()) from None
    return value if value.type.shape == tuple(shape) else \
        bind("broadcast_to", value, shape=tuple(shape))


def _as_dtype(x: Tracer, dtype: np.dtype) -> Tracer:
    return x if x.dtype == dtype else astype(x, dtype)


def _mask_of(y: Tracer, key):
    """The boolean array of a key that is one mask (then full slices), or None."""
    entries = key if isinstance(key, tuple) else (key,)
    mask = entries[0] if entries else None
    if isinstance(mask, list):
        mask = np.asarray(mask)
    if not (isinstance(mask, (Tracer, np.ndarray)) and mask.dtype == np.bool_):
        return None
    rest = entries[1:]
    if not all(k is Ellipsis or (isinstance(k, slice) and k == slice(None)) for k in rest) \
            or mask.ndim == 0:
        return None
    shape = mask.shape if isinstance(mask, np.ndarray) else mask.type.shape
    if mask.ndim > y.ndim or any(isinstance(m, int) and isinstance(d, int) and m != d
                                 for m, d in zip(shape, y.type.shape)):
        raise TraceError(f"boolean index of shape {tuple(mask.shape)} did not match the "
                         f"indexed array's shape {tuple(y.shape)}", user_loc())
    return mask


def _count_free(y: Tracer, mask, value: Tracer) -> bool:
    """Whether `value` fits y[mask] whatever the number of True entries."""
    rest = len(y.type.shape) - np.ndim(mask)
    return value.ndim <= rest or (value.ndim == rest + 1 and value.type.shape[0] == 1)


def _holds_traced(key) -> bool:
    entries = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, Tracer)
               or (isinstance(k, (list, np.ndarray)) and np.asarray(k).dtype == object)
               for k in entries)


# --- np.add.at, out= -----------------------------------------------------------------------
def ufunc_at(ufunc, a, indices, b=None) -> None:
    """np.add.at(a, indices, b) (np.subtract.at): repeated indices add up; `a`, a copy,
    becomes the result, and None is returned, as NumPy does."""
    if ufunc not in (np.add, np.subtract):
        raise UnsupportedError(f"np.{ufunc.__name__}.at is not supported on traced arrays; "
                               "np.add.at and np.subtract.at are", user_loc())
    if b is None:
        raise UnsupportedError(f"np.{ufunc.__name__}.at needs the values to add", user_loc())
    _require_copy(a, f"np.{ufunc.__name__}.at(a, ...) changes `a` in place")
    b = traced(b)
    if ufunc is np.subtract:
        b = -b
    if not np.can_cast(b.dtype, a.dtype, "same_kind"):
        raise TraceError(f"np.{ufunc.__name__}.at cannot cast {b.dtype} values into an array "
                         f"of {a.dtype}", user_loc())
    if is_basic(a, indices):  # no index repeats: a[indices] += b
        key = expand_key(a, indices)
        new = _assign_region(a, key, getitem(a, key) + b)
    elif (along := _one_axis(a, indices)) is not None:  # a scatter-add along the axis
        axis, idx = along
        shape = a.type.shape
        values = _value_for(b, a.dtype, shape[:axis] + idx.type.shape + shape[axis + 1:])
        new = a + bind("take_grad", values, idx, axis=axis, shape=shape)
    else:
        positions, size = _flat_positions(a, indices)
        n_adds = math.prod(d.__index__() for d in positions.shape)  # static: counted now
        shape = positions.type.shape if isinstance(positions, Tracer) else positions.shape
        values = reshape(_value_for(b, a.dtype, shape), (n_adds,))
        added = bind("take_grad", values, reshape(traced(positions), (n_adds,)), axis=0,
                     shape=(size,))
        new = a + reshape(added, a.type.shape)
    a.rebind(new, _written(a, indices))


UFUNC_METHODS[np.add, "at"] = functools.partial(ufunc_at, np.add)
UFUNC_METHODS[np.subtract, "at"] = functools.partial(ufunc_at, np.subtract)


def store_out(ufunc, outs: list, result):
    """`out=` of a ufunc: a copy becomes the result; anything else is refused."""
    if len(outs) != 1 or isinstance(result, tuple):
        raise UnsupportedError(f"np.{ufunc.__name__} with several out= arrays is not "
                               "supported", user_loc())
    out = outs[0]
    _require_copy(out, f"np.{ufunc.__name__}(..., out=y) writes into `y`")
    return out._in_place(traced(result))


def _require_copy(a, what: str) -> None:
    if isinstance(a, Copy):
        return
    if isinstance(a, Tracer):
        raise UnsupportedError(
            f"{what}, and traced arrays are immutable unless they are copies: write "
            "`a = a.copy()` (or make it with np.zeros_like) first, then change it", user_loc())
    from compiler.numpy_api.conversion import STORE_INTO_ARRAY

    raise UnsupportedError(f"{what}, a NumPy array: {STORE_INTO_ARRAY}", user_loc())


def refuse_assignment(x: Tracer) -> UnsupportedError:
    """The error for `x[key] = v` on a traced array that is not a copy."""
    views = x.builder.copies
    if views is not None and views.copy_viewed_by(x) is not None:
        return UnsupportedError(
            "item assignment into a view of a copy is not supported: assign through the "
            "copy with one index, `y[i, j] = v` rather than `y[i][j] = v`", user_loc())
    return UnsupportedError(
        "traced arrays are immutable: item assignment (x[i] = v) into an argument or a "
        "computed array is not supported (NumPy would change the array it came from); "
        "write `x = x.copy()` first and assign into the copy, or build the result with "
        "np.where, np.concatenate or np.stack", user_loc())
