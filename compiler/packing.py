"""Many same-shaped kernel arguments passed as one stack, and results returned as one.

numba compiles code to unbox every array argument and box every array result: about
25 ms each here, so a kernel taking the 200 weights of a 100-layer net and returning
their 200 gradients spent 10 s on its signature alone. A rolled loop (compiler/roll.py)
reads the weights as one stack anyway, `concatenate` of the weights one per row, and
its gradients come out as the rows of one stack. `pack` rewrites a kernel's graph so
that such a stack is one argument, and such rows one result; the `Packing` it returns
turns the caller's arrays into the kernel's (`np.stack`, one copy) and the kernel's
results back into the caller's (rows of the stack: views, no copy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler import ops
from compiler.errors import KernelShapeError
from compiler.ir import Graph, Node, TensorType, rebuild

PACK_MIN_ARRAYS = 2


@dataclass(frozen=True)
class Packing:
    """How the arrays of a packed kernel relate to the caller's.

    Arguments, in order: ("arg", i) is the caller's array i; ("stack", (i, j, ...)) the
    caller's arrays i, j, ... stacked (in the place of the first of them). Results: per
    caller's result, ("result", k) is the kernel's result k, ("row", k, m) row m of it.
    """

    inputs: tuple[tuple, ...]
    dtypes: dict[int, np.dtype]  # per stacked argument (by position): the arrays' dtype
    results: tuple[tuple, ...]

    def arguments(self, args: tuple) -> list:
        packed = []
        for k, (kind, which) in enumerate(self.inputs):
            if kind == "arg":
                packed.append(args[which])
                continue
            arrays = [args[i] for i in which]
            if any(getattr(a, "dtype", None) != self.dtypes[k] for a in arrays):
                raise TypeError("an array of another dtype than the kernel's")  # general path
            try:
                packed.append(np.stack(arrays))
            except ValueError:  # arrays of different shapes
                raise KernelShapeError("arrays of other shapes than the kernel's") from None
        return packed

    def unpacked(self, results: tuple) -> tuple:
        return tuple(results[where[1]] if where[0] == "result" else results[where[1]][where[2]]
                     for where in self.results)


def pack(graph: Graph, writes: dict[int, int] | None = None
         ) -> tuple[Graph, Packing | None, dict[int, int]]:
    """`graph` with its stacks of inputs made inputs and its rows of a stack made results (see
    the module doc), how to call it, and `writes` (result index -> input index: results the
    kernel stores into input arrays) for the packed graph: a stack of results is stored into a
    stack of inputs when each row goes into the input of that row; results stored into other
    inputs stay unpacked. Returns `graph`, None and `writes` when nothing packs."""
    writes = dict(writes or {})
    rows = result_rows(graph)
    groups = []
    for stack, members in _input_groups(graph):
        written = [k for k, i in writes.items() if i in members]
        if written and not _rows_into(rows, graph, written, writes, members):
            continue  # stored piecewise: the inputs stay separate arrays
        groups.append((stack, members))
    grouped = {i for _, members in groups for i in members}
    for k, i in writes.items():  # a row stored into a separate input is a result of its own
        if i not in grouped:
            rows.pop(graph.outputs[k].id, None)
    if not groups and not rows:
        return graph, None, writes
    first_of = {members[0]: (stack, members) for stack, members in groups}
    inputs: list[Node] = []
    entries: list[tuple] = []
    replace: dict[int, Node] = {}
    group_input: dict[int, int] = {}  # original input index -> its packed input's index
    for i, x in enumerate(graph.inputs):
        if i in first_of:
            stack, members = first_of[i]
            packed = _input(len(inputs), stack.type, stack.name)
            group_input.update({j: len(inputs) for j in members})
            replace[stack.id] = packed
            for m, j in enumerate(members):
                replace[graph.inputs[j].id] = _row(packed, m, graph.inputs[j])
            entries.append(("stack", members))
            inputs.append(packed)
        elif i not in grouped:
            replace[x.id] = _input(len(inputs), x.type, x.name)
            group_input[i] = len(inputs)
            entries.append(("arg", i))
            inputs.append(replace[x.id])
    outputs, results = [], []
    position: dict[int, int] = {}
    packed_writes: dict[int, int] = {}
    for k, out in enumerate(graph.outputs):
        found = rows.get(out.id)
        if found is None:
            results.append(("result", len(outputs)))
            if k in writes:
                packed_writes[len(outputs)] = group_input[writes[k]]
            outputs.append(out)
            continue
        stack, m = found
        if stack.id not in position:
            position[stack.id] = len(outputs)
            if k in writes:
                packed_writes[len(outputs)] = group_input[writes[k]]
            outputs.append(stack)
        results.append(("row", position[stack.id], m))
    packed_graph = Graph(inputs, rebuild(outputs, replace), graph.name)
    dtypes = {k: inputs[k].dtype for k, (kind, _) in enumerate(entries) if kind == "stack"}
    return packed_graph, Packing(tuple(entries), dtypes, tuple(results)), packed_writes


def _rows_into(rows: dict, graph: Graph, written: list[int], writes: dict[int, int],
               members: tuple[int, ...]) -> bool:
    """Whether the results `written` into a stack of inputs `members` are exactly the rows of
    one stack, row m into member m."""
    if len(written) != len(members):
        return False
    stacks = set()
    for k in written:
        found = rows.get(graph.outputs[k].id)
        if found is None or members.index(writes[k]) != found[1]:
            return False
        stacks.add(found[0].id)
    return len(stacks) == 1


def _input_groups(graph: Graph) -> list[tuple[Node, tuple[int, ...]]]:
    """(stack, input indices): concatenations of graph inputs, one per row (the roller's
    stacks of per-layer weights)."""
    index = {x.id: k for k, x in enumerate(graph.inputs)}
    groups, taken = [], set()
    for node in graph.nodes():
        if node.op != "concatenate" or node.attrs["axis"] != 0 \
                or len(node.inputs) < PACK_MIN_ARRAYS:
            continue
        members = []
        for row in node.inputs:
            source = row.inputs[0] if row.op == "reshape" else None
            # np.stack([x32, y64]) promotes x32: a stack of the caller's arrays would not
            if source is None or source.id not in index or row.shape != (1,) + source.shape \
                    or source.dtype != node.dtype:
                break
            members.append(index[source.id])
        else:
            if len(set(members)) == len(members) and not taken & set(members):
                groups.append((node, tuple(members)))
                taken |= set(members)
    return groups


def result_rows(graph: Graph) -> dict[int, tuple[Node, int]]:
    """result node id -> (stack, m) for results that are row m of a stack that gives two or
    more results."""
    found: dict[int, tuple[Node, int]] = {}
    for out in graph.outputs:
        row = _row_of(out)
        if row is not None:
            found[out.id] = row
    counts: dict[int, int] = {}
    for stack, _ in found.values():
        counts[stack.id] = counts.get(stack.id, 0) + 1
    return {k: v for k, v in found.items() if counts[v[0].id] >= PACK_MIN_ARRAYS}


def _row_of(node: Node) -> tuple[Node, int] | None:
    """(stack, m) if `node` is stack[m]: a one-row slice of the leading axis, reshaped to drop
    it."""
    if node.op != "reshape" or node.inputs[0].op != "slice":
        return None
    sliced = node.inputs[0]
    stack = sliced.inputs[0]
    (start, stop, step), *rest = sliced.attrs["index"]
    if stop - start != 1 or step != 1 or stack.op in ("input", "const") \
            or any(spec != (0, d, 1) for spec, d in zip(rest, stack.shape[1:])) \
            or node.shape != stack.shape[1:]:
        return None
    return stack, start


def _input(index: int, t: TensorType, name: str | None) -> Node:
    return Node("input", (), {"index": index, "type": t}, t, name=name)


def _row(stack: Node, m: int, like: Node) -> Node:
    index = ((m, m + 1, 1),) + tuple((0, d, 1) for d in stack.type.shape[1:])
    sliced = Node("slice", (stack,), {"index": index},
                  ops.get("slice").infer(stack.type, index=index), like.name)
    return Node("reshape", (sliced,), {"shape": like.shape}, TensorType(like.dtype, like.shape),
                like.name)
