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
from compiler.tracer import Tracer
from compiler.user_code import origin, user_loc


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
    "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "erf": _erf,
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
        result = supported(*args, **kwargs)
        traced = [a for a in (*args, *kwargs.values()) if isinstance(a, Tracer)]
        if isinstance(result, Tracer) and all(a.weak for a in traced):
            result.weak = True  # math.exp of a Python float is a Python float
        return result

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
    return _Rebinding(fn).of(fn)


class _Rebinding:
    """Copies of the user's functions that see TRACED_MATH, for one trace.

    The functions reachable from the traced one (through the globals of their modules, which
    hold the module's own functions and those imported from other modules by name, and
    through closure cells; only the user's own code) are found first. A module is copied when
    it names `math` or a math function, or holds a function that is copied; a function is
    copied when its module is, or its closure holds a copied function. Cycles (recursion,
    modules importing each other) are why the copies are made only once that is known.
    """

    def __init__(self, root: types.FunctionType) -> None:
        self.functions: dict[int, types.FunctionType] = {}  # reachable user functions
        self.modules: dict[int, dict] = {}  # their modules' globals
        self._walk(root)
        changed_modules = {key for key, g in self.modules.items()
                           if any(_math_replacement(v) is not None for v in g.values())}
        changed_functions: set[int] = set()
        while True:  # to a fixed point
            more = {key for key, f in self.functions.items() if key not in changed_functions
                    and (id(f.__globals__) in changed_modules
                         or any(id(v) in changed_functions for v in _cell_values(f)))}
            more_modules = {key for key, g in self.modules.items() if key not in changed_modules
                            and any(id(v) in more for v in g.values())}
            if not more and not more_modules:
                break
            changed_functions |= more
            changed_modules |= more_modules
        self.copies = self._copy(changed_functions, changed_modules)

    def of(self, fn: types.FunctionType) -> types.FunctionType:
        return self.copies.get(id(fn), fn)

    def _walk(self, root: types.FunctionType) -> None:
        pending = [root]
        while pending:
            fn = pending.pop()
            if id(fn) in self.functions or not _users_code(fn.__code__.co_filename):
                continue
            self.functions[id(fn)] = fn
            pending.extend(v for v in _cell_values(fn) if isinstance(v, types.FunctionType))
            if id(fn.__globals__) not in self.modules:
                self.modules[id(fn.__globals__)] = fn.__globals__
                pending.extend(v for v in fn.__globals__.values()
                               if isinstance(v, types.FunctionType))

    def _copy(self, functions: set[int], modules: set[int]) -> dict:
        new_globals = {key: dict(self.modules[key]) for key in modules}
        copies, new_cells = {}, []
        for key in functions:
            fn = self.functions[key]
            cells = tuple(types.CellType() if _held(cell, functions) else cell
                          for cell in fn.__closure__ or ())
            new_cells += [(new, old) for new, old in zip(cells, fn.__closure__ or ())
                          if new is not old]
            copies[key] = _with_globals(fn, new_globals.get(id(fn.__globals__), fn.__globals__),
                                        cells or fn.__closure__)
        for new, old in new_cells:  # cells filled once every copy exists: cycles close
            new.cell_contents = copies[id(old.cell_contents)]
        for g in new_globals.values():
            for name, value in g.items():
                replacement = _math_replacement(value)
                if replacement is not None:
                    g[name] = replacement
                elif id(value) in copies and value is self.functions.get(id(value)):
                    g[name] = copies[id(value)]
        return copies


def _cell_values(fn: types.FunctionType) -> list:
    values = []
    for cell in fn.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # a cell not filled yet
            pass
    return values


def _held(cell, functions: set[int]) -> bool:
    try:
        return id(cell.cell_contents) in functions
    except ValueError:
        return False


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "purelib", "platlib"))


@functools.cache
def _users_code(filename: str) -> bool:
    """Code the user wrote: not gradfuse's, NumPy's, the standard library's or an installed
    package's (whose functions are not the user's to rebind)."""
    return origin(filename) == "user" and \
        not os.path.realpath(filename).startswith(_library_dirs())


def _with_globals(fn: types.FunctionType, new_globals: dict, closure) -> types.FunctionType:
    copy = types.FunctionType(fn.__code__, new_globals, fn.__name__, fn.__defaults__, closure)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__dict__.update(fn.__dict__)
    return copy
