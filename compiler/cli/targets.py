"""What a command works on: a DSL file or `path/to/file.py:function`, and inputs to call it with.

Input shapes come from the DSL annotations, or from `--shape name=20,10` options
(which may use dimension names too, and end with a dtype: `labels=N:int64`); a symbolic
dimension takes its size from `--dim N=32`, else `DEFAULT_DIM`. A dotted name gives a leaf of
a Python function's argument tree (`--shape params.W=10,5`: a dict; `layers.0.W=4,4`: a list
of dicts). Inputs are random: floats standard normal, integers 0 or 1 (valid class labels
and indices for any axis of size 2 or more), booleans fair coin flips.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler import dsl
from compiler.dsl.errors import suggestion
from compiler.ir import TensorType

DEFAULT_DIM = 16


class UsageError(Exception):
    """The command line asks for something impossible: exit status 2."""


class ProgramError(Exception):
    """The program cannot be loaded (a Python file that fails to import), or its output not
    written: exit status 1, the message without a traceback."""


@dataclass(frozen=True)
class InputSpec:
    """One array to make: its name (an argument's, or a dotted path to a leaf of an argument's
    tree: `params.W`), dtype, and dims (ints and dimension names)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str, ...]

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def argument(self) -> str:
        return self.name.partition(".")[0]


@dataclass(frozen=True)
class Target:
    function: Callable
    name: str
    inputs: list[InputSpec]

    def default_wrt(self) -> list[str]:
        """Float arguments with fully static shapes (the parameters; symbolic dims mark
        data), or every float argument when none is static: an argument tree is one when
        each of its leaves is."""
        leaves: dict[str, list[InputSpec]] = {}
        for spec in self.inputs:
            leaves.setdefault(spec.argument, []).append(spec)
        floats = [name for name, specs in leaves.items() if all(s.is_float for s in specs)]
        static = [name for name in floats
                  if all(isinstance(d, int) for s in leaves[name] for d in s.dims)]
        return static or floats

    def arguments(self) -> list[str]:
        return list(dict.fromkeys(spec.argument for spec in self.inputs))


DTYPES = ("float64", "float32", "int64", "int32", "bool")


def parse_shape(text: str) -> tuple[str, tuple[int | str, ...], np.dtype | None]:
    """`name=20,N` -> ("name", (20, "N"), None); `name=` or `name=()` is a scalar;
    `labels=N:int64` also gives the argument's dtype."""
    name, sep, dims_text = text.partition("=")
    path = name.split(".")
    if not sep or not path[0].isidentifier() \
            or not all(p.isidentifier() or p.isdigit() for p in path[1:]):
        raise UsageError(f"--shape {text!r}: expected NAME=D1,D2,... (such as X=N,10, or "
                         "params.W=10,5 for a leaf of an argument that is a dict)")
    dims_text, colon, dtype_text = dims_text.partition(":")
    dtype = None
    if colon:
        if dtype_text.strip() not in DTYPES:
            raise UsageError(f"--shape {text!r}: the dtype after ':' is one of "
                             f"{', '.join(DTYPES)}")
        dtype = np.dtype(dtype_text.strip())
    dims_text = dims_text.strip().strip("()")
    dims: list[int | str] = []
    for item in filter(None, (d.strip() for d in dims_text.split(","))):
        if item.isdigit():
            dims.append(int(item))
        elif item.isidentifier():
            dims.append(item)
        else:
            raise UsageError(f"--shape {text!r}: {item!r} is neither a size nor a dimension name")
    return name, tuple(dims), dtype


def parse_dim(text: str) -> tuple[str, int]:
    name, sep, size = text.partition("=")
    if not sep or not name.isidentifier() or not size.isdigit() or int(size) < 1:
        raise UsageError(f"--dim {text!r}: expected NAME=SIZE with a positive size (such as N=32)")
    return name, int(size)


def load_target(spec: str, function: str | None, shapes: dict[str, tuple], dtype: np.dtype,
                float_dtype: np.dtype | None = None,
                dtypes: dict[str, np.dtype] | None = None) -> Target:
    """The function named by `spec` and the inputs it takes. `dtypes` gives arguments their
    own dtype (`--shape labels=N:int64`); `float_dtype` overrides the dtype of every float
    input (the gradient check runs in float64)."""
    dtypes = dtypes or {}
    path, _, attribute = spec.rpartition(":") if _is_python_spec(spec) else (spec, "", "")
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    if attribute:
        if function is not None:
            raise UsageError("--function is for DSL files; name a Python function as "
                             "path/to/file.py:function")
        fn = _python_function(path, attribute)
        params = {name: (None, None) for name in _parameter_names(fn, shapes)}
    elif path.endswith(".py"):
        raise UsageError(f"{path} is a Python file: name the function, as in {path}:loss")
    else:
        fn = dsl.load(path, function, float_dtype=float_dtype)
        params = fn.dsl_params
    unknown = {key.partition(".")[0] for key in shapes} - set(params)
    if unknown:
        name = sorted(unknown)[0]
        raise UsageError(f"--shape {name}=...: {fn.__name__} has no argument '{name}'"
                         f"{suggestion(name, params)}")
    if not attribute and any("." in key for key in shapes):
        key = next(key for key in shapes if "." in key)
        raise UsageError(f"--shape {key}=...: a DSL function's arguments are arrays, not trees")
    inputs = []
    for name, (annotated_dtype, dims) in params.items():
        leaves = [key for key in shapes if key.startswith(name + ".")]  # in the user's order
        if leaves and name in shapes:
            raise UsageError(f"--shape {name}=... and --shape {leaves[0]}=...: '{name}' is "
                             "either an array or a tree of them")
        for key in leaves or [name]:
            dims = shapes.get(key, dims)
            if dims is None:
                raise UsageError(f"no shape for argument '{name}' of {fn.__name__}: give "
                                 f"--shape {name}=D1,D2,... (dims may be names such as N), or "
                                 f"one per leaf of a dict: --shape {name}.W=10,5 ...")
            chosen = dtypes.get(key, annotated_dtype if annotated_dtype is not None else dtype)
            if float_dtype is not None and chosen.kind == "f":
                chosen = float_dtype
            inputs.append(InputSpec(key, np.dtype(chosen), tuple(dims)))
    return Target(fn, fn.__name__, inputs)



