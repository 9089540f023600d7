"""Dtypes in compiled functions as NumPy 2 gives them (NEP 50): float32 beside float64, ints,
bools and Python numbers; dtype= arguments; the gradients' dtypes are their inputs'."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from compiler.errors import TraceError, UnsupportedError

rng = np.random.default_rng(11)


# --- np.stack of arrays of two dtypes -------------------------------------------------------
def stacked(x, y):
    return np.sum(np.stack([x, y]) ** 2 * np.arange(1.0, 5.0))


stacked_c = compile_grad(stacked, wrt=(0, 1))


def test_a_stack_of_float32_and_float64_arguments():
    """The kernel took the stacked arguments as one packed array of the stack's dtype and
    refused the float32 one with a bare TypeError 'an array of another dtype than the
    kernel's'."""
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = rng.standard_normal((3, 4))
    value, (gx, gy) = stacked_c.value_and_grad(x, y)
    assert stacked_c(x, y) == value
    assert np.asarray(value).dtype == np.float64
    np.testing.assert_allclose(value, stacked(x, y), rtol=1e-12)
    assert gx.dtype == np.float32 and gy.dtype == np.float64
    np.testing.assert_allclose(gx, central_differences(stacked, [x, y], 0), rtol=1e-6)
    np.testing.assert_allclose(gy, central_differences(stacked, [x, y], 1), rtol=1e-6)


# --- a Python int out of an unsigned array's range, where NumPy's loop takes it --------------
def negative_ints(pixels):
    return pixels / -2, -255 / (pixels + 1), np.logical_and(pixels, -2), pixels < -5


negative_ints_c = compile_grad(negative_ints)


def test_a_negative_python_int_with_unsigned_arrays_where_numpy_takes_it():
    """u8 / -2 (and -255 / u8, np.logical_and(u8, -2)) were TraceErrors 'Python integer -2 out
    of bounds for uint8': NumPy converts the int to the dtype its loop computes in (float64,
    bool), not to the array's."""
    pixels = np.array([0, 1, 2, 7, 100, 254], np.uint8)
    for got, expected in zip(negative_ints_c(pixels), negative_ints(pixels)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_a_python_int_out_of_range_where_numpy_refuses_it_too():
    """u8 + -2 is NumPy's OverflowError; np.where(c, u8, -1), which NumPy makes uint8 255,
    is refused rather than given another dtype."""
    pixels = np.array([0, 1, 255], np.uint8)
    for fn in (lambda p: p + -2, lambda p: np.where(p > 3, p, -1), lambda p: np.fmod(p, -2)):
        with pytest.raises(TraceError, match="Python integer -[12] out of bounds for uint8"):
            compile_grad(fn, backend="interpreter")(pixels)


# --- ufuncs written from others: their operands in NumPy's dtype first ------------------------
def integer_ufuncs(u8, u32, i8):
    return (np.logaddexp(u8, u32), np.logaddexp(u32, -2), np.logaddexp(u8 > 3, u32),
            np.fmod(i8, 3), np.fmod(i8, -3), np.fmod(u8 > 3, True), np.square(i8 > 0),
            np.vecdot(i8, i8), np.linalg.vecdot(u8 > 3, u32 > 3), np.vecdot(u8, u8))


integer_ufuncs_c = compile_grad(integer_ufuncs)


def test_ufuncs_of_integers_and_booleans_give_numpys_values_and_dtypes():
    """np.logaddexp of unsigned ints subtracted them in their dtype: logaddexp(u8, u32) gave
    510 where NumPy gives 255 (3 - 5 wrapped), silently. np.fmod(int8s, 3) was int64 (np.abs
    made the 3 an int64), np.square of booleans their logical and (NumPy: int8), np.vecdot of
    int8s an int64 and of booleans an int64 count (NumPy: int8, and their logical dot)."""
    u8 = np.array([0, 1, 2, 7, 100, 255], np.uint8)
    u32 = u8[::-1].astype(np.uint32)
    i8 = np.array([-3, -1, 0, 2, 5, 100], np.int8)
    for got, expected in zip(integer_ufuncs_c(u8, u32, i8), integer_ufuncs(u8, u32, i8)):
        assert np.asarray(got).dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-15)


def logaddexp2_mixed(x, y):
    return np.sum(np.logaddexp2(x, y) * np.arange(6.0))


def test_logaddexp2_of_float32_with_float64_and_a_python_float():
    """logaddexp2(x32, y64) scaled x32 by log(2) in float32 before the float64 sum (1e-7
    off), and a Python float argument or literal made logaddexp2(x32, 1.5) float64."""
    x = np.array([-2.5, -0.5, 0.0, 0.3, 1.0, 3.7], np.float32)
    y = np.array([1.5, -0.5, 2.0, 0.3, -1.0, 3.0])
    f = compile_grad(logaddexp2_mixed, wrt=(0, 1), backend="interpreter")
    value, (gx, gy) = f.value_and_grad(x, y)
    np.testing.assert_allclose(value, logaddexp2_mixed(x, y), rtol=1e-14)
    assert gx.dtype == np.float32 and gy.dtype == np.float64
    np.testing.assert_allclose(gx, central_differences(logaddexp2_mixed, [x, y], 0), rtol=1e-6)
    np.testing.assert_allclose(gy, central_differences(logaddexp2_mixed, [x, y], 1), rtol=1e-6)
    with_literal = compile_grad(lambda x: np.logaddexp2(x, 1.5), backend="interpreter")
    with_argument = compile_grad(np.logaddexp2, backend="interpreter")
    for got in (with_literal(x), with_argument(x, 1.5)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, np.logaddexp2(x, 1.5), rtol=1e-6)


