"""The pretty-printer: canonical text that parses back to the same program and the same IR."""

from __future__ import annotations

import numpy as np
import pytest
from test_dsl_cases import EQUIVALENTS, example_paths, random_inputs, without_locations

from compiler import compile_grad, dsl
from compiler.dsl.evaluate import _Evaluator
from compiler.dsl.parser import tree_rules
from compiler.dsl.pretty import _Printer

# Trees that their parent rule reads itself, so the evaluator has no method for them.
READ_BY_PARENT = {"start", "function", "parameters", "parameter", "type", "shape", "static_dim",
                  "symbolic_dim", "targets", "arguments", "keyword", "subscripts"}


def test_every_tree_of_the_grammar_has_a_printer_and_an_evaluator_method():
    rules = tree_rules()
    assert {"binary", "call", "subscript", "assignment", "for_stmt"} <= rules
    assert [r for r in sorted(rules) if not hasattr(_Printer, r)] == []
    assert [r for r in sorted(rules - READ_BY_PARENT) if not hasattr(_Evaluator, r)] == []


def ir_of(source, wrt, inputs) -> dict[str, str]:
    compiled = compile_grad(source, wrt=wrt, backend="interpreter")
    compiled.specialize(**inputs)
    return {kind: without_locations(compiled.ir(kind)) for kind in ("forward", "value_and_grad")}


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_printing_then_parsing_an_example_gives_the_same_ir(path):
    printed = dsl.format_program(dsl.parse_source(path))
    assert dsl.format_program(dsl.parse(printed)) == printed, "printing is idempotent"
    wrt = EQUIVALENTS[path.name][1]
    inputs = random_inputs(dsl.load(path).dsl_params, n=6)
    assert ir_of(printed, wrt, inputs) == ir_of(path, wrt, inputs)


def test_canonical_text():
    messy = """
# a comment that the canonical form drops
def  f( x :float32[ N,3 ] , w: f32[3,],s:f32[] ) :
    y=(( x@w ))+1.   # trailing comment
    a , b = (y , 2e-3)
    return sum( y*b ,axis = 0 , keepdims=True) + a[ 1: , ...][::2][0] - (- s) ** 2 + 'x'
"""
    assert dsl.format_program(dsl.parse(messy)) == (
        "def f(x: f32[N, 3], w: f32[3], s: f32[]):\n"
        "    y = x @ w + 1.0\n"
        "    a, b = (y, 0.002)\n"
        '    return sum(y * b, axis=0, keepdims=True) + a[1:, ...][::2][0] - (-s) ** 2 + "x"\n')


def test_canonical_loops_indent_each_level():
    messy = """
def f(x: f64[N, 3], w:f64[3]):
    h = w
    total = 0.
    for  t  in range( 1,N//2 ) :   # a counted loop
        for row in x[ :: 2] :
          h = tanh( h*row )
        # the inner loop has ended
        total = total+t*sum(h)
    return total
"""
    canonical = (
        "def f(x: f64[N, 3], w: f64[3]):\n"
        "    h = w\n"
        "    total = 0.0\n"
        "    for t in range(1, N // 2):\n"
        "        for row in x[::2]:\n"
        "            h = tanh(h * row)\n"
        "        total = total + t * sum(h)\n"
        "    return total\n")
    assert dsl.format_program(dsl.parse(messy)) == canonical
    assert dsl.format_program(dsl.parse(canonical)) == canonical
    x, w = np.random.default_rng(1).standard_normal((7, 3)), np.array([0.5, -1.0, 2.0])
    assert dsl.load(canonical)(x, w) == dsl.load(messy)(x, w)
    assert ir_of(canonical, ("w",), {"x": x, "w": w}) == ir_of(messy, ("w",), {"x": x, "w": w})


@pytest.mark.parametrize("expression", [
    "(a - b) - c", "a - (b - c)", "a / (b * c)", "(a / b) * c", "-a ** 2", "(-a) ** 2",
    "a ** -b", "a ** b ** c", "(a ** b) ** c", "(a + b) @ c", "a + b @ c",
    "where((a < b) == (b < c), a, b)", "where(a < (b == c), a, c)",
    "where((a > 0) & (b > 0) | ~(c > 0), a, b)", "where((a > 0) | (b > 0) & (c > 0), a, b)",
    "where(((a > 0) ^ (b > 0)) & (c > 0), a, b)", "-(a + b)", "+a - -b", "(a,)[0] + b[(1,)]",
])
def test_printing_keeps_the_meaning_of_every_precedence(expression):
    program = f"def f(a, b, c):\n    return {expression}\n"
    printed = dsl.format_program(dsl.parse(program))
    rng = np.random.default_rng(0)
    a, b, c = (rng.uniform(0.5, 1.5, (2, 2)) for _ in range(3))
    np.testing.assert_array_equal(dsl.load(printed)(a, b, c), dsl.load(program)(a, b, c))
    assert printed.count("(") <= program.count("(")


@pytest.mark.parametrize(("expression", "canonical"), [
    ("(a - b) - c", "a - b - c"), ("(a / b) * c", "a / b * c"), ("((a))", "a"),
    ("(-a) ** 2", "(-a) ** 2"), ("(a ** b) ** c", "(a ** b) ** c"),
    ("a ** (b ** c)", "a ** b ** c"),
    ("(a < b) == c", "(a < b) == c"), ("a & (b & c)", "a & (b & c)"), ("(a & b) & c", "a & b & c"),
])
def test_printing_drops_only_redundant_parentheses(expression, canonical):
    printed = dsl.format_program(dsl.parse(f"def f(a, b, c):\n    return {expression}\n"))
    assert printed.splitlines()[1] == f"    return {canonical}"
