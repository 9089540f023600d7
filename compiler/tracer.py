"""Tracing: run a NumPy function on symbolic values and record the ops it performs as IR.

A `Tracer` stands for one IR node. It implements NumPy's dispatch protocols
(`__array_ufunc__`, `__array_function__`) and the Python operators, so users
write plain NumPy; the thread's trace in progress (`current_builder`) turns each call
into a node (compiler/builder.py). Running a whole trace, from the inputs to the checked
outputs and their names, is compiler/tracing.py.
"""

from __future__ import annotations

import functools
import operator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.errors import TraceError, UnsupportedError
from compiler.ir import Node, Sym, TensorType
from compiler.ops.registry import TRACES
from compiler.symdim import SymDim
from compiler.user_code import user_loc

if TYPE_CHECKING:
    from compiler.builder import Builder  # it builds Tracers

# The ops whose result is a NumPy view of their first input (it shows the input's changes).
VIEW_OPS = frozenset({"slice", "reshape", "transpose", "broadcast_to"})


class Tracer:
    """A traced array: stands for an IR node while the user's function runs."""

    __array_priority__ = 1000
    __slots__ = ("builder", "node", "weak")

    def __init__(self, builder: Builder, node: Node, weak: bool = False) -> None:
        self.builder = builder
        self.node = node
        # A Python int or float argument, or what Python's operators make of such values
        # alone (`lr * 2`): "weak" in NumPy 2, taking the dtype of the arrays it meets.
        self.weak = weak

    # --- array attributes --------------------------------------------------------
    @property
    def type(self) -> TensorType:
        return self.node.type

    @property
    def shape(self) -> tuple:
        return tuple(SymDim(d, self.builder) if isinstance(d, Sym) else d
                     for d in self.node.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.node.dtype

    @property
    def ndim(self) -> int:
        return len(self.node.shape)

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n = n * d if isinstance(d, int) else d.__index__()
        return n

    @property
    def T(self) -> Tracer:
        return npx.transpose(self)

    @property
    def mT(self) -> Tracer:
        """The last two axes swapped (NumPy 2's matrix transpose)."""
        if self.ndim < 2:
            raise TraceError(f"x.mT of an array of {self.ndim} dimension(s): the matrix "
                             "transpose needs 2 or more", user_loc())
        return npx.swapaxes(self, -1, -2)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self):
        return self.size * self.dtype.itemsize

    # Traced arrays are real (complex ones are refused): their real part is themselves, their
    # imaginary part zeros, their conjugate themselves, as NumPy gives for real arrays.
    @property
    def real(self) -> Tracer:
        return self

    @property
    def imag(self) -> Tracer:
        return np.zeros_like(self)

    def conj(self) -> Tracer:
        return self

    conjugate = conj

    def __repr__(self) -> str:
        return f"Tracer({self.node.type}, {self.node.op})"

    # --- what tracing cannot do ----------------------------------------------------
    def __bool__(self) -> bool:
        self.builder.concretize(self)  # `if training:` on a Python bool argument: static
        raise TraceError(
            "the truth value of a traced array is unknown while tracing, so Python's "
            "`if`, `while`, `and`, `or` and `not` cannot branch on it; use "
            "np.where(condition, a, b) to choose between values elementwise", user_loc())

    def __array__(self, dtype=None, copy=None):
        """np.array([a, b]), np.asarray(a): an object array of traced scalars, which the next
        traced operation turns back into a traced array (compiler/numpy_api/conversion.py)."""
        return npx.conversion.as_objects(self, dtype)

    def __float__(self):
        self.builder.concretize(self)
        return npx.conversion.needs_value(self, float)

    def __int__(self):
        self.builder.concretize(self)
        return npx.conversion.needs_value(self, int)

    def __index__(self):
        """`range(n)`, `[0] * n`, a list index: a Python int argument becomes static (the
        function is traced again with its value); a traced array has no value yet."""
        self.builder.concretize(self)
        return npx.conversion.needs_value(self, int)

    def item(self, *args):
        raise UnsupportedError(
            "x.item() needs the array's value, which is unknown while tracing; keep it an "
            "array (x[()] or x.reshape(()) for a 0-d one), or return it and call .item() on "
            "the result", user_loc())

    def tolist(self):
        raise UnsupportedError(
            "x.tolist() needs the array's values, which are unknown while tracing; keep it an "
            "array (list(x) gives its rows as traced arrays, x[i] one of them), or return it "
            "and call .tolist() on the result", user_loc())

    def __str__(self) -> str:
        if self.node.dtype.kind in "biu":  # params[f"W{k}"], "W" + str(k): k an int argument
            self.builder.concretize(self)  # (a float, such as a printed lr, stays traced)
        return repr(self)

    def __format__(self, spec: str) -> str:
        if self.node.dtype.kind in "biu" or spec:
            self.builder.concretize(self)
        if not spec:
            return repr(self)
        raise UnsupportedError(
            f"formatting a traced array (f\"{{x:{spec}}}\") needs its value, which is unknown "
            "while tracing; return it (with has_aux=True beside a loss) and format the "
            "result", user_loc())

    # math.floor/ceil/trunc and round() ask the value itself (compiler/numpy_api/pymath.py)
    def __floor__(self): return np.floor(self)  # noqa: E704
    def __ceil__(self): return np.ceil(self)  # noqa: E704
    def __trunc__(self): return np.trunc(self)  # noqa: E704
    def __round__(self, ndigits=None): return np.round(self, ndigits or 0)  # noqa: E704

    def __len__(self) -> int:
        if not self.node.shape:
            raise TraceError("len() of a scalar", user_loc())
        return self.shape[0].__index__()

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __setitem__(self, key, value):
        # Copies (x.copy()) may be assigned into: compiler/numpy_api/assignment.py
        raise npx.assignment.refuse_assignment(self)

    # --- NumPy dispatch ------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return npx.apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return npx.apply_function(func, args, kwargs)

    # --- operators -----------------------------------------------------------------
    def __add__(self, o): return npx.binary("add", self, o)  # noqa: E704
    def __radd__(self, o): return npx.binary("add", o, self)  # noqa: E704
    def __sub__(self, o): return npx.binary("sub", self, o)  # noqa: E704
    def __rsub__(self, o): return npx.binary("sub", o, self)  # noqa: E704
    def __mul__(self, o): return npx.binary("mul", self, o)  # noqa: E704
    def __rmul__(self, o): return npx.binary("mul", o, self)  # noqa: E704
    def __truediv__(self, o): return npx.binary("div", self, o)  # noqa: E704
    def __rtruediv__(self, o): return npx.binary("div", o, self)  # noqa: E704
    def __pow__(self, o): return npx.power(self, o)  # noqa: E704
    def __rpow__(self, o): return npx.power(o, self)  # noqa: E704
    def __matmul__(self, o): return npx.matmul(self, o)  # noqa: E704
    def __rmatmul__(self, o): return npx.matmul(o, self)  # noqa: E704
    def __lt__(self, o): return npx.binary("lt", self, o)  # noqa: E704
    def __le__(self, o): return npx.binary("le", self, o)  # noqa: E704
    def __gt__(self, o): return npx.binary("gt", self, o)  # noqa: E704
    def __ge__(self, o): return npx.binary("ge", self, o)  # noqa: E704
    def __eq__(self, o): return npx.binary("eq", self, o)  # noqa: E704
    def __ne__(self, o): return npx.binary("ne", self, o)  # noqa: E704
    def __and__(self, o): return npx.logical("logical_and", self, o)  # noqa: E704
    def __rand__(self, o): return npx.logical("logical_and", o, self)  # noqa: E704
    def __or__(self, o): return npx.logical("logical_or", self, o)  # noqa: E704
    def __ror__(self, o): return npx.logical("logical_or", o, self)  # noqa: E704
    def __xor__(self, o): return npx.logical("logical_xor", self, o)  # noqa: E704
    def __rxor__(self, o): return npx.logical("logical_xor", o, self)  # noqa: E704
    # NumPy's ufuncs say what gradfuse supports of these, at the user's line
    def __lshift__(self, o): return np.left_shift(self, o)  # noqa: E704
    def __rlshift__(self, o): return np.left_shift(o, self)  # noqa: E704
    def __rshift__(self, o): return np.right_shift(self, o)  # noqa: E704
    def __rrshift__(self, o): return np.right_shift(o, self)  # noqa: E704
    def __divmod__(self, o): return np.divmod(self, o)  # noqa: E704
    def __rdivmod__(self, o): return np.divmod(o, self)  # noqa: E704
    def __invert__(self): return npx.logical_not(self)  # noqa: E704
    def __neg__(self): return npx.unary("neg", self)  # noqa: E704
    def __pos__(self): return Tracer(self.builder, self.node)  # noqa: E704  (a copy in NumPy)
    def __abs__(self): return npx.unary("abs", self)  # noqa: E704

    # `h += v`: NumPy changes the array itself, which its aliases and views see
    # (compiler/numpy_api/in_place.py); a copy takes it as an assignment.
    def __iadd__(self, o): return npx.in_place.update(self, operator.add, o)  # noqa: E704
    def __isub__(self, o): return npx.in_place.update(self, operator.sub, o)  # noqa: E704
    def __imul__(self, o): return npx.in_place.update(self, operator.mul, o)  # noqa: E704
    def __itruediv__(self, o): return npx.in_place.update(self, operator.truediv, o)  # noqa: E704
    def __ipow__(self, o): return npx.in_place.update(self, operator.pow, o)  # noqa: E704
    def __imatmul__(self, o): return npx.in_place.update(self, operator.matmul, o)  # noqa: E704
    def __iand__(self, o): return npx.in_place.update(self, operator.and_, o)  # noqa: E704
    def __ior__(self, o): return npx.in_place.update(self, operator.or_, o)  # noqa: E704
    def __ixor__(self, o): return npx.in_place.update(self, operator.xor, o)  # noqa: E704

    def __floordiv__(self, o): return npx.binary("floor_divide", self, o)  # noqa: E704
    def __rfloordiv__(self, o): return npx.binary("floor_divide", o, self)  # noqa: E704
    def __mod__(self, o): return npx.binary("remainder", self, o)  # noqa: E704
    def __rmod__(self, o): return npx.binary("remainder", o, self)  # noqa: E704
    def __ifloordiv__(self, o): return npx.in_place.update(self, operator.floordiv, o)  # noqa: E704,E501
    def __imod__(self, o): return npx.in_place.update(self, operator.mod, o)  # noqa: E704

    __hash__ = object.__hash__

    # --- methods -------------------------------------------------------------------
    def __getitem__(self, key): return npx.getitem(self, key)  # noqa: E704

    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return npx.sum(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return npx.mean(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)

    def max(self, axis=None, out=None, keepdims=False, **kw):
        return npx.amax(self, axis=axis, out=out, keepdims=keepdims, **kw)

    def min(self, axis=None, out=None, keepdims=False, **kw):
        return npx.amin(self, axis=axis, out=out, keepdims=keepdims, **kw)

    def prod(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return npx.prod(self, axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
        return npx.var(self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims,
                       **kw)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
        return npx.std(self, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims,
                       **kw)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return npx.reshape(self, shape, order=order)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return npx.transpose(self, axes or None)

    def swapaxes(self, a, b): return npx.swapaxes(self, a, b)  # noqa: E704
    def squeeze(self, axis=None): return npx.squeeze(self, axis)  # noqa: E704
    def ravel(self, order="C"): return npx.reshape(self, (-1,), order)  # noqa: E704

    def flatten(self, order="C"):  # a copy
        return npx.dispatch.fresh(npx.reshape(self, (-1,), order))

    def clip(self, min=None, max=None, out=None, **kwargs):  # ndarray.clip's names
        return npx.clip(self, min, max, out, **kwargs)

    def dot(self, other): return npx.dot(self, other)  # noqa: E704

    def sort(self, axis=-1, kind=None, order=None):
        raise UnsupportedError("x.sort() sorts in place, and traced arrays are immutable; "
                               "write x = np.sort(x, axis)", user_loc())

    def astype(self, dtype, copy=True):
        return npx.astype(self, dtype)

    def __getattr__(self, name: str):
        """The other array methods (`x.cumsum(axis=0)`, ...): NumPy's function of that name,
        as gradfuse implements it, with the array first."""
        function = getattr(np, name, None)
        handler = npx.FUNCTIONS.get(function) if callable(function) else None
        if handler is None and isinstance(function, np.ufunc) and function in npx.UFUNCS:
            handler = npx.UFUNCS[function]  # what NumPy's object loops call: `a.exp()`
        if handler is None or name.startswith("_"):
            raise AttributeError(f"traced arrays have no attribute {name!r}")
        return called(f".{name}()")(functools.partial(handler, self))


# --- the trace in progress, and the user's call each node is part of ---------------------
@contextmanager
def building(builder: Builder):
    builders = TRACES.builders
    builders.append(builder)
    try:
        yield builder
    finally:
        builders.pop()


@contextmanager
def calling(call: str):
    """Nodes made while the user's NumPy call `call` runs are tagged with it (the outermost
    call wins: np.mean's sum and division are np.mean's)."""
    builder = current_builder()
    if builder is None or builder.call:
        yield
        return
    builder.call = call
    try:
        yield
    finally:
        builder.call = ""


def static_numbers(args: tuple, kwargs: dict) -> None:
    """A NumPy function (or method) refused these arguments: if one of them is only a Python
    number argument of the compiled function (`np.roll(x, shift)`, `x.sum(axis=k)`,
    `np.pad(x, width)` with `shift`, `k`, `width` passed in as ints), raise
    `ConcretizeScalars` so the function is traced again with those numbers static, as
    `if training:` is (`Builder.concretize`); else return, and the error stands."""
    for value in [*args, *kwargs.values()]:
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, Tracer):
                item.builder.concretize(item)


def called(call: str):
    """Decorate a Tracer method as the user's call `call` (an operator, `.sum()`)."""
    def decorate(method):
        @functools.wraps(method)
        def tagged(*args, **kwargs):
            with calling(call):
                try:
                    return method(*args, **kwargs)
                except TraceError:
                    static_numbers(args, kwargs)
                    raise
        return tagged
    return decorate


def current_builder() -> Builder | None:
    """The builder of this thread's trace in progress, if any (a compiled function called
    while tracing)."""
    builders = TRACES.builders
    return builders[-1] if builders else None


# What the user wrote, for generated code's comments: each operator and method is a call.
_OPERATOR_CALLS = {
    "__add__": "+", "__radd__": "+", "__sub__": "-", "__rsub__": "-", "__mul__": "*",
    "__rmul__": "*", "__truediv__": "/", "__rtruediv__": "/", "__pow__": "**", "__rpow__": "**",
    "__matmul__": "@", "__rmatmul__": "@", "__lt__": "<", "__le__": "<=", "__gt__": ">",
    "__ge__": ">=", "__eq__": "==", "__ne__": "!=", "__and__": "&", "__rand__": "&",
    "__or__": "|", "__ror__": "|", "__xor__": "^", "__invert__": "~", "__neg__": "-",
    "__abs__": "abs", "__getitem__": "[]",
}


def weak(value: Any) -> Any:
    """A traced number that computes as a Python float does (NEP 50's weak scalar): with other
    such numbers in float64, taking the dtype of the arrays it meets. What an optimizer's
    settings are to its NumPy rule (`lr` is a Python float), given to a kernel in an array."""
    if not isinstance(value, Tracer):  # run, not traced: the Python float itself
        return float(value)
    return Tracer(value.builder, value.node, True)


def weak_operator(method):
    """Python's arithmetic on Python scalars gives a Python scalar: an operator whose operands
    are all weak (Python scalar arguments, numbers) makes a weak value. NumPy's functions of
    them (np.exp(lr)) give NumPy scalars, which are not weak."""
    @functools.wraps(method)
    def operator_(*operands):
        result = method(*operands)
        if isinstance(result, Tracer) and any(isinstance(v, Tracer) and v.weak
                                              for v in operands) \
                and all(v.weak if isinstance(v, Tracer) else type(v) in (bool, int, float)
                        for v in operands):
            result.weak = True
        return result
    return operator_


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__pow__", "__rpow__", "__floordiv__",
              "__rfloordiv__", "__mod__", "__rmod__", "__neg__", "__pos__", "__abs__"):
    setattr(Tracer, _name, weak_operator(getattr(Tracer, _name)))
for _name, _call in _OPERATOR_CALLS.items():
    setattr(Tracer, _name, called(_call)(getattr(Tracer, _name)))
for _name in ("sum", "mean", "max", "min", "prod", "var", "std", "reshape", "transpose",
              "swapaxes", "squeeze", "ravel", "flatten", "clip", "dot", "astype"):
    setattr(Tracer, _name, called(f".{_name}()")(getattr(Tracer, _name)))
Tracer.T = property(called(".T")(Tracer.T.fget))
del _name, _call


from compiler import numpy_api as npx  # noqa: E402  (numpy_api builds on Tracer)
