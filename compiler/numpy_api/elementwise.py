"""Elementwise NumPy: ufuncs and operators, `where`, `clip`, casts, rounding, `sinc`, `erf`."""

from __future__ import annotations

import builtins
import math

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.numpy_api.dispatch import (
    FOREIGN_UFUNCS,
    UFUNCS,
    fresh,
    implements,
    no_out,
    traced,
)
from compiler.ops import bind
from compiler.tracer import Tracer
from compiler.user_code import user_loc


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
    # NumPy computes a float array to the power of a scalar 0.5 as its sqrt: at -inf that is
    # NaN, where C's pow (and so the kernel's) gives inf.
    if (isinstance(x, Tracer) and x.dtype.kind == "f" and not isinstance(y, Tracer)
            and np.ndim(y) == 0 and np.asarray(y).dtype.kind == "f" and y == 0.5
            and np.result_type(x.dtype, y) == x.dtype):
        return np.sqrt(x)
    if (isinstance(x, Tracer) and x.dtype.kind in "iu" and not isinstance(y, Tracer)
            and np.asarray(y).dtype.kind == "i" and np.any(np.asarray(y) < 0)):
        raise TraceError("Integers to negative integer powers are not allowed (NumPy's "
                         "ValueError): make the base a float, x.astype(float) ** y", user_loc())
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
def clip(x, a_min=None, a_max=None, out=None, *, min=None, max=None, **kwargs):
    # where() rather than maximum/minimum: PyTorch's clamp passes the gradient at
    # the bounds themselves (lo <= x <= hi), while a maximum tie would halve it.
    no_out("clip", out, **kwargs)
    for name, positional, keyword in (("min", a_min, min), ("max", a_max, max)):
        if positional is not None and keyword is not None:
            raise TraceError(f"clip: pass the {name} bound once, as a_{name}= or {name}=, "
                             "not both", user_loc())
    a_min = a_min if min is None else min  # NumPy 2.1's names, and ndarray.clip's
    a_max = a_max if max is None else max
    x = fresh(traced(x))  # a new array, as NumPy's (even with no bounds)
    if x.dtype.kind in "iu":  # NumPy 2 clips ints by Python ints out of their range too
        info = np.iinfo(x.dtype)
        a_min, a_max = (b if type(b) is not int else builtins.min(builtins.max(b, info.min),
                                                                  info.max)
                        for b in (a_min, a_max))
    if a_min is not None:
        x = np.where(x < a_min, a_min, x)
    if a_max is not None:
        x = np.where(x > a_max, a_max, x)
    return x


def _reciprocal(x):
    """1 / x, in x's dtype as NumPy computes it: of integers, C's truncating division (1 for 1,
    -1 for -1, 0 for the others, and the dtype's minimum for a signed 0; booleans as int8)."""
    x = traced(x)
    if x.dtype.kind == "f":
        return 1 / x
    signed = x.dtype.kind == "i"  # (booleans: 0 stays 0)
    dtype = np.reciprocal(np.ones((), x.dtype)).dtype
    x = astype(x, dtype) if x.dtype != dtype else x
    units = np.where((x == 1) | (x == -1) if signed else x == 1, x, 0)
    if signed:
        units = np.where(x == 0, np.iinfo(dtype).min, units)
    return astype(units, dtype) if units.dtype != dtype else units


def _as_float(x, ufunc):
    """`x` in the float dtype NumPy's `ufunc` computes an integer or boolean `x` in (float64;
    float16, which kernels lack, for 8-bit ints: refused at the user's line)."""
    x = traced(x)
    if x.dtype.kind == "f":
        return x
    dtype = ufunc(*[np.ones((), x.dtype)] * ufunc.nin).dtype
    if dtype == np.float16:
        raise TraceError(f"np.{ufunc.__name__} of {x.dtype} values is float16 in NumPy, which "
                         "compiled kernels have no arithmetic for; convert the input first, "
                         "e.g. x.astype(np.float32)", user_loc())
    return astype(x, dtype)


def _numpy_dtype(ufunc, *operands) -> np.dtype:
    """The dtype NumPy's `ufunc` gives these operands, asked of NumPy with samples: a traced
    array's dtype, a Python number as itself (weak, NEP 50), as is a Python number argument
    among floats (among ints it is an int64: see builder._adapted). NumPy's own error (a
    Python int out of an array's range, float16) is the user's, at their line."""
    floats = any(traced(v).dtype.kind == "f" for v in operands)

    def sample(v):
        if not isinstance(v, Tracer):
            return v
        if v.weak and (v.dtype.kind == "f" or floats):
            return v.dtype.type(1).item()
        return np.ones((), v.dtype)

    try:
        with np.errstate(all="ignore"):
            dtype = np.asarray(ufunc(*map(sample, operands))).dtype
    except (OverflowError, TypeError) as err:
        raise TraceError(str(err), user_loc()) from None
    if dtype == np.float16:
        kinds = ", ".join(sorted({str(traced(v).dtype) for v in operands}))
        raise TraceError(f"np.{ufunc.__name__} of {kinds} values is float16 in NumPy, which "
                         "compiled kernels have no arithmetic for; convert the input first, "
                         "e.g. x.astype(np.float32)", user_loc())
    return dtype


