"""Checking a call's arguments against a DSL function's annotations: dtype, rank and dimensions.

Static dims must match. A symbolic dim (like `N`) must have one size across the
arguments that mention it; its value (an int, or the traced size) is what the name
means inside the function. While tracing, a dim that compile_grad made symbolic
but the annotation fixes is made static (`Concretize`): the trace then holds only
for that size, as the annotation says, instead of silently serving every size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.dsl.errors import SourceText
from compiler.dsl.parser import FunctionDef, Param
from compiler.ir import Sym
from compiler.symdim import SymDim
from compiler.tracer import Tracer, current_builder

# Where a dimension was seen: the parameter, the axis, the dim there (an int or a Sym), the value.
_Sighting = tuple[Param, int, int | Sym, Any]


def check_arguments(source: SourceText, function: FunctionDef, values: list) -> dict[str, Any]:
    """Check each annotated argument; return the value of each symbolic dimension by name."""
    builder = current_builder()
    hints = builder.sym_hints if builder is not None else {}
    first_seen: dict[str, _Sighting] = {}
    sizes: dict[str, Any] = {}
    for param, value in zip(function.params, values):
        if param.dtype is None:
            continue
        dtype, shape = _dtype_and_shape(value)
        problem = _dtype_problem(param, dtype, value)
        if problem is None and len(shape) != len(param.dims):
            problem = (f"has shape {_shape_text(shape, hints)}, but its annotation says "
                       f"{param.type_text}")
        if problem is not None:
            raise source.error_at(f"argument '{param.name}' of {function.name}() {problem}",
                                  param.token)
        for axis, (expected, actual) in enumerate(zip(param.dims, shape)):
            if isinstance(expected, int):
                _check_static(source, function, param, value, axis, actual, hints)
            elif expected not in first_seen:
                first_seen[expected] = (param, axis, actual, value)
                sizes[expected] = value.shape[axis] if isinstance(value, Tracer) else actual
            else:
                _check_same(source, function, expected, first_seen[expected],
                            (param, axis, actual, value), hints)
    return sizes


def _dtype_and_shape(value: Any) -> tuple[np.dtype | None, tuple]:
    """A Python scalar has no dtype of its own (NumPy 2 treats it as "weak"): None."""
    if isinstance(value, Tracer):  # a Python scalar argument is traced as a weak one
        return (None if value.weak else value.dtype), value.type.shape
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        return None, ()
    array = np.asarray(value)
    return array.dtype, array.shape


def _dtype_problem(param: Param, dtype: np.dtype | None, value: Any) -> str | None:
    if dtype is None:  # a Python scalar fits any dtype of its kind (or a float, an int)
        kind = value.dtype.kind if isinstance(value, Tracer) else \
            "b" if isinstance(value, bool) else "i" if isinstance(value, int) else "f"
        fits = {"b": "b", "i": "iuf"}.get(kind, "f")
        if param.dtype.kind in fits:
            return None
        name = {"b": "bool", "i": "int"}.get(kind, "float")
        return f"is a Python {name}, but its annotation says {param.type_text}"
    if dtype == param.dtype:
        return None
    return f"holds {dtype.name} values, but its annotation says {param.type_text}"


def _check_static(source, function, param, value, axis, actual, hints) -> None:
    expected = param.dims[axis]
    size = _size(actual, hints)
    if size is not None and size != expected:
        raise source.error_at(
            f"argument '{param.name}' of {function.name}() has shape "
            f"{_shape_text(_shape(value), hints)}, but its annotation says {param.type_text} "
            f"(axis {axis} should be {expected})", param.token)
    if isinstance(actual, Sym):
        _make_static(value, axis)


def _check_same(source, function, dim_name: str, first: _Sighting, here: _Sighting,
                hints) -> None:
    (first_param, first_axis, first_dim, first_value), (param, axis, dim, value) = first, here
    if dim == first_dim:
        return
    first_size, size = _size(first_dim, hints), _size(dim, hints)
    if first_size is not None and size is not None and first_size != size:
        raise source.error_at(
            f"dimension {dim_name} of {function.name}() is {first_size} in '{first_param.name}' "
            f"(axis {first_axis}) but {size} in '{param.name}' (axis {axis})", param.token)
    # Equal sizes, one of them symbolic: a later call could change one without the other.
    if isinstance(dim, Sym):
        _make_static(value, axis)
    if isinstance(first_dim, Sym):
        _make_static(first_value, first_axis)
    raise AssertionError(f"{dim_name}: {first_dim} and {dim} differ but were not specialized")


def _make_static(value: Tracer, axis: int) -> None:
    """Ask the specializer to retrace with this axis's size as a constant."""
    size = value.shape[axis]
    assert isinstance(size, SymDim)
    size.__index__()  # raises Concretize


def _size(dim: int | Sym, hints: dict) -> int | None:
    return dim if isinstance(dim, int) else hints.get(dim)


def _shape(value: Any) -> tuple:
    return value.type.shape if isinstance(value, Tracer) else np.shape(value)


def _shape_text(shape: tuple, hints: dict) -> str:
    dims = [str(hints.get(d, d)) if isinstance(d, Sym) else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
