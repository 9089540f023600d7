"""User-facing errors, each naming the user's file:line and showing the offending line."""

from __future__ import annotations

from compiler.ir import SourceLoc


class GradfuseError(Exception):
    """Base class of every error gradfuse raises for a user's mistake."""


class TraceError(GradfuseError, ValueError):
    """The function could not be traced: a shape mismatch, an unsupported call, ..."""

    def __init__(self, message: str, loc: SourceLoc | None = None) -> None:
        self.loc = loc
        self.reason = message
        if loc is not None:
            text = f"\n    {loc.text.strip()}" if loc.text else ""
            message = f"{loc}: {message}{text}\n  File \"{loc.filename}\", line {loc.lineno}"
        super().__init__(message)


class UnsupportedError(TraceError, TypeError):
    """A NumPy function or feature that gradfuse cannot trace."""


class IndexTypeError(TraceError, TypeError):
    """Indices that are not integers (or booleans): NumPy's IndexError, at the user's line."""


class ArgumentError(GradfuseError, TypeError):
    """The compiled function was called with arguments it cannot accept."""


class AnomalyError(GradfuseError, FloatingPointError):
    """Anomaly mode (compiler/checks.py) stopped at the first NaN or Inf: which op made it."""

    def __init__(self, message: str, loc: SourceLoc | None = None) -> None:
        self.loc = loc
        self.reason = message
        if loc is not None:
            text = f"\n    {loc.text.strip()}" if loc.text else ""
            message = f"{loc}: {message}{text}\n  File \"{loc.filename}\", line {loc.lineno}"
        super().__init__(message)


class InternalError(RuntimeError):
    """gradfuse produced code that numba rejected: a bug in gradfuse, not the user's code."""


class KernelShapeError(ValueError):
    """A kernel was called with arrays of other shapes than it was generated for.

    Generated kernels check their arguments' shapes before they touch memory, so
    that a fast path can call the last kernel without checking shapes in Python:
    on this error it takes the general path, which finds (or builds) the right
    kernel or explains the user's mistake.
    """
