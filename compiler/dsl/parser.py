"""Parsing DSL text into a `Program`: lark's LALR parser, Python-style indentation, annotations.

The program keeps lark's trees for function bodies (the evaluator, the checker
and the pretty-printer are lark visitors over them) and reads the parameter
annotations into plain values: a dtype and a shape of ints and dimension names.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import keyword
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput
from lark.indenter import DedentError, Indenter

from compiler.dsl.errors import (
    INCONSISTENT_INDENTATION,
    DslError,
    SourceText,
    mixes_tabs_and_spaces,
    suggestion,
    syntax_error,
)

GRAMMAR = Path(__file__).with_name("grammar.lark")
EXTENSION = ".gf"

# Annotation dtypes by their canonical (short) names, and the NumPy names also accepted.
CANONICAL_DTYPE = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
                   np.dtype(np.int32): "i32", np.dtype(np.int64): "i64",
                   np.dtype(np.bool_): "bool"}
DTYPES = {name: dtype for dtype, name in CANONICAL_DTYPE.items()}
DTYPES.update({dtype.name: dtype for dtype in CANONICAL_DTYPE})

Dims = tuple[int | str, ...]


@dataclass(frozen=True)
class Param:
    """One parameter: its name and, when annotated, its dtype and shape (ints and dim names)."""

    name: str
    dtype: np.dtype | None
    dims: Dims | None
    token: Token  # the name, for error positions
    annotation: Tree | None

    @property
    def type_text(self) -> str:
        if self.dtype is None:
            return "any"
        return f"{CANONICAL_DTYPE[self.dtype]}[{', '.join(str(d) for d in self.dims)}]"


@dataclass(frozen=True)
class FunctionDef:
    name: str
    params: list[Param]
    body: list[Tree]  # statements, the last one a return_stmt
    tree: Tree

    @property
    def name_token(self) -> Token:
        return self.tree.children[0]

    def signature(self) -> inspect.Signature:
        """Python's view of the parameters (annotations as DSL text, such as "f32[N, 10]")."""
        return inspect.Signature([
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=p.type_text if p.dtype is not None
                              else inspect.Parameter.empty)
            for p in self.params])

    def dim_names(self) -> list[str]:
        """The symbolic dimensions of the annotations, in order of first appearance."""
        names: list[str] = []
        for param in self.params:
            for d in param.dims or ():
                if isinstance(d, str) and d not in names:
                    names.append(d)
        return names


@dataclass(frozen=True)
class Program:
    """A parsed, checked DSL file: its functions in order, by name."""

    source: SourceText
    functions: dict[str, FunctionDef]
    tree: Tree

    @functools.cached_property
    def nesting(self) -> int:
        """How deep the program's trees nest, summed over its functions: the most levels one
        visit can go down, as a function's call nests the callee's body in it."""
        return sum(_depth(f.tree) for f in self.functions.values())

    @contextmanager
    def recursion_room(self):
        """Python's recursion limit raised for visiting this program: lark's visitors recurse a
        few frames per level of a tree, and a sum a + b + c + ... nests as deep as it is long
        (a few hundred terms passed Python's default limit of 1000)."""
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(limit + _FRAMES_PER_LEVEL * self.nesting)
        try:
            yield
        finally:
            sys.setrecursionlimit(limit)

    def function(self, name: str | None = None) -> FunctionDef:
        """The function called `name`, or the last one in the file."""
        if not self.functions:
            raise DslError("the program defines no function", self.source.filename)
        if name is None:
            return list(self.functions.values())[-1]
        if name not in self.functions:
            raise DslError(f"no function named '{name}' in the program (it defines "
                           f"{', '.join(self.functions)}){suggestion(name, self.functions)}",
                           self.source.filename)
        return self.functions[name]

    def with_float_dtype(self, dtype: np.dtype) -> Program:
        """The same program with every float annotation read as `dtype`."""
        def convert(param: Param) -> Param:
            if param.dtype is None or param.dtype.kind != "f":
                return param
            return dataclasses.replace(param, dtype=dtype)

        functions = {name: dataclasses.replace(f, params=[convert(p) for p in f.params])
                     for name, f in self.functions.items()}
        return Program(self.source, functions, self.tree)


_FRAMES_PER_LEVEL = 8  # lark's visit, _visit_tree (or _transform_tree), a rule's method, ...


