"""Fusion: which nodes share a loop nest, which become arrays, and the order of the pieces.

Each node's op says what role it plays (its lowering: compiler/ops/lowering.py); from
the roles, a graph becomes a sequence of *units*:

- a `LoopNest` runs one loop nest over a shape (its *domain*). Its *members*
  are computed once per element: elementwise ops of that shape, small matrix
  products as an explicit inner loop, and views that must become arrays. Its
  *sinks* consume a member per element and finish after the nest: reductions
  over any axes, and scatters into zeros. A member's value is a scalar local
  inside the loop; it becomes an array only if something outside the nest
  reads it (another unit, a view, a graph output).
- a `Call` is one statement (or its own loops) outside any nest: a BLAS matrix
  product, a reshape that needs new strides, a concatenation, a scan.

*Views* (transposes, broadcasts, slices, size-1 reshapes, gathers) have no code
of their own, just index arithmetic where they are read. Values of shape () are
always scalar locals, never arrays.

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
from dataclasses import dataclass, field

from compiler.ir import Graph, Node, Shape, TupleType, users_of
from compiler.ops.lowering import Lowering, View, lowering_of


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
        while x.id in self.views and is_unit_view(x):
            x = x.inputs[0]
        return x

    def reads_locally(self, consumer: Node, x: Node, nest: LoopNest) -> bool:
        """Whether `consumer`, placed in `nest`, reads its input `x` as a scalar local.

        True when `x` (up to size-1 reshapes) is a member of the same nest and the
        consumer reads its inputs at its own element. Both then iterate the same
        axes in the same order, so broadcasting cannot move the element.
        """
        source = self.element_source(x)
        return source.id in nest.member_ids and (source.shape == () or
                                                 reads_in_place(consumer, x))


def role_of(node: Node) -> str:
    """The role code generation gives `node` (compiler/ops/lowering.py)."""
    return lowering_of(node).role(node)


def is_unit_view(node: Node) -> bool:
    """A view that only adds or removes size-1 axes (a reshape): every element stays put."""
    lowering = lowering_of(node)
    return isinstance(lowering, View) and lowering.unit


def without_ones(shape: Shape) -> Shape:
    return tuple(d for d in shape if d != 1)


def is_view(node: Node) -> bool:
    return role_of(node) == "view"


def reads_in_place(node: Node, operand: Node) -> bool:
    """Whether a node reads its same-shaped input `operand` at its own element (so it can be a
    local).

    Elementwise ops and sinks do (a scatter its value, not its indices); matrix products and
    views read elsewhere.
    """
    return lowering_of(node).reads_at_element(node, operand)


def calls_blas(node: Node) -> bool:
    lowering: Lowering = lowering_of(node)
    return getattr(lowering, "calls_blas", False)


def plan(graph: Graph) -> Plan:
    return _Planner(graph).run()


class _Planner:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes = graph.nodes()
        self.users = users_of(self.nodes)
        self.output_ids = {n.id for n in graph.outputs}
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
        """Views that a graph output, or a node that reads arrays (a reshape, a scan, a BLAS
        call: their lowering's `needs_array`), needs as a real array."""
        needed: set[int] = set()

        def is_array(x: Node) -> bool:
            return not is_view(x) or x.id in needed

        for node in self.nodes:
            if not is_view(node) or node.shape == ():
                continue
            if node.id in self.output_ids or any(
                    lowering_of(user).needs_array(user, node, is_array)
                    for user in self.users[node.id]):
                needed.add(node.id)
        return needed

    # --- placement ---------------------------------------------------------------------
    def run(self) -> Plan:
        for node in self.nodes:
            self._place(node)
        self._merge_siblings()
        self.plan.arrays, self.plan.local_reads = self._storage()
        self.plan.units = self._emission_order()
        return self.plan

    def _place(self, node: Node) -> None:
        role = role_of(node)
        if role == "inlined":
            raise AssertionError(f"{node.op} reached code generation; it should be inlined")
        if role == "source" or node.id in self.views:
            return
        if role == "alias":  # a result that the call of the node it reads computes
            self.unit_of[node.id] = self.unit_of[node.inputs[0].id]
            return
        if role == "call" or self._materialized_by_call(node):
            self._new_unit(Call(node, next(self._orders)), node)
            return
        as_sink = role == "sink"
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

    def _materialized_by_call(self, node: Node) -> bool:
        """A view that must be an array and has a call that makes one from its input's array
        without a copy (a size-1 reshape)."""
        if node.id not in self.materialized_views or lowering_of(node).as_call() is None:
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
        if role_of(node) == "source":  # arguments, constants, and sizes (which read shapes)
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
            if unit is None or isinstance(node.type, TupleType) or (
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
            if role_of(user) == "source":  # a size: reads the shape only
                continue
            if user.id in self.views and is_unit_view(user):
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
