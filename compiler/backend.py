"""Backends turn a graph into a `Kernel`: a callable on a flat list of arrays, with its source."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from compiler.interpreter import interpret
from compiler.ir import Graph


class Kernel(Protocol):
    """`kernel(arrays)` gives a list of results; `kernel.call(*arrays)` the results as the
    backend makes them (a tuple), for hot paths that spread their arguments anyway."""

    source: str

    def __call__(self, args: list[np.ndarray]) -> list[np.ndarray]: ...

    def call(self, *args: np.ndarray) -> tuple: ...


class Backend(Protocol):
    name: str

    def compile(self, graph: Graph, kind: str) -> Kernel: ...


class InterpretedKernel:
    """Runs the graph with NumPy; its `source` is the IR as text."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.source = str(graph)

    def __call__(self, args: list[np.ndarray]) -> list[np.ndarray]:
        return interpret(self.graph, args)

    def call(self, *args: np.ndarray) -> tuple:
        return tuple(interpret(self.graph, list(args)))


class InterpreterBackend:
    name = "interpreter"

    def compile(self, graph: Graph, kind: str) -> Kernel:
        return InterpretedKernel(graph)


def get(name: str) -> Backend:
    if name == "interpreter":
        return InterpreterBackend()
    if name == "numba":
        from compiler.jit import NumbaBackend

        return NumbaBackend()
    raise ValueError(f"unknown backend {name!r}: use 'numba' or 'interpreter'")
