"""In-place operators on traced arrays (`h += v`, `row *= 2`): NumPy's values, or an error.

NumPy changes the array itself, so every name bound to it, and every view of it, sees the
change. Traced values are immutable, so:

- a copy (`y = x.copy()`) takes `y op= v` as an assignment (compiler/numpy_api/assignment.py);
- a view of a copy (`for row in y: row *= 2`) is assigned through: the copy gets the new
  values where the view shows it, and the copy's other views are followed as for `y[k] = v`
  (a copy too large or symbolic to follow its elements, where the view was read from it
  with slices and ints: `y[:, 1] *= 2`, `row = y[0]; row += v`);
- any other computed array takes the new value as its own node, so its Python aliases (the
  same Tracer) see it; a view of it taken earlier (a slice, row, transpose or reshape) would
  show the change in NumPy and holds the old values here, so using it afterwards is an
  error naming both lines. A change made through such a view leaves the array it views
  unknown, so that array (and its other views) is refused afterwards too;
- a function's argument (or a loop body's) is refused: NumPy would change the caller's array;
- a 0-d value is a NumPy scalar (what reductions and `x[i, j]` give), which `op=` rebinds.

`h = X @ W; h += b` costs one node, as `h = h + b` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ir import SourceLoc
from compiler.numpy_api.assignment import (
    Copy,
    _as_dtype,
    _value_for,
    assign,
    check_in_place_result,
)
from compiler.tracer import Tracer, current_builder
from compiler.user_code import user_loc


@dataclass
class InPlaceLog:
    """The in-place updates of one trace: each updated value's version, and the values a
    change through one of their views left unknown."""

    versions: dict[int, tuple[Tracer, int, SourceLoc | None]] = field(default_factory=dict)
    unknown: dict[int, tuple[Tracer, SourceLoc | None]] = field(default_factory=dict)

    def version(self, value: Tracer) -> int:
        entry = self.versions.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else 0

    def bump(self, value: Tracer, loc: SourceLoc | None) -> None:
        self.versions[id(value)] = (value, self.version(value) + 1, loc)

    def check(self, value: Tracer) -> None:
        """Refuse a value NumPy would show changed: a view taken before its base (or the
        base's base) changed in place, or an array changed through one of its views."""
        sources = value.builder.view_sources
        current = value
        while True:
            entry = self.unknown.get(id(current))
            if entry is not None and entry[0] is current:
                raise TraceError(
                    f"this reads an array that was changed in place through a view of it (at "
                    f"{entry[1]}): NumPy's array would show the change, a traced one cannot; "
                    "write the new values into a copy (`y = h.copy()`, then `y[i] += v`), "
                    "or build them with np.where or np.concatenate", user_loc())
            link = sources.get(id(current))
            if link is None or link[0] is not current:
                return
            _, source, version = link
            if self.version(source) > version:
                changed = self.versions[id(source)][2]
                raise TraceError(
                    f"this reads a view (taken at {value.node.loc}) of an array changed in "
                    f"place afterwards (at {changed}): a NumPy view would show the new values, "
                    "a traced one keeps the old ones; take the view again after the change, "
                    "or write `h = h + v` (a new array) instead of `h += v`", user_loc())
            current = source


def update(target: Tracer, op, other) -> Tracer:
    """`target op= other`, as NumPy does it; returns what Python binds the name to."""
    if isinstance(target, Copy):
        return target._in_place(op(target, other))
    builder = target.builder
    result = op(target, other)  # (reading `target` checks that it is still what NumPy shows)
    copies = builder.copies
    of_copy = copies is not None and copies.copy_viewed_by(target) is not None
    link = builder.view_sources.get(id(target))
    is_view = link is not None and link[0] is target
    if target.ndim == 0 and not is_view and not of_copy:
        return result  # a NumPy scalar: `s += v` makes a new one
    check_in_place_result(target, result)
    if builder is not current_builder():
        raise UnsupportedError(
            "an in-place operator inside a loop body on an array of the enclosing function "
            "would change that array; write `h = h + v` (a new array) instead", user_loc())
    if of_copy:
        _through_view_of_copy(target, result)
        return target
    chain = _viewed(target)
    base = chain[-1] if chain else target
    if base.node.op == "input":
        what = "an argument" if not chain else "a view of an argument"
        raise UnsupportedError(
            f"an in-place operator on {what} would change the caller's array (as NumPy "
            "does); write `x = x + v` (a new array), or `x = x.copy()` first", user_loc())
    if any(s.builder is not builder for s in chain):
        raise UnsupportedError(
            "an in-place operator inside a loop body on a view of an array of the enclosing "
            "function would change that array; write `h = h + v` (a new array) instead",
            user_loc())
    log = builder.in_place
    if log is None:
        log = builder.in_place = InPlaceLog()
    loc = user_loc()
    for source in chain:  # changed through the view: their other elements are not followed
        log.unknown[id(source)] = (source, loc)
        log.bump(source, loc)
    if is_view:
        del builder.view_sources[id(target)]  # it holds its new values itself now
    target.node = _as_dtype(result, target.dtype).node
    log.bump(target, loc)
    return target


def _viewed(value: Tracer) -> list[Tracer]:
    """The values `value` is a view of: its source, the source's source, ..."""
    sources = value.builder.view_sources
    chain = []
    while (link := sources.get(id(value))) is not None and link[0] is value:
        value = link[1]
        chain.append(value)
    return chain


def _through_view_of_copy(view: Tracer, result: Tracer) -> None:
    """`row op= v` on a view of a copy: the copy is assigned at the positions the view shows
    (so its other views are checked as for `y[k] = v`), and the view holds the new values."""
    copies = view.builder.copies
    info = copies._view_of(view)
    copy = info.copy
    if info.positions is None and info.key is not None and info.version == copy.version:
        value = _value_for(result, copy.dtype, view.type.shape)
        assign(copy, info.key, value)  # `y[:, 1] *= 2`: the region the view was read from
        view.node = value.node
        info.version = copy.version
        return
    if info.positions is None:
        raise UnsupportedError(
            "an in-place operator on a view of a copy whose elements gradfuse does not follow "
            "(a symbolic or large copy) is not supported: change the copy itself with one "
            "index, `y[i] *= 2` rather than `row = y[i]; row *= 2`", user_loc())
    positions = info.positions
    if np.unique(positions).size != positions.size:
        raise TraceError("output array is read-only (a broadcast view repeats elements)",
                         user_loc())
    value = _value_for(result, copy.dtype, positions.shape)
    assign(copy, np.unravel_index(positions, copy.type.shape), value)
    view.node = value.node
    info.version = copy.version
