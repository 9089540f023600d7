"""How code generation handles an op: the `Lowering` an `OpDef` carries, next to its rules.

Code generation (compiler/codegen) never looks at an op's name: it asks the op's
lowering what *role* a node plays, and lets the lowering write the code that is the
op's own. The roles:

- "source": a graph input, a constant, a size read off a shape (`Source`);
- "member": computed once per element inside a loop nest (`Elementwise`, whose scalar
  template is the op's `code`; a matmul's small contraction loop);
- "view": no code of its own, read through index arithmetic (`View`: transposes,
  broadcasts, slices, gathers);
- "sink": consumes a member per element and finishes after the nest (`Reduction`,
  `Scatter`);
- "call": one statement (or a few loops) outside any nest (`Call`: BLAS products,
  concatenation, reshapes of an array, scans);
- "alias": names a result of another node (`tuple_get`);
- "inlined": replaced by its graph before code generation (`custom_call`).

The callables a lowering holds receive code generation's objects (a `Reader` for
element reads, a `KernelWriter` for statements; see compiler/codegen/emit.py) and
only use their public methods, so this module imports nothing from code generation.
docs/adding_an_op.md walks through adding an op with its lowering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Index = tuple[str, ...]


class Lowering:
    """What every lowering answers; the subclasses below fill it in."""

    ROLE = ""
    reads_in_place = False  # as a member or sink: reads its inputs at its own element
    calls_blas = False

    def role(self, node) -> str:
        return self.ROLE

    def reads_at_element(self, node, operand) -> bool:
        """Whether `node` reads its input `operand` at its own element (then a member of its
        nest is read as a scalar local): `reads_in_place`, unless the lowering says more."""
        return self.reads_in_place

    def needs_array(self, node, operand, is_array) -> bool:
        """Whether `node` must read its input `operand` (a view) from an array of its own;
        `is_array(x)` tells whether another node will have an array."""
        return False

    def checked_indices(self, node):
        """(indices node, the length of the axis they index) where `node` reads indices that
        must be checked against that length before the kernel runs, else None."""
        return None

    def as_call(self) -> Call | None:
        """The call that computes the node when it is a statement of its own, if any."""
        return None


@dataclass(frozen=True)
class Source(Lowering):
    """A value the kernel starts from: an argument or a constant array (read from its array),
    a scalar constant (`value(node)`: spelled as a literal), or what `read(reader, node)`
    spells (a size, from the arrays' shapes)."""

    value: Callable[[Any], Any] | None = None
    read: Callable[[Any, Any], str] | None = None
    ROLE = "source"


@dataclass(frozen=True)
class Elementwise(Lowering):
    """One scalar expression per element: `code` formats the operands (`{0}`, `{1}`, ... and
    `{dtype}`, the result's), after each is cast to `operand_dtypes(node)[k]` (None: as it
    is; by default the result's dtype, as NumPy computes). Results that numba would widen
    (bools and small ints) are cast back, unless `exact` says the template keeps the type."""

    code: str | Callable[[Any], str]  # or the template for a node (by its inputs' dtypes)
    operand_dtypes: Callable[[Any], list] | None = None
    exact: bool = False
    ROLE = "member"
    reads_in_place = True

    def template(self, node) -> str:
        return self.code(node) if callable(self.code) else self.code

    def dtypes(self, node) -> list:
        if self.operand_dtypes is not None:
            return self.operand_dtypes(node)
        return [node.dtype] * len(node.inputs)


@dataclass(frozen=True)
class View(Lowering):
    """No code: `read(reader, node, index)` reads the input where the view's element is.
    `indices(node)` gives a gather's (indices, axis length) for the kernel's index checks;
    `unit` says the view only adds or drops size-1 axes (the element stays where it is)."""

    read: Callable[[Any, Any, Index], str]
    indices: Callable[[Any], tuple] | None = None
    unit: bool = False
    keeps_all: bool = False  # every element of the input is in the view (no slice, no gather)
    # When the view must be an array of its own (a result) and its input is one: a call that
    # makes it without copying (a size-1 reshape: `x.reshape(...)`).
    materialize: Call | None = None
    # A view that only relabels its input's axes (transposes, size-1 reshapes): for each of
    # its axes, the input axis it is, None for a size-1 axis it adds (input axes it leaves
    # out have size 1). Calls that take strided arrays (BLAS) read such a view in place.
    axes: Callable[[Any], tuple[int | None, ...]] | None = None
    ROLE = "view"

    def checked_indices(self, node):
        return self.indices(node) if self.indices is not None else None

    def as_call(self) -> Call | None:
        return self.materialize


@dataclass(frozen=True)
class Reduction(Lowering):
    """Accumulates over the reduced axes of its input: `identity(dtype)` starts the
    accumulator, `update(target, value, helpers, dtype)` is the statement per element.
    Float sums and products accumulate in float64 (`widens`), rounded once at the end;
    `privatized` says numba's prange combines per-thread accumulators of it (`+=`, `*=`)."""

    identity: Callable[[np.dtype], Any]
    update: Callable[[str, str, Any, np.dtype], str]
    widens: bool = False
    privatized: bool = False
    # NumPy's ufunc of a reduction without an identity of its own (max: "maximum"): a node
    # with the attr `nonempty` raises, as NumPy, where a reduced axis is empty at run time
    no_identity: str = ""
    ROLE = "sink"
    reads_in_place = True

    def nonempty_dims(self, node) -> list:
        """The reduced axes' dims that must not be 0 when the kernel runs (symbolic ones:
        a static 0 was refused when traced)."""
        if not (self.no_identity and node.attrs.get("nonempty")):
            return []
        return [node.inputs[0].shape[a] for a in node.attrs["axes"]
                if not isinstance(node.inputs[0].shape[a], int)]

    def accumulator_dtype(self, node) -> np.dtype:
        x = node.inputs[0]
        if self.widens:
            return np.dtype(np.float64) if x.type.is_float else np.dtype(np.int64)
        return node.dtype


@dataclass(frozen=True)
class Scatter(Lowering):
    """Writes each element of its first input into zeros of its own shape, at
    `target(reader, node, index)`; `adds` when several elements may land on one place
    (`+=`, which races under prange); `ordered` when they may, and the last one in the order
    of the first input's elements must win (`=`, one thread in order)."""

    target: Callable[[Any, Any, Index], Index]
    adds: bool = False
    ordered: bool = False
    indices: Callable[[Any], tuple] | None = None
    ROLE = "sink"
    reads_in_place = True

    def checked_indices(self, node):
        return self.indices(node) if self.indices is not None else None

    def reads_at_element(self, node, operand) -> bool:
        # The value is read at its element; the other inputs (indices) where `target` says,
        # through the kernel's reader, so they are arrays, not the nest's locals.
        return operand is node.inputs[0]


@dataclass(frozen=True)
class Call(Lowering):
    """Statements outside any nest: `emit(writer, node)`. `array_inputs`: every array input
    must be an array (a view is copied into one first); `aliases_input`: the result shares
    its first input's memory (`x.reshape(...)`)."""

    emit: Callable[[Any, Any], None]
    array_inputs: bool = False
    aliases_input: bool = False
    # operand_ok(node, view, is_array): whether the call reads its input `view` as it is
    # (BLAS takes a transposed array); is_array(x) tells whether x will be an array.
    operand_ok: Callable[[Any, Any, Callable], bool] | None = None
    calls_blas: bool = False
    # It writes every element of the array the writer names for the node, and reads none:
    # where that node is a result stored into an input, the call may write there directly.
    fills_result: bool = False
    # It reads its first input only at the element it writes, and nothing else of its
    # result (a product added into an accumulator): where the node is a result stored into
    # that very input, the call may write there directly.
    accumulates: bool = False
    ROLE = "call"

    def needs_array(self, node, operand, is_array) -> bool:
        if self.operand_ok is not None:
            return not self.operand_ok(node, operand, is_array)
        return self.array_inputs

    def as_call(self) -> Call:
        return self


@dataclass(frozen=True)
class Choice(Lowering):
    """One of two lowerings, chosen per node (a matmul: a BLAS call, or a loop in a nest)."""

    choose: Callable[[Any], bool]  # True: `first`
    first: Lowering
    second: Lowering

    def of(self, node) -> Lowering:
        return self.first if self.choose(node) else self.second

    def role(self, node) -> str:
        return self.of(node).role(node)


@dataclass(frozen=True)
class Member(Lowering):
    """A member whose code is not one expression: `write(nests, node, index, target)`
    writes the statements that leave the element's value in `target`, a scalar local."""

    write: Callable[[Any, Any, Index, str], None]
    ROLE = "member"


@dataclass(frozen=True)
class Alias(Lowering):
    """Names a result that another node's code computes (a scan's `tuple_get`)."""

    ROLE = "alias"


@dataclass(frozen=True)
class Inlined(Lowering):
    """Replaced by its graph before code generation (compiler.custom.inline_calls)."""

    ROLE = "inlined"


def lowering_of(node) -> Lowering:
    """The lowering that handles `node` (a `Choice` resolved for it)."""
    from compiler.ops.registry import get

    lowering = get(node.op).lowering
    return lowering.of(node) if isinstance(lowering, Choice) else lowering
