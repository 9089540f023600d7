"""Dispatch of NumPy's protocols on traced arrays: the tables of what each NumPy function and
ufunc does, the decorators that fill them, and helpers the bindings share."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ops.registry import ShapeError
from compiler.ops.shapes import normalize_axes
from compiler.tracer import Tracer, calling, current_builder, static_numbers
from compiler.user_code import user_loc

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
            assert function not in FUNCTIONS, f"{numpy_name(function)} bound twice"
            FUNCTIONS[function] = handler
        return handler

    return register


def implements_ufunc(*ufuncs) -> Callable:
    """Register the decorated function as what the `ufuncs` do (called, not reduced) on
    traced arrays."""
    def register(handler: Callable) -> Callable:
        for ufunc in ufuncs:
            assert ufunc not in UFUNCS, f"{numpy_name(ufunc)} bound twice"
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
        try:
            return method_handler(*inputs, **kwargs)
        except TraceError:
            static_numbers(inputs, kwargs)
            raise
    handler = UFUNCS.get(ufunc)
    if handler is None and getattr(np, ufunc.__name__, None) is not ufunc:
        handler = FOREIGN_UFUNCS.get(ufunc.__name__)
    if handler is None:
        raise UnsupportedError(f"{numpy_name(ufunc)} is not supported by gradfuse", user_loc())
    outs = [o for o in kwargs.pop("out", None) or () if o is not None]
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise UnsupportedError(f"{numpy_name(ufunc)}() argument(s) {sorted(kwargs)} are not "
                               "supported", user_loc())
    with calling(numpy_name(ufunc)):
        if dtype is not None:
            inputs = _in_loop_dtypes(ufunc, inputs, dtype)
        result = handler(*inputs)
        result = result.astype(dtype) if dtype is not None and ufunc.nout == 1 \
            and result.dtype != np.dtype(dtype) else result
        if outs:  # `y += x` on a NumPy or traced y, np.add(a, b, out=y)
            from compiler.numpy_api.assignment import store_out

            return store_out(ufunc, outs, result)
        return result


def _in_loop_dtypes(ufunc, inputs: tuple, dtype) -> tuple:
    """The ufunc's `inputs` cast to the dtypes of the loop NumPy runs for `dtype=`: it
    computes in them (np.add(i8, i8, dtype=np.int16) adds int16s, 100 + 100 is 200), so
    casting the result alone would keep what the inputs' dtype wrapped or rounded. A Python
    number stays weak; NumPy's refusal (a float loop cast to int) is the user's error."""
    def described(v):
        if isinstance(v, Tracer):
            return type(v.dtype.type(0).item()) if v.weak and v.dtype.kind in "if" else v.dtype
        return type(v) if type(v) in (int, float) else np.asarray(v).dtype

    signature = (None,) * ufunc.nin + (np.dtype(dtype),) * ufunc.nout
    try:
        loop = ufunc.resolve_dtypes(tuple(map(described, inputs)) + (None,) * ufunc.nout,
                                    signature=signature)
    except (TypeError, ValueError) as err:
        raise TraceError(f"{numpy_name(ufunc)}(..., dtype={np.dtype(dtype)}): {err}",
                         user_loc()) from None

    def cast(v, d):
        if isinstance(v, Tracer):
            return v if v.dtype == d and not v.weak else v.astype(d)
        return v if type(v) in (int, float) else np.asarray(v).astype(d)

    return tuple(cast(v, d) for v, d in zip(inputs, loop))


def apply_function(func, args, kwargs):
    handler = FUNCTIONS.get(func)
    if handler is None:
        raise UnsupportedError(f"{numpy_name(func)} is not supported by gradfuse", user_loc())
    with calling(numpy_name(func)):
        try:
            return handler(*args, **kwargs)
        except TraceError:  # np.roll(x, shift) with shift an int argument: static
            static_numbers(args, kwargs)
            raise


def numpy_name(function) -> str:
    """How a user spells a NumPy function or ufunc: np.sort, np.linalg.norm, np.fft.fft."""
    name = getattr(function, "__name__", None)
    if name is None:
        return repr(function)
    module = getattr(function, "__module__", None) or "numpy"
    if isinstance(function, np.ufunc):
        module = "numpy" if getattr(np, name, None) is function else module
    parts = module.split(".")
    if parts[0] != "numpy":
        return f"{module}.{name}"
    # The shortest public path that reaches it (np.ma.core.masked_where is np.ma.masked_where).
    public = [p for p in parts[1:] if not p.startswith("_")]
    for length in range(len(public) + 1):
        owner = np
        for part in public[:length]:
            owner = getattr(owner, part, None)
        if owner is not None and getattr(owner, name, None) is function:
            return ".".join(["np", *public[:length], name])
    return ".".join(["np", *public, name])


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


def fresh(x: Tracer) -> Tracer:
    """A new traced array holding x's values, for a function that returns a copy in NumPy
    (an in-place change of x must not reach it, as it would reach x itself)."""
    return Tracer(x.builder, x.node)


def traced(x) -> Tracer:
    """`x` as a traced value of the current trace (constants are lifted)."""
    if isinstance(x, Tracer):
        return x
    builder = current_builder()
    return builder.wrap(builder.lift(x, []))