def _in_dtype(x, dtype):
    """`x` (traced, or a number) cast to `dtype`; a Python number stays weak."""
    if isinstance(x, Tracer):
        return x if x.dtype == dtype and not x.weak else astype(x, dtype)
    return x if type(x) in (bool, int, float) else np.asarray(x, dtype=dtype)


def _square(x):
    """x * x, in NumPy's dtype: of booleans int8 (x * x would be their logical and)."""
    x = traced(x)
    if x.dtype == np.bool_:
        x = astype(x, np.int8)
    return x * x


def _exp2(x):
    return bind("pow", 2.0, _as_float(x, np.exp2))


def _logaddexp(x, y, ufunc=np.logaddexp):
    # Equal infinities have no difference (inf - inf is NaN): their sum is the infinity
    # itself, as NumPy gives; a zero difference leaves log(2), and each input gradient 1/2.
    # Integers are cast to the float NumPy computes in first: their difference would wrap
    # (uint8 3 - 5 is 254), or lose the sign of a bool.
    dtype = _numpy_dtype(ufunc, x, y)
    x, y = _in_dtype(x, dtype), _in_dtype(y, dtype)
    m = np.maximum(x, y)
    difference = np.where(x == y, 0, x - y)
    return m + np.log1p(np.exp(-np.abs(difference)))


def _logaddexp2(x, y):
    # In the result's dtype from the start: x32 * log(2) rounded to float32 lost float32's
    # precision in logaddexp2(x32, y64), and a Python number must stay weak
    dtype = _numpy_dtype(np.logaddexp2, x, y)
    x, y = _in_dtype(x, dtype), _in_dtype(y, dtype)
    return _logaddexp(x * math.log(2.0), y * math.log(2.0)) * (1 / math.log(2.0))


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
    np.negative: lambda x: unary("neg", x),
    np.positive: lambda x: x,
    np.absolute: lambda x: unary("abs", x),
    np.square: _square,
    np.reciprocal: lambda x: _reciprocal(x),
    np.divmod: lambda x, y: (binary("floor_divide", x, y), binary("remainder", x, y)),
    np.logaddexp: _logaddexp,
    # 2.0 ** x, C's pow: exp(x * log 2) was off by |x| ulps (95 at x = -305, 35 in float32);
    # the Python float stays weak, so float32 stays float32
    np.exp2: lambda x: _exp2(x),
    np.logaddexp2: lambda x, y: _logaddexp2(x, y),
    np.deg2rad: lambda x: _as_float(x, np.deg2rad) * (math.pi / 180),
    np.radians: lambda x: _as_float(x, np.radians) * (math.pi / 180),
    np.rad2deg: lambda x: _as_float(x, np.rad2deg) * (180 / math.pi),
    np.degrees: lambda x: _as_float(x, np.degrees) * (180 / math.pi),
    np.log2: lambda x: np.log(x) * (1 / math.log(2.0)),
    np.log10: lambda x: np.log(x) * (1 / math.log(10.0)),
})
for _name in ("sign", "exp", "expm1", "log", "log1p", "sqrt", "cbrt", "sin", "cos", "tan", "tanh",
              "arctan", "sinh", "cosh", "arcsin", "arccos", "arcsinh", "arccosh", "arctanh"):
    UFUNCS[getattr(np, _name)] = (lambda op: lambda x: unary(op, x))(_name)


# --- more ufuncs: inverse trigonometry, rounding, classification ------------------------------
UFUNCS.update({
    np.arctan2: lambda y, x: binary("arctan2", y, x),
    np.hypot: lambda x, y: binary("hypot", x, y),
    # NaN-ignoring maximum and minimum: the other operand where one is NaN (np.isnan, not
    # y != y, which is a Python bool for a Python float: a condition where() would not take)
    np.fmax: lambda x, y: np.where(np.isnan(y), x, np.where(np.isnan(x), y, np.maximum(x, y))),
    np.fmin: lambda x, y: np.where(np.isnan(y), x, np.where(np.isnan(x), y, np.minimum(x, y))),
    np.floor_divide: lambda x, y: binary("floor_divide", x, y),
    np.remainder: lambda x, y: binary("remainder", x, y),  # np.mod is np.remainder
    np.fmod: lambda x, y: _fmod(x, y),
    np.copysign: lambda x, y: binary("copysign", x, y),
    np.signbit: lambda x: unary("signbit", x),
    np.isnan: lambda x: x != x,  # only NaN differs from itself (kernels never assume no NaN)
    np.isinf: lambda x: np.abs(x) == np.inf,
    # inf - inf and NaN - NaN are NaN; integers and booleans (which have no `-`) are finite
    np.isfinite: lambda x: (x - x) == 0 if traced(x).dtype.kind == "f" else x == x,
})


