"""Python loops found in a trace and rolled back into scans: repeated structure compiled once.

A Python loop over layers or time steps runs the same NumPy calls again and again, so
its trace holds the same computation many times over, one copy per iteration. numba's
compile time grows faster than linearly with a function's length, so a 100-layer net
took minutes to compile. This pass finds such repeats and makes each run of them one
`scan` (compiler/ops/control.py): the body is compiled once, and reverse mode, code
generation and numba see a loop.

Finding the repeats. The trace's nodes, in the order they were made (the order the
user's code ran), are compared with the nodes `p` places later, for a few candidate
periods `p`: the most common distances from a node to the next node of the same op, type
and source line that matches it (see `_periods`). Node i *matches* node i + p when both
have the same op, attributes and type, and each input of the later one is the input of
the earlier one (a value both share), a graph input or constant of the same type (each
layer's weight), or the node `p` places after the earlier one's input (the same value one
iteration on). A stretch of matching nodes is cut into iterations of `p` nodes, beginning
up to one iteration earlier where the first iteration reads the loop's initial values
instead of a previous iteration's.

Rolling a run of iterations. Each input of the first iteration's nodes gets a role, from
what the same input is in every iteration: a node of the same iteration (an edge of the
body), the previous iteration's node (a *carry*, starting from what the first iteration
read), one value shared by all (a *const*), or values made before the run, one per
iteration (an *xs* input: the per-layer weights, stacked, or slices `X[t]` of an array,
which stack back into `X` itself). A view whose attributes differ between iterations
(the slice `X[t]`) must read values made before the run: it is computed outside the
loop, as an xs input. Values of an iteration that later code reads become stacked
outputs of the scan, but the last iteration's carries, which are its final carries.
An assignment whose region differs between iterations (`out[t] = h` into a copy, each
iteration writing its row into the array the previous one wrote) is taken out of the
loop: the rows are stacked, and one `where` after the scan writes them all (`_Filled`).

Runs that save fewer than `ROLL_MIN_NODES` nodes that compute (views generate no code)
stay unrolled: they compile quickly, and fusion across iterations is worth more there.
`GRADFUSE_ROLL=0` turns the pass off.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from compiler import ops
from compiler.ir import Graph, Node, TensorType, is_static
from compiler.likeness import equal_constants, node_key, same_value
from compiler.ops.control import Loop
from compiler.ops.layout import as_slices
from compiler.passes import constant_array
from compiler.stacking import common_name, row, stack, written_rows

# A run is rolled when it saves at least this many nodes (all its iterations but the first)
# over at least ROLL_MIN_STEPS iterations. numba spends 10-20 ms per line of a long kernel
# here; a layer of a tanh MLP is 3 nodes and about 10 lines forward and backward.
ROLL_MIN_NODES = 24
ROLL_MIN_STEPS = 3
MAX_PERIODS = 6  # candidate periods tried per graph, the most frequent first
NEXT_OF_KIND = 8  # nodes of one op, type and line after a node where its next iteration is sought
VIEWS = frozenset({"slice", "reshape", "transpose", "broadcast_to"})

# The role of an input of the first iteration's node: ("edge", offset) a node of the same
# iteration; ("carry", k); ("const", k); ("literal", k) a constant of the program, the same in
# every iteration, written into the body; ("xs", k); ("hoisted", offset) a view computed
# outside the loop, one per iteration.
Role = tuple[str, int]


def enabled() -> bool:
    return os.environ.get("GRADFUSE_ROLL", "1") != "0"


def roll(graph: Graph) -> Graph:
    """`graph` with its runs of repeated structure rolled into scans (bodies rolled too)."""
    if not enabled():
        return graph
    return _Roller(graph).run()


@dataclass(frozen=True)
class _Run:
    start: int  # position of the first node of the first iteration
    period: int
    steps: int
    work: int = 0  # nodes of an iteration that compute (not views, which generate no code)

    @property
    def end(self) -> int:
        return self.start + self.period * self.steps

    @property
    def saved(self) -> int:
        return self.work * (self.steps - 1)


@dataclass
class _Roles:
    """What the first iteration's inputs are (see `Role`), and the values they stand for."""

    inputs: dict[tuple[int, int], Role] = field(default_factory=dict)  # (offset, j) -> role
    consts: list[Node] = field(default_factory=list)
    literals: list[Node] = field(default_factory=list)  # constants the body holds itself
    carries: list[tuple[int, Node]] = field(default_factory=list)  # (offset it becomes, init)
    xs: list[tuple[Node, ...]] = field(default_factory=list)  # one value per iteration
    hoisted: list[int] = field(default_factory=list)  # offsets computed outside the loop
    filled: list[_Filled] = field(default_factory=list)  # arrays filled row by row
    sunk: set[int] = field(default_factory=set)  # their offsets, computed after the loop


