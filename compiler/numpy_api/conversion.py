"""NumPy's own conversions of traced values: np.array / np.asarray of traced scalars (and of
lists mixing them with numbers), and the errors where NumPy needs numbers while tracing.

`np.array` and `np.asarray` do not dispatch to traced arrays: NumPy asks each element for
`__array__`. A traced value answers with an object array holding it (a small traced array:
its elements), so `np.array([a, b, 1.0])` is an object array of traced scalars; Python's
arithmetic on it stays traced, and the first traced operation that meets it (or the
function's return) turns it back into one traced array with NumPy's dtype (`from_objects`).
Where NumPy needs the numbers themselves (storing into a NumPy array, indexing one with a
traced index, `float()`), the error names the user's line and says what to write instead.
"""

from __future__ import annotations

import dis
import functools
import sys

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.tracer import Tracer
from compiler.user_code import origin, user_loc

# A traced array converts element by element (each a node); beyond this size it is refused.
MAX_CONVERTED_ELEMENTS = 256

STORE_INTO_ARRAY = (
    "this line stores traced values into a NumPy array (`out[i] = h`, `y[:, 0] += x`), which "
    "can only hold numbers; build the result from traced values instead: np.stack([...]) or "
    "np.concatenate of the pieces, np.where(mask, new, old), or start from a traced array "
    "that may be assigned into: `y = x.copy()` or `y = np.zeros_like(x)` "
    "(`np.zeros_like(x, shape=(n, m))` for another shape), then `y[i] = h`")
INDEX_AN_ARRAY = (
    "this line indexes a NumPy array with a traced index (`a[idx]`, `np.take(a, idx)`), and "
    "NumPy needs the index values now: pass the array in as an argument (a traced array takes "
    "traced indices), or for a one-hot `np.eye(C)[labels]` write "
    "`(labels[:, None] == np.arange(C)).astype(float)`")


class _Element(Tracer):
    """Element `flat` of the traced array `source`, made when NumPy converted it, so that the
    conversion back takes `source` whole rather than element by element."""

    __slots__ = ("source", "flat")

    def __init__(self, source: Tracer, flat: int, element: Tracer) -> None:
        super().__init__(element.builder, element.node)
        self.source = source
        self.flat = flat


def as_objects(x: Tracer, dtype=None) -> np.ndarray:
    """What `x.__array__()` gives: an object array of x's elements (traced scalars)."""
    problem = _needs_numbers()
    cast = None if dtype is None else np.dtype(dtype)
    if problem is None and cast is not None and np.issubdtype(cast, np.integer):
        # NumPy wants integers: indices (np.take of a NumPy array), or a conversion
        problem = (f"{INDEX_AN_ARRAY}; or, where this line converts a traced array to {cast} "
                   f"(np.asarray(x, dtype=...), np.{cast}(x)), write x.astype(np.{cast})")
    if problem is not None:
        raise UnsupportedError(problem, user_loc())
    if cast is not None and cast.kind != "O":
        raise UnsupportedError(
            f"NumPy asks for the numbers of a traced value here, as {cast} (np.asarray(x, "
            f"dtype=...), np.array(..., dtype=...), np.{cast}(x), or a NumPy function given a "
            "list of traced values, which it makes its own array of), and a NumPy array cannot "
            f"hold traced values: a traced array x converts as x.astype(np.{cast}); for a list "
            f"of them, make one traced array first, np.stack([...]) (then .astype(np.{cast}))",
            user_loc())
    if x.ndim == 0:
        holder = np.empty((), dtype=object)
        holder[()] = x
        return holder
    size = x.size
    if size > MAX_CONVERTED_ELEMENTS:
        raise UnsupportedError(
            f"np.array / np.asarray of a traced array of {size} elements: inside a traced "
            "function it is an array already (drop np.asarray), and a list of traced arrays "
            "is np.stack([...])", user_loc())
    shape = tuple(d.__index__() for d in x.shape)
    holder = np.empty(shape, dtype=object)
    for flat, index in enumerate(np.ndindex(*shape)):
        holder[index] = _Element(x, flat, x[index])
    return holder