# --- np.mean / np.var with an int or bool dtype= ----------------------------------------------
def int_means(a, x):
    return (np.mean(a, dtype=np.int64), np.mean(a, axis=1, dtype=np.int8),
            np.mean(a, axis=1, dtype=np.uint8), np.mean(x, axis=0, dtype=np.int32),
            np.mean(a > 0, dtype=bool), np.nanmean(a, axis=1, dtype=np.int16),
            np.mean(a, axis=1, dtype=np.int32, where=a != 2), np.mean(x, dtype=np.float32))


int_means_c = compile_grad(int_means)


def test_a_mean_in_an_int_dtype_truncates_as_numpys():
    """np.mean(x, dtype=np.int64) was the float64 mean (-0.75 where NumPy's is the int64 0):
    NumPy sums in the dtype, divides, and casts the quotient back."""
    a = np.array([[-3, -1, 0, 2, 5, 100], [90, 100, 2, 7, -9, 1]], np.int32)
    x = np.array([[-2.5, 0.5, 3.7], [1.5, -1.9, 2.2]])
    for got, expected in zip(int_means_c(a, x), int_means(a, x)):
        assert np.asarray(got).dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_a_variance_in_an_int_dtype_is_refused():
    """np.var(ints, dtype=np.int8) was the float64 variance; NumPy's truncates the mean and
    wraps the squares in int8 (13 where the variance is 1378): refused, naming the dtype."""
    a = np.array([-3, -1, 0, 2, 5, 100], np.int32)
    for fn in (lambda a: np.var(a, dtype=np.int8), lambda a: np.std(a, dtype=np.int64),
               lambda a: np.nanvar(a, dtype=np.int32), lambda a: np.nanstd(a, dtype=bool)):
        with pytest.raises(UnsupportedError, match=r"with dtype=\w+ is not supported"):
            compile_grad(fn, backend="interpreter")(a)
    with pytest.raises(TraceError, match="dtype must be inexact"):
        compile_grad(lambda x: np.nanmean(x, dtype=np.int64), backend="interpreter")(a * 1.5)


# --- a ufunc's dtype= is the dtype it computes in --------------------------------------------
def widened(i8, u8, x32):
    return (np.add(i8, i8, dtype=np.int16), np.multiply(u8, u8, dtype=np.int32),
            np.subtract(u8[::-1], u8, dtype=np.int16), np.negative(u8, dtype=np.int16),
            np.add(i8, i8, dtype=np.float32), np.maximum(u8, -3, dtype=np.int16),
            np.sqrt(u8, dtype=np.float32), np.multiply(x32, x32, dtype=np.float64))


widened_c = compile_grad(widened)


def test_a_ufuncs_dtype_is_the_dtype_it_computes_in():
    """np.add(int8s, int8s, dtype=np.int16) added in int8 and cast the wrapped sum (100 + 100
    gave -56 where NumPy gives 200), silently; np.sqrt(u8, dtype=np.float32) was refused as
    float16. NumPy casts the inputs to its loop's dtypes first."""
    i8 = np.array([100, -100, 5], np.int8)
    u8 = np.array([200, 3, 255], np.uint8)
    x32 = np.array([1 / 3, 2 / 3, 0.1], np.float32)
    for got, expected in zip(widened_c(i8, u8, x32), widened(i8, u8, x32)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(TraceError, match=r"np.add\(..., dtype=int64\): Cannot cast ufunc 'add' "
                                         r"input 0 from dtype\('float32'\)"):
        compile_grad(lambda x: np.add(x, x, dtype=np.int64), backend="interpreter")(x32 * 2.0)


# --- conversions NumPy makes itself: what to write instead -----------------------------------
def test_np_asarray_with_a_dtype_and_np_full_with_a_dtype_say_what_to_write():
    """np.asarray(x, dtype=np.float64) of a traced array said to np.stack a list, of an int
    dtype that the line indexed a NumPy array; np.full(shape, x, dtype=...) said 'np.copyto
    is not supported'. Each now names the spelling that works, which does."""
    x = np.array([[1.5, -2.0], [0.25, 3.0]], np.float32)
    cases = [(lambda x: np.asarray(x, dtype=np.float64) * 2, r"x\.astype\(np\.float64\)",
              lambda x: x.astype(np.float64) * 2),
             (lambda x: np.asarray(x * 3, dtype=np.int32), r"x\.astype\(np\.int32\)",
              lambda x: (x * 3).astype(np.int32)),
             (lambda x: np.full((3, 2), x[0, 0], dtype=np.float64),
              r"np\.full\(shape, x\.astype\(dtype\)\)",
              lambda x: np.full((3, 2), x[0, 0].astype(np.float64)))]
    for wrong, advice, right in cases:
        with pytest.raises(UnsupportedError, match=advice):
            compile_grad(wrong, backend="interpreter")(x)
        got, expected = compile_grad(right, backend="interpreter")(x), wrong(x)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