def _is_python_spec(spec: str) -> bool:
    path, sep, attribute = spec.rpartition(":")
    return bool(sep) and path.endswith(".py") and attribute.isidentifier()


def _python_function(path: str, attribute: str) -> Callable:
    module_name = f"gradfuse_cli_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).resolve().parent))  # so the file's own imports work
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ProgramError(f"cannot import {path}: {err.msg} at line {err.lineno}") from None
    except Exception as err:  # the module's own code failed: say so, not a traceback of ours
        line = failing_line(err, path)
        raise ProgramError(f"cannot import {path}{line}: {type(err).__name__}: {err}") \
            from None
    fn = getattr(module, attribute, None)
    if fn is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise UsageError(f"{path} has no function '{attribute}'{suggestion(attribute, names)}")
    fn = getattr(fn, "fn", fn)  # a @compile_grad function: compile what it wraps
    if not callable(fn):
        raise UsageError(f"{path}:{attribute} is not a function")
    return fn


def failing_line(err: BaseException, path: str) -> str:
    """' (line N)' of the deepest frame of `path` in the error's traceback, or '' (also for a
    path that is no file)."""
    line = ""
    tb = err.__traceback__
    resolved = str(Path(path).resolve())
    while tb is not None:
        if str(Path(tb.tb_frame.f_code.co_filename).resolve()) == resolved:
            line = f" (line {tb.tb_lineno})"
        tb = tb.tb_next
    return line


def _parameter_names(fn: Callable, shapes: dict[str, tuple]) -> list[str]:
    """The parameters to pass: each one without a default, and those with a --shape."""
    names = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UsageError(f"{fn.__name__} takes *{param.name}: the command line can only "
                             "pass named array arguments")
        if param.default is param.empty or param.name in shapes:
            names.append(param.name)
    return names


def check_dims(target: Target, sizes: dict[str, int]) -> None:
    """Refuse a `--dim` that no argument's shape names (it would be ignored silently)."""
    known = {d for spec in target.inputs for d in spec.dims if isinstance(d, str)}
    for name in sizes:
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise UsageError(f"--dim {name}=...: no argument of {target.name} has a dimension "
                             f"named {name} (its dimensions: {names}){suggestion(name, known)}")


def make_inputs(target: Target, sizes: dict[str, int], seed: int) -> dict[str, Any]:
    """The arguments by name: arrays, and trees of them for dotted names."""
    rng = np.random.default_rng(seed)
    leaves = {}
    for spec in target.inputs:
        shape = tuple(d if isinstance(d, int) else sizes.get(d, DEFAULT_DIM) for d in spec.dims)
        if spec.is_float:
            leaves[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            leaves[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
        else:
            leaves[spec.name] = rng.random(shape) < 0.5
    return nested(leaves)


def nested(leaves: dict[str, Any]) -> dict[str, Any]:
    """{"params.W": a, "params.b": b, "X": x} -> {"params": {"W": a, "b": b}, "X": x}; a dict
    whose keys are 0, 1, ... n - 1 is a list."""
    tree: dict[str, Any] = {}
    for key, value in leaves.items():
        *inner, last = key.split(".")
        node = tree
        for part in inner:
            node = node.setdefault(part, {})
        node[last] = value

    def listed(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = {k: listed(v) for k, v in node.items()}
        if node and sorted(node) == sorted(map(str, range(len(node)))):
            return [node[str(i)] for i in range(len(node))]
        return node

    return {name: listed(value) for name, value in tree.items()}


def leaf(inputs: dict[str, Any], name: str) -> Any:
    """The leaf at a dotted name (`params.W`, `layers.0.W`) of the arguments."""
    node: Any = inputs
    for part in name.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def with_leaf(inputs: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    """The arguments with the leaf at `name` replaced (containers copied along its path)."""
    def replaced(node: Any, path: list[str]) -> Any:
        if not path:
            return value
        key: Any = int(path[0]) if isinstance(node, list) else path[0]
        copy = list(node) if isinstance(node, list) else dict(node)
        copy[key] = replaced(node[key], path[1:])
        return copy

    return replaced(inputs, name.split("."))


def choose_wrt(target: Target, requested: str | None) -> list[str]:
    if requested is None:
        return target.default_wrt()
    names = [n.strip() for n in requested.split(",") if n.strip()]
    arguments = target.arguments()
    floats = set(arguments) - {s.argument for s in target.inputs if not s.is_float}
    for name in names:
        if name not in floats:
            if name.partition(".")[0] in floats:
                raise UsageError(f"--wrt {name}: name the argument, {name.partition('.')[0]} "
                                 "(gradients come for every leaf of its tree)")
            what = "is not a float argument" if name in arguments else "is not an argument"
            raise UsageError(f"--wrt {name}: '{name}' {what} of {target.name}"
                             f"{suggestion(name, floats) if name not in arguments else ''}")
    return names


def describe_inputs(target: Target, inputs: dict[str, Any]) -> str:
    def typed(spec: InputSpec) -> str:
        a = leaf(inputs, spec.name)
        return f"{spec.name}: {TensorType(a.dtype, a.shape)}"

    return ", ".join(map(typed, target.inputs))
