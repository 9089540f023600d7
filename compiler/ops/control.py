"""Control flow: `scan`, a loop whose body is a graph, and `tuple_get`, which reads one result.

A scan node runs its body `length` times (backwards when `reverse`):

    inputs:  consts..., inits..., xs...          (xs have a leading axis of `length`)
    body:    (consts..., carries..., x_t...) -> (new carries..., y_t...)
    results: (final carries..., ys...)           (ys stack every y_t on a leading axis)

as JAX's `lax.scan` does, with the values the body closes over made explicit as
consts. Its type is a `TupleType`; each result is read by a `tuple_get` node.
Both `compiler.scan` (written by users) and the loop roller (compiler/roll.py,
which finds Python loops in a trace) build scans; reverse mode turns one into a
forward scan that also stacks the residuals its body's backward needs, and a
reverse scan over them (compiler/reverse_loop.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.ir import Dim, Graph, Sym, TensorType, TupleType
from compiler.ops.lowering import Alias, Call
from compiler.ops.registry import OpDef, ShapeError, register
from compiler.ops.shapes import fmt_shape

if TYPE_CHECKING:
    from compiler.reverse_loop import LoopGrad


@dataclass(frozen=True, eq=False)  # compared by identity: a node's attrs hash it
class Loop:
    """A scan's body and how its inputs divide; `grad` is set on the forward scan that
    reverse mode made (it knows the reverse scan's body)."""

    body: Graph
    n_consts: int
    n_carries: int
    length: Dim
    reverse: bool = False
    grad: LoopGrad | None = None
    name: str = "loop"  # for generated code: the loop's comment (`<name>_body` as a function)

    @property
    def n_xs(self) -> int:
        return len(self.body.inputs) - self.n_consts - self.n_carries

    @property
    def n_ys(self) -> int:
        return len(self.body.outputs) - self.n_carries

    def __str__(self) -> str:
        direction = ", reverse" if self.reverse else ""
        return f"<{self.name}: {self.length} steps{direction}>"


def stacked(t: TensorType, length: Dim) -> TensorType:
    """The type of `length` values of type `t` stacked on a new leading axis."""
    return TensorType(t.dtype, (length,) + t.shape)


def _scan_infer(*types: TensorType, loop: Loop) -> TupleType:
    body = loop.body
    if len(types) != len(body.inputs):
        raise ShapeError(f"a scan over {loop} takes {len(body.inputs)} inputs, got {len(types)}")
    n_fixed = loop.n_consts + loop.n_carries
    for k, (t, x) in enumerate(zip(types, body.inputs)):
        expected = x.type if k < n_fixed else stacked(x.type, loop.length)
        if t != expected:
            role = "const" if k < loop.n_consts else "carry" if k < n_fixed else "xs"
            raise ShapeError(f"{role} input {k} of a scan is {t}, its body takes {expected}")
    carries = [x.type for x in body.inputs[loop.n_consts:n_fixed]]
    results = [o.type for o in body.outputs]
    if results[:loop.n_carries] != carries:
        got = ", ".join(fmt_shape(t.shape) + f" {t.dtype}" for t in results[:loop.n_carries])
        raise ShapeError(f"a scan's body must return its carries unchanged in type: it takes "
                         f"{', '.join(str(t) for t in carries)} and returns {got}")
    ys = [stacked(t, loop.length) for t in results[loop.n_carries:]]
    return TupleType(carries + ys)


def run_scan(*arrays: np.ndarray, loop: Loop, sizes: dict[str, int]) -> tuple:
    """The scan on NumPy arrays, interpreting its body once per step."""
    from compiler.interpreter import interpret

    consts = arrays[:loop.n_consts]
    carries = arrays[loop.n_consts:loop.n_consts + loop.n_carries]
    xs = arrays[loop.n_consts + loop.n_carries:]
    length = xs[0].shape[0] if xs else _size(loop.length, sizes)
    steps = range(length - 1, -1, -1) if loop.reverse else range(length)
    ys: list[list[np.ndarray]] = [[] for _ in range(loop.n_ys)]
    for t in steps:
        results = interpret(loop.body, [*consts, *carries, *(x[t] for x in xs)], sizes)
        carries = results[:loop.n_carries]
        for stack, y in zip(ys, results[loop.n_carries:]):
            stack.append(y)
    stacks = []
    for stack, y in zip(ys, loop.body.outputs[loop.n_carries:]):
        if loop.reverse:
            stack.reverse()
        shape = tuple(_size(d, sizes) for d in y.shape)
        stacks.append(np.stack(stack) if stack else np.empty((0,) + shape, y.dtype))
    return (*carries, *stacks)


def _size(d: Dim, sizes: dict[str, int]) -> int:
    return sizes[d.name] if isinstance(d, Sym) else d


def _scan_vjp(cotangents: list, out, *inputs, loop: Loop) -> tuple:
    from compiler.reverse_loop import scan_vjp

    return scan_vjp(cotangents, out, *inputs, loop=loop)


def _emit_scan(k, node) -> None:
    from compiler.codegen.scans import write_scan

    write_scan(k, node)


register(OpDef(
    "scan", "control", _scan_infer, run_scan, _scan_vjp, takes_sizes=True,
    lowering=Call(_emit_scan, array_inputs=True),
    doc="a loop over a body graph (see compiler/ops/control.py); its VJP is a reverse scan "
        "(compiler/reverse_loop.py)",
))


def _tuple_get_infer(t: TupleType, *, index: int) -> TensorType:
    if not isinstance(t, TupleType) or not 0 <= index < len(t.items):
        raise ShapeError(f"tuple_get({index}) of a value of type {t}")
    return t.items[index]


def _tuple_get_impl(values: Any, *, index: int) -> np.ndarray:
    return values[index]


def _tuple_get_vjp(g, out, values, *, index: int):
    raise AssertionError("reverse mode hands a tuple_get's cotangent to its scan itself")


register(OpDef(
    "tuple_get", "control", _tuple_get_infer, _tuple_get_impl, _tuple_get_vjp,
    lowering=Alias(),
    doc="result `index` of a node with several results; reverse mode routes its cotangent "
        "to that result (compiler/autodiff.py)",
))
