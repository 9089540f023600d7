"""The node builder of one trace: each op the user's NumPy code performs on traced values
becomes an IR node here. `Builder.lift` turns constants into nodes (Python scalars take
the traced operands' dtype: "weak", as in NumPy 2; non-numbers are refused at the user's
line), `emit` runs the op's shape rule and tags the node with the user's file:line and
call (compiler/user_code.py), `input` makes the trace's symbolic arguments.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import runtime
from compiler import ops
from compiler.errors import TraceError
from compiler.ir import Node, SourceLoc, Sym, TensorType
from compiler.symdim import Concretize, ConcretizeScalars, SymDim
from compiler.tracer import VIEW_OPS, Tracer
from compiler.user_code import UserFrames, user_loc

NUMERIC_KINDS = "biuf"  # what kernels compute on: no complex, strings, dates or objects


def shown(value: Any) -> str:
    """A value for an error message: its repr, cut short, and its class."""
    text = repr(value)
    return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"


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
        # By input node id: the argument leaves that are Python numbers a trace may make
        # static when the code needs their values (`concretize`).
        self.scalar_leaves: dict[int, int] = {}

    def input(self, index: int, type: TensorType, name: str, weak: bool = False) -> Tracer:
        """The traced value of argument leaf `index`; `weak` for a Python int or float, which
        takes the dtype of the arrays it meets, as in NumPy 2 (`x32 * lr` is float32)."""
        node = Node("input", (), {"index": index, "type": type}, type, name=name)
        for axis, d in enumerate(type.shape):
            if isinstance(d, Sym):
                self.sym_sources.setdefault(d, (node, axis))
        return Tracer(self, node, weak)

    def concretize(self, value: Tracer) -> None:
        """Python needs the value of `value` (`if`, `range`, `int()`): if it is computed from
        Python number arguments alone (`if training:`, `range(n - 1)`), raise
        `ConcretizeScalars` for them, so the function is traced again with their values; else
        return, and the caller reports that a traced array has no value yet."""
        if not self.scalar_leaves or value.builder is not self:
            return
        leaves, seen, pending = set(), set(), [value.node]
        while pending:
            node = pending.pop()
            if node.id in seen:
                continue
            seen.add(node.id)
            if node.op == "input":
                if node.id not in self.scalar_leaves:
                    return  # an array argument (or a differentiated number): no value
                leaves.add(self.scalar_leaves[node.id])
            pending.extend(node.inputs)
        if leaves:
            raise ConcretizeScalars(frozenset(leaves))

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
        if array.dtype.kind not in NUMERIC_KINDS:
            raise TraceError(f"{shown(value)} is used as an array here, but kernels compute "
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
        try:
            nodes = tuple(self.lift(x, [] if op == "where" and i == 0 else peers)
                          for i, x in enumerate(inputs))
        except OverflowError as err:  # a Python int out of the array's int range (NEP 50)
            nodes = self._lift_exact(opdef, inputs, attrs, err)
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

    def _lift_exact(self, opdef, inputs: tuple, attrs: dict, err: OverflowError) -> tuple:
        """The nodes of `inputs`, one a Python int out of the array's int range. NumPy converts
        it to the dtype its loop computes in, which for a comparison, a true division or a
        logical op is not the array's (u8 < -5 is all False, u8 / -2 is float64): there it is
        lifted as an int64, when that gives NumPy's dtype; elsewhere (u8 + 300) NumPy's
        OverflowError is the user's error."""
        loc = self.loc_override or user_loc()
        samples = [np.ones((), x.node.dtype) if isinstance(x, Tracer) else x for x in inputs]
        try:
            with np.errstate(all="ignore"):
                expected = np.asarray(opdef.impl(*samples, **attrs)).dtype
        except Exception:  # noqa: BLE001 -- NumPy refuses the int too: its error stands
            raise TraceError(str(err), loc) from None
        nodes = tuple(self.lift(x, []) for x in inputs)
        try:
            dtype = opdef.infer(*(n.type for n in nodes), **attrs).dtype
        except ops.ShapeError:
            dtype = None
        if opdef.kind != "elementwise" or dtype != expected:  # where(c, u8, -1) is u8 255
            raise TraceError(str(err), loc) from None
        return nodes

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
        # from None: the user's traceback ends at their line, not in the shape rule's DimConflict
        raise TraceError(f"{_describe(op)}: shapes {shapes} cannot be broadcast together",
                         loc) from None


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


from compiler import numpy_api as npx  # noqa: E402  (numpy_api builds on Tracer)
