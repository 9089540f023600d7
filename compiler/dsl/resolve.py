"""Static checks of a parsed program, before anything runs: names, calls, returns, loops, recursion.

Every name must be bound before it is used (a parameter, a dimension of an
annotation, an earlier let-binding, or a constant); every call must name a
function of the program or of the library and match its parameters; each
function ends with its only return; and no function calls itself, because DSL
calls are inlined where they are made, so recursion would never end.

Loops (compiler/dsl/loops.py): a name first bound in a loop's body, and the loop
variable, exist only inside it; a loop must carry some name bound before it (else
it computes nothing that is kept); the loop variable is not assigned; and the
bounds of `range` are known when tracing: numbers, dimension names and integer
arithmetic on them.
"""

from __future__ import annotations

import keyword

from lark import Token, Tree
from lark.visitors import Interpreter

from compiler.dsl import library
from compiler.dsl.errors import suggestion
from compiler.dsl.loops import RANGE, ForLoop
from compiler.dsl.parser import FunctionDef, Program

# The operators that combine loop bounds: they keep whole numbers whole.
_INTEGER_OPERATORS = ("+", "-", "*", "//", "%", "**")


def check_program(program: Program) -> None:
    calls: dict[str, list[tuple[str, Token]]] = {}
    for function in program.functions.values():
        if function.name == RANGE:
            raise program.source.error_at(f"a function cannot be named '{RANGE}': "
                                          f"'for i in {RANGE}(n):' is the DSL's counted loop",
                                          function.name_token)
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
        # Names whose values are known when tracing (ints, or sizes that can become ints):
        # the dimensions and let-bindings of integer arithmetic on them.
        self.static = set(function.dim_names())
        self.loops: list[ForLoop] = []  # the loops being checked, outermost first
        self.carried: list[list[str]] = []  # the names each of them carries
        self.ended_loops: dict[str, ForLoop] = {}  # names that exist only inside an ended loop

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
        static = len(targets.children) == 1 and self._not_static(value) is None
        for token in targets.children:
            _check_assignable(self.source, token)
            self.bind(str(token), static)

    def bind(self, name: str, static: bool = False) -> None:
        self.bound.add(name)
        self.ended_loops.pop(name, None)
        if static:
            self.static.add(name)
        else:
            self.static.discard(name)

    def for_stmt(self, tree: Tree) -> None:
        loop = ForLoop.of(tree)
        self._check_iterable(loop)
        variable = loop.variable
        _check_assignable(self.source, variable)
        if variable in self.bound:
            raise self.source.error_at(
                f"the loop variable '{variable}' already names a value bound before the loop; "
                "choose another name", variable)
        for statement in loop.body:
            if statement.data == "return_stmt":
                raise self.source.error_at("a loop body cannot return: assign the values the "
                                           "loop computes and return after the loop", statement)
        assigned = loop.assignments()
        if variable in assigned:
            raise self.source.error_at(f"cannot assign to the loop variable '{variable}': it "
                                       f"holds {_what_the_variable_holds(loop)}; use another "
                                       "name", assigned[variable])
        carries = loop.carries(self.bound)
        bound_before, static_before = set(self.bound), set(self.static)
        self.static -= set(carries)  # carried values are arrays, different at each step
        self.bind(str(variable))
        self.loops.append(loop)
        self.carried.append(carries)
        for statement in loop.body:
            self.visit(statement)
        self.loops.pop()
        self.carried.pop()
        for name in self.bound - bound_before:
            self.ended_loops[name] = loop
        self.bound = bound_before
        self.static = static_before - set(carries)
        if not carries:  # checked after the body, whose unknown names say more
            raise self.source.error_at(
                "this loop changes nothing: its body assigns no name bound before the loop, "
                "and names first bound inside a loop exist only inside it; bind a value before "
                "the loop (such as total = 0.0) to carry it from step to step", tree)

    def name(self, tree: Tree) -> None:
        token = tree.children[0]
        if token in self.bound or token in library.CONSTANTS:
            return
        if token in self.program.functions or token in library.functions():
            raise self.source.error_at(f"'{token}' is a function: call it, as in {token}(...)",
                                       token)
        if token in self.ended_loops:
            loop = self.ended_loops[token]
            kind = "is the loop variable" if token == loop.variable else "is first bound"
            raise self.source.error_at(
                f"'{token}' is only defined inside the loop at line {loop.line}: it {kind} "
                "there, and names bound inside a loop are local to it; to keep a value "
                "computed in a loop, bind its name before the loop", token)
        known = self.bound | set(library.CONSTANTS)
        message = f"unknown name '{token}'{suggestion(token, known)}"
        if any(token in loop.assignments() for loop in self.loops):
            message += (f"; the loop assigns '{token}' but it is not bound before the loop: "
                        "bind it before the loop to carry it from step to step")
        raise self.source.error_at(message, token)

    def call(self, tree: Tree) -> None:
        token, arguments = tree.children
        if token == RANGE:
            raise self.source.error_at(f"{RANGE}() only counts the steps of a loop, as in "
                                       f"'for i in {RANGE}(n):'", token)
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

    # --- loop headers ------------------------------------------------------------------------
    def _check_iterable(self, loop: ForLoop) -> None:
        bounds = loop.range_arguments
        if bounds is None:
            if loop.iterable.data in ("tuple", "list"):
                raise self.source.error_at(
                    "a loop runs over range(...) or over the rows of one array, not over a "
                    f"{loop.iterable.data}; stack([...]) arrays of one shape to loop over them",
                    loop.iterable)
            self.visit(loop.iterable)
            return
        call = loop.iterable
        if any(isinstance(b, Tree) and b.data == "keyword" for b in bounds) or \
                not 1 <= len(bounds) <= 2:
            raise self.source.error_at(f"{RANGE}() takes 1 or 2 positional arguments here: "
                                       f"{RANGE}(stop) or {RANGE}(start, stop)",
                                       call.children[0])
        for bound in bounds:
            self.visit(bound)
            problem = self._not_static(bound)
            if problem is not None:
                where, reason = problem
                raise self.source.error_at(
                    f"the bounds of {RANGE}() must be known when the function is traced: "
                    "whole numbers, dimensions (such as N) and integer arithmetic on them "
                    f"({' '.join(_INTEGER_OPERATORS)}); {reason}", where)

    def _not_static(self, tree: Tree) -> tuple[Tree | Token, str] | None:
        """Where and why `tree` may not be an int known when tracing; None when it is one."""
        kind = tree.data
        if kind == "number":
            token = tree.children[0]
            return None if token.isdigit() else (token, f"{token} is not a whole number")
        if kind == "name":
            token = tree.children[0]
            if token in self.static:
                return None
            return token, f"'{token}' {self._describe_value(str(token))}"
        if kind == "unary" and tree.children[0] in ("+", "-"):
            return self._not_static(tree.children[1])
        if kind == "binary":
            left, op, right = tree.children
            if op not in _INTEGER_OPERATORS:
                hint = " (// divides whole numbers)" if op == "/" else ""
                return op, f"'{op}' does not keep whole numbers whole{hint}"
            return self._not_static(left) or self._not_static(right)
        return tree, "this expression is computed when the function runs"

    def _describe_value(self, name: str) -> str:
        if any(name == loop.variable for loop in self.loops):
            return "is a loop variable, which differs at each step"
        if any(name in carries for carries in self.carried):
            return "is carried by a loop, so it differs at each step"
        if any(name == p.name for p in self.function.params):
            return "is a parameter, whose value is known only when the function runs"
        return "is computed when the function runs"


def _check_assignable(source, token: Token) -> None:
    """A name the program binds: not True/False/None, nor another Python keyword (lambda, if,
    ...), which no Python twin of the program could bind."""
    if token in library.RESERVED:
        raise source.error_at(f"cannot assign to {token}", token)
    if keyword.iskeyword(token):
        raise source.error_at(f"'{token}' is a Python keyword; choose another name", token)


def _what_the_variable_holds(loop: ForLoop) -> str:
    return "the step's number" if loop.range_arguments is not None else "the step's row"


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
