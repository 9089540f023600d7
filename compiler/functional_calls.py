"""runtime.functional on runtime Tensors: each function compiled once, its calls recorded.

`F.relu(h)` with `h` a Tensor outside any compiled function is a compiled call of
F.relu, as if the user had written `compile_grad(F.relu)(h)`: a Tensor result in the
graph, so backward flows through it into the calls that made `h`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from compiler.api import CompiledFunction, compile_grad
from compiler.builder import Builder
from compiler.tracer import current_builder
from runtime import Tensor, functional

_compiled: dict[Callable, CompiledFunction] = {}


def _tensor_call(fn: Callable) -> Callable:
    builder = current_builder()
    if builder is not None:  # a Tensor met while tracing: one read from outside the arguments
        return functools.partial(_lifted, builder)
    compiled = _compiled.get(fn)
    if compiled is None:
        compiled = _compiled[fn] = compile_grad(fn)
    return compiled


def _lifted(builder: Builder, *args: Any, **kwargs: Any) -> None:
    """Inside a trace, F.relu(P) of a Parameter P read from a global or `self` would take P's
    values for constants: the builder refuses it at the user's line, as it refuses P * x."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            builder.lift(value, [])
    raise AssertionError("the builder lifts no runtime Tensor")  # lift raised


def register_tensor_calls() -> None:
    """Make runtime.functional's functions run on Tensors as recorded compiled calls."""
    functional.set_tensor_call(_tensor_call)
