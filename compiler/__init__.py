"""gradfuse's compiler: NumPy functions traced to IR, differentiated, fused and JIT-compiled."""

from compiler.api import CompiledFunction, compile_grad
from compiler.control import fori_loop, scan
from compiler.custom import custom_vjp
from compiler.errors import (
    ArgumentError,
    GradfuseError,
    IndexTypeError,
    TraceError,
    UnsupportedError,
)
from compiler.functional_calls import register_tensor_calls
from compiler.update_kernels import register_compiled_update

register_compiled_update()  # optimizer.step() runs one kernel per parameter group
register_tensor_calls()  # F.relu(tensor) outside compiled functions: a recorded compiled call

__all__ = ["ArgumentError", "CompiledFunction", "GradfuseError", "IndexTypeError", "TraceError",
           "UnsupportedError", "compile_grad", "custom_vjp", "fori_loop", "scan"]
