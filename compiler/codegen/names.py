"""Unique, readable Python names for generated code: the user's names where there are any.

Every value gets one name for the whole function. A user's name (`h`, `pred`,
`W1_grad`) is kept when it is a valid identifier that is free; otherwise it is
cleaned up and suffixed (`h_2`). Unnamed values get `t1`, `t2`, ... in order of
appearance. Names never shadow a Python keyword or builtin, the modules the
generated code uses (`np`, `numba`), its helpers (`_tanh_f32`, ...), loop
indices (`i0`, `k0`) or symbolic dimensions (`N`).
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


class Namer:
    """Hands out names; `reserve` claims fixed names (the function's own, dims) first."""

    def __init__(self) -> None:
        self._taken: set[str] = set(RESERVED)
        self._temps = 0

    def reserve(self, name: str) -> None:
        self._taken.add(name)

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
