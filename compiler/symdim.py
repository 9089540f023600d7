"""A symbolic dimension as the user's code sees it (`x.shape[0]` of a batch axis), and the
`Concretize` signal that makes the specializer trace again with the dimension static.

`compiler/tracer.py` hands out a `SymDim` for each symbolic axis of a traced array: it
serves as a shape entry, and in arithmetic with traced arrays as the traced size; what needs
the number itself (an index, a comparison, `//`) raises `Concretize`. `ConcretizeScalars` is
the same signal for Python number arguments whose value the code needs (`if training:`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ir import Sym


class Concretize(BaseException):
    """A symbolic dim was used where a concrete int is needed; the specializer retraces.

    A BaseException so that a user's `except Exception` cannot swallow it.
    """

    def __init__(self, sym: Sym) -> None:
        super().__init__(sym.name)
        self.sym = sym


class ConcretizeScalars(BaseException):
    """Python's `if`, `range()`, `int()`, a slice bound or a shape needed the value of Python
    number arguments (`training=True`, `n_layers=3`, `lam=0.0`): the specializer traces again
    with those arguments' values baked in (static), once per value, as for a shape.

    `leaves` are the argument leaves the value was computed from (compiler/builder.py
    `Builder.concretize`). A BaseException, as `Concretize`.
    """

    def __init__(self, leaves: frozenset[int]) -> None:
        super().__init__(sorted(leaves))
        self.leaves = leaves


class SymDim:
    """What `x.shape[i]` gives for a symbolic dim: usable as a shape, and as a traced scalar."""

    def __init__(self, sym: Sym, builder: Any) -> None:
        self.sym = sym
        self.builder = builder

    def __index__(self) -> int:
        raise Concretize(self.sym)

    # What needs the number itself (comparisons, //, %, float(), -n, abs(n)) makes the dim
    # static, and the function is traced again for that size.
    __int__ = __float__ = __index__

    def _concrete(self, *args):
        raise Concretize(self.sym)

    __lt__ = __le__ = __gt__ = __ge__ = _concrete
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __divmod__ = __rdivmod__ = _concrete
    __neg__ = __pos__ = __abs__ = _concrete

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """np.sqrt(x.shape[0]): the ufunc of the traced size (a NumPy scalar, as for an int)."""
        inputs = tuple(v.traced() if isinstance(v, SymDim) else v for v in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __eq__(self, other) -> bool:
        if isinstance(other, SymDim):
            return self.sym == other.sym
        raise Concretize(self.sym)

    def __hash__(self) -> int:
        return hash(self.sym)

    def __repr__(self) -> str:
        return f"SymDim({self.sym})"

    def traced(self, dtype=np.int64) -> Any:
        from compiler.tracer import Tracer  # it imports this module

        node, axis = self.builder.sym_sources[self.sym]
        return self.builder.emit("size", (Tracer(self.builder, node),),
                                 {"axes": (axis,), "dtype": np.dtype(dtype)})

    def _binary(name):
        # Let the traced operand do the work (x.__rmul__ for n * x), so that the size is
        # lifted like a Python int: weak, keeping float32 float32.
        mirrored = name.replace("__r", "__") if name.startswith("__r") else "__r" + name[2:]

        def method(self, other):
            from compiler.tracer import Tracer  # it imports this module

            if isinstance(other, Tracer):
                return getattr(other, mirrored)(self)
            raise Concretize(self.sym)

        return method

    for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                  "__truediv__", "__rtruediv__", "__pow__", "__rpow__"):
        locals()[_name] = _binary(_name)
    del _name, _binary
