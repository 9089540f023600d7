"""Scalar expressions: typed literals, dtype coercions and the op table's elementwise templates.

numba types Python literals as float64/int64 and promotes mixed arithmetic, so
a bare `0.5` would turn float32 code into float64 code. Everything here keeps
each value in its node's dtype: literals are spelled in their dtype
(`np.float32(0.5)`), operands of another dtype are cast the way NumPy would
before the op, and results that numba would widen (bool + bool is an int in
Python) are cast back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from compiler.codegen import prelude, vecmath
from compiler.ir import Node
from compiler.ops.lowering import lowering_of

# Builtins that op templates call, and the prelude helpers with NumPy's semantics
# that replace them (max/min drop a NaN; np.maximum/np.minimum propagate it).
BUILTIN_HELPERS = {"max": "_maximum", "min": "_minimum"}


def dtype_name(dtype) -> str:
    """`np.float32`, `np.bool_`: the NumPy scalar type as generated code spells it."""
    dtype = np.dtype(dtype)
    return "np.bool_" if dtype == np.bool_ else f"np.{dtype.name}"


def literal(value, dtype) -> str:
    """A scalar constant spelled so that numba types it as `dtype`."""
    dtype = np.dtype(dtype)
    v = np.asarray(value).astype(dtype)[()]
    if dtype == np.bool_:
        return "True" if v else "False"
    if dtype.kind == "f":
        f = float(v)
        if f != f:
            text = "np.nan"
        elif f in (np.inf, -np.inf):
            text = "np.inf" if f > 0 else "-np.inf"
        elif dtype == np.float64:
            text = repr(f)
        else:
            text = str(v)  # NumPy's shortest repr that round-trips in this dtype
        return _paren(text) if dtype == np.float64 else f"{dtype_name(dtype)}({text})"
    if dtype.kind in "iu":
        text = str(int(v))
        return _paren(text) if dtype == np.int64 else f"{dtype_name(dtype)}({text})"
    raise NotImplementedError(f"no literal for dtype {dtype}")


def _paren(text: str) -> str:
    # `-2.0 ** x` is -(2.0 ** x): negative literals must be atoms.
    return f"({text})" if text.startswith("-") else text


@dataclass(frozen=True)
class Operand:
    """An operand's code (an atom: name, indexed read, call or literal) and its dtype."""

    text: str
    dtype: np.dtype
    value: object = None  # the constant, when the operand is a literal

    def as_dtype(self, dtype) -> str:
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self.text
        if self.value is not None:
            return literal(self.value, dtype)
        if dtype == np.bool_:
            return f"({self.text} != 0)"
        return f"{dtype_name(dtype)}({self.text})"


def elementwise(node: Node, operands: list[Operand], helpers: prelude.HelperSet) -> str:
    """The right-hand side computing elementwise `node` from its operands, by its op's
    template (compiler/ops/lowering.py `Elementwise`)."""
    lowering = lowering_of(node)
    texts = [op.text if dt is None else op.as_dtype(dt)
             for op, dt in zip(operands, lowering.dtypes(node))]
    expr = lowering.template(node).format(*texts, dtype=dtype_name(node.dtype))
    expr = _route_helpers(expr, node, helpers)
    if lowering.exact:
        return expr
    if node.dtype == np.bool_ or (node.dtype.kind in "iu" and node.dtype.itemsize < 8):
        return f"{dtype_name(node.dtype)}({expr})"  # numba widens these to int64
    return expr


_UFUNC_CALL = re.compile(r"(?<![\w.])np\.(" + "|".join(vecmath.FUNCTIONS) + r")\(")


def _route_helpers(expr: str, node: Node, helpers: prelude.HelperSet) -> str:
    """Builtins become NumPy-exact helpers, `_name(` calls pick their dtype's variant, and
    NumPy math that `vecmath` provides goes through it (so it can vectorize)."""
    expr = re.sub(r"(?<![\w.])(max|min)\(", lambda m: BUILTIN_HELPERS[m.group(1)] + "(", expr)
    expr = re.sub(r"(?<![\w.])(_[a-z]\w*)\(",
                  lambda m: helpers.use(m.group(1), node.dtype) + "(", expr)
    if re.search(r"(?<![\w.])math\.", expr):  # a template may call Python's math (math.erf)
        helpers.uses_math = True
    return _UFUNC_CALL.sub(lambda m: helpers.vector_math(m.group(1)) + "(", expr)
