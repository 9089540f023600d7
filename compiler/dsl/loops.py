"""The DSL's `for` statement: its parts, and which names its body carries from step to step.

    x = x0
    for step in range(100):        # a counted loop: compiler.fori_loop
        v = v - dt * x             # v and x were bound before the loop: carries
        x = x + dt * v
    for row in xs:                 # a loop over the rows of an array: compiler.scan
        h = tanh(h @ W + row)

A name that the body assigns and that was bound before the loop is a carry: each
step starts from the value the step before left, and after the loop the name holds
the last one. A name first bound inside the body is local to it, and the loop
variable too. Names bound before the loop and only read inside are shared by every
step. The static checks (resolve.py) and the evaluator (evaluate.py) both read a
loop through `ForLoop`, so they agree on which names are carries.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from lark import Token, Tree

RANGE = "range"  # the counted loop's iterable: range(n) or range(start, stop)


@dataclass(frozen=True)
class ForLoop:
    """One `for NAME in ITERABLE:` statement and its body."""

    tree: Tree
    variable: Token
    iterable: Tree
    body: list[Tree]

    @classmethod
    def of(cls, tree: Tree) -> ForLoop:
        variable, iterable, *body = tree.children
        return cls(tree, variable, iterable, body)

    @property
    def line(self) -> int:
        return self.tree.meta.line

    @property
    def range_arguments(self) -> list[Tree] | None:
        """The arguments of `range(...)` when the loop counts; None when it runs over rows."""
        iterable = self.iterable
        if isinstance(iterable, Tree) and iterable.data == "call" and \
                iterable.children[0] == RANGE:
            arguments = iterable.children[1]
            return [a for a in arguments.children if a is not None] if arguments else []
        return None

    def assignments(self) -> dict[str, Token]:
        """Each name the body assigns (in nested loops too), at its first assignment, in order."""
        found: dict[str, Token] = {}
        _collect_assignments(self.body, found)
        return found

    def carries(self, bound: Container[str]) -> list[str]:
        """The names the body assigns that are bound before the loop, in order of assignment."""
        return [name for name in self.assignments() if name in bound]


def _collect_assignments(statements: list[Tree], found: dict[str, Token]) -> None:
    for statement in statements:
        if statement.data == "assignment":
            for token in statement.children[0].children:
                found.setdefault(str(token), token)
        elif statement.data == "for_stmt":
            _collect_assignments(ForLoop.of(statement).body, found)
