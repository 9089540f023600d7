"""The IR verifier: re-derives every node's type from its inputs and checks graph structure."""

from __future__ import annotations

from compiler import ops
from compiler.ir import Graph, bodies


class VerificationError(AssertionError):
    """A pass produced an ill-typed or ill-formed graph: a gradfuse bug."""


def verify(graph: Graph) -> None:
    nodes = graph.nodes()
    position = {n.id: i for i, n in enumerate(nodes)}
    input_ids = {n.id for n in graph.inputs}
    for i, node in enumerate(nodes):
        if node.op not in ops.REGISTRY:
            raise VerificationError(f"unknown op {node.op!r}")
        if node.op == "input" and node.id not in input_ids:
            raise VerificationError(f"input node {node} is not among the graph's inputs")
        for x in node.inputs:
            if position[x.id] >= i:
                raise VerificationError(f"{node} uses {x} before it is defined")
        expected = ops.get(node.op).infer(*(x.type for x in node.inputs), **node.attrs)
        if expected != node.type:
            raise VerificationError(f"{node.op} node has type {node.type}, its rule gives "
                                    f"{expected}")
        for body in bodies(node):
            verify(body)
    for k, node in enumerate(graph.inputs):
        if node.op != "input" or node.attrs["index"] != k:
            raise VerificationError(f"graph input {k} is {node}")
