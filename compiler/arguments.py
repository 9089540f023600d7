"""One call's arguments: bound to the signature, named, flattened to array leaves, and rebuilt.

Each passed argument is a *slot*: a named parameter, or one element of `*args`
(named `args_0`, `args_1`, ...). `wrt=` indices count slots, so
`wrt=1` means the second argument whether or not the function uses `*args`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from compiler import pytree
from compiler.errors import ArgumentError


class CallArguments:
    def __init__(self, fn_name: str, signature: inspect.Signature, args: tuple, kwargs: dict):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise ArgumentError(f"{fn_name}{signature}: {err}") from None
        self.fn_name = fn_name
        self.signature = signature
        self.names: list[str] = []
        values: list[Any] = []
        self._var_positional: str | None = None
        for name, value in bound.arguments.items():  # defaults stay the function's own business
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                self._var_positional = name
                self.names += [f"{name}_{i}" for i in range(len(value))]
                values += list(value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                self.names += list(value)
                values += list(value.values())
            else:
                self.names.append(name)
                values.append(value)
        leaves, self.treedef = pytree.flatten(tuple(values))
        self.raw = leaves  # as passed: runtime Tensors stay Tensors here
        self.starts: list[int] = []
        k = 0
        for child in self.treedef.children:
            self.starts.append(k)
            k += child.num_leaves
        owners = [name + "".join(f"[{key!r}]" for key in path)  # params['enc']['W']
                  for name, child in zip(self.names, self.treedef.children)
                  for path in pytree.key_paths(child)]
        self.leaves = [as_array(leaf, owner) for leaf, owner in zip(leaves, owners)]

    def slot(self, item: int | str) -> int:
        """The slot that `wrt=item` names."""
        if isinstance(item, str):
            if item not in self.names:
                raise ArgumentError(f"wrt={item!r}: {self.fn_name} was called without an "
                                    f"argument named {item!r} (it got {', '.join(self.names)})")
            return self.names.index(item)
        if not 0 <= item < len(self.names):
            raise ArgumentError(f"wrt={item} refers to argument {item}, but {self.fn_name} was "
                                f"called with {len(self.names)} argument(s)")
        return item

    def leaf_range(self, slot: int) -> range:
        return range(self.starts[slot], self.starts[slot] + self.treedef.children[slot].num_leaves)

    def leaf_names(self) -> list[str]:
        names: list[str] = []
        for name, child in zip(self.names, self.treedef.children):
            names += pytree.paths(child, name)
        return names

    def rebuild(self, leaves: list[Any]) -> tuple[tuple, dict]:
        """(args, kwargs) for calling the function with `leaves` in place of the arrays."""
        values = dict(zip(self.names, pytree.unflatten(self.treedef, leaves)))
        args, kwargs = [], {}
        positional = True  # until a positional parameter is skipped (left to its default)
        for name, param in self.signature.parameters.items():
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args += [values.pop(n) for n in list(values) if n.startswith(f"{name}_")
                         and n[len(name) + 1:].isdigit()]
            elif name not in values:
                positional = positional and param.kind is inspect.Parameter.VAR_KEYWORD
            elif positional and param.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                               inspect.Parameter.POSITIONAL_OR_KEYWORD):
                args.append(values.pop(name))
            else:
                kwargs[name] = values.pop(name)
        kwargs.update(values)  # **kwargs entries
        return tuple(args), kwargs


# ndarray subclasses whose operations mean something else: computing on their data as a plain
# array would give another result than NumPy's, silently.
_OWN_SEMANTICS = {np.ma.MaskedArray: "masked entries are left out",
                  np.matrix: "* is a matrix product, and results stay 2-D"}
_OWN_SEMANTICS_TYPES = tuple(_OWN_SEMANTICS)


def _semantics_of(array: np.ndarray) -> str:
    return next(what for cls, what in _OWN_SEMANTICS.items() if isinstance(array, cls))


def as_array(leaf: Any, owner: str) -> np.ndarray:
    """A leaf as a writable, aligned, C-contiguous array in native byte order of a dtype
    kernels compute with: kernels are compiled for that one kind of array per dtype and rank, and
    the others are copied, as NumPy's ufuncs would convert them.

    Read-only arrays (`np.load(mmap_mode="r")`, `np.frombuffer`) are copied too rather than
    given read-only kernel signatures: numba's dispatcher gives a read-only big-endian
    array the type of a read-only native one once it has seen one (numba 0.68), so such a
    signature would read big-endian bytes as native ones on the fast paths, silently.
    """
    if isinstance(leaf, np.ndarray):
        array = leaf
    elif isinstance(leaf, (bool, int, float, complex, np.generic)):  # complex: refused below
        if type(leaf) is int and not _INT64.min <= leaf <= _INT64.max:
            # np.asarray makes it uint64 (a strong dtype: x32 * 2**63 became float64) or an
            # object array; a Python int is weak, computed as int64 (README "Numerics")
            raise ArgumentError(f"argument '{owner}' is the Python int {leaf}, out of int64's "
                                "range, which compiled functions compute Python ints in; pass "
                                f"it as a float ({float(leaf)!r})")
        array = np.asarray(leaf)
    elif type(leaf).__name__ == "Tracer":  # a compiled function called while tracing another
        return leaf
    elif isinstance(getattr(leaf, "data", None), np.ndarray):  # runtime tensors
        array = leaf.data
    else:
        dataclass = " (a dataclass: pass dataclasses.asdict(x), or make it a NamedTuple)" \
            if dataclasses.is_dataclass(leaf) else ""
        raise ArgumentError(f"argument '{owner}' holds a {type(leaf).__name__}; compiled "
                            "functions take arrays, scalars, and dicts/lists/tuples/namedtuples "
                            f"of them{dataclass} (bind other values with a closure or "
                            "functools.partial)")
    if type(array) is not np.ndarray and isinstance(array, _OWN_SEMANTICS_TYPES):
        raise ArgumentError(
            f"argument '{owner}' is a {type(array).__module__}.{type(array).__name__}, whose "
            f"operations differ from an ndarray's ({_semantics_of(array)}); compiled "
            "functions compute as on plain arrays: pass np.asarray(x) (for a masked array, "
            "x.filled(value), or the data and the mask as two arguments, used with np.where)")
    _check_dtype(array.dtype, owner)
    if not array.dtype.isnative:
        return np.ascontiguousarray(array, array.dtype.newbyteorder("="))
    if not (array.flags.writeable and array.flags.aligned):
        # a copy: numba types a misaligned array (a field of a packed record, a buffer read at
        # an odd offset) apart from an aligned one, and kernels take aligned arrays only
        return np.array(array, order="C")
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


_INT64 = np.iinfo(np.int64)

# dtypes that kernels do not compute with, and what to pass instead
_REFUSED_FLOATS = {2: "float16 has no arithmetic in compiled kernels; convert it with "
                      ".astype(np.float32)",
                   np.dtype(np.longdouble).itemsize: f"{np.dtype(np.longdouble)} (long double) "
                   "has no arithmetic in compiled kernels; convert it with .astype(np.float64)"}


def _check_dtype(dtype: np.dtype, owner: str) -> None:
    """Refuse dtypes whose values gradfuse would get wrong, before anything is traced."""
    if dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize in (4, 8)):
        return
    if dtype.kind == "f":
        reason = _REFUSED_FLOATS.get(dtype.itemsize, f"{dtype} is not supported")
    elif dtype.kind == "c":
        reason = (f"{dtype} values are not supported (gradfuse computes with real numbers; "
                  "pass the real and imaginary parts as two float arrays)")
    else:
        reason = (f"{dtype} arrays have no arithmetic in compiled kernels; pass numbers as "
                  "bool, int or float32/float64 arrays")
    raise ArgumentError(f"argument '{owner}' holds {dtype} values: {reason}")
