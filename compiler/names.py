"""Unique, readable names for values: the user's names where there are any, one per value.

`name_values` names every value of a graph once, before its kernels are generated, so the
IR printer, the forward kernel and the backward kernel all call a value the same thing (a
residual is `t5` where forward_save computes it and where backward reads it). A user's name
(`h`, `pred`, `W1_grad`) is kept when it is a valid identifier that is free; otherwise it
is cleaned up and suffixed (`h_2`). Unnamed values get `t1`, `t2`, ... in topological
order. Names never shadow a Python keyword or builtin, the modules generated code uses
(`np`, `numba`), its helpers (`_tanh_f32`, ...), loop indices (`i0`, `k0`) or symbolic
dimensions (`N`).
"""

from __future__ import annotations

import builtins
import keyword
import re

MODULE_NAMES = frozenset({"np", "numba", "math", "vm"})
RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins)) \
    | MODULE_NAMES
_INDEX_NAME = re.compile(r"[ik]\d+")
_TEMP_NAME = re.compile(r"t\d+")


def identifier(text: str) -> str:
    """`text` made into a Python identifier: other characters become `_`, no leading digit."""
    cleaned = re.sub(r"\W", "_", text, flags=re.ASCII).strip("_") or "v"
    return f"v{cleaned}" if cleaned[0].isdigit() else cleaned


def function_name(graph_name: str) -> str:
    """The kernel's name: the graph's, unless that would hide something the module uses
    (`np`, a builtin such as `abs` that templates call, a keyword)."""
    name = identifier(graph_name)
    return f"{name}_kernel" if name in RESERVED else name


def loop_index(axis: int) -> str:
    return f"i{axis}"


def contraction_index(depth: int = 0) -> str:
    return f"k{depth}"


def is_generated(name: str) -> bool:
    """Whether `name` is one `name_values` made up (`t7`, `t7_2`), not a user's."""
    return re.fullmatch(r"t\d+(_\d+)?", name) is not None


class Namer:
    """Hands out names; `reserve` claims fixed names (the function's own, dims) first."""

    def __init__(self) -> None:
        self._taken: set[str] = set(RESERVED)
        self._temps = 0

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def claim(self, name: str) -> bool:
        """Take `name` exactly, as a value named beforehand (`name_values`); False if taken."""
        if not name.isidentifier() or not self.is_free(name) or _INDEX_NAME.fullmatch(name):
            return False
        self._taken.add(name)
        return True

    def is_free(self, name: str) -> bool:
        return name not in self._taken and not name.startswith("_")

    def fresh(self, hint: str | None) -> str:
        """A new name from `hint` (a user's name), or the next `tN` when there is none."""
        if hint is None:
            while True:
                self._temps += 1
                name = f"t{self._temps}"
                if name not in self._taken:
                    break
        else:
            base = identifier(hint)
            # Loop indices and temporaries follow fixed patterns; a user's `i0`
            # or `t3` would collide with them later, so it gets a suffix now.
            if _INDEX_NAME.fullmatch(base) or _TEMP_NAME.fullmatch(base):
                base = f"{base}_"
            name, k = base, 1
            while not self.is_free(name):
                k += 1
                name = f"{base}_{k}"
        self._taken.add(name)
        return name


def name_values(graph) -> None:
    """Give every value of `graph` (and of the loop bodies it holds, each a namespace of its
    own) its one name, in topological order; values named already keep their name when it is
    a free identifier."""
    from compiler.ir import Sym, bodies

    namer = Namer()
    for node in graph.inputs:
        for d in node.shape:
            if isinstance(d, Sym):
                namer.reserve(d.name)
    nodes = graph.nodes()
    for node in nodes:
        for d in getattr(node.type, "shape", ()):
            if isinstance(d, Sym):
                namer.reserve(d.name)
    # Names given before (the user's, and those of the traced function's values, which every
    # kernel of the function shares) are claimed first, so that a new value never takes one.
    unnamed = [n for n in nodes if not _is_literal(n)  # a literal is written as its value
               and (n.name is None or not namer.claim(n.name))]
    for node in unnamed:
        node.name = namer.fresh(node.name)
    for node in nodes:
        for body in bodies(node):
            name_values(body)


def _is_literal(node) -> bool:
    return node.op == "const" and node.shape == ()
