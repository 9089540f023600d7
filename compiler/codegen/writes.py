"""Outputs stored into the caller's arrays: which can be written in place, which are copied.

A kernel may be asked to store some of its outputs into some of its input arrays
(`writes`: output index -> input index), as a training step stores the new
parameters and optimizer state. Writing an output straight into the input's
memory, element by element inside the loop nest that computes it, saves an
array and a copy, but is only right when no code reads the input's old value
after that element was overwritten. That holds when every read of the input
happens

- in a unit emitted before the writing nest, or
- inside the writing nest, at the element being written (not broadcast, not
  through a transpose or a gather), in a statement before the write,

and the input is not itself a result, nor seen by one through a view (results are
copied at the end, after the store). A call that fills its whole result (a BLAS
product) that is itself the output stores it straight into the input's array
when every read of the input happens in a unit emitted before it (its own
operands included: BLAS may not read and write one array); a product added into
the input (`matmul_add`, compiler/codegen/accumulate.py) may also read it as the
accumulator it adds into. Otherwise the output
gets its own array and is copied into the input after everything else is
computed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from compiler.codegen.fusion import (
    Call,
    LoopNest,
    Plan,
    is_unit_view,
    reads_in_place,
    role_of,
    without_ones,
)
from compiler.ir import Node, users_of
from compiler.ops.lowering import lowering_of


def stored_in_place(plan: Plan, writes: Mapping[int, int]) -> set[int]:
    """The output indices in `writes` whose nests can store them straight into the input."""
    graph = plan.graph
    targets = list(writes.values())
    assert len(set(targets)) == len(targets), "two outputs written into one input"
    users = users_of(plan.nodes)
    position = {id(unit): k for k, unit in enumerate(plan.units)}
    output_ids = [n.id for n in graph.outputs]
    read_at_end = {i for out in graph.outputs for i in input_memory(plan, out)}
    in_place = set()
    for k, j in writes.items():
        out, target = graph.outputs[k], graph.inputs[j]
        unit = plan.unit_of.get(out.id)
        if out.shape != target.shape or out.dtype != target.dtype or out.shape == () \
                or output_ids.count(out.id) > 1 or target.id in read_at_end:
            continue
        if isinstance(unit, Call) and unit.node is out and _fills_result(out):
            if all(position[id(plan.unit_of[reader.id])] < position[id(unit)]
                   for reader, _, _ in _reads(plan, users, target, True)):
                in_place.add(k)
            continue
        if isinstance(unit, Call) and unit.node is out and _accumulates_into(out, target):
            # the call reads its accumulator where it adds into it; every other read first
            if all(reader is out and read is target
                   or position[id(plan.unit_of[reader.id])] < position[id(unit)]
                   for reader, read, _ in _reads(plan, users, target, True)):
                in_place.add(k)
            continue
        if not isinstance(unit, LoopNest) or out.id not in unit.member_ids:
            continue
        body = {n.id: p for p, n in enumerate(unit.body)}
        if all(_read_before(plan, unit, position, body, out, reader, read, aligned)
               for reader, read, aligned in _reads(plan, users, target, True)):
            in_place.add(k)
    return in_place


def input_memory(plan: Plan, node: Node) -> set[int]:
    """The inputs whose memory reading `node` reads (through views and `.reshape()` calls);
    an output that reads an input this way is copied at the end, and reads it then."""
    inputs = {x.id for x in plan.graph.inputs}
    found, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n.id in inputs:
            found.add(n.id)
        elif n.id in plan.views or aliases_input(plan, n):
            stack.extend(n.inputs)
    return found


def _fills_result(node: Node) -> bool:
    """Whether `node` is a call that writes every element of its result's array (and reads
    nothing from it): it may write into the input array that the result goes to."""
    call = lowering_of(node).as_call()
    return call is not None and call.fills_result


def _accumulates_into(node: Node, target: Node) -> bool:
    """Whether `node` is a call that adds into its first input, `target`, which none of its
    other operands is (BLAS may not read and write one array)."""
    call = lowering_of(node).as_call()
    return call is not None and call.accumulates and node.inputs[0] is target \
        and all(x is not target for x in node.inputs[1:])


def aliases_input(plan: Plan, node: Node) -> bool:
    """Whether `node` is a call that shares its input's memory (`x.reshape(...)`)."""
    call = lowering_of(node).as_call()
    return call is not None and call.aliases_input \
        and isinstance(plan.unit_of.get(node.id), Call)


def _reads(plan: Plan, users, node: Node, aligned: bool) -> Iterator[tuple[Node, Node, bool]]:
    """(reader, the value it reads, whether that value's elements sit where the input's do)
    for every read of `node`'s memory, looking through views and `.reshape()` calls (which
    alias it); reads of the shape alone do not count."""
    for user in users.get(node.id, ()):
        if role_of(user) == "source":  # a size: reads the shape only
            continue
        if user.id in plan.views:
            yield from _reads(plan, users, user, aligned and is_unit_view(user))
        elif aliases_input(plan, user):
            yield from _reads(plan, users, user, False)
        else:
            yield user, node, aligned


def _read_before(plan: Plan, unit: LoopNest, position, body, out: Node, reader: Node,
                 read: Node, aligned: bool) -> bool:
    """Whether `reader` has read its element of the target before `out` overwrites it."""
    reader_unit = plan.unit_of[reader.id]
    if reader_unit is not unit:
        return position[id(reader_unit)] < position[id(unit)]
    at_element = aligned and reads_in_place(reader, read) and \
        without_ones(read.shape) == unit.domain
    return at_element and body[reader.id] <= body[out.id]