def _fmod(x, y):
    """C's remainder, with the dividend's sign (np.fmod); of integers, |x| % |y| signed as x
    (0 for a divisor 0, as NumPy gives), since numba's integer fmod is wrong for y < 0."""
    if any(traced(v).dtype.kind not in "iub" for v in (x, y)):
        return binary("fmod", x, y)  # x and y as given: a Python float stays weak
    # NumPy's dtype, and its error for fmod(u8, -2), before Python's abs (which keeps a Python
    # int weak, where np.abs(3) is an int64 that made fmod(int8s, 3) int64) hides a sign
    dtype = _numpy_dtype(np.fmod, x, y)
    magnitude = abs(x) % abs(y)
    return _in_dtype(np.where(x < 0, -magnitude, magnitude), dtype)


def _exact(x, numpy_function):
    """An integer (or boolean) x rounded: x itself, in the dtype NumPy gives (NumPy 2 keeps an
    integer's dtype in floor/ceil/trunc/round; rint makes it float)."""
    dtype = numpy_function(np.ones((), x.dtype)).dtype
    return x if dtype == x.dtype else astype(x, dtype)


def _rounding(op):
    def rounded(x):
        x = traced(x)
        return _exact(x, getattr(np, op)) if x.dtype.kind in "iub" else unary(op, x)

    return rounded


for _name in ("floor", "ceil", "trunc", "rint"):
    UFUNCS[getattr(np, _name)] = _rounding(_name)


@implements(np.fix)
def fix(x, out=None):
    no_out("fix", out)
    return np.trunc(x)


@implements(np.round, np.around)
def round_(a, decimals=0, out=None):
    """NumPy's algorithm: half to even (rint) after scaling by 10**decimals, then scaled back."""
    no_out("round", out)
    a = traced(a)
    if a.dtype.kind in "iub":
        if decimals < 0:
            raise UnsupportedError("np.round of integers to negative decimals is not "
                                   "supported; round a float copy (x.astype(float))", user_loc())
        return _exact(a, np.round)
    if decimals == 0:
        return unary("rint", a)
    if decimals > 0:
        scale = 10.0**decimals  # a Python float: weak, so float32 stays float32
        return unary("rint", a * scale) / scale
    scale = 10.0**-decimals
    return unary("rint", a / scale) * scale


@implements(np.sinc)
def sinc(x):
    """sin(pi x) / (pi x), 1 near 0 (where its derivative, 0, comes out exactly). Near is
    |x| < 1e-9, where sin(pi x) / (pi x) rounds to 1 in float64 and float32 alike; at
    subnormal x the derivative's 1 / (pi x) would overflow and give inf - inf = NaN."""
    x = traced(x)
    if x.dtype.kind != "f":
        x = astype(x, np.float64)
    at_zero = np.abs(x) < 1e-9
    y = math.pi * np.where(at_zero, 1.0, x)
    return np.where(at_zero, 1.0, np.sin(y) / y)


def _heaviside(x1, x2):
    # 0 below 0, x2 at 0, 1 above, NaN at NaN; no gradient to x1 (it is a step).
    dtype = np.heaviside(*(np.ones((), v.dtype) if isinstance(v, Tracer) else v
                           for v in (x1, x2))).dtype
    step = np.where(x1 > 0, 1.0, np.where(x1 < 0, 0.0, np.where(x1 == 0, x2, np.nan)))
    return step if step.dtype == dtype else astype(step, dtype)


UFUNCS[np.heaviside] = _heaviside


def erf(x):
    """The error function (for GELU): NumPy has none; math.erf and scipy.special.erf bind here."""
    x = traced(x)
    return unary("erf", x if x.dtype.kind == "f" else astype(x, np.float64))


# Ufuncs of other libraries, found by name: scipy.special.erf when SciPy is installed (gradfuse
# does not import SciPy itself), and np.frompyfunc(math.erf, 1, 1), an erf of NumPy's own.
FOREIGN_UFUNCS["erf"] = FOREIGN_UFUNCS["erf (vectorized)"] = erf
