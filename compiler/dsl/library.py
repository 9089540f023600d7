"""The functions a DSL program can call, by name, and the checks of a call's arguments.

The table is derived, not written: every NumPy function and ufunc that gradfuse
traces (`compiler.numpy_api.UFUNCS` and `FUNCTIONS`) under each of its NumPy
names (`abs` and `absolute`, `max` and `amax`, ...), plus the public functions
of `runtime.functional` (relu, softmax, mse_loss, cross_entropy, ...). A call
runs the NumPy function itself, so on traced values it dispatches exactly as in
a traced Python function, and on arrays it computes eagerly.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import numpy as np

from compiler import numpy_api
from compiler.dsl.errors import suggestion
from runtime import functional

# Names every program can use as values. True, False and None cannot be assigned to;
# a let-binding may shadow pi and inf.
CONSTANTS = {"True": True, "False": False, "None": None, "pi": math.pi, "inf": math.inf}
RESERVED = ("True", "False", "None")


@functools.cache
def functions() -> dict[str, Callable]:
    table: dict[str, Callable] = {}
    supported = [*numpy_api.UFUNCS, *numpy_api.FUNCTIONS]
    for name, value in vars(np).items():
        if not name.startswith("_") and any(value is f for f in supported):
            table[name] = value
    for name, value in vars(functional).items():
        if (inspect.isfunction(value) and value.__module__ == functional.__name__
                and not name.startswith("_") and value is not functional.set_tensor_call):
            table[name] = value
    return table


@functools.cache
def signature(name: str) -> inspect.Signature:
    """The call signature of a library function, for checking arguments before running it."""
    func = functions()[name]
    if isinstance(func, np.ufunc):  # only the operands: out= and where= make no sense here
        names = ["x"] if func.nin == 1 else [f"x{i + 1}" for i in range(func.nin)]
        return inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY)
                                  for n in names])
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # a C function without one: gradfuse's handler has one
        return inspect.signature(numpy_api.FUNCTIONS[func])


def argument_problem(name: str, sig: inspect.Signature, n_positional: int,
                     keywords: list[str]) -> str | None:
    """Why `name(<n_positional>, **keywords)` cannot bind to `sig`, in Python's words; or None."""
    try:
        sig.bind(*range(n_positional), **dict.fromkeys(keywords))
        return None
    except TypeError as err:
        reason = str(err)
    params = list(sig.parameters.values())
    accepted = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY)]
    unknown = [k for k in keywords if k not in accepted]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
        # before a missing argument, as Python does: g(x, scal=2.0) misspells scale=
        reason = f"got an unexpected keyword argument '{unknown[0]}'"
    if reason.startswith("too many positional"):
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            return f"{name}() {reason}"
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                      p.POSITIONAL_OR_KEYWORD)]
        required = sum(p.default is p.empty for p in positional)
        count = (str(len(positional)) if required == len(positional)
                 else f"from {required} to {len(positional)}")
        plural = "s" if len(positional) != 1 else ""
        was = "was" if n_positional == 1 else "were"
        return (f"{name}() takes {count} positional argument{plural} but {n_positional} "
                f"{was} given")
    if reason.startswith("missing a required argument"):
        missing = reason.split(":", 1)[1].strip()
        return f"{name}() missing required argument {missing}"
    if reason.startswith("got an unexpected keyword argument"):
        keyword = reason.rsplit(" ", 1)[1].strip("'")
        return f"{name}() got an unexpected keyword argument '{keyword}'" + suggestion(
            keyword, accepted)
    if reason.startswith("multiple values"):
        return f"{name}() got {reason}"  # Python's wording for a call
    return f"{name}() {reason}"
