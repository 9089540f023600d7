"""Elementwise functions of issue 14 as users write them, against PyTorch and NumPy: inverse
trigonometry, arctan2, hypot, sinc, erf and GELU, rounding (gradient 0), heaviside, NaN and
inf tests, and Python's math module on traced values (compiler/numpy_api/pymath.py)."""

from __future__ import annotations

import math
import types
from math import erf as math_erf

import numpy as np
import pytest
from gradcheck import central_differences
from op_cases import Arg
from torch_idioms import Idiom, lazy_family

from compiler import compile_grad
from compiler.errors import TraceError, UnsupportedError

torch = pytest.importorskip("torch")

A = Arg
erf = np.frompyfunc(math.erf, 1, 1)  # NumPy's own erf ufunc (objects); traced, the erf op


def _erf(x):
    return erf(x).astype(x.dtype)


IDIOMS = [
    Idiom("arcsin_arccos", lambda x: np.arcsin(x) + 2 * np.arccos(x),
          lambda x: torch.asin(x) + 2 * torch.acos(x), (A((3, 4), "unit"),)),
    Idiom("arctan_arctan2", lambda y, x: np.arctan2(y, x) + np.arctan(y),
          lambda y, x: torch.atan2(y, x) + torch.atan(y), (A((3, 4)), A((4,), "away"))),
    Idiom("hypot", np.hypot, torch.hypot, (A((3, 4)), A((3, 1), "away"))),
    Idiom("sinc", np.sinc, torch.sinc, (A((3, 4)),)),
    Idiom("erf", _erf, torch.erf, (A((3, 4)),)),
    Idiom("gelu", lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2.0))),
          torch.nn.functional.gelu, (A((3, 4)),)),
    Idiom("rounding", lambda x: (np.floor(x * 3) + np.ceil(x * 3) + np.trunc(x * 3)
                                 + np.rint(x * 3) + np.round(x * 3) + np.round(x, 1)) * x,
          lambda x: (torch.floor(x * 3) + torch.ceil(x * 3) + torch.trunc(x * 3)
                     + torch.round(x * 3) * 2 + torch.round(x, decimals=1)) * x,
          (A((3, 4)),)),
]

family = lazy_family(IDIOMS, seed=14)


def test_idioms_agree_with_pytorch_under_numpy():
    family().check_numpy_values()


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_values_and_gradients_match_pytorch(backend):
    family().check(backend)


# --- values NumPy decides: rounding, heaviside, NaN and inf --------------------------------------
def exact_results(x, y):
    return (np.round(x, 2), np.round(x, -1), np.around(x), np.rint(x), np.fix(x),
            np.heaviside(x, 0.5), np.heaviside(y, x), np.isnan(x), np.isinf(x), np.isfinite(x),
            np.floor(y), np.round(np.arange(5) * 7, 1))


EXACT = compile_grad(exact_results)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rounding_and_classification_match_numpy_exactly(dtype):
    rng = np.random.default_rng(3)
    x = (rng.uniform(-60, 60, 40) * 8).round() / 8  # many halves: ties round to even
    x[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.5, 2.5]
    y = np.where(np.arange(40) % 3 == 0, 0.0, x[::-1])
    x, y = x.astype(dtype), y.astype(dtype)
    with np.errstate(invalid="ignore"):
        expected = exact_results(x, y)
    for k, (got, want) in enumerate(zip(EXACT(x, y), expected)):
        assert np.asarray(got).dtype == want.dtype, k
        if k == 0:  # x / 100 is x * 0.01 in compiled code (fastmath's arcp): within an ulp
            np.testing.assert_array_max_ulp(got, want, maxulp=1)
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"result {k}")


