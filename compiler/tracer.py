"""Tracing: run a NumPy function on symbolic values and record the ops it performs as IR.

A `Tracer` stands for one IR node. It implements NumPy's dispatch protocols
(`__array_ufunc__`, `__array_function__`) and the Python operators, so users
write plain NumPy. A `Builder` turns each call into a node: it lifts constants
(Python scalars are "weak", as in NumPy 2), runs the op's shape rule, and tags
the node with the user's file:line. Variable names for generated code are read
from the user's frames once the trace is over; both come from compiler/user_code.py.
"""

from __future__ import annotations

import functools
import linecache
import operator
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np

import runtime
from compiler import ops, pytree
from compiler.errors import TraceError, UnsupportedError
from compiler.ir import Graph, Node, SourceLoc, Sym, TensorType, walk
from compiler.ops.registry import TRACES
from compiler.symdim import Concretize, SymDim
from compiler.user_code import UserFrames, user_loc

# The ops whose result is a NumPy view of their first input (it shows the input's changes).
VIEW_OPS = frozenset({"slice", "reshape", "transpose", "broadcast_to"})


class Builder:
    """Creates nodes for one trace: constant lifting, shape rules, locations, name hints."""

    def __init__(self, sym_hints: dict[Sym, int] | None = None) -> None:
        self.sym_hints = sym_hints or {}
        self.sym_sources: dict[Sym, tuple[Node, int]] = {}
        self.grad_of: Node | None = None  # set while the reverse pass emits a VJP
        self.loc_override: SourceLoc | None = None
        self.user_frames: UserFrames | None = None  # set by `trace` while the user's code runs
        self.call: str = ""  # the NumPy call of the user's that is running (`np.mean`, `@`)
        # The views of copies that may be assigned into, once there is a copy
        # (compiler/numpy_api/assignment.py: Views).
        self.copies = None
        # Which traced value each view (a slice, reshape, transpose, broadcast) was taken of,
        # and that value's in-place version then; the in-place updates made so far, once
        # there are any (compiler/numpy_api/in_place.py: InPlaceLog).
        self.view_sources: dict[int, tuple[Tracer, Tracer, int]] = {}
        self.in_place = None
        # An error NumPy would swallow (it replaces an error of float() with its own),
        # raised at the next op or when the function returns (compiler/numpy_api/conversion.py).
        self.deferred_error: TraceError | None = None

    def input(self, index: int, type: TensorType, name: str, weak: bool = False) -> Tracer:
        """The traced value of argument leaf `index`; `weak` for a Python int or float, which
        takes the dtype of the arrays it meets, as in NumPy 2 (`x32 * lr` is float32)."""
        node = Node("input", (), {"index": index, "type": type}, type, name=name)
        for axis, d in enumerate(type.shape):
            if isinstance(d, Sym):
                self.sym_sources.setdefault(d, (node, axis))
        return Tracer(self, node, weak)

    def wrap(self, node: Node) -> Tracer:
        return Tracer(self, node)

    def capture(self, value: Tracer) -> Node:
        """The node for a traced value of another trace (a loop body's builder makes it an
        input of the body: compiler/scan.py)."""
        return value.node

    def lift(self, value: Any, peers: list[np.dtype]) -> Node:
        """A constant node; Python scalars take their dtype from the traced operands (NEP 50)."""
        if isinstance(value, Tracer):
            if self.copies is not None:
                self.copies.check(value)  # a view read after its copy was assigned into
            if self.in_place is not None:
                self.in_place.check(value)  # a view read after its base changed in place
            return value.node if value.builder is self else self.capture(value)
        if isinstance(value, runtime.Tensor):
            raise TraceError(
                "a runtime Tensor (a Parameter) is read here from outside the arguments (a "
                "closure, a global or an attribute of `self`): it would be baked into the "
                "kernel as a constant, with no gradient and blind to later updates; pass it "
                "in as an argument (e.g. in the params dict)", user_loc())
        if isinstance(value, SymDim):  # a shape entry is a Python int: weak, like 2
            dtype = np.result_type(*peers, 1) if peers else np.dtype(np.int64)
            traced = value.traced(dtype)
            return traced.node if traced.builder is self else self.capture(traced)
        if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
            dtype = np.result_type(*peers, value) if peers else np.result_type(value)
            array = np.asarray(value, dtype=dtype)
        else:
            try:
                array = np.asarray(value)
            except Exception:
                array = None
            if array is not None and array.dtype == object:  # np.array([...]) of traced values
                return self.lift(npx.conversion.from_objects(array), peers)
            if array is None:
                raise TraceError(f"cannot use a {type(value).__name__} as an array "
                                 f"in a traced function", user_loc())
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise TraceError(f"{_shown(value)} is used as an array here, but kernels compute "
                             "on real numbers only (bool, int, float)", user_loc())
        return Node("const", (), {"value": array}, TensorType(array.dtype, array.shape))

    def emit(self, op: str, inputs: tuple, attrs: dict[str, Any]) -> Tracer:
        if self.deferred_error is not None:
            raise self.deferred_error
        opdef = ops.get(op)
        elementwise = opdef.kind == "elementwise"
        peers = [x.node.dtype for i, x in enumerate(inputs)
                 if isinstance(x, Tracer) and isinstance(x.node.type, TensorType)
                 and not (op == "where" and i == 0) and not (x.weak and elementwise)]
        if elementwise and peers:
            inputs = tuple(_adapted(x, peers) if isinstance(x, Tracer) and x.weak else x
                           for x in inputs)
        # where's condition is boolean whatever the values are: a Python bool stays one.
        nodes = tuple(self.lift(x, [] if op == "where" and i == 0 else peers)
                      for i, x in enumerate(inputs))
        loc = self.loc_override or user_loc()
        if loc is not None and self.call and not loc.call:
            loc = loc.with_call(self.call)
        if self.user_frames is not None:
            self.user_frames.see(sys._getframe(1))
        try:
            out_type = opdef.infer(*(n.type for n in nodes), **attrs)
        except ops.DimConflict as conflict:
            self._resolve_conflict(conflict, op, nodes, loc)
            raise AssertionError("unreachable") from None
        except ops.ShapeError as err:
            message = self._concrete_message(opdef, nodes, attrs, err)
            raise TraceError(f"{_describe(op)}: {message}", loc) from None
        if getattr(out_type, "dtype", None) == np.float16:
            inputs_of = ", ".join(sorted({str(n.dtype) for n in nodes}))
            raise TraceError(
                f"{(loc.call if loc is not None and loc.call else None) or _describe(op)} of "
                f"{inputs_of} values is float16 in NumPy (np.exp, np.sqrt, "
                "np.round, ... of bool and 8-bit ints), which compiled kernels have no "
                "arithmetic for; convert the input first, e.g. x.astype(np.float32)", loc)
        node = Node(op, nodes, dict(attrs), out_type, loc=loc, grad_of=self.grad_of)
        result = Tracer(self, node)
        if op in VIEW_OPS and inputs and isinstance(inputs[0], Tracer):
            source = inputs[0]
            version = 0 if self.in_place is None else self.in_place.version(source)
            self.view_sources[id(result)] = (result, source, version)
        if self.copies is not None:
            self.copies.derived(op, attrs, inputs, result)
        return result

    def _concrete_message(self, opdef, nodes, attrs, err) -> str:
        """The shape rule's complaint, restated with the sizes the user passed instead of N."""
        def concrete(t: TensorType) -> TensorType:
            return TensorType(t.dtype, tuple(self.sym_hints.get(d, d) for d in t.shape))

        try:
            opdef.infer(*(concrete(n.type) for n in nodes), **attrs)
        except ops.ShapeError as concrete_err:
            return str(concrete_err)
        except Exception:  # noqa: BLE001 -- fall back to the symbolic message
            pass
        return str(err)

    def _resolve_conflict(self, conflict, op, nodes, loc) -> None:
        """A symbolic dim met a concrete one: specialize it if the sizes agree, else report."""
        hint = self.sym_hints.get(conflict.sym)
        if conflict.other is None or hint == conflict.other or hint is None:
            raise Concretize(conflict.sym)
        shapes = " and ".join(_concrete_shape(n.type.shape, self.sym_hints) for n in nodes)
        raise TraceError(f"{_describe(op)}: shapes {shapes} cannot be broadcast together", loc)


