"""Errors in DSL programs, reported at a line and column with the offending line and a caret.

    model.gf:3:9: unknown function 'sofmax'; did you mean 'softmax'?
        h = sofmax(X @ W1 + b1)
            ^

Syntax errors come from lark's `UnexpectedInput`, restated with readable names for
what was expected ("expected ')' or ','" rather than "Expected one of: RPAR, COMMA").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from compiler.errors import TraceError
from compiler.ir import SourceLoc


class DslError(TraceError):
    """A mistake in a DSL program: syntax, an unknown name, a shape mismatch, an argument count.

    A `TraceError` (so a `GradfuseError`), because a DSL program fails where a traced
    Python function would. `loc` points at the DSL file and line, like a traced node's.
    """

    def __init__(self, message: str, filename: str = "<dsl>", line: int | None = None,
                 column: int | None = None, line_text: str = "", notes: Iterable[str] = ()):
        self.reason = message
        self.filename = filename
        self.line = line
        self.column = column
        self.line_text = line_text
        self.notes = list(notes)
        self.loc = SourceLoc(filename, line, line_text) if line is not None else None
        Exception.__init__(self, self._format())

    def _format(self) -> str:
        if self.line is None:
            return "\n".join([f"{self.filename}: {self.reason}", *self.notes])
        where = f"{self.filename}:{self.line}" + (f":{self.column}" if self.column else "")
        lines = [f"{where}: {self.reason}"]
        if self.line_text.strip():
            code = self.line_text.lstrip()
            lines.append("    " + code.rstrip())
            if self.column:
                indent = len(self.line_text) - len(code)
                lines.append("    " + " " * max(self.column - 1 - indent, 0) + "^")
        return "\n".join(lines + ["  " + note for note in self.notes])

    def with_note(self, note: str) -> DslError:
        """The same error with one more line of context (such as where a function was called)."""
        return DslError(self.reason, self.filename, self.line, self.column, self.line_text,
                        [*self.notes, note])


@dataclass(frozen=True)
class SourceText:
    """A program's text and file name: turns positions into locations and errors."""

    filename: str
    text: str
    lines: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Lines end at "\n" only, as the parser's line numbers count them: splitlines()
        # would also split at a form feed or a Unicode line separator in a comment.
        object.__setattr__(self, "lines", self.text.split("\n"))

    def line(self, number: int) -> str:
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""

    def loc(self, number: int) -> SourceLoc:
        """The location tag of nodes made on line `number` (what generated code cites)."""
        return SourceLoc(self.filename, number, self.line(number).strip())

    def error(self, message: str, line: int | None, column: int | None = None) -> DslError:
        text = self.line(line) if line is not None else ""
        return DslError(message, self.filename, line, column, text)

    def error_at(self, message: str, where: Tree | Token) -> DslError:
        """An error with the caret at a token, or at the start of a tree."""
        if isinstance(where, Token):
            return self.error(message, where.line, where.column)
        meta = where.meta
        if getattr(meta, "empty", True):
            return self.error(message, None)
        return self.error(message, meta.line, meta.column)


def suggestion(name: str, candidates: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest candidate, or "" when none is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# Named terminals as a reader would say them; string terminals show their text.
_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "_NEWLINE": "a new line", "_INDENT": "an indented block", "_DEDENT": "the end of a block",
    "$END": "the end of the file", "COMPARE": "a comparison", "ADD": "'+' or '-'",
    "MUL": "'*', '/', '//', '%' or '@'", "POW": "'**'", "INVERT": "'~'", "BITOR": "'|'",
    "BITXOR": "'^'", "BITAND": "'&'",
}
# Terminals that can start an expression: listed together as "an expression".
_EXPRESSION_START = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "ADD", "INVERT", "ELLIPSIS"}
_OPERATORS = {"COMPARE", "ADD", "MUL", "POW", "BITOR", "BITXOR", "BITAND"}
_WHERE = "choose values elementwise with where(condition, a, b)"
_ATTRIBUTE = ("; attributes and methods are not part of the DSL: call functions instead "
              "(transpose(x), not x.T; sum(x, axis=1), not x.sum(axis=1))")