def test_heaviside_passes_its_gradient_to_the_value_at_zero_only():
    x = np.array([-1.0, 0.0, 2.0, 0.0])
    f = compile_grad(lambda x, h: np.sum(np.heaviside(x, h) * np.arange(1.0, 5.0)), wrt=(0, 1),
                     backend="interpreter")
    gx, gh = f.grad(x, 0.5)
    np.testing.assert_array_equal(gx, np.zeros(4))  # a step: 0, at 0 too
    assert gh == 2.0 + 4.0  # the value at 0 is h, at positions 2 and 4


def test_scipy_special_erf_is_the_erf_op():
    special = pytest.importorskip("scipy.special")
    x = np.linspace(-2, 2, 9)
    f = compile_grad(lambda x: np.sum(special.erf(x) ** 2))
    value, grad = f.value_and_grad(x)
    np.testing.assert_allclose(value, np.sum(special.erf(x) ** 2), rtol=1e-14)
    expected = 2 * special.erf(x) * 2 / np.sqrt(np.pi) * np.exp(-x * x)
    np.testing.assert_allclose(grad, expected, rtol=1e-13)


# --- Python's math module on traced values -----------------------------------------------------
def _scaled(scale):
    def scaled_tanh(v):
        return math.tanh(v) * scale
    return scaled_tanh


scaled_tanh = _scaled(2.0)  # a closure of this module: it sees the traced math too


def math_helper(v):
    return math.erf(v) + math_erf(v * 0.5)  # `from math import erf` works too


def math_program(s, v):
    """math.* on a traced 0-d value s and (beyond what math itself allows) an array v."""
    scalar = (math.exp(s) + math.log(s) * math.sqrt(s) + math.sin(s) + math.cos(s)
              + math.log(s, 2) + math.log10(s) + math.atan2(s, 2.0) + math.pow(s, 3)
              + math.hypot(s, 1.0) + math.asin(s / 4) + math.acos(s / 4) + math.atan(s)
              + math.fabs(-s) + math.expm1(s) + math.log1p(s) + math.erfc(s) + scaled_tanh(s)
              + math.floor(s * 3) + math.ceil(s) + round(s * 2) + math.degrees(s))
    return scalar + np.sum(math_helper(v) * math.cosh(v))


def math_reference(s, v):
    """The same with floats, element by element."""
    s = float(s)
    scalar = (math.exp(s) + math.log(s) * math.sqrt(s) + math.sin(s) + math.cos(s)
              + math.log(s, 2) + math.log10(s) + math.atan2(s, 2.0) + math.pow(s, 3)
              + math.hypot(s, 1.0) + math.asin(s / 4) + math.acos(s / 4) + math.atan(s)
              + abs(s) + math.expm1(s) + math.log1p(s) + math.erfc(s) + 2 * math.tanh(s)
              + math.floor(s * 3) + math.ceil(s) + round(s * 2) + math.degrees(s))
    return scalar + sum((math.erf(e) + math.erf(e * 0.5)) * math.cosh(e) for e in v)


MATH = {backend: compile_grad(math_program, wrt=(0, 1), backend=backend)
        for backend in ("interpreter", "numba")}


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_math_functions_answer_traced_values(backend):
    s, v = np.float64(1.3), np.array([-0.7, 0.2, 1.1])
    value, (gs, gv) = MATH[backend].value_and_grad(s, v)
    np.testing.assert_allclose(value, math_reference(s, v), rtol=1e-13)
    np.testing.assert_allclose(gs, central_differences(math_reference, [s, v], 0), rtol=1e-6)
    np.testing.assert_allclose(gv, central_differences(math_reference, [s, v], 1), rtol=1e-6)


def test_math_reaches_closures_of_the_traced_function():
    def inner(x):
        return math.exp(x) * 2

    f = compile_grad(lambda x: inner(np.sum(x)), backend="interpreter")
    assert f.grad(np.array([0.5, 0.25]))[0] == pytest.approx(2 * math.exp(0.75))


def test_unsupported_math_function_is_named():
    with pytest.raises(UnsupportedError, match=r"math\.gamma is not supported on traced values"):
        compile_grad(lambda x: math.gamma(np.sum(x)), backend="interpreter")(np.ones(2))


