"""The pretty-printer: a parsed program back as canonical DSL text.

Canonical means: four-space indents (one more level per loop), one blank line
between functions, spaces around binary operators (none around `=` of a keyword
argument), short dtype names (`f32`), numbers as Python prints them,
double-quoted strings, and only the parentheses that precedence needs. Comments
are not kept. Parsing the output gives the same program, so it traces to the
same IR.
"""

from __future__ import annotations

from dataclasses import dataclass

from lark import Token, Transformer

from compiler.dsl.evaluate import number_value
from compiler.dsl.parser import CANONICAL_DTYPE, DTYPES, Program

INDENT = "    "

# Binding strength, loosest first; atoms, calls and subscripts bind tightest.
COMPARISON, BITOR, BITXOR, BITAND, ARITH, TERM, UNARY, POWER, PRIMARY = range(1, 10)
_LEVEL = {"|": BITOR, "^": BITXOR, "&": BITAND, "+": ARITH, "-": ARITH, "*": TERM, "/": TERM,
          "//": TERM, "%": TERM, "@": TERM, "**": POWER}


@dataclass(frozen=True)
class _Expr:
    text: str
    level: int

    def at_least(self, level: int) -> str:
        """The text, parenthesized if it binds more loosely than `level` needs."""
        return self.text if self.level >= level else f"({self.text})"


def format_program(program: Program) -> str:
    with program.recursion_room():
        return _Printer().transform(program.tree)


def _block(header: str, statements: list[str]) -> str:
    """A header line and its statements, indented one level (a statement may be a block)."""
    lines = [line for statement in statements for line in statement.splitlines()]
    return "\n".join([header, *(INDENT + line for line in lines)])


class _Printer(Transformer):
    """Bottom-up: each rule gets its children already printed."""

    # --- functions and statements ---------------------------------------------------------
    def start(self, functions: list[str]) -> str:
        return "\n\n".join(functions) + "\n"

    def function(self, children: list) -> str:
        name, parameters, *body = children
        return _block(f"def {name}({', '.join(parameters or [])}):", body)

    def parameters(self, children: list) -> list[str]:
        return [c for c in children if c is not None]

    def parameter(self, children: list) -> str:
        name, annotation = children
        return str(name) if annotation is None else f"{name}: {annotation}"

    def type(self, children: list) -> str:
        dtype, shape = children
        return CANONICAL_DTYPE[DTYPES[dtype]] + (shape if shape is not None else "[]")

    def shape(self, children: list) -> str:
        return "[" + ", ".join(c for c in children if c is not None) + "]"

    def static_dim(self, children: list) -> str:
        return str(int(children[0]))

    def symbolic_dim(self, children: list) -> str:
        return str(children[0])

    def assignment(self, children: list) -> str:
        targets, value = children
        return f"{targets} = {value.text}"

    def for_stmt(self, children: list) -> str:
        variable, iterable, *body = children
        return _block(f"for {variable} in {iterable.text}:", body)

    def targets(self, names: list[Token]) -> str:
        return ", ".join(names)

    def return_stmt(self, values: list[_Expr]) -> str:
        return "return " + ", ".join(v.text for v in values)

    # --- expressions -----------------------------------------------------------------------
    def binary(self, children: list) -> _Expr:
        left, op, right = children
        level = _LEVEL.get(op, COMPARISON)
        if level == POWER:  # right-associative: primary ** factor
            return _Expr(f"{left.at_least(PRIMARY)} ** {right.at_least(UNARY)}", POWER)
        if level == COMPARISON:  # comparisons do not chain: both sides bind tighter
            return _Expr(f"{left.at_least(BITOR)} {op} {right.at_least(BITOR)}", COMPARISON)
        return _Expr(f"{left.at_least(level)} {op} {right.at_least(level + 1)}", level)

    def unary(self, children: list) -> _Expr:
        op, operand = children
        return _Expr(f"{op}{operand.at_least(UNARY)}", UNARY)

    def call(self, children: list) -> _Expr:
        name, arguments = children
        return _Expr(f"{name}({', '.join(arguments or [])})", PRIMARY)

    def arguments(self, children: list) -> list[str]:
        return [c if isinstance(c, str) else c.text for c in children if c is not None]

    def keyword(self, children: list) -> str:
        name, value = children
        return f"{name}={value.text}"

    def subscript(self, children: list) -> _Expr:
        target, indices = children
        return _Expr(f"{target.at_least(PRIMARY)}[{indices}]", PRIMARY)

    def subscripts(self, children: list) -> str:
        return ", ".join(c if isinstance(c, str) else c.text for c in children if c is not None)

    def slice(self, children: list) -> str:
        start, stop, step = (c.text if c is not None else "" for c in children)
        return f"{start}:{stop}" + (f":{step}" if step else "")

    def name(self, children: list) -> _Expr:
        return _Expr(str(children[0]), PRIMARY)

    def number(self, children: list) -> _Expr:
        return _Expr(repr(number_value(children[0])), PRIMARY)

    def string(self, children: list) -> _Expr:
        value = children[0][1:-1]
        return _Expr(f"'{value}'" if '"' in value else f'"{value}"', PRIMARY)

    def ellipsis(self, children: list) -> _Expr:
        return _Expr("...", PRIMARY)

    def tuple(self, children: list) -> _Expr:
        items = [c.text for c in children if c is not None]
        return _Expr("(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")", PRIMARY)

    def list(self, children: list) -> _Expr:
        return _Expr("[" + ", ".join(c.text for c in children if c is not None) + "]", PRIMARY)
