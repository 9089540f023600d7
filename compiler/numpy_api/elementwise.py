"""Elementwise NumPy: ufuncs and operators, `where`, `clip`, casts."""

from __future__ import annotations

import math

import numpy as np

from compiler.errors import UnsupportedError
from compiler.numpy_api.dispatch import UFUNCS, implements, no_out
from compiler.ops import bind
from compiler.tracer import Tracer, user_loc


def unary(op, x):
    return bind(op, x)


def binary(op, x, y):
    return bind(op, x, y)


def logical(op, x, y):
    for v in (x, y):
        if isinstance(v, Tracer) and v.dtype != np.bool_:
            raise UnsupportedError("&, | and ^ are supported on boolean arrays only (bitwise "
                                   "integer operations have no gradient)", user_loc())
    return bind(op, x, y)


def logical_not(x):
    if x.dtype != np.bool_:
        raise UnsupportedError("~ is supported on boolean arrays only", user_loc())
    return bind("logical_not", x)


def power(x, y):
    return bind("pow", x, y)


def astype(x, dtype):
    return bind("cast", x, dtype=np.dtype(dtype))


@implements(np.where)
def where(cond, x=None, y=None):
    if x is None or y is None:
        raise UnsupportedError("np.where(condition) with one argument returns indices whose "
                               "number depends on the data; use np.where(condition, a, b)",
                               user_loc())
    return bind("where", cond, x, y)


@implements(np.clip)
def clip(x, a_min=None, a_max=None, out=None, **kwargs):
    # where() rather than maximum/minimum: PyTorch's clamp passes the gradient at
    # the bounds themselves (lo <= x <= hi), while a maximum tie would halve it.
    no_out("clip", out, **kwargs)
    if a_min is not None:
        x = np.where(x < a_min, a_min, x)
    if a_max is not None:
        x = np.where(x > a_max, a_max, x)
    return x


def _logaddexp(x, y):
    m = np.maximum(x, y)
    return m + np.log1p(np.exp(-np.abs(x - y)))


UFUNCS.update({
    np.add: lambda x, y: binary("add", x, y),
    np.subtract: lambda x, y: binary("sub", x, y),
    np.multiply: lambda x, y: binary("mul", x, y),
    np.true_divide: lambda x, y: binary("div", x, y),
    np.power: power,
    np.maximum: lambda x, y: binary("maximum", x, y),
    np.minimum: lambda x, y: binary("minimum", x, y),
    np.less: lambda x, y: binary("lt", x, y),
    np.less_equal: lambda x, y: binary("le", x, y),
    np.greater: lambda x, y: binary("gt", x, y),
    np.greater_equal: lambda x, y: binary("ge", x, y),
    np.equal: lambda x, y: binary("eq", x, y),
    np.not_equal: lambda x, y: binary("ne", x, y),
    np.logical_and: lambda x, y: bind("logical_and", x, y),
    np.logical_or: lambda x, y: bind("logical_or", x, y),
    np.logical_xor: lambda x, y: bind("logical_xor", x, y),
    np.logical_not: lambda x: bind("logical_not", x),
    np.bitwise_and: lambda x, y: logical("logical_and", x, y),
    np.bitwise_or: lambda x, y: logical("logical_or", x, y),
    np.bitwise_xor: lambda x, y: logical("logical_xor", x, y),
    np.invert: logical_not,
    np.matmul: lambda x, y: bind("matmul", x, y),
    np.negative: lambda x: unary("neg", x),
    np.positive: lambda x: x,
    np.absolute: lambda x: unary("abs", x),
    np.square: lambda x: x * x,
    np.reciprocal: lambda x: 1 / x,
    np.logaddexp: _logaddexp,
    np.exp2: lambda x: np.exp(x * math.log(2.0)),  # Python floats stay weak: f32 stays f32
    np.log2: lambda x: np.log(x) * (1 / math.log(2.0)),
    np.log10: lambda x: np.log(x) * (1 / math.log(10.0)),
})
for _name in ("sign", "exp", "expm1", "log", "log1p", "sqrt", "sin", "cos", "tan", "tanh",
              "arctan", "sinh", "cosh"):
    UFUNCS[getattr(np, _name)] = (lambda op: lambda x: unary(op, x))(_name)