def test_math_out_of_reach_says_to_use_numpy():
    # A function reached through another module's attribute keeps the real math module.
    helpers = types.ModuleType("helpers")
    exec("import math\ndef exp_sum(x):\n    return math.exp(x.sum())\n", helpers.__dict__)
    with pytest.raises(UnsupportedError, match=r"np\.exp for math\.exp"):
        compile_grad(lambda x: helpers.exp_sum(x), backend="interpreter")(np.ones(2))


def test_math_reaches_through_closures_that_hold_themselves():
    def factorial(n):  # its closure holds factorial itself
        return 1 if n <= 1 else n * factorial(n - 1)

    f = compile_grad(lambda x: math.exp(np.sum(x)) * factorial(3), backend="interpreter")
    assert f(np.array([0.5, 0.25])) == pytest.approx(6 * math.exp(0.75))


LOGADDEXP = compile_grad(lambda x, y: np.logaddexp(x, y) * 1.0)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_logaddexp_of_equal_infinities_is_that_infinity(backend):
    x = np.array([-np.inf, np.inf, 0.5, -np.inf, 2.0, -3.0])
    y = np.array([-np.inf, np.inf, 0.5, 1.0, np.inf, 4.0])
    f = LOGADDEXP if backend == "numba" else compile_grad(LOGADDEXP.fn, backend=backend)
    np.testing.assert_allclose(f(x, y), np.logaddexp(x, y), rtol=1e-12)
    g = compile_grad(lambda x, y: np.sum(np.logaddexp(x, y)), wrt=(0, 1), backend=backend)
    gx, gy = g.grad(x, y)
    # exp(x) / (exp(x) + exp(y)): 1/2 at a tie (infinite ones too), 0 and 1 against infinity
    np.testing.assert_allclose(gx, [0.5, 0.5, 0.5, 0.0, 0.0, 1 / (1 + np.exp(7.0))], rtol=1e-12)
    np.testing.assert_allclose(gx + gy, np.ones(6), rtol=1e-12)
    finite = slice(2, 3)
    fn = lambda x: np.sum(np.logaddexp(x, y[finite]))  # noqa: E731
    np.testing.assert_allclose(compile_grad(fn, backend="interpreter").grad(x[finite]),
                               central_differences(fn, [x[finite]], 0), rtol=1e-6)