def from_objects(array: np.ndarray) -> Tracer:
    """The traced array an object array of traced scalars and numbers stands for, with the
    dtype NumPy gives such a list (Python floats are float64 here, as in np.array)."""
    from compiler.numpy_api.dispatch import traced
    from compiler.numpy_api.elementwise import astype
    from compiler.numpy_api.layout import concatenate, reshape

    elements = list(array.flat)
    dtypes = []
    for e in elements:
        if isinstance(e, Tracer):
            if e.ndim != 0:
                raise TraceError(f"an object array holding a traced array of shape {e.shape} "
                                 "cannot be converted; use np.stack([...])", user_loc())
            dtypes.append(e.dtype)
        elif isinstance(e, (bool, int, float, np.number, np.bool_)):
            dtypes.append(np.asarray(e).dtype)
        else:
            raise TraceError(f"cannot use a {type(e).__name__} as an array in a traced "
                             "function", user_loc())
    dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
    pieces = [astype(traced(piece), dtype) if isinstance(piece, Tracer)
              else np.asarray(piece, dtype=dtype) for piece in _runs(elements)]
    if not pieces:
        return traced(np.zeros(array.shape, dtype=dtype))
    flat = pieces[0] if len(pieces) == 1 else concatenate(pieces)
    return reshape(traced(flat), array.shape)


def _runs(elements: list) -> list:
    """Elements as 1-D pieces: a traced array whose elements all stand here in order, runs
    of numbers as one constant, any other traced scalar on its own."""
    from compiler.numpy_api.layout import reshape

    pieces, numbers, i = [], [], 0
    while i < len(elements):
        e = elements[i]
        if not isinstance(e, Tracer):
            numbers.append(e)
            i += 1
            continue
        if numbers:
            pieces.append(np.asarray(numbers))
            numbers = []
        whole = _whole_source(elements, i)
        if whole is not None:
            pieces.append(reshape(whole, (-1,)))
            i += whole.size
        else:
            pieces.append(reshape(e, (1,)))
            i += 1
    if numbers:
        pieces.append(np.asarray(numbers))
    return pieces


def _whole_source(elements: list, i: int) -> Tracer | None:
    e = elements[i]
    if not (isinstance(e, _Element) and e.flat == 0):
        return None
    run = elements[i:i + e.source.size]
    if len(run) == e.source.size and all(
            isinstance(r, _Element) and r.source is e.source and r.flat == k
            for k, r in enumerate(run)):
        return e.source
    return None


def needs_value(x: Tracer, kind: type):
    """`float(x)` or `int(x)`: an error, since the value is unknown while tracing.

    Where NumPy stores x into an array of numbers (`out[i] = loss`), NumPy would replace the
    error with its own ("setting an array element with a sequence"), so the error is kept
    for the next op (or the function's return) and a placeholder 0 goes into the array,
    which the trace never uses."""
    problem = _needs_numbers()
    if problem == STORE_INTO_ARRAY:
        x.builder.deferred_error = UnsupportedError(problem, user_loc())
        return kind(0)
    if problem is not None:
        raise UnsupportedError(problem, user_loc())
    raise UnsupportedError(f"{kind.__name__}() of a traced array needs its value, which is "
                           "unknown while tracing; keep it an array (np.float64(x) is "
                           "x.astype(np.float64); math functions call float(): use NumPy's, "
                           "np.exp for math.exp)", user_loc())


def _needs_numbers() -> str | None:
    """Why NumPy is converting a traced value at the user's current instruction, if that
    is storing into a NumPy array or indexing one."""
    frame = _user_frame()
    if frame is None:
        return None
    name, argument = _instruction(frame.f_code, frame.f_lasti)
    if name == "STORE_SUBSCR":
        return STORE_INTO_ARRAY
    if name == "BINARY_SUBSCR" or (name == "BINARY_OP" and argument == "[]"):
        return INDEX_AN_ARRAY
    return None


def _user_frame():
    """The frame of the user's code that the conversion happens in: the nearest frame
    outside gradfuse, if NumPy's C code (not NumPy's Python code) called it."""
    frame = sys._getframe(2)
    while frame is not None and origin(frame.f_code.co_filename) == "compiler":
        frame = frame.f_back
    if frame is None or origin(frame.f_code.co_filename) != "user":
        return None
    return frame


@functools.lru_cache(maxsize=256)
def _instructions(code) -> dict[int, tuple[str, str]]:
    return {i.offset: (i.opname, i.argrepr) for i in dis.get_instructions(code)}


def _instruction(code, offset: int) -> tuple[str | None, str | None]:
    return _instructions(code).get(offset, (None, None))
