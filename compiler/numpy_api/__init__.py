"""The NumPy surface of traced arrays: which ufuncs, functions and index forms map to which ops.

Primitives bind one op; composites (mean, var, std, clip, square, stack,
expand_dims, ...) are plain NumPy-style code over primitives and need no rules
of their own. Each module of this package registers what it implements
(`@implements(np.cumsum)`, `@implements_ufunc(np.arctan2)`: compiler/numpy_api/dispatch.py),
and every module is imported here, so a new binding is one module's business.
Anything not registered raises an error naming the function.
"""

import importlib
import pkgutil

from compiler.numpy_api.dispatch import (
    FUNCTIONS,
    UFUNCS,
    apply_function,
    apply_ufunc,
    implements,
    implements_ufunc,
)
from compiler.numpy_api.elementwise import (
    astype,
    binary,
    clip,
    logical,
    logical_not,
    power,
    unary,
    where,
)
from compiler.numpy_api.indexing import getitem, take, take_along_axis
from compiler.numpy_api.layout import (
    broadcast_to,
    concatenate,
    expand_dims,
    moveaxis,
    reshape,
    squeeze,
    stack,
    swapaxes,
    transpose,
)
from compiler.numpy_api.linalg import dot, matmul
from compiler.numpy_api.reductions import amax, amin, mean, prod, std, sum, var

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

__all__ = ["FUNCTIONS", "UFUNCS", "amax", "amin", "apply_function", "apply_ufunc", "astype",
           "binary", "broadcast_to", "clip", "concatenate", "dot", "expand_dims", "getitem",
           "implements", "implements_ufunc", "logical", "logical_not", "matmul", "mean",
           "moveaxis", "power", "prod", "reshape", "squeeze", "stack", "std", "sum", "swapaxes",
           "take", "take_along_axis", "transpose", "unary", "var", "where"]