@dataclass(frozen=True)
class _Filled:
    """An array the loop fills row by row (`out[t] = h` on a copy): in each iteration
    `where(mask, pad_slice(v, row t), out)` (compiler/numpy_api/assignment.py), reading the
    previous iteration's. The loop stacks the v's; one where after it writes them all."""

    pad: int  # offsets in an iteration: the pad_slice, the where, v
    where: int
    value: int
    axis: int  # the axis the rows are taken along
    positions: tuple[int, ...]  # each iteration's row
    mask: np.ndarray  # every row written (the masks' union)


class _Roller:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        nodes = graph.nodes()
        self.sequence = sorted((n for n in nodes if not _is_leaf(n)), key=lambda n: n.id)
        self.position = {n.id: i for i, n in enumerate(self.sequence)}
        self.users: dict[int, list[Node]] = {n.id: [] for n in nodes}
        for n in nodes:
            for x in n.inputs:
                self.users[x.id].append(n)
        self.output_ids = {o.id for o in graph.outputs}
        self.keys = [node_key(n) for n in self.sequence]

    def run(self) -> Graph:
        runs = {run.start: run for run in self._runs()}
        if not runs:
            return _with_rolled_bodies(self.graph)
        memo: dict[int, Node] = {}  # node id -> the node that replaces it
        i = 0
        while i < len(self.sequence):
            run = runs.get(i)
            if run is not None:
                memo.update(self._rolled(run, memo))
                i = run.end
                continue
            node = self.sequence[i]
            memo[node.id] = _moved(node, memo)
            i += 1
        outputs = [memo.get(o.id, o) for o in self.graph.outputs]
        return _with_rolled_bodies(Graph(list(self.graph.inputs), outputs, self.graph.name))

    # --- finding runs ------------------------------------------------------------------------
    def _runs(self) -> list[_Run]:
        """Non-overlapping runs worth rolling, those that save most first."""
        found = []
        for period in self._periods():
            matches = [self._matches(i, period) for i in range(len(self.sequence) - period)]
            i = 0
            while i < len(matches):
                if not matches[i]:
                    i += 1
                    continue
                end = i
                while end < len(matches) and matches[end]:
                    end += 1
                run = self._aligned(i, end, period)
                if run is not None and run.saved >= ROLL_MIN_NODES \
                        and run.steps >= ROLL_MIN_STEPS:
                    found.append(run)
                i = end
        chosen: list[_Run] = []
        for run in sorted(found, key=lambda r: (-r.saved, r.period, r.start)):
            chosen += self._clear_of(run, chosen)
        return chosen

    def _clear_of(self, run: _Run, chosen: list[_Run]) -> list[_Run]:
        """`run`, or where it overlaps runs already chosen, the runs of its whole iterations
        (realigned) in the stretches they leave free, those still worth rolling. Two loops one
        after the other often overlap by a node: a sum over the weights' gradients, then over
        the biases', matches the biases' run one node early (an add like theirs)."""
        overlapping = [o for o in chosen if not (run.end <= o.start or o.end <= run.start)]
        if not overlapping:
            return [run]
        edges = sorted([run.start, run.end] + [max(run.start, min(run.end, e))
                                               for o in overlapping for e in (o.start, o.end)])
        parts = []
        for a, b in zip(edges[::2], edges[1::2]):  # the stretches no chosen run covers
            if any(a < o.end and o.start < b for o in overlapping):
                continue
            part = self._best_within(a, b, run.period)
            if part is not None:
                parts.append(part)
        return parts

    def _best_within(self, a: int, b: int, p: int) -> _Run | None:
        """The run of period p with the most iterations inside [a, b), a stretch of a run
        found whole (its nodes match those p later), if one is worth rolling."""
        best = None
        for start in range(a, min(a + p, b)):
            steps = (b - start) // p
            if steps < max(2, ROLL_MIN_STEPS) or (best is not None and steps <= best.steps):
                continue
            work = sum(n.op not in VIEWS for n in self.sequence[start:start + p])
            run = _Run(start, p, steps, work)
            if run.saved >= ROLL_MIN_NODES and self._roles(run) is not None:
                best = run
        return best

    def _periods(self) -> list[int]:
        """The most common distances from a node to the next node of its op, type and line
        that matches it one iteration on. Not simply the next of its kind: a line may run the
        same op several times (an optimizer's update does), and a loop's iteration may hold
        differently shaped pieces (a weight's update, then a bias's)."""
        later: dict[tuple, list[int]] = {}
        for i in reversed(range(len(self.sequence))):
            node = self.sequence[i]
            where = (node.loc.filename, node.loc.lineno) if node.loc else None
            later.setdefault((node.op, str(node.type), where), []).append(i)
        distances: Counter[int] = Counter()
        for positions in later.values():
            positions.reverse()
            for k, i in enumerate(positions):
                for j in positions[k + 1:k + 1 + NEXT_OF_KIND]:
                    if self._matches(i, j - i):
                        distances[j - i] += 1
                        break
        return [p for p, count in distances.most_common(MAX_PERIODS)
                if count * p >= ROLL_MIN_NODES]

    def _matches(self, i: int, p: int, start: int | None = None) -> bool:
        """Whether node i + p is node i one iteration on (see the module doc). With `start`,
        node i may also read, where node i + p reads a node of the iteration from `start`, a
        value made before `start` (a carry's initial value)."""
        a, b = self.sequence[i], self.sequence[i + p]
        if a.op != b.op or a.type != b.type or len(a.inputs) != len(b.inputs):
            return False
        if self.keys[i] != self.keys[i + p] and a.op != "pad_slice":  # out[t] = v: see _Filled
            # e.g. X[t]: computed outside, from shared values
            return a.op in VIEWS and all(x is y for x, y in zip(a.inputs, b.inputs))
        for x, y in zip(a.inputs, b.inputs):
            if x is y or (_is_leaf(x) and _is_leaf(y) and x.type == y.type):
                continue
            px, py = self.position.get(x.id), self.position.get(y.id)
            if px is not None and py is not None and (py - px == p or py < i and px < i) \
                    and x.type == y.type:
                continue  # the same value one iteration on, or values made before both
            if start is not None and py is not None and start <= py < start + p \
                    and (px is None or px < start) and x.type == y.type:
                continue
            return False
        return True

    def _aligned(self, first: int, end: int, p: int) -> _Run | None:
        """The run of whole iterations in a stretch of matches [first, end) that has the most
        of them (it may begin one iteration early: see `_matches`)."""
        for start in range(max(0, first - p), first + 1):
            if all(self._matches(i, p, start) for i in range(start, first)):
                run = _Run(start, p, (end - start) // p + 1)
                if run.steps >= 2 and self._roles(run) is not None:
                    work = sum(n.op not in VIEWS for n in self.sequence[start:start + p])
                    return _Run(start, p, run.steps, work)
        return None

    # --- roles ---------------------------------------------------------------------------
    def _iterations(self, run: _Run) -> list[list[Node]]:
        return [self.sequence[run.start + m * run.period:run.start + (m + 1) * run.period]
                for m in range(run.steps)]

    def _roles(self, run: _Run) -> _Roles | None:
        """Every input's role (see `Role`), or None if some input fits none."""
        iterations = self._iterations(run)
        roles = _Roles()
        differing = [offset for offset in range(run.period)
                     if len({node_key(it[offset]) for it in iterations}) > 1]
        for offset in differing:
            if iterations[0][offset].op == "pad_slice":
                filled = self._filled(run, offset)
                if filled is None:
                    return None
                roles.filled.append(filled)
                roles.sunk |= {filled.pad, filled.where}
        roles.hoisted = [offset for offset in differing if offset not in roles.sunk]
        if any(f.value in roles.hoisted for f in roles.filled):  # a row the loop does not make
            return None
        for offset, node in enumerate(iterations[0]):
            if offset in roles.sunk:  # computed after the loop, from the stacked rows
                continue
            for j in range(len(node.inputs)):
                values = [it[offset].inputs[j] for it in iterations]
                if offset in roles.hoisted:  # computed outside: from values made before the run
                    if any(self._offset_in(run, m, v) for m, v in enumerate(values)):
                        return None
                    continue
                role = self._role(run, roles, offset, values)
                if role is None:
                    return None
                roles.inputs[offset, j] = role
        return roles

    def _role(self, run: _Run, roles: _Roles, offset: int, values: list[Node]) -> Role | None:
        relative = [self._offset_in(run, m, v) for m, v in enumerate(values)]
        if all(r is None for r in relative):  # made before the run
            if all(v is values[0] for v in values) or equal_constants(values):
                if values[0].op == "const":  # x ** 2 stays a square, x / 4.0 a product in it
                    return "literal", _index(roles.literals, values[0], same_value)
                return "const", _index(roles.consts, values[0], same_value)
            return "xs", _index(roles.xs, tuple(values))
        if relative[0] is not None and all(r == relative[0] for r in relative) \
                and relative[0][0] == 0:
            source = relative[0][1]
            if source in roles.sunk:
                return None
            return ("hoisted" if source in roles.hoisted else "edge"), source
        later = relative[1:]
        if relative[0] is None and all(r == later[0] for r in later) and later[0][0] == -1 \
                and later[0][1] not in roles.hoisted and later[0][1] not in roles.sunk \
                and values[0].type == self.sequence[run.start + later[0][1]].type:
            source, init = later[0][1], values[0]
            for k, (known_source, known_init) in enumerate(roles.carries):
                if known_source == source and same_value(known_init, init):
                    return "carry", k
            roles.carries.append((source, init))
            return "carry", len(roles.carries) - 1
        return None

    def _filled(self, run: _Run, pad: int) -> _Filled | None:
        """The array filled row by row whose pad_slice is at offset `pad`, if the iterations
        write one row each (unit slices of one axis at evenly spaced positions, the where's
        mask exactly that row) into the array the previous one wrote, which nothing else
        reads, and the last one's array is read only after the loop; else None."""
        iterations = self._iterations(run)
        users = self.users[iterations[0][pad].id]
        where = self._offset_in(run, 0, users[0]) if len(users) == 1 else None
        if where is None or where[0] != 0:
            return None
        where = where[1]
        value, axis, positions, masks = None, None, [], []
        for m, it in enumerate(iterations):
            p, w = it[pad], it[where]
            shape, index = p.attrs["shape"], p.attrs["index"]
            if w.op != "where" or w.inputs[1] is not p or self.users[p.id] != [w] \
                    or p.id in self.output_ids or not is_static(shape) \
                    or w.type != p.type or (w.id in self.output_ids and m < run.steps - 1):
                return None
            source = self._offset_in(run, m, p.inputs[0])
            previous = self._offset_in(run, m, w.inputs[2])
            if source is None or source[0] != 0 or source[1] in (pad, where) \
                    or (value is not None and source[1] != value) \
                    or previous != (None if m == 0 else (-1, where)):
                return None
            value = source[1]
            later = self.users[w.id]
            if m < run.steps - 1 and later != [iterations[m + 1][where]]:
                return None
            if m == run.steps - 1 and any(self.position[u.id] < run.end for u in later):
                return None
            cut = [a for a, (spec, d) in enumerate(zip(index, shape)) if spec != (0, d, 1)]
            if len(cut) != 1 or (axis is not None and cut[0] != axis) \
                    or index[cut[0]][1] != index[cut[0]][0] + 1 or index[cut[0]][2] != 1:
                return None
            axis = cut[0]
            positions.append(index[axis][0])
            mask = constant_array(w.inputs[0])
            row = np.zeros(shape, dtype=bool)
            row[as_slices(index)] = True
            if mask is None or mask.dtype != bool or mask.ndim != len(shape) \
                    or not np.array_equal(np.broadcast_to(mask, shape), row):
                return None
            masks.append(mask)
        step = positions[1] - positions[0]
        if step == 0 or any(b - a != step for a, b in zip(positions, positions[1:])):
            return None
        return _Filled(pad, where, value, axis, tuple(positions), np.logical_or.reduce(masks))

    def _offset_in(self, run: _Run, m: int, value: Node) -> tuple[int, int] | None:
        """(its iteration relative to iteration m, its offset) if the run made `value`."""
        position = self.position.get(value.id)
        if position is None or not run.start <= position < run.end:
            return None
        iteration, offset = divmod(position - run.start, run.period)
        return iteration - m, offset

    # --- rolling ---------------------------------------------------------------------------
    def _rolled(self, run: _Run, memo: dict[int, Node]) -> dict[int, Node]:
        """The scan that replaces the run: replacements for its nodes that later code reads."""
        roles = self._roles(run)
        iterations = self._iterations(run)
        first = iterations[0]
        # the user's names: the tracer names a value after the variable that held it when the
        # function returned, which is often a later iteration's
        names = [next((it[offset].name for it in iterations if it[offset].name), None)
                 for offset in range(run.period)]
        outside = [_moved(it[offset], memo) for it in iterations for offset in roles.hoisted]
        hoisted = {offset: outside[k::len(roles.hoisted)] for k, offset in enumerate(roles.hoisted)}
        replaced: dict[int, Node] = {it[offset].id: node for offset in roles.hoisted
                                     for it, node in zip(iterations, hoisted[offset])}

        def before(v: Node) -> Node:
            return memo.get(v.id, v)

        scan_inputs = [before(v) for v in roles.consts]
        scan_inputs += [before(init) for _, init in roles.carries]
        xs = [stack([before(v) for v in values]) for values in roles.xs]
        xs += [stack(hoisted[offset]) for offset in roles.hoisted]
        scan_inputs += xs

        body_inputs: list[Node] = []
        for source, init in [(None, v) for v in roles.consts] + roles.carries:
            name = names[source] if source is not None else None
            body_inputs.append(_input(len(body_inputs), init.type, name or init.name))
        x_names = [common_name(values) for values in roles.xs] + \
            [names[o] for o in roles.hoisted]
        for x, name in zip(xs, x_names):
            body_inputs.append(_input(len(body_inputs), TensorType(x.dtype, x.shape[1:]), name))
        nc, nk, n_xs = len(roles.consts), len(roles.carries), len(roles.xs)
        where = {"const": 0, "carry": nc, "xs": nc + nk}
        literals = [Node("const", (), v.attrs, v.type, v.name, v.loc) for v in roles.literals]
        copies: dict[int, Node] = {}
        for offset, node in enumerate(first):
            if offset in roles.hoisted or offset in roles.sunk:
                continue
            inputs = []
            for j in range(len(node.inputs)):
                kind, k = roles.inputs[offset, j]
                if kind == "edge":
                    inputs.append(copies[first[k].id])
                elif kind == "hoisted":
                    inputs.append(body_inputs[nc + nk + n_xs + roles.hoisted.index(k)])
                elif kind == "literal":
                    inputs.append(literals[k])
                else:
                    inputs.append(body_inputs[where[kind] + k])
            copies[node.id] = Node(node.op, tuple(inputs), node.attrs, node.type,
                                   names[offset], node.loc, node.grad_of)

        final = {source: k for k, (source, _) in enumerate(roles.carries)}
        filled_rows = {f.value for f in roles.filled}
        stacked_offsets = [offset for offset in range(run.period)
                           if offset not in roles.hoisted and offset not in roles.sunk
                           and (offset in filled_rows or self._stacked(run, offset, final))]
        outputs = [copies[first[source].id] for source, _ in roles.carries]
        outputs += [copies[first[offset].id] for offset in stacked_offsets]
        body = Graph(body_inputs, outputs, name=_name(first))
        loop = Loop(body, nc, nk, run.steps, name=body.name)
        loc = first[0].loc
        scan = Node("scan", tuple(scan_inputs), {"loop": loop},
                    ops.get("scan").infer(*(x.type for x in scan_inputs), loop=loop), loc=loc)
        results = [Node("tuple_get", (scan,), {"index": k}, t, name=out.name, loc=loc)
                   for k, (t, out) in enumerate(zip(scan.type.items, outputs))]
        last = iterations[-1]
        for source, k in final.items():
            replaced[last[source].id] = results[k]
        for k, offset in enumerate(stacked_offsets):
            ys = results[nk + k]
            for m, it in enumerate(iterations):
                replaced.setdefault(it[offset].id, row(ys, m, it[offset]))
        for f in roles.filled:  # the last iteration's array: every row written at once
            ys = results[nk + stacked_offsets.index(f.value)]
            initial = before(first[f.where].inputs[2])
            replaced[last[f.where].id] = written_rows(ys, initial, f.axis, f.positions, f.mask,
                                                      last[f.where])
        return replaced

    def _stacked(self, run: _Run, offset: int, final: dict[int, int]) -> bool:
        """Whether code after the run reads this node of some iteration that the final carries
        do not give (any iteration's but the last's, or a value that is no carry)."""
        iterations = self._iterations(run)
        for m, it in enumerate(iterations):
            if m == run.steps - 1 and offset in final:
                continue
            node = it[offset]
            if node.id in self.output_ids:
                return True
            for user in self.users[node.id]:
                position = self.position.get(user.id)
                if position is None or position >= run.end:
                    return True
        return False


# --- helpers ------------------------------------------------------------------------------------
def _with_rolled_bodies(graph: Graph) -> Graph:
    """Roll the bodies of the graph's scans too (a loop inside a loop)."""
    memo: dict[int, Node] = {}
    for node in graph.nodes():
        loop = node.attrs.get("loop")
        if node.op == "scan" and isinstance(loop, Loop):
            body = roll(loop.body)
            if body is not loop.body:
                new_loop = Loop(body, loop.n_consts, loop.n_carries, loop.length,
                                loop.reverse, loop.grad, loop.name)
                memo[node.id] = Node("scan", tuple(memo.get(x.id, x) for x in node.inputs),
                                     {"loop": new_loop}, node.type, node.name, node.loc,
                                     node.grad_of)
                continue
        moved = _moved(node, memo)
        if moved is not node:
            memo[node.id] = moved
    if not memo:
        return graph
    return Graph(list(graph.inputs), [memo.get(o.id, o) for o in graph.outputs], graph.name)


def _moved(node: Node, memo: dict[int, Node]) -> Node:
    """`node` reading the replacements of its inputs (itself if none was replaced)."""
    inputs = tuple(memo.get(x.id, x) for x in node.inputs)
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    return Node(node.op, inputs, node.attrs, node.type, node.name, node.loc, node.grad_of)


def _is_leaf(node: Node) -> bool:
    return node.op in ("input", "const")


def _index(items: list, item, same=lambda a, b: a is b or a == b) -> int:
    for k, known in enumerate(items):
        if same(known, item):
            return k
    items.append(item)
    return len(items) - 1


def _input(index: int, t: TensorType, name: str | None) -> Node:
    return Node("input", (), {"index": index, "type": t}, t, name=name)


def _name(first: list[Node]) -> str:
    loc = next((n.loc for n in first if n.loc is not None), None)
    return f"repeat_{loc.lineno}" if loc is not None else "repeat"