# --- floor division and modulo ------------------------------------------------------------------
def floor_and_mod(x, y, idx):
    pos = (idx + 3) % 5  # index arithmetic on integers
    return np.sum((x % y) * 2 + x // 0.7 + np.remainder(x, 1.3) * y + np.floor_divide(y, x)
                  + np.mod(-x, 0.9)) + np.sum(x[pos] * (idx // 2))


FLOOR_MOD = {backend: compile_grad(floor_and_mod, wrt=(0, 1), backend=backend)
             for backend in ("interpreter", "numba")}


@pytest.mark.parametrize("backend", sorted(FLOOR_MOD))
def test_floor_division_and_modulo_give_numpys_values_and_gradients(backend):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=6) * 3, np.abs(rng.normal(size=6)) + 0.5
    idx = np.array([0, 1, 2, 7, 9, 4])
    value, (gx, gy) = FLOOR_MOD[backend].value_and_grad(x, y, idx)
    np.testing.assert_allclose(value, floor_and_mod(x, y, idx), rtol=1e-13)
    # d(x % y)/dx = 1, d(x % y)/dy = -(x // y); floor division is piecewise constant
    expected_gx = 2 + y - 1.0  # np.mod(-x, 0.9): d/dx = -1
    np.add.at(expected_gx, (idx + 3) % 5, idx // 2)
    np.testing.assert_allclose(gx, expected_gx, rtol=1e-13)
    np.testing.assert_allclose(gy, -2 * (x // y) + np.remainder(x, 1.3), rtol=1e-13)
    fd_x = central_differences(floor_and_mod, (x, y, idx), 0, h=1e-7)
    fd_y = central_differences(floor_and_mod, (x, y, idx), 1, h=1e-7)
    np.testing.assert_allclose(gx, fd_x, rtol=1e-6)
    np.testing.assert_allclose(gy, fd_y, rtol=1e-6, atol=1e-6)


def test_integer_floor_division_and_modulo_follow_numpy_signs_and_zero_divisors():
    @compile_grad
    def ints(a, b):
        return np.sum((a // b) * 100 + a % b) + np.sum(a // 3 - (a % -4))

    a = np.array([7, -7, 7, -7, 5, 0], np.int32)
    b = np.array([3, 3, -3, -3, 0, 2], np.int32)
    with np.errstate(all="ignore"):  # NumPy: x // 0 and x % 0 give 0 (with a warning)
        expected = ints.fn(a, b)
    assert ints(a, b) == expected
    assert compile_grad(ints.fn, backend="interpreter")(a, b) == expected


# --- C's remainder and signs: fmod, copysign, signbit ---------------------------------------------
def c_remainder_and_signs(x, y, a, b):
    """The remainder with the dividend's sign (np.fmod), |x| with y's sign, the sign bit (of -0.0
    too, which no comparison sees); integer fmod by 0 gives 0, as NumPy's does."""
    return (np.sum(np.fmod(x, y) * 2 + np.fmod(-x, 0.9) + np.copysign(x, y) * y
                   + np.copysign(1.5, -y) * x + np.signbit(y - 1) * x)
            + np.sum(np.fmod(a, b) * 10) + np.sum(np.signbit(y * 0.0) * 100))  # -0.0 for y < 0


C_REMAINDER = {backend: compile_grad(c_remainder_and_signs, wrt=(0, 1), backend=backend)
               for backend in ("interpreter", "numba")}


@pytest.mark.parametrize("backend", sorted(C_REMAINDER))
def test_fmod_copysign_and_signbit_give_numpys_values_and_gradients(backend):
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=6) * 3, rng.normal(size=6) + 0.25
    a = np.array([7, -7, 7, -7, 5, 0], np.int64)
    b = np.array([3, 3, -3, -3, 0, 2], np.int64)
    with np.errstate(all="ignore"):
        expected = c_remainder_and_signs(x, y, a, b)
    value, (gx, gy) = C_REMAINDER[backend].value_and_grad(x, y, a, b)
    np.testing.assert_allclose(value, expected, rtol=1e-13)
    # d fmod(x, y)/dx = 1, d/dy = -trunc(x / y); d copysign(x, y)/dx = sign(x) sign(y)
    signs = np.sign(x) * np.sign(y)
    np.testing.assert_allclose(gx, 2 - 1 + signs * y + np.copysign(1.5, -y)
                               + np.signbit(y - 1), rtol=1e-13)
    np.testing.assert_allclose(gy, -2 * np.trunc(x / y) + np.copysign(x, y), rtol=1e-13)
    with np.errstate(all="ignore"):  # NumPy's integer fmod by 0 warns
        fd_x = central_differences(c_remainder_and_signs, (x, y, a, b), 0, h=1e-7)
        fd_y = central_differences(c_remainder_and_signs, (x, y, a, b), 1, h=1e-7)
    np.testing.assert_allclose(gx, fd_x, rtol=1e-6)
    np.testing.assert_allclose(gy, fd_y, rtol=1e-6, atol=1e-6)


def integer_reciprocals(i, u, b):
    return np.reciprocal(i), np.reciprocal(u), np.reciprocal(b)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_reciprocal_of_integers_is_numpys_integer_division(backend):
    # np.reciprocal of ints gave 1 / x in float64 (-0.5 where NumPy gives 0, as int64)
    i = np.array([-3, -2, -1, 0, 1, 2, 3])
    u = np.array([0, 1, 2], np.uint8)
    b = np.array([True, False])
    with np.errstate(all="ignore"):
        expected = integer_reciprocals(i, u, b)
    got = compile_grad(integer_reciprocals, backend=backend)(i, u, b)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


def test_integers_to_negative_constant_powers_are_refused_as_numpy_does():
    # numba gave 2 ** -1 == 0 where NumPy raises ValueError
    for power in (-1, np.array([1, -2])):
        with pytest.raises(TraceError, match="Integers to negative integer powers"):
            compile_grad(lambda i, p=power: i**p, backend="interpreter")(np.array([2, 3]))


def test_divmod_and_operators_numpy_has():
    # divmod(x, 3), np.divmod and True ^ mask were bare TypeErrors ('unsupported operand type(s)
    # for divmod(): Tracer and int'), as were x >> 1 and 1 << x (now errors at the user's line)
    def quotients(x, i):
        q, r = divmod(x, 1.5)
        iq, ir = np.divmod(i, np.array([3, -3, 2]))
        return q * 10 + r + np.divmod(7.0, x)[1], iq * 10 + ir, True ^ (i > 0)

    x = np.array([4.0, -4.0, 2.5])
    i = np.array([7, 7, -7])
    f = compile_grad(quotients, backend="interpreter")
    for got, expected in zip(f(x, i), quotients(x, i)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    # d/dx of (x // 1.5) * 10 + x % 1.5 + 7 % x is 1 - 7 // x
    grad = compile_grad(lambda x, i: np.sum(quotients(x, i)[0]), backend="interpreter").grad(x, i)
    np.testing.assert_allclose(grad, 1 - 7.0 // x)
    for shift in (lambda x: x >> 1, lambda x: 1 << x):
        with pytest.raises(UnsupportedError, match=r"test_numpy_elementwise.py:\d+: np.\w+_shift"):
            compile_grad(shift, backend="interpreter")(i)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_exp2_is_accurate_far_from_zero(backend):
    # exp(x * log 2) was 95 ulps off at x = -305 (35 in float32); 2.0 ** x is C's pow
    f = compile_grad(lambda x, y: (np.exp2(x), np.exp2(y)), backend=backend)
    x = np.array([-305.83, -40.3, 3.5, 0.0, 1000.0, -1100.0])
    y = np.array([-120.504776, -20.1, 3.5, 90.7], np.float32)
    for got, expected in zip(f(x, y), (np.exp2(x), np.exp2(y))):
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=2 * np.finfo(expected.dtype).eps)


def out_of_range_ints(u, i):
    return u < -5, -5 < u, u == 256, i >= -1000, np.clip(i, -1000, 2), np.clip(u, 3, 300)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_python_ints_out_of_an_int_arrays_range(backend):
    # NumPy 2 compares and clips with them (a bare OverflowError from lifting the constant),
    # and refuses arithmetic with them (now at the user's line)
    u = np.array([0, 1, 200, 255], np.uint8)
    i = np.array([-3, 0, 2, 7], np.int8)
    got = compile_grad(out_of_range_ints, backend=backend)(u, i)
    for g, e in zip(got, out_of_range_ints(u, i)):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)
    with pytest.raises(TraceError, match=r"test_numpy_elementwise.py:\d+: Python integer 300 "
                                         "out of bounds for uint8"):
        compile_grad(lambda u: u + 300, backend=backend)(u)


def test_diff_and_isfinite_of_booleans_as_numpy():
    # both subtracted booleans: a TraceError ('numpy boolean subtract ... is not supported')
    def booleans(b):
        return np.diff(b), np.diff(b, n=2, axis=0, prepend=True), np.isfinite(b), np.isinf(b)

    b = np.array([[True, False, False, True], [False, False, True, True]])
    for got, expected in zip(compile_grad(booleans, backend="interpreter")(b), booleans(b)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
