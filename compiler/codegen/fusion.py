"""Fusion: which nodes share a loop nest, which become arrays, and the order of the pieces.

A graph becomes a sequence of *units*:

- a `LoopNest` runs one loop nest over a shape (its *domain*). Its *members*
  are computed once per element: elementwise ops of that shape,
  matrix products done with an explicit inner loop (small static contraction),
  and views that must become arrays. Its *sinks* consume a member per element
  and finish after the nest: reductions (sum/prod/max/min over any axes) and
  scatters (pad_slice, take_grad, take_along_axis_grad). A member's value is a
  scalar local inside the loop; it becomes an array only if something outside
  the nest reads it (another unit, a view, a graph output).
- a `Call` is one statement outside any loop: a BLAS matrix product, a
  reshape that needs new strides, or a concatenate.

Layout ops that only re-index (transpose, broadcast_to, slice, reshapes that
add or drop size-1 axes) and gathers (take, take_along_axis) are *views*: no
code of their own, just index arithmetic where they are read. Values of shape
() are always scalar locals, never arrays.

A nest iterates over the non-1 axes of its shape, so values of shapes (N, 1)
and (N,) share one: reshapes that add or drop size-1 axes (keepdims and back,
everywhere in backward graphs) cost nothing, not even a loop.

Nodes are placed in topological order. A node joins a nest of its domain that
lets it read an input as a local (merging such nests first when they are
independent of each other), as long as that creates no cycle between units: a
nest runs as a whole, so it cannot read a value that is only ready after it
ends. Otherwise it starts a new nest. Finally, independent nests over the same
domain merge, so that data is read in one pass. Units are emitted in a
topological order of their dependencies, ties broken by creation order, so
the result is deterministic.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from compiler import ops
from compiler.ir import Graph, Node, Shape, Sym, users_of

# Matrix products call BLAS (compiler/codegen/blas.py) when any of their dimensions
# is symbolic or they are larger than this many multiply-adds; smaller ones (and every product
# with a contraction of length 1, an outer product) are an explicit loop inside
# the consumer's nest, with no array and no call. Measured on 2-D float32
# products (N,K)@(K,M), numba loops vs np.dot through OpenBLAS: at N=20 the
# loops win (K=M=16: 2.0 vs 3.0 us), but at N=256 BLAS already wins for K=10,
# M=5 (4.3 vs 7.1 us) and at N=4096 by 3x, and loops fall off a cliff past
# K=M=32 (K=M=64: 840 vs 27 us). A batch size is unknown when the kernel is
# generated, so symbolic dims always mean BLAS.
MATMUL_LOOP_MAX_FLOPS = 8192

REDUCTIONS = frozenset({"sum", "prod", "max", "min"})
SCATTERS = frozenset({"pad_slice", "take_grad", "take_along_axis_grad"})
GATHERS = frozenset({"take", "take_along_axis"})
REINDEXING = frozenset({"transpose", "broadcast_to", "slice"})


@dataclass(eq=False)
class LoopNest:
    domain: Shape  # the loop extents: the shape of its values without their size-1 axes
    order: int
    members: list[Node] = field(default_factory=list)
    sinks: list[Node] = field(default_factory=list)
    body: list[Node] = field(default_factory=list)  # members and sinks, in statement order
    member_ids: set[int] = field(default_factory=set)

    def add(self, node: Node, as_sink: bool) -> None:
        (self.sinks if as_sink else self.members).append(node)
        self.body.append(node)
        if not as_sink:
            self.member_ids.add(node.id)


@dataclass(eq=False)
class Call:
    node: Node
    order: int


Unit = LoopNest | Call


@dataclass
class Plan:
    graph: Graph
    nodes: list[Node]
    units: list[Unit]  # in emission order
    unit_of: dict[int, Unit]  # node id -> the unit that computes it
    views: set[int]  # nodes read through index arithmetic, with no code of their own
    arrays: set[int]  # nodes that live in arrays (besides inputs and constants)
    local_reads: set[int]  # members that their own nest reads as scalar locals

    def element_source(self, x: Node) -> Node:
        """The value whose element `x` is, at the same position: `x` seen through reshapes
        that only add or drop size-1 axes."""
        while x.id in self.views and is_unit_reshape(x):
            x = x.inputs[0]
        return x

    def reads_locally(self, consumer: Node, x: Node, nest: LoopNest) -> bool:
        """Whether `consumer`, placed in `nest`, reads its input `x` as a scalar local.

        True when `x` (up to size-1 reshapes) is a member of the same nest and the
        consumer reads its inputs at its own element. Both then iterate the same
        axes in the same order, so broadcasting cannot move the element.
        """
        source = self.element_source(x)
        return source.id in nest.member_ids and (source.shape == () or reads_in_place(consumer))


_LOWERINGS = {
    "input": "argument", "const": "literal or argument", "size": "shape arithmetic",
    "sum": "reduction", "prod": "reduction", "max": "reduction", "min": "reduction",
    "transpose": "view", "broadcast_to": "view", "slice": "view", "take": "view",
    "take_along_axis": "view", "reshape": "view or .reshape()", "concatenate": "copy loops",
    "pad_slice": "scatter", "take_grad": "scatter-add", "take_along_axis_grad": "scatter-add",
    "matmul": "BLAS gemm or contraction loop",
    "scan": "a loop calling its body's function (compiler/codegen/scans.py)",
    "tuple_get": "names a result of its scan",
    # compiler.custom.inline_calls replaces custom calls by their graphs before any backend.
    "custom_call": "inlined",
}


def lowering(op: str) -> str:
    """How code generation handles `op`. Every op in the table must have an answer: elementwise
    ops inline their template; the others are listed here."""
    if ops.get(op).kind == "elementwise":
        return "elementwise"
    if op not in _LOWERINGS:
        raise NotImplementedError(f"no code generation for op {op!r}")
    return _LOWERINGS[op]


def is_unit_reshape(node: Node) -> bool:
    """A reshape that only adds or removes size-1 axes: a view that re-indexes."""
    if node.op != "reshape":
        return False
    return without_ones(node.inputs[0].shape) == without_ones(node.shape)


def without_ones(shape: Shape) -> Shape:
    return tuple(d for d in shape if d != 1)


def is_view(node: Node) -> bool:
    return node.op in REINDEXING or node.op in GATHERS or is_unit_reshape(node)


def reads_in_place(node: Node) -> bool:
    """Whether a node reads its same-shaped inputs at its own element (so they can be locals).

    Elementwise ops and sinks do; matrix products and views read elsewhere.
    """
    kind = ops.get(node.op).kind
    return kind == "elementwise" or node.op in REDUCTIONS or node.op in SCATTERS


def uses_blas(node: Node) -> bool:
    """BLAS for 1-D/2-D float products that are symbolic or large; explicit loops otherwise."""
    a, b = node.inputs
    if not (a.dtype == b.dtype == node.dtype and node.type.is_float):
        return False
    if a.type.ndim > 2 or b.type.ndim > 2 or (a.type.ndim == 1 and b.type.ndim == 1):
        return False
    k = a.shape[-1]
    if k == 1:
        return False
    dims = (k,) + node.shape
    if any(isinstance(d, Sym) for d in dims):
        return True
    return math.prod(dims) > MATMUL_LOOP_MAX_FLOPS


def plan(graph: Graph) -> Plan:
    return _Planner(graph).run()


class _Planner:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = graph.nodes()
        self.users = users_of(self.nodes)
        self.output_ids = {n.id for n in graph.outputs}
        self.blas = {n.id for n in self.nodes if n.op == "matmul" and uses_blas(n)}
        self.materialized_views = self._views_needing_arrays()
        self.views = {n.id for n in self.nodes
                      if is_view(n) and n.id not in self.materialized_views}
        self.unit_of: dict[int, Unit] = {}
        self.units: list[Unit] = []
        self.plan = Plan(graph, self.nodes, [], self.unit_of, self.views, set(), set())
        self.deps: dict[int, set[int]] = {}  # unit order -> orders of units it reads from
        self.by_order: dict[int, Unit] = {}
        self.position = {n.id: i for i, n in enumerate(self.nodes)}
        self._orders = iter(range(len(self.nodes)))

    # --- which views must be copied into arrays -------------------------------------------
    def _views_needing_arrays(self) -> set[int]:
        """Views that a graph output, a reshape, a scan or a BLAS call needs as a real array."""
        needed: set[int] = set()
        for node in self.nodes:
            if not is_view(node) or node.shape == ():
                continue
            if node.id in self.output_ids:
                needed.add(node.id)
                continue
            for user in self.users[node.id]:
                if user.op == "reshape" and not is_unit_reshape(user) or user.op == "scan":
                    needed.add(node.id)
                elif user.id in self.blas and not self._blas_operand_ok(node, needed):
                    needed.add(node.id)
        return needed

    def _blas_operand_ok(self, view: Node, needed: set[int]) -> bool:
        """BLAS takes arrays and their transposes (F-contiguous views) as they are."""
        if view.op != "transpose" or len(view.shape) != 2:
            return False
        base = view.inputs[0]
        return not is_view(base) or base.id in needed

    # --- placement ---------------------------------------------------------------------
    def run(self) -> Plan:
        for node in self.nodes:
            self._place(node)
        self._merge_siblings()
        self.plan.arrays, self.plan.local_reads = self._storage()
        self.plan.units = self._emission_order()
        return self.plan

    def _place(self, node: Node) -> None:
        if lowering(node.op) == "inlined":
            raise AssertionError(f"{node.op} reached code generation; it should be inlined")
        if node.op in ("input", "const", "size") or node.id in self.views:
            return
        if node.op == "tuple_get":  # a result of the scan's call: its unit computes it
            self.unit_of[node.id] = self.unit_of[node.inputs[0].id]
            return
        if node.op == "matmul" and node.id in self.blas or node.op in ("concatenate", "scan") \
                or self._reshapes_storage(node):
            self._new_unit(Call(node, next(self._orders)), node)
            return
        as_sink = node.op in REDUCTIONS or node.op in SCATTERS
        domain = without_ones(node.inputs[0].shape if as_sink else node.shape)
        holding = self._nests_holding_inputs(node, domain)
        for other in holding[1:]:
            if self._independent(holding[0], other):
                self._merge(other, into=holding[0])
        for nest in dict.fromkeys(self._nest_of_source(x) for x in node.inputs
                                  if self._is_local_candidate(node, x, domain)):
            if self._can_join(node, nest):
                self._join(node, nest, as_sink)
                return
        nest = LoopNest(domain, next(self._orders))
        self._new_unit(nest, None)
        self._join(node, nest, as_sink)

    def _reshapes_storage(self, node: Node) -> bool:
        """A reshape done by `.reshape()` on a C-contiguous array: new strides, no copy."""
        if node.op != "reshape" or node.id in self.views:
            return False
        x = node.inputs[0]
        return x.shape != () and (not is_view(x) or x.id in self.materialized_views)

    def _nest_of_source(self, x: Node) -> Unit | None:
        return self.unit_of.get(self.plan.element_source(x).id)

    def _is_local_candidate(self, node: Node, x: Node, domain: Shape) -> bool:
        nest = self._nest_of_source(x)
        return isinstance(nest, LoopNest) and nest.domain == domain \
            and self.plan.reads_locally(node, x, nest)

    def _nests_holding_inputs(self, node: Node, domain: Shape) -> list[LoopNest]:
        """Nests that would let `node` read an input as a local, most recent first."""
        nests = {self._nest_of_source(x) for x in node.inputs
                 if self._is_local_candidate(node, x, domain)}
        return sorted(nests, key=lambda u: -u.order)

    def _independent(self, a: Unit, b: Unit) -> bool:
        return not self._depends_on(a.order, b.order) and not self._depends_on(b.order, a.order)

    def _merge(self, other: LoopNest, into: LoopNest) -> None:
        """One nest instead of two independent ones over the same domain."""
        for node in other.body:
            into.add(node, as_sink=node.id not in other.member_ids)
            self.unit_of[node.id] = into
        into.body.sort(key=lambda n: self.position[n.id])
        self.deps[into.order] |= self.deps.pop(other.order)
        for deps in self.deps.values():
            if other.order in deps:
                deps.discard(other.order)
                deps.add(into.order)
        self.deps[into.order].discard(into.order)
        del self.by_order[other.order]
        self.units.remove(other)

    def _merge_siblings(self) -> None:
        """Fuse independent nests over the same domain: one pass over the data, not two."""
        nests = [u for u in self.units if isinstance(u, LoopNest)]
        for k, nest in enumerate(nests):
            if nest.order not in self.by_order:
                continue
            for other in nests[k + 1:]:
                if other.order in self.by_order and other.domain == nest.domain \
                        and self._independent(nest, other):
                    self._merge(other, into=nest)

    def _new_unit(self, unit: Unit, node: Node | None) -> None:
        self.units.append(unit)
        self.by_order[unit.order] = unit
        self.deps[unit.order] = set()
        if node is not None:
            self.unit_of[node.id] = unit
            self.deps[unit.order] |= self._producers_of_all(node.inputs)

    def _join(self, node: Node, nest: LoopNest, as_sink: bool) -> None:
        nest.add(node, as_sink)
        self.unit_of[node.id] = nest
        external = [x for x in node.inputs if not self.plan.reads_locally(node, x, nest)]
        self.deps[nest.order] |= self._producers_of_all(external) - {nest.order}

    def _can_join(self, node: Node, nest: LoopNest) -> bool:
        for x in node.inputs:
            if self.plan.reads_locally(node, x, nest):
                continue
            for producer in self._producers(x):
                if producer == nest.order or self._depends_on(producer, nest.order):
                    return False
        return True

    def _producers(self, node: Node) -> set[int]:
        """Units whose results reading `node` touches (through views and sizes)."""
        if node.op in ("input", "const"):
            return set()
        if node.op == "size":  # reads only shapes
            return set()
        if node.id in self.views:
            return self._producers_of_all(node.inputs)
        return {self.unit_of[node.id].order}

    def _producers_of_all(self, nodes) -> set[int]:
        found: set[int] = set()
        for x in nodes:
            found |= self._producers(x)
        return found

    def _depends_on(self, start: int, target: int) -> bool:
        stack, seen = [start], {start}
        while stack:
            for dep in self.deps[stack.pop()]:
                if dep == target:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return False

    # --- results -------------------------------------------------------------------------
    def _storage(self) -> tuple[set[int], set[int]]:
        """(nodes that need arrays, members read as locals in their nest).

        A member needs an array only if something reads it from elsewhere: another
        unit, a view, a graph output. Shapes () are scalar locals, never arrays.
        """
        arrays: set[int] = set()
        local_reads: set[int] = set()
        for node in self.nodes:
            unit = self.unit_of.get(node.id)
            if unit is None or node.op == "scan" or (
                    isinstance(unit, LoopNest) and node.id in unit.member_ids
                    and node.shape == ()):
                continue
            if isinstance(unit, Call) or node.id not in unit.member_ids:
                if node.shape != ():
                    arrays.add(node.id)
                continue
            for reader, read in self._readers(node):
                if self.unit_of.get(reader.id) is unit and \
                        self.plan.reads_locally(reader, read, unit):
                    local_reads.add(node.id)
                else:
                    arrays.add(node.id)
            if node.id in self.output_ids:
                arrays.add(node.id)
        return arrays, local_reads

    def _readers(self, node: Node):
        """(reader, what it reads) for every read of `node`, seen through size-1 reshapes.

        A reshape that is a graph output is read after every unit, as its own reader: a
        shape () output is a view, not an array (`np.squeeze(x * 2.0)` with x of shape (1,)),
        so what it reshapes must be stored where the return statement can read it."""
        for user in self.users[node.id]:
            if user.op == "size":  # reads the shape only
                continue
            if user.id in self.views and is_unit_reshape(user):
                if user.id in self.output_ids:
                    yield user, node
                yield from self._readers(user)
            else:
                yield user, node

    def _emission_order(self) -> list[Unit]:
        waiting = {order: set(deps) for order, deps in self.deps.items()}
        dependents: dict[int, list[int]] = {order: [] for order in waiting}
        for order, deps in waiting.items():
            for dep in deps:
                dependents[dep].append(order)
        ready = [order for order, deps in waiting.items() if not deps]
        heapq.heapify(ready)
        result: list[Unit] = []
        while ready:
            order = heapq.heappop(ready)
            result.append(self.by_order[order])
            for later in dependents[order]:
                waiting[later].discard(order)
                if not waiting[later]:
                    heapq.heappush(ready, later)
        assert len(result) == len(self.units), "fusion made a cycle between units"
        return result
