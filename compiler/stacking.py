"""The values of a rolled loop's steps as one stacked array, and a step's row of a stack.

The roller (compiler/roll.py) turns a run of identical steps into a scan: what differs
between the steps becomes the scan's xs, stacked on a new leading axis, and a value the
steps compute is read back as a row of the scan's stacked ys. Slices X[t] of one array at
evenly spaced positions stack back into a view of X rather than a copy; rows a loop writes
into an array one per step (`out[t] = h`) are written from the stack at once.
"""

from __future__ import annotations

import numpy as np

from compiler import ops
from compiler.ir import Node, TensorType
from compiler.ops.control import stacked


def stack(values: list[Node]) -> Node:
    """The values stacked on a new leading axis; slices X[t] of one array stack back into a
    view of X."""
    view = _stacked_slices(values)
    if view is not None:
        return view
    t = values[0].type
    row = TensorType(t.dtype, (1,) + t.shape)
    rows = tuple(Node("reshape", (v,), {"shape": row.shape}, row, v.name, v.loc)
                 for v in values)
    return Node("concatenate", rows, {"axis": 0}, stacked(t, len(values)),
                common_name(values), values[0].loc)


def _stacked_slices(values: list[Node]) -> Node | None:
    """X, its axis moved first and sliced, when value m is X[..., i_m, ...] (one element of
    one axis, that axis dropped) at evenly spaced positions i_m."""
    found = [_unit_slice(v) for v in values]
    if any(f is None for f in found) or len({(id(f[0]), f[1]) for f in found}) != 1:
        return None
    base, axis, _ = found[0]
    positions = [f[2] for f in found]
    step = positions[1] - positions[0]
    if step == 0 or any(b - a != step for a, b in zip(positions, positions[1:])):
        return None
    result = base
    if axis != 0:
        perm = (axis,) + tuple(a for a in range(base.type.ndim) if a != axis)
        result = _node("transpose", result, perm=perm)
    stop = positions[-1] + 1 if step > 0 else positions[-1] - 1
    index = ((positions[0], stop, step),) + tuple((0, d, 1) for d in result.type.shape[1:])
    if index[0] != (0, result.type.shape[0], 1):
        result = _node("slice", result, index=index)
    shape = (len(values),) + values[0].type.shape
    return result if result.type.shape == shape else _node("reshape", result, shape=shape)


def _unit_slice(value: Node) -> tuple[Node, int, int] | None:
    """(X, axis, i) when `value` takes element i of one axis of X: X[i:i+1] (a slice), or
    X[i] (that slice with the axis dropped)."""
    sliced = value.inputs[0] if value.op == "reshape" else value
    if sliced.op != "slice":
        return None
    base = sliced.inputs[0]
    cut = [a for a, spec in enumerate(sliced.attrs["index"])
           if spec != (0, base.type.shape[a], 1)]
    if len(cut) != 1 or sliced.type.shape[cut[0]] != 1:
        return None
    axis = cut[0]
    dropped = tuple(d for a, d in enumerate(sliced.type.shape) if a != axis)
    if value is not sliced and value.type.shape != dropped:
        return None
    return base, axis, sliced.attrs["index"][axis][0]


def _node(op: str, x: Node, **attrs) -> Node:
    return Node(op, (x,), attrs, ops.get(op).infer(x.type, **attrs), x.name, x.loc)


def row(stack: Node, m: int, like: Node) -> Node:
    """stack[m]: row m of the stack's leading axis, that axis dropped."""
    index = ((m, m + 1, 1),) + tuple((0, d, 1) for d in stack.type.shape[1:])
    row = _node("slice", stack, index=index)
    return Node("reshape", (row,), {"shape": like.type.shape}, like.type, like.name, like.loc)


def written_rows(ys: Node, initial: Node, axis: int, positions: tuple[int, ...],
                 mask: np.ndarray, like: Node) -> Node:
    """`initial` with row positions[m] along `axis` replaced by ys[m] (each of them that row,
    its axis kept as 1): what a loop's `out[t] = v` leaves in `out`, as one where whose
    `mask` is every row written (compiler/numpy_api/assignment.py writes one so)."""
    steps, shape = len(positions), initial.type.shape
    rows = ys
    if positions[-1] < positions[0]:  # written last to first: the stack reversed
        rows = _node("slice", rows, index=((steps - 1, -1, -1),) +
                     tuple((0, d, 1) for d in rows.type.shape[1:]))
    kept = tuple(d for a, d in enumerate(rows.type.shape[1:]) if a != axis)
    rows = _node("reshape", rows, shape=(steps,) + kept)
    if axis != 0:  # the steps' axis moved to where the rows were taken along
        rows = _node("transpose", rows,
                     perm=tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, len(shape))))
    low, step = min(positions), abs(positions[1] - positions[0])
    index = tuple((low, low + (steps - 1) * step + 1, step) if a == axis else (0, d, 1)
                  for a, d in enumerate(shape))
    padded = Node("pad_slice", (rows,), {"shape": shape, "index": index},
                  ops.get("pad_slice").infer(rows.type, shape=shape, index=index), like.name,
                  like.loc)
    where = Node("const", (), {"value": mask}, TensorType(mask.dtype, mask.shape))
    return Node("where", (where, padded, initial), {}, like.type, like.name, like.loc)


def common_name(values: tuple[Node, ...]) -> str | None:
    """`W` for values named W_0, W_1, ... (the leaves of a list); else the first one's name."""
    stems = {v.name.rpartition("_")[0] if v.name and v.name.rpartition("_")[2].isdigit()
             else None for v in values}
    stem = stems.pop() if len(stems) == 1 else None
    return stem or values[0].name
