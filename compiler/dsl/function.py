"""A DSL function as a Python callable, which `compile_grad` compiles like a NumPy function."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from compiler.dsl.evaluate import bind_arguments, call_function
from compiler.dsl.parser import Dims, FunctionDef, Program


class DslSignature(inspect.Signature):
    """A DSL function's signature, whose `bind` reports a call that does not fit as a DslError
    at the function's definition, with its line and a caret, as every DSL mistake is.

    `compile_grad` binds a call to `inspect.signature(fn)` before it traces anything, so
    this is what makes a compiled DSL function called with the wrong arguments point at
    the DSL source rather than raise a bare ArgumentError.
    """

    program: Program | None = None
    definition: FunctionDef | None = None

    @classmethod
    def of(cls, program: Program, definition: FunctionDef) -> DslSignature:
        signature = cls(list(definition.signature().parameters.values()))
        signature.program, signature.definition = program, definition
        return signature

    def bind(self, *args, **kwargs) -> inspect.BoundArguments:
        if self.definition is None:  # a copy made by replace(): no source to point at
            return super().bind(*args, **kwargs)
        return bind_arguments(self.program, self.definition, args, kwargs)


class DslFunction:
    """One function of a parsed program, callable on traced values or on arrays.

    It has a real signature (`inspect.signature` gives the DSL's parameter names,
    annotated with their DSL types) and `dsl_params`, the annotations as values:
    name -> (dtype, shape of ints and dimension names), or (None, None) when a
    parameter is not annotated.
    """

    def __init__(self, program: Program, name: str | None = None) -> None:
        definition = program.function(name)
        self.dsl_program = program
        self.dsl_definition = definition
        self.dsl_params: dict[str, tuple[np.dtype | None, Dims | None]] = {
            p.name: (p.dtype, p.dims) for p in definition.params}
        self.__name__ = self.__qualname__ = definition.name
        self.__doc__ = f"{definition.name}{definition.signature()}, from {program.source.filename}"
        self.__signature__ = DslSignature.of(program, definition)

    def __call__(self, *args, **kwargs) -> Any:
        return call_function(self.dsl_program, self.dsl_definition, args, kwargs)

    def __repr__(self) -> str:
        return f"<DSL function {self.__name__}{self.__signature__}>"
