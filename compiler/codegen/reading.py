"""Reading a value at an index: array reads, scalar names, literals, and views as index arithmetic.

`Reader.read(node, index)` gives the code of one element of `node`, where
`index` holds one index expression per axis of `node`. Views (transpose,
broadcast_to, slice, size-1 reshapes, gathers) have no storage: reading one
maps the index onto its input and reads that, as the view's op says (its
lowering's `read`), so `X.T[i0, i1]` is `X[i1, i0]` and `take(W, ids)[i0, i1]`
is `W[_wrap(ids[i0], 50), i1]`.
"""

from __future__ import annotations

from compiler.codegen.index_bounds import in_range, never_negative
from compiler.codegen.prelude import HelperSet
from compiler.codegen.scalars import Operand, literal
from compiler.ir import Dim, Node, Shape, Sym
from compiler.ops.lowering import Source, lowering_of

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
    materialized values) and scalar locals (values of shape ()). How a view or a
    source is read is its op's lowering (compiler/ops/lowering.py).
    """

    def __init__(self, names: dict[int, str], views: set[int], helpers: HelperSet) -> None:
        self.names = names
        self.views = views
        self.helpers = helpers
        # (indices node id, axis length) pairs the kernel checked before it reads them
        self.checked: set[tuple[int, str]] = set()

    def operand(self, node: Node, index: Index) -> Operand:
        value = _literal_value(node)
        if value is not None:
            return Operand(literal(value, node.dtype), node.dtype, value)
        return Operand(self.read(node, index), node.dtype)

    def read(self, node: Node, index: Index) -> str:
        assert len(index) == len(node.shape), (node, index)
        lowering = lowering_of(node)
        if isinstance(lowering, Source):
            value = _literal_value(node)
            if value is not None:
                return literal(value, node.dtype)
            if lowering.read is not None:
                return lowering.read(self, node)
        if node.id in self.views:
            return self.through(node, index)
        return subscript(self.names[node.id], index)

    def through(self, view: Node, index: Index) -> str:
        """Read view `view` at `index` by reading its input at the mapped index."""
        return lowering_of(view).read(self, view, index)

    def gathered(self, indices: Node, index: Index, n: Dim) -> str:
        """The position read from `indices` at `index`, wrapped like NumPy's negative indices,
        and checked against `n` unless the kernel checked it first or it is in range by
        construction (a constant against a static axis was checked when it was traced)."""
        position = self.read(indices, index)
        if (indices.id, dim_text(n)) not in self.checked and not in_range(indices, n):
            return f"{self.helpers.use('_checked_wrap', indices.dtype)}({position}, " \
                   f"{dim_text(n)})"
        if never_negative(indices):
            return position
        return f"{self.helpers.use('_wrap', indices.dtype)}({position}, {dim_text(n)})"


def _literal_value(node: Node):
    """The scalar a node is spelled as in code, if it is a scalar constant."""
    lowering = lowering_of(node)
    if isinstance(lowering, Source) and lowering.value is not None:
        return lowering.value(node)
    return None
