"""A graph as Graphviz DOT text, and DOT rendered to SVG or PNG by the `dot` program.

Each node is labelled with its op and type, and its name from the user's code
when it has one. Inputs are ellipses, constants are plain text, outputs have a
double border, and backward nodes (those computing a gradient) are shaded red
with a dashed border, so the reverse pass stands apart from the forward one.
"""

from __future__ import annotations

import shutil
import subprocess

from compiler.ir import Graph, Node
from compiler.printer import format_attr, value_names

_FORWARD = 'style="rounded,filled", fillcolor="#e8f0fe"'
_BACKWARD = 'style="rounded,filled,dashed", fillcolor="#fde2e2", color="#b3261e"'
_INPUT = 'shape=ellipse, style=filled, fillcolor="#e6f4ea"'
_CONST = "shape=plaintext"


class GraphvizMissing(RuntimeError):
    """The `dot` program is not installed."""


def to_dot(graph: Graph) -> str:
    nodes = graph.nodes()
    names = value_names(nodes)
    ids = {node.id: f"n{i}" for i, node in enumerate(nodes)}
    outputs = {node.id for node in graph.outputs}
    lines = [f"digraph {_quote(graph.name)} {{",
             '  node [shape=box, fontname="Helvetica", fontsize=11];',
             '  edge [color="#5f6368"];']
    for node in nodes:
        style = _style(node)
        if node.id in outputs:
            style += ", peripheries=2"
        lines.append(f"  {ids[node.id]} [label={_quote(_label(node, names))}, {style}];")
    for node in nodes:
        for operand in node.inputs:
            lines.append(f"  {ids[operand.id]} -> {ids[node.id]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _label(node: Node, names: dict[int, str]) -> str:
    named = node.name is not None
    if node.op == "input":
        return f"{names[node.id]}\n{node.type}"
    if node.op == "const":
        return f"{format_attr(node.attrs['value'])}\n{node.type}"
    head = f"{names[node.id]} = {node.op}" if named else node.op
    return f"{head}\n{node.type}"


def _style(node: Node) -> str:
    if node.op == "input":
        return _INPUT
    if node.op == "const":
        return _CONST
    return _BACKWARD if node.grad_of is not None else _FORWARD


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(dot_text: str, output_format: str) -> bytes:
    """SVG or PNG bytes of DOT text, made by Graphviz's `dot`."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing(
            f"{output_format.upper()} output needs the 'dot' program of Graphviz, which is not "
            "installed (apt-get install graphviz, brew install graphviz, conda install "
            "graphviz); --format dot writes the DOT text without it")
    result = subprocess.run([program, f"-T{output_format}"], input=dot_text.encode(),
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dot failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout
