"""Anomaly mode: kernels that stop at the first NaN or Inf an op produces, and say which op.

`with_checks(graph)` puts a `check_finite` (compiler/ops/checks.py) after every op
that computes new float values -- elementwise math, reductions, matrix products,
scatter-adds; not views, which only move values -- so the check runs in the same
loop, right after the value is made. Values that only reach the branches of a
`np.where`, element by element, are not checked: `np.where(x > 0, np.sqrt(x), 0.0)`
computes NaN where it then picks 0, as do the derivatives of sqrt, log and `/`; the
`where` itself is checked instead, so a NaN that it picks is caught. Each check
knows its *site*, the op it watches; `CheckedKernel` turns the kernel's `FloatingPointError(site,
value)` into an `AnomalyError` naming the op, forward or backward, and the user's
line. Graphs, and so kernels, without checks are the ones that run when anomaly mode
is off: checks cost nothing then.

Used by `compile_grad(..., check_finite=True)` and `runtime.detect_anomaly()`.
"""

from __future__ import annotations

import numpy as np

from compiler import ops
from compiler.errors import AnomalyError
from compiler.ir import Graph, Node, TensorType, users_of
from compiler.ops.control import Loop

_GATHERS = frozenset({"take", "take_along_axis"})  # views: they read values, make none
_SITE = TensorType(np.dtype(np.int64), ())


def makes_values(node: Node) -> bool:
    """Whether `node` computes new float values (which may be NaN or Inf)."""
    if not node.type.is_float:
        return False
    kind = ops.get(node.op).kind
    return kind in ("elementwise", "reduce", "matmul") and node.op != "check_finite" \
        or (kind == "index" and node.op not in _GATHERS)


def with_checks(graph: Graph, sites: list[Node] | None = None) -> tuple[Graph, list[Node]]:
    """`graph` with a finite check after each value-making op, in loop bodies too; the
    checked ops, by site (numbered on from `sites`)."""
    nodes = graph.nodes()
    dropped = _droppable(nodes, {n.id for n in graph.outputs})
    sites = [] if sites is None else sites
    memo: dict[int, Node] = {}
    for node in nodes:
        inputs = tuple(memo.get(x.id, x) for x in node.inputs)
        attrs = node.attrs
        loop = attrs.get("loop")
        if node.op == "scan" and isinstance(loop, Loop):
            body, _ = with_checks(loop.body, sites)
            attrs = {**attrs, "loop": Loop(body, loop.n_consts, loop.n_carries, loop.length,
                                           loop.reverse, loop.grad, loop.name)}
        new = node if attrs is node.attrs and all(a is b for a, b in zip(inputs, node.inputs)) \
            else Node(node.op, inputs, attrs, node.type, node.name, node.loc, node.grad_of)
        if makes_values(node) and node.id not in dropped:
            site = Node("const", (), {"value": np.asarray(len(sites), np.int64)}, _SITE)
            new = Node("check_finite", (new, site), {}, node.type, loc=node.loc,
                       grad_of=node.grad_of)
            sites.append(node)
        memo[node.id] = new
    return Graph(graph.inputs, [memo[o.id] for o in graph.outputs], graph.name), sites


_ELEMENT_PRESERVING = frozenset({"transpose", "reshape", "broadcast_to", "slice"})
_DECIDING = frozenset({"lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or",
                       "logical_xor", "logical_not", "sign"})


def _droppable(nodes: list[Node], outputs: set[int]) -> set[int]:
    """Values whose NaN or Inf can only reach elements that a `where` then drops: those
    used as a branch of a `where`, and those that only feed such values element by element
    (`np.where(x > 0, np.log(x) * 2, 0)`, and the safe derivatives of sqrt, log and /,
    which compute g / x where g is 0 and pick 0 there where it is not finite), and the
    differences x - x that test finiteness (np.isfinite, those derivatives' guards)."""
    users = users_of(nodes)
    dropped: set[int] = set()
    for node in reversed(nodes):  # users first
        uses = users[node.id]
        if node.id not in outputs and uses and all(_drops(u, node, dropped) for u in uses):
            dropped.add(node.id)
    return dropped


def _drops(user: Node, node: Node, dropped: set[int]) -> bool:
    if user.op == "where":
        return user.inputs[0] is not node  # a branch: the condition decides
    if _finiteness_test(user) or (user.op in ("eq", "ne") and _finiteness_test(node)):
        return True  # x - x, NaN exactly where x is not finite, compared: np.isfinite, safe()
    kind = ops.get(user.op).kind
    element_wise = (kind == "elementwise" and user.op not in _DECIDING) \
        or user.op in _ELEMENT_PRESERVING
    return element_wise and user.id in dropped


def _finiteness_test(node: Node) -> bool:
    """Whether `node` is x - x, the difference np.isfinite and the guards of the safe
    derivatives compare with 0 (compiler/ops/elementwise.py): its NaN is what they test."""
    return node.op == "sub" and node.inputs[0] is node.inputs[1]


class CheckedKernel:
    """A kernel of a graph made by `with_checks`: what it raises names the op and the line."""

    def __init__(self, kernel, sites: list[Node], kind: str, name: str) -> None:
        self.kernel = kernel
        self.source = kernel.source
        self.sites = sites
        self.kind = kind
        self.name = name
        self.checks_arguments = getattr(kernel, "checks_arguments", False)

    def call(self, *arrays):
        try:
            return self.kernel.call(*arrays)
        except FloatingPointError as err:
            raise self.anomaly(err) from None

    def __call__(self, arrays: list) -> list:
        try:
            return self.kernel(arrays)
        except FloatingPointError as err:
            raise self.anomaly(err) from None

    def anomaly(self, err: FloatingPointError) -> Exception:
        if len(err.args) != 2 or not isinstance(err.args[0], (int, np.integer)):
            return err  # not one of ours
        site, value = err.args
        node = self.sites[int(site)]
        if node.grad_of is not None:
            what = f"the gradient of {node.grad_of.op} ({node.op} in its derivative)"
        else:
            what = node.op
        return AnomalyError(f"anomaly mode: {what} produced {value} in the {self.kind} kernel "
                            f"of {self.name}", node.loc)
