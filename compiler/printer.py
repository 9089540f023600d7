"""A compact, readable text form of a graph, one SSA equation per line (as in JAX's jaxprs).

    def loss(W1: f32[10,5], X: f32[N,10]) -> f32[]:
      h: f32[N,5] = matmul(X, W1)                    # model.py:12
      ...
      return loss
"""

from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, bodies


def value_names(nodes: list[Node]) -> dict[int, str]:
    """A unique printable name per node: its name (compiler/names.py gives every value of a
    kernel's graph one, the one generated code uses), else %index; scalar constants are
    their value."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for i, node in enumerate(nodes):
        if _is_literal(node):
            names[node.id] = format_attr(node.attrs["value"])
            continue
        base = node.name or f"%{i}"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        names[node.id] = name
    return names


def format_attr(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            return np.array2string(value, separator=", ")
        return f"<array {value.dtype}{list(value.shape)}>"
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, tuple):
        inner = ", ".join(format_attr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return str(value)


def _is_literal(node: Node) -> bool:
    return node.op == "const" and node.type.shape == ()


def format_node(node: Node, names: dict[int, str]) -> str:
    if node.op == "const":
        rhs = format_attr(node.attrs["value"])
    else:
        args = [names[i.id] for i in node.inputs]
        args += [f"{k}={format_attr(v)}" for k, v in node.attrs.items()]
        rhs = f"{node.op}({', '.join(args)})"
    line = f"  {names[node.id]}: {node.type} = {rhs}"
    notes = []
    call = node.loc.call if node.loc is not None and node.loc.call else None
    if node.grad_of is not None:
        notes.append(f"grad of {call or node.grad_of.op}")
    elif call:
        notes.append(call)
    if node.loc is not None:
        notes.append(str(node.loc))
    if notes:
        line = f"{line:<60} # {', '.join(notes)}"
    return line


def format_graph(graph: Graph, indent: str = "") -> str:
    """The graph as text; the graphs its nodes hold (a scan's body) follow their node,
    indented."""
    nodes = graph.nodes()
    names = value_names(nodes)
    params = ", ".join(f"{names[n.id]}: {n.type}" for n in graph.inputs)
    results = ", ".join(str(n.type) for n in graph.outputs)
    lines = [f"def {graph.name}({params}) -> ({results}):"]
    for node in nodes:
        if node.op != "input" and not _is_literal(node):
            lines.append(format_node(node, names))
        lines += [format_graph(body, "    ") for body in bodies(node)]
    lines.append("  return " + ", ".join(names[n.id] for n in graph.outputs))
    return "\n".join(indent + line for text in lines for line in text.split("\n"))
