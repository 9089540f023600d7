"""When two nodes, loops or graphs compute alike: the structural keys that find a trace's
repeated iterations (compiler/roll.py), with no regard for nodes' ids.

Two nodes are alike when their ops and attributes are (`node_key`): a scan's loop compares by
its body's structure, a custom_vjp call by its function and the forward graph it traced to.
A graph's `fingerprint` hashes its nodes' keys, types and edges in order.
"""

from __future__ import annotations

import hashlib

import numpy as np

from compiler.custom import CustomCall
from compiler.ir import Graph, Node, freeze
from compiler.ops.control import Loop


def equal_constants(values: list[Node]) -> bool:
    first = values[0]
    return first.op == "const" and all(
        v.op == "const" and v.type == first.type
        and np.array_equal(v.attrs["value"], first.attrs["value"], equal_nan=True)
        for v in values)


def same_value(a: Node, b: Node) -> bool:
    """The same node, or constants of one value (a NumPy array the user's code reads in
    several places is a constant for each)."""
    return a is b or equal_constants([a, b])


def node_key(node: Node) -> tuple:
    """A node's op and attributes, comparable across iterations (a scan by its body's shape, a
    custom_vjp call by its function and forward graph)."""
    return node.op, tuple(sorted((k, _attribute_key(v)) for k, v in node.attrs.items()))


def _attribute_key(value) -> object:
    if isinstance(value, Loop):
        return _loop_key(value)
    if isinstance(value, CustomCall):  # one per call: equal when the same function traced alike
        return "custom_call", id(value.function), fingerprint(value.forward)
    return freeze(value)


def _loop_key(loop: Loop) -> tuple:
    return ("loop", fingerprint(loop.body), loop.n_consts, loop.n_carries, loop.length,
            loop.reverse)


_fingerprints: dict[int, tuple[Graph, str]] = {}


def fingerprint(graph: Graph) -> str:
    """A hash of a graph's structure (ops, attributes, types, edges), not of its nodes' ids."""
    cached = _fingerprints.get(id(graph))
    if cached is not None and cached[0] is graph:
        return cached[1]
    nodes = graph.nodes()
    index = {n.id: i for i, n in enumerate(nodes)}
    digest = hashlib.sha256()
    for node in nodes:
        digest.update(repr((node_key(node), str(node.type),
                            [index[x.id] for x in node.inputs])).encode())
    digest.update(repr([index[o.id] for o in graph.outputs]).encode())
    result = digest.hexdigest()
    _fingerprints[id(graph)] = (graph, result)
    return result
