"""Specialization: from concrete call arguments to the typed inputs a trace is made for.

Parameters (arguments we differentiate) keep static shapes, which makes faster
kernels; the leading axis of every other array (the batch) is symbolic, so a new
batch size reuses the same trace and kernels. Leading axes of equal size share
one symbol (`N`), because the model usually combines them. A symbolic dim that
the user's code needs as a concrete int is made static and the function is
traced again (`static_positions` remembers that for later calls). Likewise a Python
number argument whose value the code needs (`if training:`, `range(n_layers)`) is made
static: its value is part of the signature, and the function sees the number itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from compiler.ir import Sym, TensorType

SYMBOL_NAMES = ("N", "M", "K", "L", "B", "T")

Position = tuple[int, int]  # (leaf index, axis)


@dataclass(frozen=True)
class Signature:
    """What a trace depends on: each leaf's dtype and shape pattern (symbols for free dims),
    and which leaves are Python ints and floats (weak scalars: `compiler/tracer.py`)."""

    types: tuple[TensorType, ...]
    weak: frozenset[int] = frozenset()
    # Numbers passed to the function as themselves, not traced: (leaf, class, `static_key`
    # of the value, the value).
    static: tuple[tuple[int, type, object, object], ...] = ()

    def static_values(self) -> dict[int, object]:
        """By leaf, the numbers the function is traced with as Python values."""
        return {i: value for i, _, _, value in self.static}

    def sym_sizes(self, leaves: list[np.ndarray]) -> dict[Sym, int]:
        sizes: dict[Sym, int] = {}
        for t, leaf in zip(self.types, leaves):
            for d, n in zip(t.shape, leaf.shape):
                if isinstance(d, Sym):
                    sizes.setdefault(d, n)
        return sizes


def symbolic_candidates(leaves: list[np.ndarray], differentiable: set[int],
                        static_positions: set[Position]) -> list[Position]:
    return [
        (i, 0) for i, leaf in enumerate(leaves)
        if i not in differentiable and leaf.ndim >= 1 and leaf.shape[0] >= 2
        and (i, 0) not in static_positions
    ]


def signature_of(leaves: list[np.ndarray], differentiable: set[int],
                 static_positions: set[Position],
                 dim_names: dict[int, str] | None = None,
                 raw: list | None = None,
                 static_scalars: Iterable[int] = ()) -> Signature:
    """Each leaf's type, its free leading axis symbolic. `dim_names` gives, by leaf, the name
    the user gave that axis (a DSL annotation such as `xs: f32[T, 4]`): its symbol keeps it,
    so the IR and the kernels say `T` where the user wrote `T`. `raw`, the leaves as passed,
    tells which are Python ints and floats; those of them at `static_scalars` that are not
    differentiated are static, their values in the signature."""
    free = set(symbolic_candidates(leaves, differentiable, static_positions))
    dim_names = dim_names or {}
    symbols: dict[int, Sym] = {}
    types = []
    for i, leaf in enumerate(leaves):
        shape = []
        for axis, n in enumerate(leaf.shape):
            if (i, axis) in free:
                if n not in symbols:
                    symbols[n] = Sym(_symbol_name(dim_names.get(i), symbols.values(),
                                                  set(dim_names.values())))
                shape.append(symbols[n])
            else:
                shape.append(n)
        types.append(TensorType(leaf.dtype, tuple(shape)))
    raw = raw or ()
    weak = frozenset(i for i, leaf in enumerate(raw) if type(leaf) in (int, float))
    # A bool is a flag: static from the start, so that `flag is True`, `isinstance(flag,
    # bool)` and `{True: a}[flag]`, which never ask a traced value for its value, see it.
    flags = {i for i, leaf in enumerate(raw) if isinstance(leaf, bool | np.bool_)}
    static = tuple((i, type(raw[i]), static_key(raw[i]), raw[i])
                   for i in sorted(set(static_scalars) | flags)
                   if i < len(raw) and is_number(raw[i]) and i not in differentiable)
    return Signature(tuple(types), weak, static)


def is_number(leaf: object) -> bool:
    """A Python or NumPy bool, int or float: what may be static."""
    return type(leaf) in (bool, int, float) or isinstance(leaf, np.bool_ | np.integer
                                                          | np.floating)


def static_key(value: object) -> object:
    """A static number as a key (its class is beside it): a float by its bits, so -0.0 and 0.0
    differ and a NaN equals itself."""
    if isinstance(value, float | np.floating):
        return float(value).hex()
    return int(value)


def scalar_candidates(raw: list, differentiable: set[int], signature: Signature) -> frozenset[int]:
    """The leaves that are numbers (not arrays), not differentiated and not static yet: those a
    trace may make static when the code needs their values."""
    static = {i for i, _, _, _ in signature.static}
    return frozenset(i for i, leaf in enumerate(raw) if is_number(leaf)
                     and i not in differentiable and i not in static)


def _symbol_name(wanted: str | None, made: Iterable[Sym], reserved: set[str]) -> str:
    """`wanted` unless a symbol has it already, else the first of N, M, K, ... that no symbol
    has and no user's name reserves."""
    taken = {sym.name for sym in made}
    if wanted is not None and wanted not in taken:
        return wanted
    taken |= reserved
    names = itertools.chain(SYMBOL_NAMES, (f"N{k}" for k in itertools.count()))
    return next(name for name in names if name not in taken)


def positions_of(signature: Signature, sym: Sym) -> set[Position]:
    return {
        (i, axis) for i, t in enumerate(signature.types)
        for axis, d in enumerate(t.shape) if d == sym
    }
