"""DSL programs as users write them, each against its Python twin: source text as editors save
it (Windows line ends, a byte order mark, tabs, backslash continuations, Unicode names),
several functions and loops with several carries, Python's precedence, and the mistakes a
Python user makes, each reported at its line and column."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from gradcheck import central_differences
from test_dsl_errors import assert_points_at, error_of

from compiler import compile_grad, dsl

RNG = np.random.default_rng(7)
X = RNG.normal(size=(4, 3))

TWICE = ("def f(x: f64[N, 3]):  # a comment\n"
         "    # a comment at the body's indent\n"
         "\n"
         "  # a comment at another indent\n"
         "    y = x * 2   # trailing\n"
         "        # a deeper comment\n"
         "    return sum(y)\n")


def assert_matches(program: str, twin, args: tuple, wrt: tuple[int, ...] = (0,),
                   name: str | None = None) -> None:
    """Eager values, compiled (interpreted) values and gradients of a DSL program equal its
    Python twin's values and the twin's central differences."""
    fn = dsl.load(program, name)
    expected = twin(*args)
    np.testing.assert_allclose(fn(*args), expected, rtol=1e-12)
    value, grads = compile_grad(fn, wrt=wrt, backend="interpreter").value_and_grad(*args)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    for position, grad in zip(wrt, grads if isinstance(grads, tuple) else (grads,)):
        np.testing.assert_allclose(grad, central_differences(twin, list(args), position),
                                   rtol=1e-6, atol=1e-8)


# --- source text as editors save it ---------------------------------------------------------
@pytest.mark.parametrize("text", [
    TWICE,
    TWICE.replace("\n", "\r\n"),                      # Windows
    TWICE.replace("\n", "\r\n").rstrip(),             # Windows, no final line end
    TWICE.replace("\n", "\r"),                        # old Mac
    "\ufeff" + TWICE.replace("\n", "\r\n"),           # Notepad's byte order mark
    TWICE.replace("    ", "\t"),                      # tabs
    "def f(x: f64[N, 3]):\n    y = x + \\\n        x\n    return sum(y)\n",   # continuation
    "def f(x: f64[N, 3]):\n    y = x \\  \n        * 2\n    return sum(y)\n",
    "def f(x: f64[N, 3]):\n    # a comment with a form feed \f here\n    y = x * 2\n"
    "    return sum(y)\n",
    "def f(x: f64[N, 3]):\n    α = x * 2\n    return sum(α)\n",        # Unicode identifiers
    "def f(x: f64[Länge, 3]):\n    return sum(x) / Länge * Länge * 2\n",
    "def f(x: f64[N, 3]):\n    y = sum(x,\n  axis=0,\n\n  # inside brackets\n"
    "   keepdims=True)\n    return sum(y) * 2\n",
], ids=["lf", "crlf", "crlf-unterminated", "cr", "bom", "tabs", "backslash",
        "backslash-spaces", "form-feed-in-comment", "unicode-name", "unicode-dim",
        "brackets-span-lines"])
def test_source_text_as_editors_save_it_means_what_python_reads(text):
    assert_matches(text, lambda x: np.sum(x * 2), (X,))


def test_error_positions_count_lines_as_the_parser_does():
    # splitlines() also splits at a form feed or a Unicode line separator in a comment: the
    # line shown under the message was then another line than the one the position names.
    err = error_of("def f(x: f64[3]):\n    # page \f break, line \u2028 separator\n"
                   "    y = exp(x, x)\n    return sum(y)\n")
    assert_points_at(err, 3, 9, "y = exp(x, x)")
    err = error_of("def f(x: f64[3]):\r\n    y = x\r\n    return sum(z)\r\n")
    assert_points_at(err, 3, 16, "return sum(z)")


def test_mixing_tabs_and_spaces_is_reported_as_python_does():
    err = error_of("def f(x: f64[N, 3]):\n    y = x * 2\n\treturn sum(y)\n")
    assert "inconsistent use of tabs and spaces" in str(err) and err.line == 3
    err = error_of("def f(x: f64[N, 3]):\n\ty = x\n\tfor i in range(2):\n\t\ty = y * 2\n"
                   "    return sum(y)\n")
    assert "inconsistent use of tabs and spaces" in str(err) and err.line == 5
    # spaces alone that do not line up keep Python's own wording
    err = error_of("def f(x: f64[N, 3]):\n    y = x\n    for i in range(2):\n        y = y\n"
                   "  return sum(y)\n")
    assert "unindent does not match any outer indentation level" in str(err)


def test_a_keyword_cannot_name_a_loop_variable_or_a_function():
    err = error_of("def f(x: f64[N, 3]):\n    for class in x:\n        x = x\n    return sum(x)\n")
    assert_points_at(err, 2, 9, "for class in x:")
    err = error_of("def with(x):\n    return x\n")
    assert "'with' is a Python keyword" in str(err) and err.line == 1


# --- programs against their Python twins -------------------------------------------------------
LSTM_LIKE = """
def cell(h, c, x, W):
    z = tanh(x @ W + h)
    c2 = c * 0.9 + z
    return z * sigmoid(c2), c2

