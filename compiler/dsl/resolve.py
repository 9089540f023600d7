"""Static checks of a parsed program, before anything runs: names, calls, returns, recursion.

Every name must be bound before it is used (a parameter, a dimension of an
annotation, an earlier let-binding, or a constant); every call must name a
function of the program or of the library and match its parameters; each
function ends with its only return; and no function calls itself, because DSL
calls are inlined where they are made, so recursion would never end.
"""

from __future__ import annotations

from lark import Token, Tree
from lark.visitors import Interpreter

from compiler.dsl import library
from compiler.dsl.errors import suggestion
from compiler.dsl.parser import FunctionDef, Program


def check_program(program: Program) -> None:
    calls: dict[str, list[tuple[str, Token]]] = {}
    for function in program.functions.values():
        checker = _FunctionChecker(program, function)
        checker.check()
        calls[function.name] = checker.calls
    _check_no_recursion(program, calls)


class _FunctionChecker(Interpreter):
    """Walks one function's statements in order, tracking which names are bound so far."""

    def __init__(self, program: Program, function: FunctionDef) -> None:
        self.program = program
        self.source = program.source
        self.function = function
        self.bound = {p.name for p in function.params}
        self.calls: list[tuple[str, Token]] = []
        for param in function.params:
            clash = [d for d in param.dims or () if isinstance(d, str) and d in self.bound]
            if clash:
                raise self.source.error_at(f"dimension '{clash[0]}' has the name of a parameter "
                                           f"of '{function.name}'; rename one of them",
                                           param.annotation)
        self.bound |= set(function.dim_names())

    def check(self) -> None:
        body = self.function.body
        for i, statement in enumerate(body):
            if statement.data == "return_stmt" and i + 1 < len(body):
                raise self.source.error_at("unreachable statement after return", body[i + 1])
        if body[-1].data != "return_stmt":
            raise self.source.error_at(f"function '{self.function.name}' does not end with a "
                                       "return statement", self.function.name_token)
        for statement in body:
            self.visit(statement)

    # --- rules -------------------------------------------------------------------------
    def assignment(self, tree: Tree) -> None:
        targets, value = tree.children
        self.visit(value)
        for token in targets.children:
            if token in library.RESERVED:
                raise self.source.error_at(f"cannot assign to {token}", token)
            self.bound.add(str(token))

    def name(self, tree: Tree) -> None:
        token = tree.children[0]
        if token in self.bound or token in library.CONSTANTS:
            return
        if token in self.program.functions or token in library.functions():
            raise self.source.error_at(f"'{token}' is a function: call it, as in {token}(...)",
                                       token)
        known = self.bound | set(library.CONSTANTS)
        raise self.source.error_at(f"unknown name '{token}'{suggestion(token, known)}", token)

    def call(self, tree: Tree) -> None:
        token, arguments = tree.children
        items = arguments.children if arguments is not None else []
        keywords = self._keywords(items)
        n_positional = len(items) - len(keywords)
        if token in self.program.functions:
            signature = self.program.functions[token].signature()
            self.calls.append((str(token), token))
        elif token in library.functions():
            signature = library.signature(str(token))
        elif token in self.bound:
            raise self.source.error_at(f"'{token}' is a variable, not a function", token)
        else:
            known = [*self.program.functions, *library.functions()]
            raise self.source.error_at(f"unknown function '{token}'{suggestion(token, known)}",
                                       token)
        problem = library.argument_problem(str(token), signature, n_positional, keywords)
        if problem is not None:
            raise self.source.error_at(problem, token)
        self.visit_children(tree)

    def _keywords(self, items: list[Tree]) -> list[str]:
        keywords: list[str] = []
        for item in items:
            if isinstance(item, Tree) and item.data == "keyword":
                keyword = item.children[0]
                if keyword in keywords:
                    raise self.source.error_at(f"keyword argument '{keyword}' repeated", keyword)
                keywords.append(str(keyword))
            elif keywords:
                raise self.source.error_at("positional argument follows keyword argument", item)
        return keywords


def _check_no_recursion(program: Program, calls: dict[str, list[tuple[str, Token]]]) -> None:
    for start in program.functions:
        path = _cycle_from(start, calls, [start])
        if path is not None:
            caller, callee = path[0], path[1]
            token = next(t for name, t in calls[caller] if name == callee)
            raise program.source.error_at(
                f"recursive call: {' -> '.join(path)}; DSL functions are inlined where they "
                "are called, so recursion would never end", token)


def _cycle_from(start: str, calls: dict[str, list[tuple[str, Token]]],
                path: list[str]) -> list[str] | None:
    for callee, _ in calls[path[-1]]:
        if callee == start:
            return [*path, callee]
        if callee not in path:
            found = _cycle_from(start, calls, [*path, callee])
            if found is not None:
                return found
    return None
