"""Python's `math` module on traced values: `math.exp(x)`, `math.erf(x)` ... in a traced function.

`math.exp(x)` converts its argument with `float()`, which a traced value cannot answer (its
value is unknown while tracing), and no hook of Python's lets `math.exp` return anything but
a float. So the function being traced runs with a copy of its module's globals in which the
`math` module, and math functions imported by name (`from math import exp`), are replaced by
`TRACED_MATH`, whose functions build the NumPy operation on traced values and call `math`'s
own on everything else. The user's functions it reaches see such copies too: those of its
module (helpers, a scan's step), those imported from other modules by name
(`from layers import gelu`), those in its closure; functions it defines inherit its globals.

What this does not reach: `math` imported inside a function body, and functions reached
through a module (`layers.gelu(x)`) or an object; there `float()` of a traced value raises
an error that says to use NumPy (`np.exp`).
A `math` function gradfuse does not support raises an error naming it. `math.floor`,
`math.ceil`, `math.trunc` and `round()` work anywhere: they call the traced value's own
`__floor__`, `__ceil__`, `__trunc__`, `__round__` (compiler/tracer.py).
"""

from __future__ import annotations

import functools
import math
import os
import sysconfig
import types

import numpy as np

from compiler.errors import UnsupportedError
from compiler.numpy_api.elementwise import erf as _erf
from compiler.tracer import Tracer, _origin, user_loc


def _log(x, base=None):
    return np.log(x) if base is None else np.log(x) / np.log(base)


def _hypot(*coordinates):
    return functools.reduce(np.hypot, coordinates) if coordinates else 0.0


# math's name -> what it does when an argument is traced (NumPy on traced values).
_TRACED = {
    "exp": np.exp, "expm1": np.expm1, "exp2": np.exp2, "log": _log, "log1p": np.log1p,
    "log2": np.log2, "log10": np.log10, "sqrt": np.sqrt, "pow": np.power, "fabs": np.abs,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "atan2": np.arctan2, "hypot": _hypot, "sinh": np.sinh,
    "cosh": np.cosh, "tanh": np.tanh, "erf": _erf,
    "erfc": lambda x: 1 - _erf(x), "floor": np.floor, "ceil": np.ceil, "trunc": np.trunc,
    "isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite,
    "degrees": lambda x: x * (180 / math.pi), "radians": lambda x: x * (math.pi / 180),
}


def _traced_function(name: str, original):
    supported = _TRACED.get(name)

    @functools.wraps(original)
    def function(*args, **kwargs):
        if not any(isinstance(a, Tracer) for a in (*args, *kwargs.values())):
            return original(*args, **kwargs)
        if supported is None:
            raise UnsupportedError(
                f"math.{name} is not supported on traced values; gradfuse supports "
                f"math.{', math.'.join(sorted(_TRACED))} (or write it with NumPy functions)",
                user_loc())
        return supported(*args, **kwargs)

    return function


def _traced_math_module() -> types.ModuleType:
    module = types.ModuleType("math", "Python's math module, answering traced values too "
                                      "(compiler/numpy_api/pymath.py)")
    for name in dir(math):
        if name.startswith("_"):
            continue
        value = getattr(math, name)
        setattr(module, name, _traced_function(name, value) if callable(value) else value)
    return module


TRACED_MATH = _traced_math_module()


def _math_replacement(value):
    """What a global of the user's module becomes: `math` -> TRACED_MATH, math.exp -> its
    counterpart; None for anything else."""
    if value is math:
        return TRACED_MATH
    if isinstance(value, types.BuiltinFunctionType) and getattr(value, "__module__", "") == "math":
        return getattr(TRACED_MATH, value.__name__, None)
    return None


def with_traced_math(fn):
    """`fn` running with TRACED_MATH for `math` (in a copy of its module's globals), or `fn`
    itself when neither it nor the user's functions it reaches use `math`."""
    if isinstance(fn, types.MethodType):
        rebound = with_traced_math(fn.__func__)
        return fn if rebound is fn.__func__ else types.MethodType(rebound, fn.__self__)
    if not isinstance(fn, types.FunctionType):
        return fn
    return _Rebinder().function(fn)


class _Rebinder:
    """Copies of the user's functions that see TRACED_MATH: every function reachable from the
    traced one through module globals (its own module's, and those of functions imported from
    other modules by name) and closure cells. One copy of each module's globals per trace."""

    def __init__(self) -> None:
        self.modules: dict[int, dict | None] = {}  # id(module globals) -> copy (None: as is)
        self.functions: dict[int, types.FunctionType] = {}  # id(function) -> its copy

    def function(self, fn: types.FunctionType) -> types.FunctionType:
        key = id(fn)
        if key in self.functions:
            return self.functions[key]
        self.functions[key] = fn  # while its closure is walked: a function that holds itself
        if not _users_code(fn.__code__.co_filename):
            return fn
        module_globals = self.module(fn.__globals__)
        closure = self.closure(fn.__closure__)
        if module_globals is not None or closure is not fn.__closure__:
            self.functions[key] = _with_globals(fn, module_globals or fn.__globals__, closure)
        return self.functions[key]

    def module(self, module_globals: dict) -> dict | None:
        key = id(module_globals)
        if key in self.modules:
            return self.modules[key]
        copied = self.modules[key] = dict(module_globals)  # before recursing: cycles end here
        changed = False
        for name, value in module_globals.items():
            new = _math_replacement(value)
            if new is None and isinstance(value, types.FunctionType):
                new = self.function(value)
                new = None if new is value else new
            if new is not None:
                copied[name] = new
                changed = True
        if not changed:
            self.modules[key] = None
        return copied if changed else None

    def closure(self, cells):
        if not cells:
            return cells
        new_cells = []
        for cell in cells:
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not filled yet
                new_cells.append(cell)
                continue
            new = self.function(value) if isinstance(value, types.FunctionType) else value
            new_cells.append(cell if new is value else types.CellType(new))
        return cells if all(a is b for a, b in zip(cells, new_cells)) else tuple(new_cells)


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "purelib", "platlib"))


@functools.cache
def _users_code(filename: str) -> bool:
    """Code the user wrote: not gradfuse's, NumPy's, the standard library's or an installed
    package's (whose functions are not the user's to rebind)."""
    return _origin(filename) == "user" and \
        not os.path.realpath(filename).startswith(_library_dirs())


def _with_globals(fn: types.FunctionType, new_globals: dict, closure) -> types.FunctionType:
    copy = types.FunctionType(fn.__code__, new_globals, fn.__name__, fn.__defaults__, closure)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__dict__.update(fn.__dict__)
    return copy