def f(W: f64[3, 3], xs: f64[T, 3], h0: f64[3]):
    h = h0
    c = h0 * 0
    total = 0.0
    for x in xs:
        prev = h
        h, c = cell(h, c, x, W)
        total = total + sum(h * prev)
        for k in range(2):
            c = c + 0.1 * h * k
            total = total + 0.01 * sum(c)
    return total + sum(c) / T
"""


def lstm_like(W, xs, h0):
    def cell(h, c, x, W):
        z = np.tanh(x @ W + h)
        c2 = c * 0.9 + z
        return z / (1 + np.exp(-c2)), c2

    h, c, total = h0, h0 * 0, 0.0
    for x in xs:
        prev = h
        h, c = cell(h, c, x, W)
        total = total + np.sum(h * prev)
        for k in range(2):
            c = c + 0.1 * h * k
            total = total + 0.01 * np.sum(c)
    return total + np.sum(c) / xs.shape[0]


def test_functions_with_tuple_results_in_nested_loops_with_several_carries():
    args = (RNG.normal(size=(3, 3)) * 0.5, RNG.normal(size=(5, 3)), RNG.normal(size=3))
    assert_matches(LSTM_LIKE, lstm_like, args, wrt=(0, 1, 2))


SWAPS = """
def f(a: f64[3], b: f64[3], xs: f64[T, 3]):
    total = 0.0
    for row in xs:
        acc = row * 0
        for k in range(1, 3):
            t = a
            a = b * k
            b = t + a
            acc = acc + row * k * a
        a, b = (b, a * 0.5)
        total = total + sum(acc) + sum(b)
    return total + sum(a * b)
