"""Evaluating DSL functions: a lark Interpreter that applies Python's operators and NumPy's
functions to the values it is given.

On traced values that builds the same IR as tracing the equivalent Python
function, because it makes the very same calls (`a @ b` is `operator.matmul`,
`mean(x)` is `np.mean`); on arrays it computes eagerly. While tracing, each
operation is tagged with its DSL line (the builder's `loc_override`), so errors
and generated-code comments cite `model.gf:3`, and let-bound names become node
names, so generated code reads `h` and `pred`.

A `for` loop (compiler/dsl/loops.py) runs on `compiler.fori_loop` (over `range`) or
`compiler.scan` (over an array's rows), with the body's statements as the step
function: eagerly a Python loop, while tracing one `scan` node whose body is traced
once, its operations tagged and named as everywhere else.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lark import Token, Tree
from lark.visitors import Interpreter

from compiler.control import fori_loop, scan
from compiler.dsl import library
from compiler.dsl.annotations import check_arguments
from compiler.dsl.errors import DslError
from compiler.dsl.loops import ForLoop
from compiler.dsl.parser import FunctionDef, Program
from compiler.errors import GradfuseError
from compiler.ir import Node, TensorType
from compiler.symdim import SymDim
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
    if depth > 0:  # inside the outermost call's room, which counts every function's nesting
        return _Evaluator(program, function, env, depth, naming).run()
    with program.recursion_room():
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
        self.assigned_at: dict[str, Tree | Token] = {}  # where each name was last assigned

    def run(self) -> Any:
        result = None
        for statement in self.function.body:  # the checker made the return the last one
            result = self.visit(statement)
        return result

    def inner(self, env: dict[str, Any]) -> _Evaluator:
        """An evaluator of the same call in another environment (a loop body's)."""
        return _Evaluator(self.program, self.function, env, self.depth, self.naming)

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
        for name, token, item in zip(names, targets.children, values):
            self.bind(name, item, token)

    def bind(self, name: str, value: Any, where: Tree | Token) -> None:
        self.env[name] = value
        self.assigned_at[name] = where
        if isinstance(value, Tracer):
            self.naming.name(value.node, name, self.depth)

    def for_stmt(self, tree: Tree) -> None:
        loop = ForLoop.of(tree)
        carries = loop.carries(self.env)  # as the checker found them: env holds what is bound
        init = {name: self.env[name] for name in carries}
        weak = {name for name, value in init.items() if _is_weak(value)}
        bounds = loop.range_arguments
        if bounds is not None:
            lower, upper = self._range_bounds(bounds)
            step = self._loop_step(loop, carries, weak)
            final = self._apply(tree, fori_loop, lower, upper,
                                lambda i, carry: step(carry, i), init)
        else:
            rows = self._rows(loop.iterable)
            if current_builder() is None and len(rows) == 0:
                final = init  # no step: eagerly, scan would have no step to learn types from
            else:
                step = self._loop_step(loop, carries, weak)
                final, _ = self._apply(tree, scan, lambda carry, x: (step(carry, x), None),
                                       init, {str(loop.variable): rows})
        for name in carries:
            self.bind(name, final[name], tree)

    def _loop_step(self, loop: ForLoop, carries: list[str], weak: set[str]) -> Callable:
        """The loop's step function: the body's statements, from the carried values and the
        step's index or row to the new carried values."""
        variable = str(loop.variable)

        def step(carry: dict[str, Any], x: Any) -> dict[str, Any]:
            index_or_row = x[variable] if isinstance(x, dict) else x
            if isinstance(index_or_row, Tracer):  # the body's input: named as the user named it
                index_or_row.node.name = variable
            body = self.inner({**self.env, **carry, variable: index_or_row})
            for statement in loop.body:
                body.visit(statement)
            for name in carries:
                self._check_carried(loop, name, carry[name], body.env[name],
                                    body.assigned_at[name], name in weak)
            return {name: body.env[name] for name in carries}

        return step

    def _check_carried(self, loop: ForLoop, name: str, before: Any, after: Any,
                       where: Tree | Token, weak: bool) -> None:
        """A carry keeps its shape (and, unless it started as a Python number, which takes
        the type the step makes, its dtype) from step to step: tracing needs that, and
        evaluating eagerly checks it too, so a program that runs eagerly also compiles."""
        was, now = _type_of(before), _type_of(after)
        if was.shape != now.shape or (was.dtype != now.dtype and not weak):
            raise self.source.error_at(
                f"'{name}' is carried from step to step of the loop at line {loop.line}, so "
                f"each step must leave it with the type it started with: {was} before the "
                f"step, {now} after it", where)

    def _range_bounds(self, arguments: list[Tree]) -> tuple[int, int]:
        bounds = []
        for argument in arguments:
            value = self.visit(argument)
            try:  # a symbolic size raises Concretize: the function is specialized to the size
                bounds.append(operator.index(value))
            except TypeError:
                raise self.source.error_at(f"the bounds of range() must be whole numbers; got "
                                           f"{value!r}", argument) from None
        return (0, bounds[0]) if len(bounds) == 1 else (bounds[0], bounds[1])

    def _rows(self, iterable: Tree) -> Any:
        """The array a loop runs over (steps are its rows), checked to have rows."""
        value = self.visit(iterable)
        if isinstance(value, (tuple, list)):
            raise self.source.error_at(f"a loop runs over range(...) or over the rows of one "
                                       f"array, not over a {type(value).__name__}; stack(...) "
                                       "arrays of one shape to loop over them", iterable)
        if not isinstance(value, Tracer):
            value = np.asarray(value)
        if value.ndim == 0:
            raise self.source.error_at(f"cannot loop over a scalar ({_type_of(value)}): a loop "
                                       "runs over range(...) or over the rows of an array",
                                       iterable)
        return value

    def return_stmt(self, tree: Tree) -> Any:
        values = [self.visit(child) for child in tree.children]
        return values[0] if len(values) == 1 else tuple(values)

    # --- operations ----------------------------------------------------------------------
    def binary(self, tree: Tree) -> Any:
        left, op, right = tree.children
        a, b = _sizes_as_ints(self.visit(left), self.visit(right))
        return self._apply(op, BINARY[op], a, b)

    def unary(self, tree: Tree) -> Any:
        op, operand = tree.children
        return self._apply(op, UNARY[op], *_sizes_as_ints(self.visit(operand)))

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


def _sizes_as_ints(*operands: Any) -> tuple:
    """Operands with symbolic sizes made ints when no operand is traced (`N // 2`, `-N`): the
    function is then specialized to the size, as Python's `x.shape[0] // 2` makes it. With
    a traced operand a size stays symbolic (`sum(x) / N`)."""
    if any(isinstance(v, Tracer) for v in operands):
        return operands
    return tuple(operator.index(v) if isinstance(v, SymDim) else v for v in operands)


def _is_weak(value: Any) -> bool:
    """A Python number (or a size), whose dtype adapts to the arrays it meets (NumPy 2)."""
    return isinstance(value, (bool, int, float, SymDim)) and not isinstance(value, np.generic)


def _type_of(value: Any) -> TensorType:
    if isinstance(value, Tracer):
        return value.type
    if isinstance(value, SymDim):
        return TensorType(np.dtype(np.int64), ())
    array = np.asarray(value)
    return TensorType(array.dtype, array.shape)


def number_value(text: str) -> int | float:
    return int(text) if text.isdigit() else float(text)