_CONTROL_FLOW = {
    "if": f"'if' statements are not part of the DSL: {_WHERE}",
    "elif": f"'elif' is not part of the DSL: {_WHERE}",
    "else": f"'else' is not part of the DSL: {_WHERE}",
    "while": "'while' loops are not part of the DSL: a loop runs a number of steps known when "
             "tracing, as in 'for i in range(n):'",
    "break": "'break' is not part of the DSL: a loop runs all its steps",
    "continue": "'continue' is not part of the DSL: a loop runs all of each step; choose "
                "values with where(condition, a, b)",
}


def syntax_error(source: SourceText, err: UnexpectedInput, terminals: dict) -> DslError:
    """A DslError for lark's parse error; `terminals` maps terminal names to their definitions."""
    if isinstance(err, UnexpectedCharacters):
        char = source.line(err.line)[err.column - 1:err.column] or "?"
        hint = _ATTRIBUTE if char == "." else ""
        return source.error(f"unexpected character {char!r}{hint}", err.line, err.column)
    if not isinstance(err, UnexpectedToken):
        return source.error(f"syntax error: {err}", getattr(err, "line", None),
                            getattr(err, "column", None))
    token = err.token
    line, column = _token_position(source, token)
    known = _known_mistake(source, token, line, column)
    if known is not None:
        return known
    expected = _describe_expected(err.expected, terminals)
    message = f"unexpected {_describe_token(token)}" + (f"; expected {expected}" if expected
                                                        else "")
    return source.error(message, line, column)


def _known_mistake(source: SourceText, token: Token, line: int,
                   column: int | None) -> DslError | None:
    """A clearer message than "unexpected ..." for common mistakes: an unclosed bracket, a
    function or loop body that is not indented, and Python's other control flow."""
    if token.type in ("_INDENT", "_DEDENT") and mixes_tabs_and_spaces(source, line):
        return source.error(INCONSISTENT_INDENTATION, line,
                            len(source.line(line)) - len(source.line(line).lstrip()) + 1)
    unclosed = _unclosed_bracket(source, line, column)
    if unclosed is not None and (unclosed[0] < line or token.type in ("$END", "_DEDENT")):
        bracket_line, bracket_column, bracket = unclosed
        return source.error(f"'{bracket}' was never closed", bracket_line, bracket_column)
    header = source.line(line - 1).rstrip()
    header_indent = len(header) - len(header.lstrip())
    kind = {"def": "function", "for": "loop"}.get(header.lstrip().split(" ", 1)[0])
    if (kind is not None and header.endswith(":")
            and column is not None and column <= header_indent + 1):
        return source.error(f"expected an indented block after the {kind} header on line "
                            f"{line - 1}", line, column)
    code = source.line(line).lstrip()
    word = code.split()[0].rstrip(":") if code.split() else ""
    if word in _CONTROL_FLOW:
        return source.error(_CONTROL_FLOW[word], line, len(source.line(line)) - len(code) + 1)
    return _python_idiom(source, token, line, column)


INCONSISTENT_INDENTATION = ("inconsistent use of tabs and spaces in indentation (a tab counts "
                            "as 8 columns): indent with spaces only, or tabs only")


def mixes_tabs_and_spaces(source: SourceText, line: int) -> bool:
    """Whether `line` is indented with tabs where the code line before it uses spaces, or the
    other way round (one of them mixing both counts too): Python's TabError."""
    def indentation(number: int) -> str:
        text = source.line(number)
        return text[:len(text) - len(text.lstrip(" \t"))]

    here = indentation(line)
    before = next((indentation(n) for n in range(line - 1, 0, -1)
                   if source.line(n).strip() and not source.line(n).lstrip().startswith("#")),
                  "")
    kinds = set(here) | set(before)
    return kinds == {" ", "\t"}