"""


def swaps(a, b, xs):
    total = 0.0
    for row in xs:
        acc = row * 0
        for k in range(1, 3):
            t = a
            a = b * k
            b = t + a
            acc = acc + row * k * a
        a, b = (b, a * 0.5)
        total = total + np.sum(acc) + np.sum(b)
    return total + np.sum(a * b)


def test_carries_are_read_before_and_after_their_update_as_python_reads_them():
    args = (RNG.normal(size=3), RNG.normal(size=3), RNG.normal(size=(4, 3)))
    assert_matches(SWAPS, swaps, args, wrt=(0, 1, 2))
    assert_matches(dsl.format_program(dsl.parse_source(SWAPS)), swaps, args, wrt=(0, 1))


PRECEDENCE = ["-x ** 2", "(-x) ** 2", "2 ** -x ** 2", "x ** y ** 0.5", "(x ** y) ** 0.5",
              "x - (y - 1)", "x / 2 / y", "x / (2 / y)", "-x @ y", "-(x @ y) * 2",
              "x @ y * 2 - x @ y / 3 % 1.5", "x @ (y @ x)", "x // (y % 0.3) + x % 0.3",
              "- - x + + x", "x - -y", "x[0] ** 2 + (-x)[1]", "(x + y)[..., None][0]",
              "2 ** 3 ** 0.5 * x", "x * 1e-3 + x * 5. + x * .5 + x * 10 ** -2",
              "x * pi + (x > inf) * 1", "((x > 1) | (y > 1)) & (x > 0.7)",
              "(x > 1) | (y > 1) & (x > 0.7)", "(x > 1) ^ (y > 1) | ~(x > 0.7)",
              "(x > 1) == (y > 1)", "(x > 1) * 1 + (y <= 1) * 2 - (x != y)"]


@pytest.mark.parametrize("expression", PRECEDENCE)
def test_operators_have_pythons_precedence_also_after_pretty_printing(expression):
    x, y = RNG.uniform(0.5, 1.5, size=(2, 3, 3))
    program = f"def f(x: f64[3, 3], y: f64[3, 3]):\n    return {expression}\n"
    expected = eval(expression, {"x": x, "y": y, "pi": np.pi, "inf": np.inf})
    canonical = dsl.format_program(dsl.parse_source(program))
    for text in (program, canonical):
        fn = dsl.load(text)
        np.testing.assert_array_equal(fn(x, y), expected)
        np.testing.assert_allclose(compile_grad(fn, backend="interpreter")(x, y), expected,
                                   rtol=1e-15)


# --- axes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    ("concatenate([x, x], axis=5)", "axis 5 is out of bounds for an array of dimension 2"),
    ("stack([x, x], axis=3)", "axis 3 is out of bounds for an array of dimension 3"),
    ("concatenate(x, x)", "axis must be an int or a tuple of ints, got an array"),
    ("mean(x, axis=1.5)", "axis must be an int or a tuple of ints, got 1.5"),
])
def test_an_axis_out_of_bounds_or_not_an_int_is_refused_compiled_as_numpy_refuses_it(
        call, message):
    # concatenate(axis=5) of 2-d arrays used to join them along axis 5 % 2 = 1
    err = error_of(f"def f(x: f64[N, 3]):\n    return sum({call})\n", X, compile_it=True)
    assert_points_at(err, 2, 16, f"return sum({call})")
    assert message in str(err)


def test_negative_and_numpy_integer_axes_still_work():
    program = ("def f(x: f64[N, 3]):\n    return sum(concatenate([x, x * 2], axis=-1) * "
               "stack([x, x], axis=-1)[:, :, 0][:, :1])\n")
    assert_matches(program, lambda x: np.sum(np.concatenate([x, x * 2], axis=-1)
                                             * np.stack([x, x], axis=-1)[:, :, 0][:, :1]), (X,))
    grad = compile_grad(lambda x: np.sum(np.sum(x, axis=np.int64(1)) ** 2),
                        backend="interpreter").grad(X)
    np.testing.assert_allclose(grad, 2 * np.sum(X, axis=1, keepdims=True) * np.ones_like(X))


# --- long programs ----------------------------------------------------------------------------
def test_a_sum_of_many_terms_is_parsed_checked_evaluated_and_printed():
    # a + b + c + ... nests as deep as it is long: 250 terms passed Python's recursion limit
    # in the checker, the evaluator and the pretty-printer (a bare RecursionError)
    terms = " + ".join(f"x[{i % 3}] * {i}" for i in range(600))
    program = (f"def helper(x):\n    return {terms}\n\n"
               f"def f(x: f64[3]):\n    return helper(x) + {terms}\n")
    weights = np.array([sum(range(k, 600, 3)) for k in range(3)], dtype=float)
    assert_matches(program, lambda x: 2 * x @ weights, (X[0],))
    assert_matches(dsl.format_program(dsl.parse_source(program)), lambda x: 2 * x @ weights,
                   (X[0],))
    limit = sys.getrecursionlimit()
    dsl.load(program)(X[0])
    assert sys.getrecursionlimit() == limit  # raised only while visiting


def test_a_misspelt_keyword_is_named_before_the_argument_it_leaves_missing():
    program = ("def g(x, scale: f64[]):\n    return sum(x) * scale\n\n"
               "def f(x: f64[N, 3]):\n    return g(x, scal=2.0)\n")
    err = error_of(program)  # said: g() missing required argument 'scale'
    assert_points_at(err, 5, 12, "return g(x, scal=2.0)")
    assert "g() got an unexpected keyword argument 'scal'; did you mean 'scale'?" in str(err)


# --- compiled by numba (one kernel) -------------------------------------------------------------
def test_unicode_names_reach_numbas_generated_code():
    program = ("def f(wß: f64[3], xs: f64[T, 3]):\n    α = wß * 2\n    état = 0.0\n"
               "    for ligne in xs:\n        état = état + sum(tanh(ligne * α))\n"
               "    return état / T\n")

    def twin(w, xs):
        return sum(np.sum(np.tanh(row * w * 2)) for row in xs) / len(xs)

    loss = compile_grad(program)
    value, grad = loss.value_and_grad(X[0], X)
    np.testing.assert_allclose(value, twin(X[0], X), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(twin, [X[0], X], 0), rtol=1e-6)
    assert "état = 0.0" in loss.source("value_and_grad")
