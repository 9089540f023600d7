"""np.random inside a traced function: a warning naming the line, because the numbers are drawn
once, while tracing, and the compiled kernel uses the same numbers on every call.

NumPy's random functions do not dispatch to traced arrays (they take no array), so the
trace cannot see a draw happen. After the trace, the code of the user's functions that
built the graph is read instead: an attribute taken from the `numpy.random` module
(`np.random.normal`, `npr.rand` after `import numpy.random as npr`) or a method of a
`Generator` / `RandomState` (`rng.normal`, `self.rng.standard_normal`), resolved through
the names those frames ended with.
"""

from __future__ import annotations

import dis
import inspect
import types
import warnings

import numpy as np

LOADS = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FAST", "LOAD_DEREF", "LOAD_CLASSDEREF",
         "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR", "LOAD_FAST_LOAD_FAST"}
ATTRIBUTES = {"LOAD_ATTR", "LOAD_METHOD"}
GENERATORS = (np.random.Generator, np.random.RandomState)


def warn_random_draws(frames, function_name: str) -> None:
    """Warn once per line of the user's code (in `frames`) that draws from np.random."""
    seen = set()
    for frame in frames:
        code = frame.f_code
        for line, call in _draws(frame):
            if (code.co_filename, line) in seen:
                continue
            seen.add((code.co_filename, line))
            warnings.warn_explicit(
                f"{call} is called while tracing {function_name}: its numbers are drawn once, "
                "when the function is traced, and the compiled kernel uses those same numbers "
                "on every call; draw them outside and pass them in as an argument",
                UserWarning, code.co_filename, line,
                registry=frame.f_globals.setdefault("__warningregistry__", {}))


def _draws(frame) -> list[tuple[int, str]]:
    """(line, what is called) for each draw from np.random in the frame's code."""
    draws, chain, names, line = [], [], [], None
    for instruction in dis.get_instructions(frame.f_code):
        line = instruction.positions.lineno or line
        if instruction.opname in LOADS and isinstance(instruction.argval, str):
            value = _lookup(frame, instruction.argval)
            chain, names = [value], [instruction.argval]
            if _random_callable(value):  # `default_rng()` after `from numpy.random import ...`
                draws.append((line, instruction.argval))
                chain = []
        elif instruction.opname in ATTRIBUTES and chain and isinstance(instruction.argval, str):
            owner = chain[-1]
            names.append(instruction.argval)
            if _drawn_from(owner, instruction.argval):
                draws.append((line, _spelled(names, owner)))
                chain = []
            else:
                chain.append(_attribute(owner, instruction.argval))
        else:
            chain = []
    return draws


def _random_callable(value) -> bool:
    """A function of numpy.random, or a bound method of a generator."""
    if not callable(value) or isinstance(value, type):
        return False
    if isinstance(getattr(value, "__self__", None), GENERATORS):
        return True
    module = getattr(value, "__module__", None) or ""
    return module == "numpy.random" or module.startswith("numpy.random.")


def _drawn_from(owner, name: str) -> bool:
    if isinstance(owner, types.ModuleType) and owner is np.random:
        return not name.startswith("_") and name not in ("Generator", "RandomState")
    return isinstance(owner, GENERATORS) and not name.startswith("_") and \
        name not in ("bit_generator", "spawn")


def _spelled(names: list[str], owner) -> str:
    if owner is np.random:
        return "np.random." + names[-1]
    return ".".join(names)


_MISSING = object()


def _lookup(frame, name: str):
    for scope in (frame.f_locals, frame.f_globals, frame.f_builtins):
        if name in scope:
            return scope[name]
    return _MISSING


def _attribute(owner, name: str):
    """owner.name without running a property's code (modules and plain attributes only)."""
    if owner is _MISSING:
        return _MISSING
    try:
        if isinstance(owner, types.ModuleType):
            return getattr(owner, name, _MISSING)
        return inspect.getattr_static(owner, name, _MISSING)
    except Exception:  # noqa: BLE001 -- an odd object: not a draw
        return _MISSING
