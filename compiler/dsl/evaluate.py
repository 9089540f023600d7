"""Evaluating DSL functions: a lark Interpreter that applies Python's operators and NumPy's
functions to the values it is given.

On traced values that builds the same IR as tracing the equivalent Python
function, because it makes the very same calls (`a @ b` is `operator.matmul`,
`mean(x)` is `np.mean`); on arrays it computes eagerly. While tracing, each
operation is tagged with its DSL line (the builder's `loc_override`), so errors
and generated-code comments cite `model.gf:3`, and let-bound names become node
names, so generated code reads `h` and `pred`.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lark import Token, Tree
from lark.visitors import Interpreter

from compiler.dsl import library
from compiler.dsl.annotations import check_arguments
from compiler.dsl.errors import DslError
from compiler.dsl.parser import FunctionDef, Program
from compiler.errors import GradfuseError
from compiler.ir import Node
from compiler.tracer import Tracer, current_builder

BINARY: dict[str, Callable] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "@": operator.matmul, "**": operator.pow,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne, "&": operator.and_, "|": operator.or_,
    "^": operator.xor,
}
UNARY: dict[str, Callable] = {"-": operator.neg, "+": operator.pos, "~": operator.invert}


@dataclass
class Naming:
    """The call depth at which each node got its name: the outermost name wins, so `h` in the
    caller beats `x` in a helper, as the tracer's name collector decides for Python code."""

    depths: dict[int, int] = field(default_factory=dict)

    def name(self, node: Node, name: str, depth: int) -> None:
        if node.name is None or self.depths.get(node.id, -1) > depth:
            node.name = name
            self.depths[node.id] = depth


def bind_arguments(program: Program, function: FunctionDef, args: tuple,
                   kwargs: dict) -> inspect.BoundArguments:
    """Bind a call's arguments to `function`'s parameters; a call that does not fit is a
    DslError at the function's definition (where its parameters are written)."""
    try:
        return function.signature().bind(*args, **kwargs)
    except TypeError:
        problem = library.argument_problem(function.name, function.signature(), len(args),
                                           list(kwargs))
        raise program.source.error_at(problem, function.name_token) from None


def call_function(program: Program, function: FunctionDef, args: tuple, kwargs: dict,
                  depth: int = 0, naming: Naming | None = None) -> Any:
    """Evaluate `function` on arguments, after checking them against its annotations."""
    naming = naming if naming is not None else Naming()
    bound = bind_arguments(program, function, args, kwargs)
    values = [bound.arguments[p.name] for p in function.params]
    env: dict[str, Any] = check_arguments(program.source, function, values)
    env.update(bound.arguments)
    if depth > 0:  # a helper's parameters name the values passed in, unless named already
        for param, value in zip(function.params, values):
            if isinstance(value, Tracer):
                naming.name(value.node, param.name, depth)
    return _Evaluator(program, function, env, depth, naming).run()


class _Evaluator(Interpreter):
    """One call of one function: its environment, and a method per grammar rule."""

    def __init__(self, program: Program, function: FunctionDef, env: dict[str, Any],
                 depth: int, naming: Naming) -> None:
        self.program = program
        self.source = program.source
        self.function = function
        self.env = env
        self.depth = depth
        self.naming = naming

    def run(self) -> Any:
        result = None
        for statement in self.function.body:  # the checker made the return the last one
            result = self.visit(statement)
        return result

    # --- statements --------------------------------------------------------------------
    def assignment(self, tree: Tree) -> None:
        targets, expression = tree.children
        value = self.visit(expression)
        names = [str(t) for t in targets.children]
        if len(names) == 1:
            values = [value]
        elif not isinstance(value, (tuple, list)):
            raise self.source.error_at(f"cannot unpack one value into {len(names)} names (only "
                                       "a function that returns several values can be "
                                       "unpacked)", targets)
        elif len(value) != len(names):
            raise self.source.error_at(f"cannot unpack {len(value)} values into {len(names)} "
                                       "names", targets)
        else:
            values = list(value)
        for name, item in zip(names, values):
            self.env[name] = item
            if isinstance(item, Tracer):
                self.naming.name(item.node, name, self.depth)

    def return_stmt(self, tree: Tree) -> Any:
        values = [self.visit(child) for child in tree.children]
        return values[0] if len(values) == 1 else tuple(values)

    # --- operations ----------------------------------------------------------------------
    def binary(self, tree: Tree) -> Any:
        left, op, right = tree.children
        a, b = self.visit(left), self.visit(right)
        return self._apply(op, BINARY[op], a, b)

    def unary(self, tree: Tree) -> Any:
        op, operand = tree.children
        return self._apply(op, UNARY[op], self.visit(operand))

    def call(self, tree: Tree) -> Any:
        token, arguments = tree.children
        args, kwargs = [], {}
        for item in arguments.children if arguments is not None else ():
            if isinstance(item, Tree) and item.data == "keyword":
                kwargs[str(item.children[0])] = self.visit(item.children[1])
            else:
                args.append(self.visit(item))
        callee = self.program.functions.get(str(token))
        if callee is None:
            return self._apply(token, library.functions()[token], *args, **kwargs)
        try:
            return call_function(self.program, callee, tuple(args), kwargs, self.depth + 1,
                                 self.naming)
        except DslError as err:
            where = f"{self.source.filename}:{token.line}:{token.column}"
            raise err.with_note(f"in {callee.name}(), called from {self.function.name}() at "
                                f"{where}") from None

    def subscript(self, tree: Tree) -> Any:
        target, subscripts = tree.children
        value = self.visit(target)
        keys = [self.visit(item) for item in subscripts.children if item is not None]
        key = keys[0] if len(keys) == 1 else tuple(keys)
        return self._apply(tree, operator.getitem, value, key)

    def slice(self, tree: Tree) -> slice:
        return slice(*(self.visit(c) if c is not None else None for c in tree.children))

    # --- atoms ---------------------------------------------------------------------------
    def name(self, tree: Tree) -> Any:
        token = tree.children[0]
        return self.env[token] if token in self.env else library.CONSTANTS[token]

    def number(self, tree: Tree) -> int | float:
        return number_value(tree.children[0])

    def string(self, tree: Tree) -> str:
        return tree.children[0][1:-1]

    def ellipsis(self, tree: Tree) -> Any:
        return Ellipsis

    def tuple(self, tree: Tree) -> tuple:
        return tuple(self.visit(c) for c in tree.children if c is not None)

    def list(self, tree: Tree) -> list:
        return [self.visit(c) for c in tree.children if c is not None]

    # --- where operations run --------------------------------------------------------------
    def _apply(self, where: Token | Tree, fn: Callable, *args, **kwargs) -> Any:
        """fn(*args, **kwargs), its nodes tagged with this DSL line and its errors located."""
        with self._located(where):
            try:
                return fn(*args, **kwargs)
            except DslError:
                raise
            except GradfuseError as err:
                raise self.source.error_at(getattr(err, "reason", str(err)), where) from None
            except (ValueError, TypeError, IndexError, ArithmeticError) as err:
                # NumPy's own complaints when evaluating eagerly on arrays
                raise self.source.error_at(str(err).strip(), where) from err

    @contextmanager
    def _located(self, where: Token | Tree):
        builder = current_builder()
        if builder is None:
            yield
            return
        line = where.line if isinstance(where, Token) else where.meta.line
        previous = builder.loc_override
        builder.loc_override = self.source.loc(line)
        try:
            yield
        finally:
            builder.loc_override = previous


def number_value(text: str) -> int | float:
    return int(text) if text.isdigit() else float(text)
