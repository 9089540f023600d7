"""A NumPy interpreter of the IR: the reference in tests and a backend that compiles nothing."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler import ops
from compiler.errors import KernelIndexError
from compiler.ir import Graph, Node, Sym, TupleType


def bind_sizes(graph: Graph, args: list[np.ndarray]) -> dict[str, int]:
    """The run-time size of each symbolic dim, read off the arguments."""
    sizes: dict[str, int] = {}
    for node, arg in zip(graph.inputs, args):
        for d, n in zip(node.type.shape, np.shape(arg)):
            if isinstance(d, Sym):
                sizes.setdefault(d.name, n)
    return sizes


def _resolve(value: Any, sizes: dict[str, int]) -> Any:
    if isinstance(value, Sym):
        return sizes[value.name]
    if isinstance(value, tuple):
        return tuple(_resolve(v, sizes) for v in value)
    return value


def interpret(graph: Graph, args: list[Any], sizes: dict[str, int] | None = None
              ) -> list[np.ndarray]:
    """Evaluate `graph` on `args` (one per input) with each op's NumPy reference; `sizes`
    gives symbolic dims that the arguments do not (a loop body's, from the enclosing graph)."""
    if len(args) != len(graph.inputs):
        raise TypeError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
    sizes = {**(sizes or {}), **bind_sizes(graph, args)}
    values: dict[int, Any] = {}
    for node in graph.nodes():
        if node.op == "input":
            values[node.id] = np.asarray(args[node.attrs["index"]], dtype=node.dtype)
            continue
        opdef = ops.get(node.op)
        attrs = {k: _resolve(v, sizes) for k, v in node.attrs.items()}
        if opdef.takes_sizes:
            attrs["sizes"] = sizes
        with np.errstate(all="ignore"):
            try:
                result = opdef.impl(*(values[x.id] for x in node.inputs), **attrs)
            except IndexError as err:  # NumPy's words; the numba kernels say the same
                raise _at_users_line(node, err) from None
        if isinstance(node.type, TupleType):
            values[node.id] = tuple(np.asarray(r).astype(t.dtype, copy=False)
                                    for r, t in zip(result, node.type.items))
        else:
            values[node.id] = np.asarray(result).astype(node.dtype, copy=False)
    return [values[n.id] for n in graph.outputs]


def _at_users_line(node: Node, err: IndexError) -> KernelIndexError:
    """NumPy's IndexError from an op, as the numba kernel's check words it: at the user's line,
    with the statement. One raised inside a loop's body already names the body's line."""
    if isinstance(err, KernelIndexError):
        return err
    if node.loc is None:
        return KernelIndexError(f"{node.op}: {err}")
    return KernelIndexError(f"{node.loc}: {err}\n    {node.loc.text.strip()}")
