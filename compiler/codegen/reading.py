"""Reading a value at an index: array reads, scalar names, literals, and views as index arithmetic.

`Reader.read(node, index)` gives the code of one element of `node`, where
`index` holds one index expression per axis of `node`. Views (transpose,
broadcast_to, slice, size-1 reshapes, gathers) have no storage: reading one
maps the index onto its input and reads that, so `X.T[i0, i1]` is
`X[i1, i0]` and `take(W, ids)[i0, i1]` is `W[_wrap(ids[i0], 50), i1]`.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.codegen.prelude import HelperSet
from compiler.codegen.scalars import Operand, literal
from compiler.ir import Dim, Node, Shape, Sym

Index = tuple[str, ...]


def dim_text(d: Dim) -> str:
    return d.name if isinstance(d, Sym) else str(d)


def shape_text(shape: Shape) -> str:
    items = [dim_text(d) for d in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def subscript(name: str, index: Index) -> str:
    return f"{name}[{', '.join(index)}]" if index else name


def broadcast_index(shape: Shape, index: Index) -> Index:
    """The index into an operand of `shape` that broadcasts against a result indexed by `index`."""
    lead = len(index) - len(shape)
    return tuple("0" if d == 1 else index[lead + a] for a, d in enumerate(shape))


def is_atom(expr: str) -> bool:
    """Whether `expr` needs no parentheses as an operand (generated code spaces its operators)."""
    depth = 0
    for ch in expr:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == " " and depth == 0:
            return False
    return not expr.startswith("-")


def atom(expr: str) -> str:
    return expr if is_atom(expr) else f"({expr})"


def offset(start: int, step: int, i: str) -> str:
    """The index expression `start + step * i`, simplified."""
    if i.isdigit():
        return str(start + step * int(i))
    scaled = atom(i) if abs(step) == 1 else f"{abs(step)} * {atom(i)}"
    if start == 0:
        return scaled if step > 0 else f"-{scaled}"
    return f"{start} + {scaled}" if step > 0 else f"{start} - {scaled}"


class Reader:
    """Element reads for one kernel, given the name of every stored value.

    `names` maps node ids to generated names: arrays (inputs, constants,
    materialized values) and scalar locals (values of shape ()).
    """

    def __init__(self, names: dict[int, str], views: set[int], helpers: HelperSet) -> None:
        self.names = names
        self.views = views
        self.helpers = helpers

    def operand(self, node: Node, index: Index) -> Operand:
        if node.op == "const" and node.shape == ():
            value = node.attrs["value"]
            return Operand(literal(value, node.dtype), node.dtype, value)
        return Operand(self.read(node, index), node.dtype)

    def read(self, node: Node, index: Index) -> str:
        assert len(index) == len(node.shape), (node, index)
        if node.op == "const" and node.shape == ():
            return literal(node.attrs["value"], node.dtype)
        if node.op == "size":
            return self._size(node)
        if node.id in self.views:
            return self.through(node, index)
        return subscript(self.names[node.id], index)

    def through(self, view: Node, index: Index) -> str:
        """Read view `view` at `index` by reading its input at the mapped index."""
        x = view.inputs[0]
        if view.op == "transpose":
            mapped = [""] * len(index)
            for axis, source in enumerate(view.attrs["perm"]):
                mapped[source] = index[axis]
            return self.read(x, tuple(mapped))
        if view.op == "broadcast_to":
            return self.read(x, broadcast_index(x.shape, index))
        if view.op == "reshape":  # adds or drops size-1 axes only
            kept = iter(i for i, d in zip(index, view.shape) if d != 1)
            return self.read(x, tuple("0" if d == 1 else next(kept) for d in x.shape))
        if view.op == "slice":
            return self.read(x, tuple(offset(start, step, i) for (start, _, step), i
                                      in zip(view.attrs["index"], index)))
        if view.op == "take":
            return self._take(view, index)
        if view.op == "take_along_axis":
            return self._take_along(view, index)
        raise AssertionError(f"{view.op} is not a view")

    def gathered(self, indices: Node, index: Index, n: Dim) -> str:
        """The position read from `indices` at `index`, wrapped like NumPy's negative indices."""
        position = self.read(indices, index)
        if indices.op == "const" and np.all(indices.attrs["value"] >= 0):
            return position
        return f"{self.helpers.use('_wrap', indices.dtype)}({position}, {dim_text(n)})"

    def _take(self, view: Node, index: Index) -> str:
        x, indices = view.inputs
        axis = view.attrs["axis"]
        k = indices.type.ndim
        position = self.gathered(indices, index[axis:axis + k], x.shape[axis])
        return self.read(x, index[:axis] + (position,) + index[axis + k:])

    def _take_along(self, view: Node, index: Index) -> str:
        x, indices = view.inputs
        axis = view.attrs["axis"]
        position = self.gathered(indices, broadcast_index(indices.shape, index), x.shape[axis])
        mapped = broadcast_index(x.shape, index)
        return self.read(x, mapped[:axis] + (position,) + mapped[axis + 1:])

    def _size(self, node: Node) -> str:
        dims = [node.inputs[0].shape[a] for a in node.attrs["axes"]]
        static = math.prod(d for d in dims if isinstance(d, int))
        symbolic = sorted(d.name for d in dims if isinstance(d, Sym))
        if not symbolic:
            return literal(static, node.dtype)
        product = " * ".join(symbolic + ([str(static)] if static != 1 else []))
        if node.dtype == np.int64:
            return atom(product)
        return Operand(product, np.dtype(np.int64)).as_dtype(node.dtype)
