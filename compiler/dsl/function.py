"""A DSL function as a Python callable, which `compile_grad` compiles like a NumPy function."""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.dsl.evaluate import call_function
from compiler.dsl.parser import Dims, Program


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
        self.__signature__ = definition.signature()

    def __call__(self, *args, **kwargs) -> Any:
        return call_function(self.dsl_program, self.dsl_definition, args, kwargs)

    def __repr__(self) -> str:
        return f"<DSL function {self.__name__}{self.__signature__}>"
