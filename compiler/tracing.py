"""Running a trace: `trace(fn, ...)` makes a `Builder` and its symbolic inputs, runs the
user's function on them, checks what it returns (arrays and numbers only) and lifts it to
the graph's outputs, then names the graph's values after the user's variables (read from
the user's frames: compiler/user_code.py).
"""

from __future__ import annotations

import linecache
import sys
from collections.abc import Callable

import numpy as np

import runtime
from compiler import numpy_api as npx
from compiler import pytree
from compiler.builder import NUMERIC_KINDS, Builder, shown
from compiler.errors import TraceError
from compiler.ir import Graph, SourceLoc, Sym, TensorType, walk
from compiler.symdim import SymDim
from compiler.tracer import Tracer, building
from compiler.user_code import UserFrames


def _check_returned(fn: Callable, name: str, leaves: list) -> None:
    """Refuse a returned leaf that is no number (a string, say), at `fn`'s definition: the
    return statement has run, so no line of it is on the stack any more."""
    for leaf in leaves:
        if isinstance(leaf, Tracer | SymDim | runtime.Tensor):
            continue
        if isinstance(leaf, np.ndarray) and leaf.dtype == object:
            continue  # np.array([...]) of traced values: `Builder.lift` reads it
        kind = np.asarray(leaf).dtype.kind if isinstance(leaf, bool | int | float | complex
                                                            | np.ndarray | np.generic) else "O"
        if kind not in NUMERIC_KINDS:
            code = getattr(fn, "__code__", None)
            loc = SourceLoc(code.co_filename, code.co_firstlineno, linecache.getline(
                code.co_filename, code.co_firstlineno)) if code else None
            raise TraceError(
                f"{name} returns {shown(leaf)}: a compiled function returns arrays and "
                "numbers (alone, or in dicts, lists and tuples); return anything else from a "
                "plain Python function that calls it", loc)


def trace(fn: Callable, input_types: list[TensorType], input_names: list[str],
          build_args: Callable[[list[Tracer]], tuple[tuple, dict]],
          sym_hints: dict[Sym, int], name: str,
          weak: frozenset[int] = frozenset(), static: dict[int, object] | None = None,
          scalars: frozenset[int] = frozenset(),
          builder: Builder | None = None) -> tuple[Graph, pytree.TreeDef]:
    """Trace `fn` on symbolic inputs of `input_types`; return its graph and output structure.

    `build_args` turns the flat list of input tracers into fn's (args, kwargs); the inputs
    at `weak` positions are Python scalars (`Builder.input`). Those in `static` are given to
    `fn` as these Python values (their inputs stay in the graph, unread); those at `scalars`
    may be made static by `ConcretizeScalars` (`Builder.concretize`). `builder`, if given,
    traces instead of a new one (one that turns values it captures into inputs).
    """
    builder = builder if builder is not None else Builder(sym_hints)
    inputs = [builder.input(i, t, n, i in weak)
              for i, (t, n) in enumerate(zip(input_types, input_names))]
    builder.scalar_leaves = {inputs[i].node.id: i for i in scalars}
    static = static or {}
    args, kwargs = build_args([static[i] if i in static else t for i, t in enumerate(inputs)])
    frames = builder.user_frames = UserFrames(sys._getframe())
    try:
        with building(builder):
            result = npx.pymath.with_traced_math(fn)(*args, **kwargs)  # math.exp(x) works
            if builder.deferred_error is not None:
                raise builder.deferred_error
            out_leaves, out_tree = pytree.flatten(result)
            _check_returned(fn, name, out_leaves + pytree.strings(out_tree))
            outputs = [builder.lift(leaf, []) for leaf in out_leaves]
    finally:
        builder.user_frames = None
    npx.random_draws.warn_random_draws(list(frames.depths), name)
    names = frames.names(Tracer)
    if not outputs:
        raise TraceError(f"{name} returned no arrays", None)
    if len(outputs) == 1 and outputs[0].name is None and outputs[0].op != "input":
        outputs[0].name = name  # `loss = ...` reads better than `t7 = ...`
    graph = Graph([t.node for t in inputs], outputs, name=name)
    for node in walk(graph):
        if node.name is None and node.id in names:
            node.name = names[node.id]
    return graph, out_tree
