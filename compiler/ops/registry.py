"""The op table: one `OpDef` per primitive, and `bind`, which builds a node in the current trace.

An `OpDef` holds everything about a primitive in one place: its shape/dtype
rule (`infer`), its NumPy reference (`impl`, used by the interpreter), its VJP
written with NumPy calls on traced values (so derivative rules read like the
math and build ordinary IR), and, for elementwise ops, the scalar code template
the generator inlines into fused loops. Ops of other kinds are emitted by the
generator's emitter for their `kind`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compiler.ir import TensorType
from compiler.ops.lowering import Elementwise, Lowering

# "call" ops (custom_vjp functions) are inlined before code generation.
KINDS = ("source", "meta", "elementwise", "reduce", "cumulative", "layout", "index", "matmul",
         "linalg", "call", "control")


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: str
    infer: Callable[..., TensorType]  # infer(*input_types, **attrs) -> output type
    impl: Callable[..., Any]  # impl(*arrays, **attrs) -> ndarray (NumPy reference)
    # vjp(g, out, *inputs, **attrs) -> one cotangent (or None for zero) per input;
    # None when the op has no derivative (comparisons, sign, integer ops).
    vjp: Callable[..., tuple] | None
    code: str | None = None  # elementwise only: scalar template over {0}, {1}, ...
    doc: str = ""
    # The interpreter also passes `sizes` (symbolic dim name -> size) to `impl`: ops whose
    # attributes hold graphs that may mention the sizes (scan's body).
    takes_sizes: bool = False
    # How code generation handles the op (compiler/ops/lowering.py); an elementwise op's
    # is its `code` template, unless it says more.
    lowering: Lowering | None = None

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        assert (self.code is not None) == (self.kind == "elementwise"), self.name
        if self.lowering is None and self.code is not None:
            object.__setattr__(self, "lowering", Elementwise(self.code))


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    assert opdef.name not in REGISTRY, f"op {opdef.name!r} defined twice"
    REGISTRY[opdef.name] = opdef
    return opdef


def get(name: str) -> OpDef:
    return REGISTRY[name]


class ShapeError(ValueError):
    """A shape rule rejected its inputs; the tracer adds the user's line."""


class DimConflict(Exception):
    """A symbolic dimension met a concrete one; the tracer decides whether to specialize it."""

    def __init__(self, sym, other) -> None:
        super().__init__(f"{sym} vs {other}")
        self.sym = sym
        self.other = other


class _Traces(threading.local):
    """The graph builders of the traces running in this thread, innermost last (a trace may
    start another: a custom_vjp, a gradient inside a function). Per thread, so that a
    thread that calls a compiled function while another thread traces runs it instead of
    recording it into the other thread's graph."""

    def __init__(self) -> None:
        self.builders: list = []


TRACES = _Traces()  # pushed and popped by compiler.tracer.building


def bind(op: str, *inputs, **attrs):
    """Build `op(*inputs, **attrs)` in the active trace and return its traced value."""
    builders = TRACES.builders
    if not builders:
        raise RuntimeError(f"bind({op!r}) called outside of a trace")
    return builders[-1].emit(op, inputs, attrs)
