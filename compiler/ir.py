"""The typed SSA graph that both front ends build and every pass transforms.

A `Graph` is a list of input nodes, a list of output nodes, and everything that
the outputs reach. Each `Node` produces one value of a `TensorType`: a NumPy
dtype and a shape whose entries are ints or symbolic dimensions (`Sym`), so one
graph serves every batch size. Nodes are immutable once built; passes build new
nodes instead of editing old ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, order=True)
class Sym:
    """A symbolic dimension, such as the batch size `N`, known only at run time."""

    name: str
    # Whether the trace took this size for one other than 1 where NumPy's rule differs at 1
    # (`x.squeeze()` kept the axis): kernels then refuse a size of 1, which has a trace of its
    # own (compiler/specialize.py). Learned while tracing, so not part of the dim's identity.
    not_one: bool = field(default=False, compare=False, repr=False)

    def assume_not_one(self) -> None:
        object.__setattr__(self, "not_one", True)  # frozen for its identity (`name`) only

    def __str__(self) -> str:
        return self.name


Dim = int | Sym
Shape = tuple[Dim, ...]


def shape_str(shape: Shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def is_static(shape: Shape) -> bool:
    return all(isinstance(d, int) for d in shape)


_DTYPE_ABBREV = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool"}


@dataclass(frozen=True)
class TensorType:
    """dtype and shape of a value; a shape of () is a scalar."""

    dtype: np.dtype
    shape: Shape

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return np.issubdtype(self.dtype, np.floating)

    def __str__(self) -> str:
        abbrev = _DTYPE_ABBREV.get(self.dtype.name, self.dtype.name)
        return abbrev + shape_str(self.shape)


@dataclass(frozen=True)
class TupleType:
    """The type of a node with several results (a `scan`); `tuple_get` reads one of them."""

    items: tuple[TensorType, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))

    is_float = False  # never differentiated as a whole: its items are, through tuple_get

    def __str__(self) -> str:
        return "(" + ", ".join(str(t) for t in self.items) + ")"


@dataclass(frozen=True)
class SourceLoc:
    """Where in the user's code a node was made: file, line and the line's text, the NumPy
    call the user wrote there (`np.mean`, `@`, `.sum()`) and, for a node made inside a
    library helper the user called (`runtime.functional`), that helper and its line."""

    filename: str
    lineno: int
    text: str = ""
    call: str = ""
    helper: str = ""  # `logsumexp (functional.py:41)`

    def __str__(self) -> str:
        return f"{self.short_filename}:{self.lineno}"

    @property
    def short_filename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    def with_call(self, call: str) -> SourceLoc:
        return SourceLoc(self.filename, self.lineno, self.text, call, self.helper)


_node_ids = itertools.count()


@dataclass(eq=False)
class Node:
    """One SSA value: `op(*inputs, **attrs)` of type `type`.

    `name` is a hint taken from the user's code (a variable or parameter name);
    `loc` is the user's line that made it; `grad_of` marks a backward node with
    the forward node whose derivative it computes (for comments in generated code).
    """

    op: str
    inputs: tuple[Node, ...]
    attrs: dict[str, Any]
    type: TensorType | TupleType
    name: str | None = None
    loc: SourceLoc | None = None
    grad_of: Node | None = None
    id: int = field(default_factory=lambda: next(_node_ids))

    @property
    def shape(self) -> Shape:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    def attrs_key(self) -> tuple:
        """attrs as a hashable, order-independent key (constants hash by bytes)."""
        return tuple(sorted((k, freeze(v)) for k, v in self.attrs.items()))

    def __repr__(self) -> str:
        return f"<Node {self.op} {self.type} #{self.id}>"


def freeze(value: Any) -> Any:
    """An attribute value as a hashable key (arrays by their bytes, NaN equal to itself)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, np.dtype):
        return value.str
    if isinstance(value, (float, np.floating)) and value != value:
        return "nan"  # NaN != NaN would defeat hashing of equal constants
    return value


@dataclass
class Graph:
    """A function in IR: input nodes (op "input"), output nodes, and what they reach."""

    inputs: list[Node]
    outputs: list[Node]
    name: str = "f"

    def nodes(self) -> list[Node]:
        """Every node the outputs reach, plus all inputs, in a deterministic topological order."""
        return toposort(self.outputs, self.inputs)

    def __str__(self) -> str:
        from compiler.printer import format_graph

        return format_graph(self)


def constant_value(node: Node) -> Any:
    """The array a constant node holds; None for any other node."""
    return node.attrs["value"] if node.op == "const" else None


def walk(graph: Graph) -> Iterator[Node]:
    """Every node of `graph` and of the graphs its nodes hold (a scan's body), depth first."""
    for node in graph.nodes():
        yield node
        for body in bodies(node):
            yield from walk(body)


def bodies(node: Node) -> list[Graph]:
    """The graphs a node holds: an attribute that has one exposes it as `.body` (a `Loop`)."""
    return [v.body for v in node.attrs.values() if isinstance(getattr(v, "body", None), Graph)]


def toposort(roots: Iterable[Node], leading: Iterable[Node] = ()) -> list[Node]:
    """Post-order DFS from `roots` (inputs visited in order), iterative to allow deep graphs."""
    order: list[Node] = []
    seen: set[int] = set()
    for node in leading:
        if node.id not in seen:
            seen.add(node.id)
            order.append(node)
    for root in roots:
        if root.id in seen:
            continue
        stack: list[tuple[Node, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i < len(node.inputs):
                stack.append((node, i + 1))
                child = node.inputs[i]
                if child.id not in seen:
                    stack.append((child, 0))
            elif node.id not in seen:
                seen.add(node.id)
                order.append(node)
    return order


def users_of(nodes: list[Node]) -> dict[int, list[Node]]:
    """Map node id -> the nodes (in `nodes`) that consume it, in order, once per use."""
    users: dict[int, list[Node]] = {n.id: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i.id, []).append(n)
    return users


def rebuild(roots: list[Node], replace: dict[int, Node]) -> list[Node]:
    """Copies of `roots` with the nodes in `replace` (by id) substituted; the rest is shared."""
    memo: dict[int, Node] = dict(replace)
    for node in toposort(roots):
        if node.id in memo:
            continue
        inputs = tuple(memo.get(i.id, i) for i in node.inputs)
        if all(a is b for a, b in zip(inputs, node.inputs)):
            memo[node.id] = node
        else:
            memo[node.id] = Node(node.op, inputs, node.attrs, node.type, node.name, node.loc,
                                 node.grad_of)
    return [memo[r.id] for r in roots]
