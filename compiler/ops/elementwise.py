"""Elementwise primitives: math functions, arithmetic, comparisons, `where` and casts.

Binary and ternary ops broadcast like NumPy; the reverse-mode pass sums each
cotangent back to its input's shape, so the VJPs here ignore broadcasting.
Result dtypes come from NumPy itself (the reference impl applied to 0-d
samples), so they follow NumPy's promotion rules exactly.

Kinks and singular points (the table in the README, tested in tests/test_kinks.py):
`abs'(0) = 0` (sign), `maximum`/`minimum` split a tie's gradient evenly, and ops
whose derivative is infinite somewhere (sqrt, log, div, pow) map a zero
cotangent to an exact zero where the derivative is not finite, so `where(x > 0, sqrt(x), 0)`
has gradient 0 at 0.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import TensorType
from compiler.ops.lowering import Elementwise
from compiler.ops.registry import OpDef, ShapeError, register
from compiler.ops.shapes import broadcast_shapes


def _infer(impl):
    """Broadcast the shapes; let NumPy itself decide the dtype, or refuse (e.g. -bool)."""

    def infer(*types: TensorType, **attrs) -> TensorType:
        samples = [np.ones((), t.dtype) for t in types]
        try:
            with np.errstate(all="ignore"):
                dtype = np.asarray(impl(*samples, **attrs)).dtype
        except TypeError as err:
            raise ShapeError(str(err)) from None
        return TensorType(dtype, broadcast_shapes(*(t.shape for t in types)))

    return infer


def elementwise(name: str, impl, vjp, code: str, doc: str = "") -> OpDef:
    return register(OpDef(name, "elementwise", _infer(impl), impl, vjp, code, doc))


def safe(g, expr):
    """`expr`, but exactly 0 where the cotangent is 0 and `expr` is not finite (0 * inf is 0,
    not NaN). Where `expr` is finite it is left alone, so its derivative with respect to `g`
    is kept: a second derivative through a zero cotangent (d/dy of the gradient of
    y * log(x) at y = 0) is 1/x there, not 0."""
    return np.where((g == 0) & (expr - expr != 0), 0, expr)


# --- unary math: d/dx written as the VJP g * f'(x) -------------------------------
elementwise("neg", np.negative, lambda g, out, x: (-g,), "-{0}")
elementwise("abs", np.abs, lambda g, out, x: (g * np.sign(x),), "abs({0})")


def _sign_code(node) -> str:
    # numba's np.sign gives -1 for an unsigned int with its top bit set (uint8 200 -> 255)
    return "{dtype}({0} != 0)" if node.inputs[0].dtype.kind == "u" else "np.sign({0})"


register(OpDef("sign", "elementwise", _infer(np.sign), np.sign, None, "np.sign({0})",
               "no gradient: sign' = 0 almost everywhere", lowering=Elementwise(_sign_code)))
elementwise("exp", np.exp, lambda g, out, x: (g * out,), "np.exp({0})")
elementwise("expm1", np.expm1, lambda g, out, x: (g * (out + 1),), "np.expm1({0})")
elementwise("log", np.log, lambda g, out, x: (safe(g, g / x),), "np.log({0})")
elementwise("log1p", np.log1p, lambda g, out, x: (safe(g, g / (x + 1)),), "np.log1p({0})")
elementwise("sqrt", np.sqrt, lambda g, out, x: (safe(g, g / (out * 2)),), "np.sqrt({0})")
elementwise("cbrt", np.cbrt, lambda g, out, x: (safe(g, g / (out * out * 3)),), "np.cbrt({0})")
elementwise("sin", np.sin, lambda g, out, x: (g * np.cos(x),), "np.sin({0})")
elementwise("cos", np.cos, lambda g, out, x: (-g * np.sin(x),), "np.cos({0})")
elementwise("tan", np.tan, lambda g, out, x: (g * (out * out + 1),), "np.tan({0})")
elementwise("tanh", np.tanh, lambda g, out, x: (g * (1 - out * out),), "_tanh({0})")
elementwise("arctan", np.arctan, lambda g, out, x: (g / (x * x + 1),), "np.arctan({0})")
elementwise("sinh", np.sinh, lambda g, out, x: (g * np.cosh(x),), "np.sinh({0})")
elementwise("cosh", np.cosh, lambda g, out, x: (g * np.sinh(x),), "np.cosh({0})")
# Inverse hyperbolic functions; arccosh' is infinite at 1 and arctanh' at +-1 (a zero
# cotangent stays 0 there), written with (x - 1)(x + 1) rather than x^2 - 1, exact near 1.
elementwise("arcsinh", np.arcsinh, lambda g, out, x: (g / np.sqrt(x * x + 1),),
            "np.arcsinh({0})")
elementwise("arccosh", np.arccosh, lambda g, out, x: (safe(g, g / np.sqrt((x - 1) * (x + 1))),),
            "np.arccosh({0})")
elementwise("arctanh", np.arctanh, lambda g, out, x: (safe(g, g / ((1 - x) * (1 + x))),),
            "np.arctanh({0})")
# arcsin' and arccos' are infinite at +-1: a zero cotangent stays 0 there.
elementwise("arcsin", np.arcsin, lambda g, out, x: (safe(g, g / np.sqrt(1 - x * x)),),
            "np.arcsin({0})")
elementwise("arccos", np.arccos, lambda g, out, x: (safe(g, -g / np.sqrt(1 - x * x)),),
            "np.arccos({0})")


def _erf(x):
    """NumPy has no erf: math.erf per element, in the dtype a ufunc would give."""
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(dtype)[()]


elementwise("erf", _erf, lambda g, out, x: (g * (2 / math.sqrt(math.pi)) * np.exp(-x * x),),
            "math.erf({0})", "the error function (np has none; math.erf and scipy.special.erf)")


# Rounding: piecewise constant, so the gradient is 0 (at the jumps too, as PyTorch and JAX).
for _name in ("floor", "ceil", "trunc", "rint"):
    elementwise(_name, getattr(np, _name), None, f"np.{_name}({{0}})",
                "no gradient: piecewise constant")

# --- arithmetic ---------------------------------------------------------------
elementwise("add", np.add, lambda g, out, x, y: (g, g), "{0} + {1}")
elementwise("sub", np.subtract, lambda g, out, x, y: (g, -g), "{0} - {1}")
elementwise("mul", np.multiply, lambda g, out, x, y: (g * y, g * x), "{0} * {1}")


def _div_vjp(g, out, x, y):
    gx = safe(g, g / y)
    return gx, safe(g, -gx * out)


elementwise("div", np.true_divide, _div_vjp, "{0} / {1}")


def _pow_vjp(g, out, x, y):
    # d/dx x**0 is 0 everywhere, x = 0 included (y * x**-1 there is 0 * inf), as JAX: so
    # polynomial features x[:, None] ** np.arange(d) have the gradient 1 + 2x + ... at 0.
    gx = np.where(y == 0, 0, safe(g, g * y * x ** (y - 1)))
    # d/dy x**y = x**y log x; defined as 0 where x <= 0 (as JAX does), so a
    # constant base of 0 does not poison the exponent's gradient.
    gy = safe(g, g * out * np.where(x > 0, np.log(np.where(x > 0, x, 1)), 0))
    return gx, gy


elementwise("pow", np.power, _pow_vjp, "{0} ** {1}")


def _remainder_vjp(g, out, x, y):
    # x % y = x - y * floor(x / y): d/dx = 1 and d/dy = -floor(x / y) between the jumps (as JAX)
    return g, -g * np.floor_divide(x, y)


# Python's (and NumPy's) floor division and modulo: the result takes the divisor's sign; an
# integer division by zero gives 0, as NumPy's does (the kernels' error model is NumPy's).
elementwise("floor_divide", np.floor_divide, None, "{0} // {1}",
            "no gradient: piecewise constant")
elementwise("remainder", np.remainder, _remainder_vjp, "{0} % {1}")


def _fmod_vjp(g, out, x, y):
    # C's fmod: x - y * trunc(x / y), the sign of x; d/dx = 1 and d/dy = -trunc(x / y) between
    # the jumps (as PyTorch)
    return g, -g * np.trunc(x / y)


# Floats only: numba's integer np.fmod takes the divisor's sign (fmod(7, -3) is 7 there, 1 in
# NumPy); the binding writes integers' with `%` (compiler/numpy_api/elementwise.py)
elementwise("fmod", np.fmod, _fmod_vjp, "np.fmod({0}, {1})")


def _copysign_vjp(g, out, x, y):
    # |x| with y's sign: d/dx = sign(x) sign(out), 0 at x = 0 (as PyTorch); none to y (a step)
    return g * (np.sign(x) * np.sign(out)), None


elementwise("copysign", np.copysign, _copysign_vjp, "np.copysign({0}, {1})")


def _over_or_zero(g, d):
    """g / d, and 0 where d is 0 (the origin of arctan2 and hypot: their gradient's choice)."""
    return np.where(d == 0, 0, g / np.where(d == 0, 1, d))


def _arctan2_vjp(g, out, y, x):
    # d atan2(y, x) = (x dy - y dx) / (x^2 + y^2); at the origin (0/0) the gradient is 0.
    scale = _over_or_zero(g, x * x + y * y)
    return scale * x, -scale * y


def _hypot_vjp(g, out, x, y):
    # d hypot = (x dx + y dy) / hypot; at the origin (a cone's tip) the gradient is 0.
    scale = _over_or_zero(g, out)
    return scale * x, scale * y


elementwise("arctan2", np.arctan2, _arctan2_vjp, "np.arctan2({0}, {1})")
elementwise("hypot", np.hypot, _hypot_vjp, "np.hypot({0}, {1})")


def _tie_vjp(wins):
    def vjp(g, out, x, y):
        gx = np.where(wins(x, y), g, np.where(x == y, g * 0.5, 0))
        gy = np.where(wins(y, x), g, np.where(x == y, g * 0.5, 0))
        return gx, gy

    return vjp


elementwise("maximum", np.maximum, _tie_vjp(lambda a, b: a > b), "max({0}, {1})")
elementwise("minimum", np.minimum, _tie_vjp(lambda a, b: a < b), "min({0}, {1})")

# --- comparisons and logic: boolean results, no gradient -------------------------
def _common_dtype(node):
    """Comparisons compare in the operands' common type, as NumPy does."""
    common = np.result_type(*(x.dtype for x in node.inputs))
    return [common] * len(node.inputs)


for _name, _impl, _code in [
    ("lt", np.less, "{0} < {1}"),
    ("le", np.less_equal, "{0} <= {1}"),
    ("gt", np.greater, "{0} > {1}"),
    ("ge", np.greater_equal, "{0} >= {1}"),
    ("eq", np.equal, "{0} == {1}"),
    ("ne", np.not_equal, "{0} != {1}"),
]:
    register(OpDef(_name, "elementwise", _infer(_impl), _impl, None, _code,
                   lowering=Elementwise(_code, _common_dtype, exact=True)))


def _booleans(node):
    return [np.dtype(np.bool_)] * len(node.inputs)


for _name, _impl, _code in [
    ("logical_and", np.logical_and, "{0} and {1}"),
    ("logical_or", np.logical_or, "{0} or {1}"),
    ("logical_xor", np.logical_xor, "{0} != {1}"),
    ("logical_not", np.logical_not, "not {0}"),
]:
    register(OpDef(_name, "elementwise", _infer(_impl), _impl, None, _code,
                   lowering=Elementwise(_code, _booleans, exact=True)))


def _signbit_operand(node):
    """signbit reads its operand as it is (cast to the bool result, every bit would be lost);
    an integer as a float, which keeps its sign."""
    x = node.inputs[0]
    return [np.dtype(np.float64) if x.dtype.kind in "iub" else x.dtype]


# The sign bit (of -0.0 and -NaN too, which no comparison sees): no gradient
register(OpDef("signbit", "elementwise", _infer(np.signbit), np.signbit, None, "np.signbit({0})",
               "no gradient: a boolean",
               lowering=Elementwise("np.signbit({0})", _signbit_operand, exact=True)))


def _where_infer(cond: TensorType, a: TensorType, b: TensorType) -> TensorType:
    if cond.dtype != np.bool_:
        raise ShapeError(f"where's condition must be boolean, got {cond.dtype}")
    dtype = np.result_type(a.dtype, b.dtype)
    return TensorType(dtype, broadcast_shapes(cond.shape, a.shape, b.shape))


register(OpDef(
    "where", "elementwise", _where_infer, np.where,
    lambda g, out, c, a, b: (None, np.where(c, g, 0), np.where(c, 0, g)),
    "{1} if {0} else {2}",
    "the unselected branch gets an exact zero cotangent",
    lowering=Elementwise("{1} if {0} else {2}", lambda n: [None, n.dtype, n.dtype], exact=True),
))


def _cast_infer(x: TensorType, *, dtype) -> TensorType:
    return TensorType(np.dtype(dtype), x.shape)


def _cast_vjp(g, out, x, *, dtype):
    if not np.issubdtype(x.dtype, np.floating):
        return (None,)
    return (g.astype(x.dtype),)


register(OpDef("cast", "elementwise", _cast_infer,
               lambda x, *, dtype: np.asarray(x).astype(dtype), _cast_vjp,
               "{dtype}({0})", lowering=Elementwise("{dtype}({0})", lambda n: [None],
                                                    exact=True)))