def _depth(tree: Tree) -> int:
    """The number of levels of a tree, counted without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node.children if isinstance(child, Tree))
    return deepest


class _Indentation(Indenter):
    NL_type = "_NEWLINE"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def handle_NL(self, token: Token):
        try:
            yield from super().handle_NL(token)
        except DedentError:
            raise _BadDedent(token) from None


class _BadDedent(Exception):
    """A line dedented to a column that no enclosing block started at."""

    def __init__(self, newline: Token) -> None:
        super().__init__(newline.end_line)
        self.newline = newline


@functools.cache
def _lark() -> Lark:
    # cache=True keeps lark's parse tables in the temp dir: a CLI run starts 0.15 s sooner.
    return Lark(GRAMMAR.read_text(), parser="lalr", postlex=_Indentation(),
                propagate_positions=True, maybe_placeholders=True, cache=True)


def parse(text: str, filename: str = "<dsl>") -> Program:
    """Parse and check a program; raises DslError with the line, column and a caret."""
    from compiler.dsl.resolve import check_program

    text = python_text(text)
    source = SourceText(filename, text)
    # The grammar ends statements with a newline: supply the one a file may lack.
    try:
        tree = _lark().parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as err:
        raise syntax_error(source, err, _terminals()) from None
    except _BadDedent as err:
        line = err.newline.end_line
        column = len(source.line(line)) - len(source.line(line).lstrip()) + 1
        message = (INCONSISTENT_INDENTATION if mixes_tabs_and_spaces(source, line)
                   else "unindent does not match any outer indentation level")
        raise source.error(message, line, column) from None
    program = Program(source, {}, tree)
    for function_tree in tree.children:
        function = _function(source, function_tree)
        if function.name in program.functions:
            raise source.error_at(f"function '{function.name}' is defined twice",
                                  function.name_token)
        program.functions[function.name] = function
    with program.recursion_room():
        check_program(program)
    return program


def python_text(text: str) -> str:
    """Text as Python reads a source file: a leading byte order mark dropped (editors on
    Windows write one), and Windows ("\\r\\n") and old Mac ("\\r") line ends made "\\n"."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def tree_rules() -> set[str]:
    """The names of the trees parsing makes: the grammar's rules that are not inlined, and
    aliases. Visitors of parsed programs need a method for each one they can meet."""
    rules = _lark().rules
    return ({str(r.alias) for r in rules if r.alias}
            | {str(r.origin.name) for r in rules
               if not r.options.expand1 and not r.origin.name.startswith("_")})


@functools.cache
def _terminals() -> dict:
    return {t.name: t for t in _lark().terminals}


def _function(source: SourceText, tree: Tree) -> FunctionDef:
    name, parameters, *body = tree.children
    if keyword.iskeyword(name):
        raise source.error_at(f"'{name}' is a Python keyword; choose another name", name)
    params = [_param(source, p) for p in parameters.children] if parameters else []
    seen: set[str] = set()
    for param in params:
        if keyword.iskeyword(param.name):  # True, None, lambda, ...: Python could not call it
            raise source.error_at(f"'{param.name}' cannot be a parameter name", param.token)
        if param.name in seen:
            raise source.error_at(f"parameter '{param.name}' appears twice in '{name}'",
                                  param.token)
        seen.add(param.name)
    return FunctionDef(str(name), params, body, tree)


def _param(source: SourceText, tree: Tree) -> Param:
    name, annotation = tree.children
    if annotation is None:
        return Param(str(name), None, None, name, None)
    dtype_token, shape = annotation.children
    if dtype_token not in DTYPES:
        raise source.error_at(f"unknown dtype '{dtype_token}'{suggestion(dtype_token, DTYPES)} "
                              f"(dtypes: {', '.join(CANONICAL_DTYPE.values())})", dtype_token)
    dims: list[int | str] = []
    for dim in (shape.children if shape is not None else ()):
        if dim is None:  # the empty shape of a scalar: f32[]
            continue
        token = dim.children[0]
        if dim.data == "symbolic_dim":
            dims.append(str(token))
        elif token.isdigit():
            dims.append(int(token))
        else:
            raise source.error_at(f"a dimension is a whole number or a name, not {token}", token)
    return Param(str(name), DTYPES[dtype_token], tuple(dims), name, annotation)


def read_source(source: str | Path) -> tuple[str, str]:
    """(text, filename) of DSL source given as text or as the path of a file."""
    if _looks_like_path(source):
        path = Path(source)
        return path.read_text(), str(path)
    return str(source), "<dsl>"


def _looks_like_path(source: object) -> bool:
    if hasattr(source, "__fspath__"):
        return True
    text = str(source)
    if "\n" in text or "\0" in text:
        return False
    try:
        return text.endswith(EXTENSION) or Path(text).is_file()
    except (OSError, ValueError):  # such as a name too long for the file system
        return False
