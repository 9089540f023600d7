"""In-place operators on traced arrays (`h += b`, `for row in y: row *= 2`): NumPy's values
(aliases and views of a copy see the change), or an error at the user's line where a traced
view cannot show what NumPy's would; never a silently different value.

Values are checked against NumPy running the same function, gradients against central
differences (float64).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from gradcheck import check_interpreted_gradient as fd_check
from source_lines import marked_line

from compiler import TraceError, UnsupportedError, compile_grad

HERE = os.path.basename(__file__)
RNG = np.random.default_rng(23)


def line_of(marker: str) -> int:
    return marked_line(__file__, marker)


def interpreted(fn, **kw):
    return compile_grad(fn, backend="interpreter", **kw)


# --- NumPy's values ----------------------------------------------------------------------------
def rows_of_a_copy(x):
    y = x.copy()
    for row in y:  # each row is a view of y: NumPy doubles y
        row *= 2.0
    return np.sum(y * y)


def alias(x):
    h = x * 2
    h2 = h  # the same array: it sees the change
    h += 1.0
    return np.sum(h2 * h2)


def bias(x, b):
    h = x @ np.ones((3, 2))
    h += b  # the common idiom: no alias, no view
    h *= 0.5
    return np.sum(h * h)


def scalars(x):
    s = np.sum(x)  # a NumPy scalar: `s += 1` makes a new one, t keeps the old
    t = s
    s += 1.0
    r = x[0, 1]  # a scalar read: a copy, blind to later changes of x * 2
    h = x * 2
    u = h[1, 2]
    h += 1.0
    return t * s + r + u + np.sum(h)


def copies_of_it(x):
    h = x * 2
    kept = [+h, h.astype(h.dtype), np.pad(h, 0), np.roll(h, 0), np.tile(h, 1), h.flatten(),
            np.clip(h, None, 5.0)]  # NumPy copies: the change below does not reach them
    h -= 1.0
    return sum(np.sum(k * k) for k in kept) + np.sum(h)


def view_of_a_copy_row(x):
    y = x.copy()
    r = y[1]
    r += 3.0  # through the view: y changes, and y[0] does not overlap it
    other = y[0]
    return np.sum(y * y) + np.sum(r) + np.sum(other)


@pytest.mark.parametrize("fn", [rows_of_a_copy, alias, scalars, copies_of_it,
                                view_of_a_copy_row])
def test_in_place_operators_give_numpy_values_and_gradients(fn):
    x = RNG.normal(size=(2, 3))
    np.testing.assert_allclose(interpreted(fn)(x), fn(x.copy()), rtol=1e-12)
    fd_check(fn, [x])


def test_the_bias_idiom_matches_numpy_and_stays_one_add():
    x, b = RNG.normal(size=(4, 3)), RNG.normal(size=2)
    f = interpreted(bias, wrt=(0, 1))
    np.testing.assert_allclose(f(x, b), bias(x, b), rtol=1e-12)
    fd_check(bias, [x, b], wrt=1)
    assert f.ir("forward").count(" add(") == 1


COMPILED_ROWS = compile_grad(rows_of_a_copy)


def test_rows_of_a_copy_compiled():
    x = RNG.normal(size=(3, 4))
    value, grad = COMPILED_ROWS.value_and_grad(x)
    np.testing.assert_allclose(value, rows_of_a_copy(x.copy()), rtol=1e-12)
    np.testing.assert_allclose(grad, 8 * x, rtol=1e-12)


# --- what a traced view cannot show: errors naming the lines -----------------------------------
def test_a_view_read_after_its_base_changed_in_place_is_an_error():
    def f(x):
        h = x * 2
        v = h[1]  # VIEW
        h += 1.0  # CHANGE
        return np.sum(v)  # READ

    with pytest.raises(TraceError, match="a NumPy view would show the new values") as err:
        interpreted(f)(np.ones((2, 3)))
    message = str(err.value)
    for marker in ("VIEW", "CHANGE", "READ"):
        assert f"{HERE}:{line_of(marker)}" in message

    def transposed(x):
        h = x * 2
        t = h.T
        h *= 3.0
        return np.sum(t @ x)

    with pytest.raises(TraceError, match="a NumPy view would show the new values"):
        interpreted(transposed)(np.ones((2, 2)))


def test_an_array_changed_through_its_view_is_refused_afterwards():
    def f(x):
        h = x * 2
        row = h[0]
        row += 1.0  # THROUGH
        return np.sum(row) + np.sum(h)  # BASE

    with pytest.raises(TraceError, match="changed in place through a view") as err:
        interpreted(f)(np.ones((2, 3)))
    assert f"{HERE}:{line_of('THROUGH')}" in str(err.value)
    assert f"{HERE}:{line_of('BASE')}" in str(err.value)


def test_in_place_on_an_argument_is_refused():
    def f(x):
        x += 1.0  # ARGUMENT
        return np.sum(x)

    with pytest.raises(UnsupportedError, match="would change the caller's array") as err:
        interpreted(f)(np.ones(3))
    assert f"{HERE}:{line_of('ARGUMENT')}" in str(err.value)

    def row_of_argument(x):
        r = x[0]
        r *= 2.0
        return np.sum(r)

    with pytest.raises(UnsupportedError, match="a view of an argument"):
        interpreted(row_of_argument)(np.ones((2, 3)))


def test_in_place_keeps_numpys_shape_and_casting_rules():
    def grows(x):
        h = x * 2
        h += np.ones((2, 3))
        return np.sum(h)

    with pytest.raises(TraceError, match="non-broadcastable output operand"):
        interpreted(grows)(np.ones(3))

    def int_by_float(x, n):
        k = n * 2
        k *= 1.5
        return np.sum(x) * np.sum(k)

    with pytest.raises(TraceError, match="cannot cast the result"):
        interpreted(int_by_float)(np.ones(3), np.arange(3))
