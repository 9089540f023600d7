"""runtime.functional on runtime Tensors: each function compiled once, its calls recorded.

`F.relu(h)` with `h` a Tensor outside any compiled function is a compiled call of
F.relu, as if the user had written `compile_grad(F.relu)(h)`: a Tensor result in the
graph, so backward flows through it into the calls that made `h`.
"""

from __future__ import annotations

from collections.abc import Callable

from compiler.api import CompiledFunction, compile_grad
from runtime import functional

_compiled: dict[Callable, CompiledFunction] = {}


def _tensor_call(fn: Callable) -> CompiledFunction:
    compiled = _compiled.get(fn)
    if compiled is None:
        compiled = _compiled[fn] = compile_grad(fn)
    return compiled


def register_tensor_calls() -> None:
    """Make runtime.functional's functions run on Tensors as recorded compiled calls."""
    functional.set_tensor_call(_tensor_call)
