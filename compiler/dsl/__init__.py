"""The gradfuse DSL: a few lines of Python-like math with shape annotations, compiled like Python.

    def loss(W: f32[10, 1], X: f32[N, 10], y: f32[N, 1]):
        pred = X @ W
        return mean((pred - y) ** 2)

`load` parses a program (text, or a `.gf` file) and returns one of its functions
as a callable; `compile_grad` accepts the same text or path. The grammar is
`grammar.lark`; `parser` reads it into a `Program`, `resolve` checks names,
calls and loops (`loops` says which names a loop carries), `evaluate` runs a
function on traced values or arrays (a loop on `compiler.scan`), and `pretty`
prints a program back as canonical text.
"""

from __future__ import annotations

import os

import numpy as np

from compiler.dsl.errors import DslError
from compiler.dsl.function import DslFunction
from compiler.dsl.parser import EXTENSION, Program, parse, read_source
from compiler.dsl.pretty import format_program

__all__ = ["EXTENSION", "DslError", "DslFunction", "Program", "format_program", "load", "parse",
           "parse_source"]


def parse_source(source: str | os.PathLike) -> Program:
    """Parse DSL text, or the file it names (an existing path, or a name ending in .gf)."""
    text, filename = read_source(source)
    return parse(text, filename)


def load(source: str | os.PathLike, name: str | None = None, *,
         float_dtype: np.dtype | type | None = None) -> DslFunction:
    """The function `name` (default: the last one) of a DSL program, as a Python callable.

    `float_dtype` reads every float annotation as that dtype instead (the command
    line's gradient check runs the program in float64).
    """
    program = parse_source(source)
    if float_dtype is not None:
        program = program.with_float_dtype(np.dtype(float_dtype))
    return DslFunction(program, name)
