"""The values an integer node can hold, where they follow from how it is built: which gathered
positions the kernel need not check.

A gather reads `x[position]` without bounds checks (numba's are off), so a position out of
range would read or write memory outside `x`, silently. Indices that come from the caller are
checked once, before the kernel runs (compiler/codegen/emit.py); positions the kernel
computes itself (`xs[i + 1]` in a loop body, the position of a multi-index `x[rows, cols]`,
sort's permutation) are checked where they are read, unless `value_range` shows they are in
range by construction. The rules are interval arithmetic, one line per op; a node no rule
covers has unknown values (None).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.ir import Dim, Node, constant_value
from compiler.ops.lowering import View, lowering_of

Range = tuple[int, int]  # the least and the greatest value, both included


def _union(*ranges: Range | None) -> Range | None:
    if any(r is None for r in ranges):
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _product(a: Range, b: Range) -> Range:
    corners = [x * y for x in a for y in b]
    return min(corners), max(corners)


def _static(d: Dim) -> int | None:
    return d if isinstance(d, int) else None


def _argsort(node: Node, _ranges) -> Range | None:
    n = _static(node.inputs[0].shape[node.attrs["axis"]])
    return (0, max(n - 1, 0)) if n is not None else None


def _cumsum(node: Node, ranges) -> Range | None:
    # a running sum of values >= 0 along an axis of n stays within [lo, n * hi]
    (x,) = ranges
    n = _static(node.inputs[0].shape[node.attrs["axis"]])
    if x is None or n is None or x[0] < 0:
        return None
    return x[0], n * x[1]


# op -> range(node, its inputs' ranges); views (reshapes, slices, broadcasts, gathers) read
# values of their first input, and are covered without rules of their own.
_RULES: dict[str, Callable[[Node, list], Range | None]] = {
    "add": lambda node, r: None if None in r else (r[0][0] + r[1][0], r[0][1] + r[1][1]),
    "sub": lambda node, r: None if None in r else (r[0][0] - r[1][1], r[0][1] - r[1][0]),
    "mul": lambda node, r: None if None in r else _product(r[0], r[1]),
    "neg": lambda node, r: None if r[0] is None else (-r[0][1], -r[0][0]),
    "maximum": lambda node, r: None if None in r else (max(r[0][0], r[1][0]),
                                                        max(r[0][1], r[1][1])),
    "minimum": lambda node, r: None if None in r else (min(r[0][0], r[1][0]),
                                                        min(r[0][1], r[1][1])),
    "where": lambda node, r: _union(r[1], r[2]),  # either branch's values
    "reshape": lambda node, r: r[0],  # (a reshape that copies is not a view)
    "cast": lambda node, r: r[0] if np.issubdtype(node.dtype, np.integer) else None,
    "argsort": _argsort,
    "cumsum": _cumsum,
    # 0 where no write names a place, else one of the ordinals (compiler/ops/index.py)
    "last_write": lambda node, r: _union((0, 0), r[0]),
}


def value_range(node: Node, memo: dict[int, Range | None] | None = None) -> Range | None:
    """The least and greatest value `node` can hold, when its integer values follow from
    constants and shapes through the rules above; else None."""
    memo = {} if memo is None else memo
    if node.id in memo:
        return memo[node.id]
    memo[node.id] = None  # (graphs are acyclic; this only guards the recursion)
    known = constant_value(node)
    if known is not None:
        values = np.asarray(known)
        found = (int(values.min()), int(values.max())) \
            if values.size and np.issubdtype(values.dtype, np.integer) else None
    elif isinstance(lowering_of(node), View) and node.inputs:
        found = value_range(node.inputs[0], memo)
    elif node.op in _RULES:
        found = _RULES[node.op](node, [value_range(x, memo) for x in node.inputs])
    else:
        found = None
    memo[node.id] = found
    return found


def in_range(node: Node, n: Dim) -> bool:
    """Whether every value of `node` is a valid index (negative ones included) into an axis of
    length `n`, by construction."""
    found = value_range(node)
    return found is not None and isinstance(n, int) and -n <= found[0] and found[1] < n


def never_negative(node: Node) -> bool:
    """Whether `node`'s values are known to be >= 0 (they need no wrapping)."""
    found = value_range(node)
    return found is not None and found[0] >= 0