def _adapted(weak: Tracer, peers: list[np.dtype]) -> Tracer:
    """A Python scalar argument as NumPy 2 computes it with arrays of `peers` (NEP 50): a
    float, or an int among floats, takes their float dtype. An int among ints stays int64
    (NumPy would compute in the array's narrower int, raising if the value does not fit,
    which only the value can tell)."""
    sample = 0.0 if weak.dtype.kind == "f" else 0
    dtype = np.result_type(*peers, sample)
    if dtype == weak.dtype or dtype.kind != "f" or weak.dtype.kind not in "fi":
        return weak
    return weak.astype(dtype)


def _concrete_shape(shape, hints) -> str:
    dims = [str(hints.get(d, d)) if isinstance(d, Sym) else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


_OP_WORDS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "matmul": "@"}


def _describe(op: str) -> str:
    word = _OP_WORDS.get(op)
    return f"{op} ({word})" if word else op


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

    def __repr__(self) -> str:
        return f"Tracer({self.node.type}, {self.node.op})"

    # --- what tracing cannot do ----------------------------------------------------
    def __bool__(self) -> bool:
        raise TraceError(
            "the truth value of a traced array is unknown while tracing, so Python's "
            "`if`, `while`, `and`, `or` and `not` cannot branch on it; use "
            "np.where(condition, a, b) to choose between values elementwise", user_loc())

    def __array__(self, dtype=None, copy=None):
        """np.array([a, b]), np.asarray(a): an object array of traced scalars, which the next
        traced operation turns back into a traced array (compiler/numpy_api/conversion.py)."""
        return npx.conversion.as_objects(self, dtype)

    def __float__(self):
        return npx.conversion.needs_value(self, float)

    def __int__(self):
        return npx.conversion.needs_value(self, int)

    def item(self, *args):
        raise UnsupportedError(
            "x.item() needs the array's value, which is unknown while tracing; keep it an "
            "array (x[()] or x.reshape(()) for a 0-d one), or return it and call .item() on "
            "the result", user_loc())

    def __format__(self, spec: str) -> str:
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


