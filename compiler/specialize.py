"""Specialization: from concrete call arguments to the typed inputs a trace is made for.

Parameters (arguments we differentiate) keep static shapes, which makes faster
kernels; the leading axis of every other array (the batch) is symbolic, so a new
batch size reuses the same trace and kernels. Leading axes of equal size share
one symbol (`N`), because the model usually combines them. A symbolic dim that
the user's code needs as a concrete int is made static and the function is
traced again (`static_positions` remembers that for later calls).
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
                 raw: list | None = None) -> Signature:
    """Each leaf's type, its free leading axis symbolic. `dim_names` gives, by leaf, the name
    the user gave that axis (a DSL annotation such as `xs: f32[T, 4]`): its symbol keeps it,
    so the IR and the kernels say `T` where the user wrote `T`. `raw`, the leaves as passed,
    tells which are Python ints and floats."""
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
    weak = frozenset(i for i, leaf in enumerate(raw or ()) if type(leaf) in (int, float))
    return Signature(tuple(types), weak)


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
