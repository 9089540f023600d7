"""DSL mistakes are reported at their line and column, with the offending line and a caret."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import GradfuseError, TraceError, compile_grad, dsl
from compiler.dsl import DslError


def error_of(program: str, *args, compile_it: bool = False) -> DslError:
    """The DslError that loading `program` (and, given args, calling it) raises."""
    with pytest.raises(DslError) as caught:
        fn = dsl.load(program)
        if compile_it:
            compile_grad(fn, backend="interpreter")(*args)
        elif args:
            fn(*args)
    return caught.value


def assert_points_at(err: DslError, line: int, column: int, code: str) -> None:
    """The message names <dsl>:line:column, shows the line, and puts a caret under the column."""
    text = str(err)
    header, shown, caret = text.splitlines()[:3]
    assert header.startswith(f"<dsl>:{line}:{column}: "), text
    assert shown.strip() == code, text
    assert caret.index("^") == shown.index(code[0]) + column - 1 - (
        len(err.line_text) - len(err.line_text.lstrip())), text
    assert (err.line, err.column) == (line, column)
    assert str(err.loc) == f"<dsl>:{line}"


def test_dsl_errors_are_gradfuse_trace_errors():
    assert issubclass(DslError, TraceError) and issubclass(DslError, GradfuseError)


# --- syntax ------------------------------------------------------------------------------
def test_unexpected_token_says_what_was_expected():
    err = error_of("def f(x):\n    y = x +\n    return y\n")
    assert err.reason == "unexpected end of line; expected an expression"
    assert_points_at(err, 2, 12, "y = x +")


def test_missing_operator_lists_the_possibilities():
    err = error_of("def f(x, w):\n    y = x w\n    return y\n")
    assert err.reason.startswith("unexpected name 'w'; expected an operator")
    assert "'('" in err.reason and "a new line" in err.reason
    assert_points_at(err, 2, 11, "y = x w")


def test_unclosed_parenthesis_points_at_it():
    err = error_of("def f(x):\n    y = sum((x + 1)\n    return y\n")
    assert err.reason == "'(' was never closed"
    assert_points_at(err, 2, 12, "y = sum((x + 1)")


def test_unexpected_character():
    err = error_of("def f(x):\n    return x $ 2\n")
    assert err.reason == "unexpected character '$'"
    assert_points_at(err, 2, 14, "return x $ 2")


def test_control_flow_suggests_where():
    err = error_of("def f(x):\n    if x > 0:\n        x = -x\n    return x\n")
    assert "'if' statements are not part of the DSL" in err.reason
    assert "where(condition, a, b)" in err.reason
    assert_points_at(err, 2, 5, "if x > 0:")


def test_while_suggests_a_counted_loop():
    err = error_of("def f(x):\n    while x > 0:\n        x = x - 1\n    return x\n")
    assert err.reason.startswith("'while' loops are not part of the DSL")
    assert "for i in range(n):" in err.reason
    assert_points_at(err, 2, 5, "while x > 0:")
    err = error_of("def f(x):\n    for i in range(3):\n        x = x + 1\n        break\n"
                   "    return x\n")
    assert err.reason == "'break' is not part of the DSL: a loop runs all its steps"
    assert_points_at(err, 4, 9, "break")


@pytest.mark.parametrize("line, column, reason", [
    # each was "unexpected ..." with no word of what to write instead
    ("y = x.T", 10, "attributes and methods are not part of the DSL: call functions instead "
                    "(transpose(x), not x.T"),
    ("y = x.sum()", 10, "attributes and methods are not part of the DSL"),
    ("y += x", 7, "augmented assignment ('+=') is not part of the DSL: write y = y + ..."),
    ("y **= 2", 7, "augmented assignment ('**=') is not part of the DSL: write y = y ** ..."),
    ("y[0] = 1.0", 6, "assigning into an array is not part of the DSL"),
    ("y = where(x > 0 and x < 1, x, 0.0)", 21, "'and' is not part of the DSL: combine "
                                               "conditions elementwise with & (and)"),
    ("y = where(not x, x, 0.0)", 15, "'not' is not part of the DSL"),
    ("y = where(0 < x < 1, x, 0.0)", 21, "comparisons do not chain in the DSL: write "
                                         "(a < x) & (x < b)"),
    ("g = lambda z: z", 9, "'lambda' is not part of the DSL: define the function with def"),
    ("y = x << 1", 11, "the shift operator '<<' is not part of the DSL"),
    ("y = x >> 1", 11, "the shift operator '>>' is not part of the DSL"),
    ("y = x if True else x", 11, "conditional expressions are not part of the DSL: choose "
                                 "values elementwise with where"),
    ("lambda = x", 5, "'lambda' is a Python keyword; choose another name"),
    ("α += 1", 7, "augmented assignment ('+=') is not part of the DSL: write α = α + ..."),
])
def test_python_the_dsl_lacks_says_what_to_write(line, column, reason):
    err = error_of(f"def f(x):\n    y = x\n    {line}\n    return y\n")
    assert reason in err.reason
    assert_points_at(err, 3, column, line)


def test_bad_indentation():
    err = error_of("def f(x):\n        y = x\n    return y\n")
    assert err.reason == "unindent does not match any outer indentation level"
    assert_points_at(err, 3, 5, "return y")
    err = error_of("def f(x):\nreturn x\n")
    assert err.reason == "expected an indented block after the function header on line 1"
    err = error_of("def f(x):\n    for i in range(2):\n    x = x + 1\n    return x\n")
    assert err.reason == "expected an indented block after the loop header on line 2"
    assert_points_at(err, 3, 5, "x = x + 1")


# --- names and calls -----------------------------------------------------------------------
def test_unknown_name_suggests_a_close_one():
    err = error_of("def f(x):\n    hidden = x * 2\n    return sum(hiden)\n")
    assert err.reason == "unknown name 'hiden'; did you mean 'hidden'?"
    assert_points_at(err, 3, 16, "return sum(hiden)")


def test_a_name_used_before_it_is_bound_is_unknown():
    err = error_of("def f(x):\n    y = z + x\n    z = x\n    return y\n")
    assert err.reason == "unknown name 'z'"


def test_unknown_function_suggests_a_close_one():
    err = error_of("def f(x: f32[N, 3]):\n    p = sofmax(x, axis=1)\n    return sum(p)\n")
    assert err.reason == "unknown function 'sofmax'; did you mean 'softmax'?"
    assert_points_at(err, 2, 9, "p = sofmax(x, axis=1)")


def test_the_programs_own_functions_are_suggested():
    err = error_of("def layer(x):\n    return x\n\ndef f(x):\n    return sum(layr(x))\n")
    assert err.reason == "unknown function 'layr'; did you mean 'layer'?"


def test_wrong_argument_count_of_an_op():
    err = error_of("def f(x):\n    return sum(exp(x, 2))\n")
    assert err.reason == "exp() takes 1 positional argument but 2 were given"
    assert_points_at(err, 2, 16, "return sum(exp(x, 2))")
    err = error_of("def f(x):\n    return mse_loss(relu(x))\n")
    assert err.reason == "mse_loss() missing required argument 'target'"
    err = error_of("def f(x):\n    return sum(x, 0, None, None, False, 0.0, True, 1)\n")
    assert err.reason == "sum() takes from 1 to 7 positional arguments but 8 were given"


def test_wrong_argument_count_of_a_dsl_function():
    program = ("def scale(x, factor):\n    return x * factor\n\n"
               "def f(x):\n    return sum(scale(x))\n")
    err = error_of(program)
    assert err.reason == "scale() missing required argument 'factor'"
    assert_points_at(err, 5, 16, "return sum(scale(x))")
    err = error_of(program.replace("scale(x)", "scale(x, 2, 3)"))
    assert err.reason == "scale() takes 2 positional arguments but 3 were given"


def test_unknown_keyword_suggests_a_close_one():
    err = error_of("def f(x):\n    return sum(x, axes=0)\n")
    assert err.reason == "sum() got an unexpected keyword argument 'axes'; did you mean 'axis'?"


def test_recursion_is_refused():
    err = error_of("def f(x):\n    return g(x)\n\ndef g(x):\n    return f(x)\n")
    assert err.reason.startswith("recursive call: f -> g -> f")
    assert_points_at(err, 2, 12, "return g(x)")


def test_a_function_must_end_with_its_return():
    assert error_of("def f(x):\n    y = x\n").reason == "function 'f' does not end with a return " \
                                                       "statement"
    err = error_of("def f(x):\n    return x\n    y = x\n")
    assert err.reason == "unreachable statement after return"
    assert_points_at(err, 3, 5, "y = x")


def test_unknown_dtype_suggests_a_close_one():
    err = error_of("def f(x: f23[N]):\n    return x\n")
    assert err.reason.startswith("unknown dtype 'f23'; did you mean 'f32'?")


# --- loops -------------------------------------------------------------------------------------
def loop(body: str, header: str = "for i in range(3):", before: str = "    y = x\n",
         after: str = "    return y\n", params: str = "x") -> str:
    """A function whose line 3 (with the default `before`) is the loop header."""
    return f"def f({params}):\n{before}    {header}\n{body}{after}"


def test_a_name_first_bound_in_a_loop_is_unknown_after_it():
    err = error_of(loop("        a = y * 2\n        y = a + 1\n", after="    return y + a\n"))
    assert err.reason.startswith("'a' is only defined inside the loop at line 3: it is first "
                                 "bound there, and names bound inside a loop are local to it")
    assert_points_at(err, 6, 16, "return y + a")
    err = error_of(loop("        y = y + i\n", after="    return y * i\n"))
    assert err.reason.startswith("'i' is only defined inside the loop at line 3: it is the "
                                 "loop variable there")
    assert_points_at(err, 5, 16, "return y * i")


def test_a_name_of_an_inner_loop_is_unknown_in_the_outer_one():
    err = error_of(loop("        for j in range(2):\n            t = y * 2\n            y = t\n"
                        "        y = y + t\n"))
    assert err.reason.startswith("'t' is only defined inside the loop at line 4")
    assert_points_at(err, 7, 17, "y = y + t")


def test_a_loop_that_carries_nothing_is_an_error():
    err = error_of(loop("        a = y * 2\n"))
    assert err.reason.startswith("this loop changes nothing: its body assigns no name bound "
                                 "before the loop")
    assert_points_at(err, 3, 5, "for i in range(3):")


def test_an_accumulator_not_bound_before_the_loop_is_unknown():
    err = error_of(loop("        total = total + y\n        y = y + 1\n"))
    assert err.reason == ("unknown name 'total'; the loop assigns 'total' but it is not bound "
                          "before the loop: bind it before the loop to carry it from step to "
                          "step")
    assert_points_at(err, 4, 17, "total = total + y")


def test_the_loop_variable_cannot_be_assigned_or_shadow_a_name():
    err = error_of(loop("        y = y + i\n        i = i + 1\n"))
    assert err.reason == ("cannot assign to the loop variable 'i': it holds the step's number; "
                          "use another name")
    assert_points_at(err, 5, 9, "i = i + 1")
    err = error_of(loop("        y = y + x\n", header="for x in y:"))
    assert err.reason == ("the loop variable 'x' already names a value bound before the loop; "
                          "choose another name")
    assert_points_at(err, 3, 9, "for x in y:")
    err = error_of(loop("        y = y + r\n        r = y\n", header="for r in x:"))
    assert err.reason.endswith("it holds the step's row; use another name")


def test_a_loop_body_cannot_return():
    err = error_of(loop("        y = y + 1\n        return y\n"))
    assert err.reason.startswith("a loop body cannot return")
    assert_points_at(err, 5, 9, "return y")


@pytest.mark.parametrize(("header", "column", "reason"), [
    ("for i in range(n):", 20, "'n' is a parameter, whose value is known only when the function "
                               "runs"),
    ("for i in range(2.5):", 20, "2.5 is not a whole number"),
    ("for i in range(N / 2):", 22, "'/' does not keep whole numbers whole (// divides whole "
                                   "numbers)"),
    ("for i in range(sum(x)):", 20, "this expression is computed when the function runs"),
    ("for i in range(1, y):", 23, "'y' is computed when the function runs"),
])
def test_range_bounds_must_be_known_when_tracing(header, column, reason):
    err = error_of(loop("        y = y + 1\n", header=header, params="x: f64[N], n"))
    assert err.reason == ("the bounds of range() must be known when the function is traced: "
                          "whole numbers, dimensions (such as N) and integer arithmetic on them "
                          f"(+ - * // % **); {reason}")
    assert_points_at(err, 3, column, header)


def test_range_bounds_that_change_in_a_loop_are_not_known():
    err = error_of(loop("        for j in range(i):\n            y = y + 1\n"))
    assert err.reason.endswith("'i' is a loop variable, which differs at each step")
    assert_points_at(err, 4, 24, "for j in range(i):")
    err = error_of(loop("        n = n + 1\n        for j in range(n):\n            y = y + 1\n",
                        before="    y = x\n    n = 2\n"))
    assert err.reason.endswith("'n' is carried by a loop, so it differs at each step")
    # let-bindings of integer arithmetic on sizes are known
    dsl.load(loop("        y = y + 1\n", header="for i in range(m):",
                  before="    y = x\n    m = N // 2 - 1\n", params="x: f64[N]"))


@pytest.mark.parametrize(("header", "reason", "column"), [
    ("for i in range(0, 3, 1):", "range() takes 1 or 2 positional arguments here: range(stop) "
                                 "or range(start, stop)", 14),
    ("for i in range(stop=3):", "range() takes 1 or 2 positional arguments here: range(stop) "
                                "or range(start, stop)", 14),
    ("for w in (x, y):", "a loop runs over range(...) or over the rows of one array, not over "
                         "a tuple; stack([...]) arrays of one shape to loop over them", 14),
])
def test_what_a_loop_runs_over(header, reason, column):
    err = error_of(loop("        y = y + 1\n", header=header))
    assert err.reason == reason
    assert_points_at(err, 3, column, header)


def test_range_is_only_a_loops_counter():
    err = error_of("def f(x):\n    return x + range(3)\n")
    assert err.reason == "range() only counts the steps of a loop, as in 'for i in range(n):'"
    err = error_of("def range(x):\n    return x\n")
    assert err.reason.startswith("a function cannot be named 'range'")


def test_a_carry_that_changes_shape_points_at_its_assignment():
    program = loop("        y = y + row\n", header="for row in x:", before="    y = 0.0\n",
                   after="    return sum(y)\n", params="x: f64[N, 3]")
    for compile_it in (False, True):
        err = error_of(program, np.ones((4, 3)), compile_it=compile_it)
        assert err.reason == ("'y' is carried from step to step of the loop at line 3, so each "
                              "step must leave it with the type it started with: f64[] before "
                              "the step, f64[3] after it")
        assert_points_at(err, 4, 9, "y = y + row")


def test_a_loop_over_a_scalar_or_with_a_fractional_bound_fails_where_it_is_written():
    program = loop("        y = y + r\n", header="for r in x:", params="x")
    err = error_of(program, 2.0)
    assert err.reason == ("cannot loop over a scalar (f64[]): a loop runs over range(...) or "
                          "over the rows of an array")
    assert_points_at(err, 3, 14, "for r in x:")
    err = error_of(loop("        y = y + 1\n", header="for i in range(2 ** -1):"), 1.0,
                   compile_it=True)
    assert err.reason == "the bounds of range() must be whole numbers; got 0.5"
    assert_points_at(err, 3, 20, "for i in range(2 ** -1):")


def test_an_error_in_a_loop_body_points_at_its_line_when_tracing():
    program = loop("        y = y @ w\n", params="x: f64[3], w: f64[2, 2]", after="    "
                   "return sum(y)\n")
    err = error_of(program, np.ones(3), np.ones((2, 2)), compile_it=True)
    assert err.reason.startswith("matmul (@): shapes (3,) and (2, 2) are not aligned")
    assert_points_at(err, 4, 15, "y = y @ w")


# --- values that do not fit ------------------------------------------------------------------
def test_shape_mismatch_while_tracing_points_at_the_operator():
    program = "def f(w: f64[3], x: f64[N, 4]):\n    h = x @ w\n    return sum(h)\n"
    err = error_of(program, np.ones(3), np.ones((5, 4)), compile_it=True)
    assert err.reason == ("matmul (@): shapes (5, 4) and (3,) are not aligned: 4 (dim 1) != 3 "
                          "(dim 0)")
    assert_points_at(err, 2, 11, "h = x @ w")


def test_shape_mismatch_when_run_eagerly_points_at_the_operator():
    err = error_of("def f(a, b):\n    return sum(a + b)\n", np.ones(3), np.ones(4))
    assert "operands could not be broadcast together with shapes (3,) (4,)" in err.reason
    assert_points_at(err, 2, 18, "return sum(a + b)")


def test_an_error_inside_a_called_function_says_where_it_was_called():
    program = ("def g(a, b):\n    return a * b\n\n"
               "def f(w: f64[4], x: f64[N, 4]):\n    return sum(g(x @ w, w))\n")
    err = error_of(program, np.ones(4), np.ones((5, 4)), compile_it=True)
    assert err.reason == "mul (*): shapes (5,) and (4,) cannot be broadcast together"
    assert_points_at(err, 2, 14, "return a * b")
    assert err.notes == ["in g(), called from f() at <dsl>:5:16"]


def test_argument_dtype_must_match_its_annotation():
    program = "def f(w: f32[3], x: f32[N, 3]):\n    return sum(x @ w)\n"
    err = error_of(program, np.ones(3), np.ones((4, 3), np.float32), compile_it=True)
    assert err.reason == "argument 'w' of f() holds float64 values, but its annotation says f32[3]"
    assert_points_at(err, 1, 7, "def f(w: f32[3], x: f32[N, 3]):")


def test_argument_rank_and_static_dims_must_match():
    program = "def f(w: f64[3], x: f64[N, 3]):\n    return sum(x @ w)\n"
    err = error_of(program, np.ones(3), np.ones(3))
    assert err.reason == "argument 'x' of f() has shape (3,), but its annotation says f64[N, 3]"
    err = error_of(program, np.ones(2), np.ones((4, 3)), compile_it=True)
    assert err.reason == ("argument 'w' of f() has shape (2,), but its annotation says f64[3] "
                          "(axis 0 should be 3)")


def test_a_compiled_function_called_with_wrong_arguments_points_at_its_definition():
    program = "def f(w: f64[3], x: f64[N, 3]):\n    return sum(x @ w)\n"
    definition = "def f(w: f64[3], x: f64[N, 3]):"
    err = error_of(program, np.ones(3), compile_it=True)
    assert err.reason == "f() missing required argument 'x'"
    assert_points_at(err, 1, 5, definition)
    assert str(err) == str(error_of(program, np.ones(3)))  # as the uncompiled function says
    err = error_of(program, np.ones(3), np.ones((2, 3)), np.ones(3), compile_it=True)
    assert err.reason == "f() takes 2 positional arguments but 3 were given"
    assert_points_at(err, 1, 5, definition)
    f = compile_grad(dsl.load(program), backend="interpreter")
    with pytest.raises(DslError) as caught:
        f.grad(np.ones(3), w=np.ones(3))
    assert caught.value.reason == "f() got multiple values for argument 'w'"
    assert (caught.value.line, caught.value.column) == (1, 5)
    with pytest.raises(DslError) as caught:
        f(np.ones(3), np.ones((2, 3)), wieght=np.ones(3))
    assert caught.value.reason == "f() got an unexpected keyword argument 'wieght'"
    # Arguments that fit still bind, by position or by name.
    assert f(x=np.ones((2, 3)), w=np.arange(3.0)) == 6.0
    np.testing.assert_allclose(f.grad(np.arange(3.0), x=np.ones((2, 3))), [2.0, 2.0, 2.0])


def test_a_symbolic_dimension_must_agree_across_arguments():
    program = "def f(x: f64[N, 3], y: f64[N]):\n    return sum(x) + sum(y)\n"
    for compile_it in (False, True):
        err = error_of(program, np.ones((4, 3)), np.ones(5), compile_it=compile_it)
        assert err.reason == "dimension N of f() is 4 in 'x' (axis 0) but 5 in 'y' (axis 0)"
        assert_points_at(err, 1, 21, "def f(x: f64[N, 3], y: f64[N]):")


def test_unsupported_operation_is_located():
    err = error_of("def f(x):\n    return sum(x & 2)\n", np.ones(3), compile_it=True)
    assert "&, | and ^ are supported on boolean arrays only" in err.reason
    assert_points_at(err, 2, 18, "return sum(x & 2)")


def test_compile_grad_reports_dsl_errors_with_the_file(tmp_path):
    path = tmp_path / "model.gf"
    path.write_text("def loss(x):\n    return mean(relu(x) + sofmax(x))\n")
    with pytest.raises(DslError) as caught:
        compile_grad(path)
    assert str(caught.value).startswith(f"{path}:2:27: unknown function 'sofmax'")
    assert caught.value.loc.short_filename == "model.gf"
