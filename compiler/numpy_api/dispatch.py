"""Dispatch of NumPy's protocols on traced arrays: the tables of what each NumPy function and
ufunc does, the decorators that fill them, and helpers the bindings share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ops.registry import ShapeError
from compiler.ops.shapes import normalize_axes
from compiler.tracer import Tracer, current_builder, user_loc

UFUNCS: dict = {}  # ufunc -> what it does on traced arrays
# (ufunc, method) -> what the ufunc's method does on traced arrays: np.add.reduce (sum),
# np.multiply.accumulate (cumprod), ... (compiler/numpy_api/ufunc_methods.py)
UFUNC_METHODS: dict = {}
# ufunc name -> what it does: ufuncs of other libraries, found by name (scipy.special.erf)
FOREIGN_UFUNCS: dict = {}
FUNCTIONS: dict = {}  # NumPy function -> what it does on traced arrays


def implements(*functions) -> Callable:
    """Register the decorated function as what NumPy's `functions` do on traced arrays."""
    def register(handler: Callable) -> Callable:
        for function in functions:
            assert function not in FUNCTIONS, f"np.{function.__name__} bound twice"
            FUNCTIONS[function] = handler
        return handler

    return register


def implements_ufunc(*ufuncs) -> Callable:
    """Register the decorated function as what the `ufuncs` do (called, not reduced) on
    traced arrays."""
    def register(handler: Callable) -> Callable:
        for ufunc in ufuncs:
            assert ufunc not in UFUNCS, f"np.{ufunc.__name__} bound twice"
            UFUNCS[ufunc] = handler
        return handler

    return register


def apply_ufunc(ufunc, method, inputs, kwargs):
    if method != "__call__":
        method_handler = UFUNC_METHODS.get((ufunc, method))
        if method_handler is None:
            supported = sorted(f"np.{u.__name__}.{m}" for u, m in UFUNC_METHODS if m == method)
            also = f" (supported: {', '.join(supported)})" if supported else ""
            raise UnsupportedError(f"np.{ufunc.__name__}.{method} is not supported{also}; use "
                                   "the matching NumPy function (np.sum, np.max, ...)",
                                   user_loc())
        return method_handler(*inputs, **kwargs)
    handler = UFUNCS.get(ufunc)
    if handler is None and getattr(np, ufunc.__name__, None) is not ufunc:
        handler = FOREIGN_UFUNCS.get(ufunc.__name__)
    if handler is None:
        raise UnsupportedError(f"np.{ufunc.__name__} is not supported by gradfuse", user_loc())
    out = kwargs.pop("out", None)
    if out is not None and out != (None,) * len(out):
        raise UnsupportedError(f"np.{ufunc.__name__}(out=...) is not supported: traced arrays "
                               "are immutable", user_loc())
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise UnsupportedError(f"np.{ufunc.__name__}() argument(s) {sorted(kwargs)} are not "
                               "supported", user_loc())
    result = handler(*inputs)
    return result.astype(dtype) if dtype is not None else result


def apply_function(func, args, kwargs):
    handler = FUNCTIONS.get(func)
    if handler is None:
        name = getattr(func, "__name__", repr(func))
        raise UnsupportedError(f"np.{name} is not supported by gradfuse", user_loc())
    return handler(*args, **kwargs)


def axes_of(x, axis):
    """`axis` (None, an int or a tuple) as a sorted tuple of non-negative axes of `x`."""
    try:
        return normalize_axes(axis, x.ndim)
    except ShapeError as err:
        raise TraceError(str(err), user_loc()) from None


def no_out(name, out=None, dtype=None, **kwargs):
    """Refuse `out=` and the keyword arguments gradfuse does not support, naming them."""
    if out is not None:
        raise UnsupportedError(f"{name}(out=...) is not supported: traced arrays are immutable",
                               user_loc())
    unknown = {k: v for k, v in kwargs.items() if v is not None and k not in ("where",)}
    if kwargs.get("where") not in (None, True):
        raise UnsupportedError(f"{name}(where=...) is not supported; use np.where", user_loc())
    if unknown:
        raise UnsupportedError(f"{name}() argument(s) {sorted(unknown)} are not supported",
                               user_loc())


def traced(x) -> Tracer:
    """`x` as a traced value of the current trace (constants are lifted)."""
    if isinstance(x, Tracer):
        return x
    builder = current_builder()
    return builder.wrap(builder.lift(x, []))