# --- running a trace ---------------------------------------------------------------------
@contextmanager
def building(builder: Builder):
    builders = TRACES.builders
    builders.append(builder)
    try:
        yield builder
    finally:
        builders.pop()


_NUMERIC_KINDS = "biuf"  # what kernels compute on: no complex, strings, dates or objects


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


def _check_returned(fn: Callable, name: str, leaves: list) -> None:
    """Refuse a returned leaf that is no number (a string, say), at `fn`'s definition: the
    return statement has run, so no line of it is on the stack any more."""
    for leaf in leaves:
        if isinstance(leaf, Tracer | SymDim | runtime.Tensor):
            continue
        if isinstance(leaf, np.ndarray) and leaf.dtype == object:
            continue  # np.array([...]) of traced values: `Builder.lift` reads it
        kind = np.asarray(leaf).dtype.kind if isinstance(leaf, bool | int | float | complex
                                                            | np.ndarray | np.generic) else "O"
        if kind not in _NUMERIC_KINDS:
            code = getattr(fn, "__code__", None)
            loc = SourceLoc(code.co_filename, code.co_firstlineno, linecache.getline(
                code.co_filename, code.co_firstlineno)) if code else None
            raise TraceError(
                f"{name} returns {_shown(leaf)}: a compiled function returns arrays and "
                "numbers (alone, or in dicts, lists and tuples); return anything else from a "
                "plain Python function that calls it", loc)


def trace(fn: Callable, input_types: list[TensorType], input_names: list[str],
          build_args: Callable[[list[Tracer]], tuple[tuple, dict]],
          sym_hints: dict[Sym, int], name: str,
          weak: frozenset[int] = frozenset()) -> tuple[Graph, pytree.TreeDef]:
    """Trace `fn` on symbolic inputs of `input_types`; return its graph and output structure.

    `build_args` turns the flat list of input tracers into fn's (args, kwargs); the inputs
    at `weak` positions are Python scalars (`Builder.input`).
    """
    builder = Builder(sym_hints)
    inputs = [builder.input(i, t, n, i in weak)
              for i, (t, n) in enumerate(zip(input_types, input_names))]
    args, kwargs = build_args(inputs)
    frames = builder.user_frames = UserFrames(sys._getframe())
    try:
        with building(builder):
            result = npx.pymath.with_traced_math(fn)(*args, **kwargs)  # math.exp(x) works
            if builder.deferred_error is not None:
                raise builder.deferred_error
            out_leaves, out_tree = pytree.flatten(result)
            _check_returned(fn, name, out_leaves)
            outputs = [builder.lift(leaf, []) for leaf in out_leaves]
    finally:
        builder.user_frames = None
    npx.random_draws.warn_random_draws(list(frames.depths), name)
    names = frames.names(Tracer)
    if not outputs:
        raise TraceError(f"{name} returned no arrays", None)
    if len(outputs) == 1 and outputs[0].name is None and outputs[0].op != "input":
        outputs[0].name = name  # `loss = ...` reads better than `t7 = ...`
    graph = Graph([t.node for t in inputs], outputs, name=name)
    for node in walk(graph):
        if node.name is None and node.id in names:
            node.name = names[node.id]
    return graph, out_tree


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


def called(call: str):
    """Decorate a Tracer method as the user's call `call` (an operator, `.sum()`)."""
    def decorate(method):
        @functools.wraps(method)
        def tagged(*args, **kwargs):
            with calling(call):
                return method(*args, **kwargs)
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