def _python_idiom(source: SourceText, token: Token, line: int,
                  column: int | None) -> DslError | None:
    """What to write instead of Python that the DSL does not have, where the parse stopped at
    it: `y += 1`, `y[0] = v`, `and`/`or`/`not`, a chained comparison."""
    if column is None:
        return None
    text = source.line(line)
    rest, before = text[column - 1:], text[:column - 1]
    augmented = re.match(r"(\*\*|//|[-+*/%@&|^])=", rest)
    target = re.match(r"\s*([^\W\d]\w*)\s*$", before)
    if augmented and target:
        name, op = target.group(1), augmented.group(1)
        return source.error(f"augmented assignment ('{op}=') is not part of the DSL: write "
                            f"{name} = {name} {op} ...", line, column)
    if token.type == "LSQB" and target and re.match(r"\[[^\]]*\]\s*=[^=]", rest):
        return source.error("assigning into an array is not part of the DSL: values never "
                            "change; build the new one with where(condition, new, old) or "
                            "concatenate(...)", line, column)
    previous = re.search(r"\b([^\W\d]\w*)\s*$", before)
    word, word_column = (token.value, column) if token.type == "NAME" else (None, column)
    if previous and previous.group(1) in ("not", "lambda"):
        word, word_column = previous.group(1), previous.start(1) + 1
    if word in ("and", "or", "not"):
        return source.error(f"'{word}' is not part of the DSL: combine conditions "
                            "elementwise with & (and), | (or) and ~ (not), each comparison in "
                            "parentheses: (x > 0) & (x < 1)", line, word_column)
    if word == "lambda":
        return source.error("'lambda' is not part of the DSL: define the function with def "
                            "and call it", line, word_column)
    if word == "if":  # a conditional expression: x if c else y
        return source.error(f"conditional expressions are not part of the DSL: {_WHERE}", line,
                            word_column)
    if token.type == "COMPARE" and token.value in "<>" and before.endswith(token.value):
        return source.error(f"the shift operator '{token.value * 2}' is not part of the DSL: "
                            "multiply or floor-divide by a power of two", line, column - 1)
    if token.type == "COMPARE" and re.search(r"[<>]|[=!]=", before):
        return source.error("comparisons do not chain in the DSL: write (a < x) & (x < b) "
                            "instead of a < x < b", line, column)
    return None


def _unclosed_bracket(source: SourceText, line: int, column: int | None):
    """(line, column, bracket) of the innermost bracket still open before a position, or None."""
    stack: list[tuple[int, int, str]] = []
    for number in range(1, line + 1):
        text = source.line(number)
        if number == line and column is not None:
            text = text[:column - 1]
        quote = None
        for i, char in enumerate(text):
            if quote is not None:
                quote = None if char == quote else quote
            elif char in "\"'":
                quote = char
            elif char == "#":
                break
            elif char in "([":
                stack.append((number, i + 1, char))
            elif char in ")]" and stack:
                stack.pop()
    return stack[-1] if stack else None


def _token_position(source: SourceText, token: Token) -> tuple[int, int | None]:
    if token.type == "$END" or token.line > len(source.lines):
        last = len(source.lines)
        return last, len(source.line(last)) + 1
    if token.type == "_NEWLINE":  # the newline ends the line it starts on
        return token.line, token.column
    if token.type in ("_INDENT", "_DEDENT"):  # borrowed from the newline before them
        line = token.end_line
        return line, len(source.line(line)) - len(source.line(line).lstrip()) + 1
    return token.line, token.column


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "_NEWLINE":
        return "end of line"
    if token.type == "_INDENT":
        return "indent"
    if token.type == "_DEDENT":
        return "end of the indented block"
    if token.type == "NAME":
        return f"name '{token.value}'"
    if token.type in ("NUMBER", "STRING"):
        return f"{token.type.lower()} {token.value}"
    return f"'{token.value}'"


def _describe_terminal(name: str, terminals: dict) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    definition = terminals.get(name)
    if definition is not None and definition.pattern.type == "str":
        return f"'{definition.pattern.value}'"
    return name


def _describe_expected(expected: Iterable[str], terminals: dict) -> str:
    names = set(expected)
    words = []
    if "NUMBER" in names and "NAME" in names:
        words.append("an expression")
        names -= _EXPRESSION_START
    if _OPERATORS <= names:
        words.append("an operator")
        names -= _OPERATORS
    words += sorted({_describe_terminal(name, terminals) for name in names})
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]
