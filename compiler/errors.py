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


class KernelIndexError(GradfuseError, IndexError):
    """An index out of bounds, found by a kernel's check before it reads: at which of the
    user's lines, which index, and the axis it indexes (NumPy's IndexError, in its words).

    A generated module subclasses it with `SITES`, one `(where, statement, axis)` per check
    in its kernels (compiler/codegen/prelude.py `HelperSet.index_site`); the kernel raises
    the subclass with `(site, index, size)`, numbers only, and the text is made here.
    """

    SITES: tuple[tuple[str, str, int | None], ...] = ()

    def __str__(self) -> str:
        if len(self.args) != 3 or not 0 <= self.args[0] < len(self.SITES):
            return super().__str__()
        site, index, size = self.args
        where, statement, axis = self.SITES[site]
        on_axis = f"axis {axis} with size {size}" if axis is not None else f"size {size}"
        shown = f"\n    {statement}" if statement else ""
        return f"{where}: index {index} is out of bounds for {on_axis}{shown}"


class KernelEmptyReductionError(GradfuseError, ValueError):
    """A max or min (np.max, np.min, np.ptp, ...) over an axis that is empty when the kernel
    runs (an empty batch), found before it reduces: NumPy's ValueError, at the user's line.

    As `KernelIndexError`: a generated module subclasses it with `SITES`, one
    `(where, statement, ufunc)` per check, and the kernel raises it with the site's number.
    """

    SITES: tuple[tuple[str, str, str], ...] = ()

    def __str__(self) -> str:
        if len(self.args) != 1 or not 0 <= self.args[0] < len(self.SITES):
            return super().__str__()
        where, statement, ufunc = self.SITES[self.args[0]]
        shown = f"\n    {statement}" if statement else ""
        return f"{where}: zero-size array to reduction operation {ufunc} which has no " \
               f"identity{shown}"


class InternalError(RuntimeError):
    """gradfuse produced code that numba rejected: a bug in gradfuse, not the user's code."""


class KernelShapeError(ValueError):
    """A kernel was called with arrays of other shapes than it was generated for.

    Generated kernels check their arguments' shapes before they touch memory, so
    that a fast path can call the last kernel without checking shapes in Python:
    on this error it takes the general path, which finds (or builds) the right
    kernel or explains the user's mistake.
    """
