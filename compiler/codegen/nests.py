"""Writing one loop nest: its members, matrix-product loops, reductions and scatters.

Inside the nest each member is one assignment to a scalar local, or goes
straight into its array when nothing in the nest reads it again. Reductions
accumulate in float64 (floats) into a scalar opened at the loop depth from
which every remaining loop is reduced (row sums, full sums), else into an
array (on the kernel's stack when small and static: compiler/codegen/stack.py),
and round once to their dtype when their loops close.

Large nests run their outermost loop with `numba.prange` (and the kernel
compiles with `parallel=True`) when that is race-free: every member writes
only its own element, and a reduction over the outer loop accumulates into a
scalar with `+=` or `*=`, which numba privatizes per thread and combines.
Array accumulators indexed without the outer loop, max/min through helpers,
and scatter-adds keep the nest serial. A parallel loop costs ~1.8 us per call
to start the threads, so only nests of at least `PARALLEL_MIN_ELEMENTS`
elements, all static, qualify (measured below); symbolic extents (a batch
size) stay serial, because a training step on a batch of 20 cannot afford it.
Kernels that call BLAS stay serial throughout (see `parallel_loop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from compiler.codegen import stack
from compiler.codegen.fusion import REDUCTIONS, LoopNest, is_view
from compiler.codegen.names import contraction_index, loop_index
from compiler.codegen.reading import (
    Index,
    broadcast_index,
    dim_text,
    offset,
    shape_text,
    subscript,
)
from compiler.codegen.scalars import Operand, dtype_name, elementwise, literal
from compiler.ir import Node

if TYPE_CHECKING:
    from compiler.codegen.emit import KernelWriter

INDENT = "    "
SCATTER_ADDS = frozenset({"take_grad", "take_along_axis_grad"})  # race when parallel

# Nests with at least this many elements (static extents) run their outer loop with
# numba.prange. Measured on 2 threads, float32: a light loop (a few flops per element)
# takes ~0.3 ns per element serially, so the ~1.8 us that starting the threads costs is
# repaid from about 10,000 elements; W3's fused loop (3 transcendentals per element)
# went from 0.46 to 0.25 ms at 1e5 elements and from 4.6 to 2.5 ms at 1e6.
PARALLEL_MIN_ELEMENTS = 1 << 15


def comment_of(node: Node) -> str | None:
    """Where a statement comes from: the user's file:line, and for backward statements
    the forward op they differentiate (`d maximum @ model.py:12`)."""
    where = str(node.loc) if node.loc is not None else None
    if node.grad_of is not None:
        return f"d {node.grad_of.op} @ {where}" if where else f"d {node.grad_of.op}"
    return where


@dataclass
class _Reduction:
    node: Node
    start: int | None  # loop depth that opens its scalar accumulator; None: an array one
    acc: str
    acc_dtype: np.dtype
    out_index: Index  # where the result goes, in terms of the nest's index


class NestWriter:
    """Writes loop nests into a kernel, sharing its names, reader and lines."""

    def __init__(self, kernel: KernelWriter) -> None:
        self.k = kernel
        self.locals: dict[int, str] = {}  # member id -> its scalar local in the current nest
        self.parallel = False  # whether any nest so far runs a prange loop

    def write(self, nest: LoopNest) -> None:
        self.locals = {}
        for m in nest.members:
            self._name_member(m)
        for m in nest.members:
            if m.id in self.k.plan.arrays:
                self.k.alloc(m)
        parallel = self.parallel_loop(nest)
        reductions = {s.id: self._reduction(s, parallel) for s in nest.sinks
                      if s.op in REDUCTIONS}
        for s in nest.sinks:
            if s.op not in REDUCTIONS:
                self.k.alloc(s, fill="zeros")
        self._loops(nest, 0, reductions, parallel)
        for r in reductions.values():
            name = self.k.names[r.node.id]
            if r.start is None and r.acc != name:
                # a copy (astype copies too): an accumulator on the stack dies with the kernel
                copy = "copy()" if r.acc_dtype == r.node.dtype else \
                    f"astype({dtype_name(r.node.dtype)})"
                self.k.line(f"{name} = {r.acc}.{copy}", comment_of(r.node))

    def _name_member(self, m: Node) -> None:
        if m.shape == () or m.id not in self.k.plan.arrays:
            self.locals[m.id] = self.k.name_of(m)
        else:
            name = self.k.name_of(m)
            if m.id in self.k.plan.local_reads or m.op == "matmul":
                self.locals[m.id] = self.k.namer.fresh(f"{name}_val")

    def parallel_loop(self, nest: LoopNest) -> bool:
        """Whether the nest's outer loop is large and can be a race-free `numba.prange`."""
        if self.k.calls_blas:
            # numba's OpenMP workers spin for a while after a parallel region; a BLAS call
            # that follows runs its own threads on the same two cores, and W4's step took
            # 47 ms instead of 8 ms. Kernels that call BLAS get their threads from it.
            return False
        if not nest.domain or any(not isinstance(d, int) for d in nest.domain) \
                or math.prod(nest.domain) < PARALLEL_MIN_ELEMENTS:
            return False
        if any(s.op in SCATTER_ADDS for s in nest.sinks):
            return False
        # numba privatizes `acc += v` and `acc *= v` per thread; nothing else is safe
        return all(not _reduces_outer_loop(r)
                   or (_accumulator_depth(r) == 0 and r.op in ("sum", "prod"))
                   for r in nest.sinks if r.op in REDUCTIONS)

    def _loops(self, nest: LoopNest, depth: int, reductions: dict[int, _Reduction],
               parallel: bool = False) -> None:
        """Loop `depth` of the nest, with the reductions whose accumulators live at it;
        `parallel` makes it a `numba.prange` (the outermost loop only)."""
        opening = [r for r in reductions.values() if r.start == depth]
        for r in opening:
            self.k.line(f"{r.acc} = {_initial(r)}")
        if depth == len(nest.domain):
            for node in nest.body:
                if node.id in reductions:
                    self._accumulate(nest, reductions[node.id])
                elif node.id in nest.member_ids:
                    self._member(nest, node)
                else:
                    self._scatter(nest, node)
        else:
            loop = "numba.prange" if parallel else "range"
            self.parallel |= parallel
            self.k.line(f"for {loop_index(depth)} in {loop}({dim_text(nest.domain[depth])}):")
            self.k.depth += 1
            self._loops(nest, depth + 1, reductions)
            self.k.depth -= 1
        for r in opening:
            self._finish(r)

    def _operand(self, nest: LoopNest, consumer: Node, x: Node, index: Index) -> Operand:
        """Input `x` of `consumer`, read at the element `index` of the consumer's shape."""
        if self.k.plan.reads_locally(consumer, x, nest):
            source = self.k.plan.element_source(x)
            return Operand(self.locals[source.id], x.dtype)
        return self.k.reader.operand(x, broadcast_index(x.shape, index))

    def _member(self, nest: LoopNest, m: Node) -> None:
        index = element_index(m.shape)
        local = self.locals.get(m.id)
        if m.op == "matmul":
            self._contraction(m, index, local)
        else:
            if is_view(m):  # a view that something needs as an array: copied here
                expr = self.k.reader.through(m, index)
            else:
                operands = [self._operand(nest, m, x, index) for x in m.inputs]
                expr = elementwise(m, operands, self.k.helpers)
            target = local or subscript(self.k.names[m.id], index)
            self.k.line(f"{target} = {expr}", comment_of(m))
        if local is not None and m.id in self.k.plan.arrays:
            self.k.line(f"{subscript(self.k.names[m.id], index)} = {local}")

    def _contraction(self, m: Node, index: Index, acc: str) -> None:
        a, b = m.inputs
        k = contraction_index()
        length = a.shape[-1]
        i_k = "0" if length == 1 else k
        batch = len(m.shape) - (a.type.ndim > 1) - (b.type.ndim > 1)
        a_index = (broadcast_index(a.shape[:-2], index[:batch]) + (index[batch], i_k)
                   if a.type.ndim > 1 else (i_k,))
        b_index = (broadcast_index(b.shape[:-2], index[:batch]) + (i_k, index[-1])
                   if b.type.ndim > 1 else (i_k,))
        product = (f"{self.k.reader.operand(a, a_index).as_dtype(m.dtype)} * "
                   f"{self.k.reader.operand(b, b_index).as_dtype(m.dtype)}")
        if length == 1:
            self.k.line(f"{acc} = {product}", comment_of(m))
            return
        self.k.line(f"{acc} = {literal(0, m.dtype)}")
        self.k.line(f"for {k} in range({dim_text(length)}):")
        self.k.line(f"{INDENT}{acc} += {product}", comment_of(m))

    # --- sinks ---------------------------------------------------------------------------
    def _reduction(self, r: Node, parallel: bool) -> _Reduction:
        """Where a reduction accumulates: a scalar opened at the loop depth from which all
        remaining loops are reduced (row sums, full sums), else an array of the result's shape,
        on the kernel's stack when it is small and static (compiler/codegen/stack.py) and
        numba.prange does not share it between threads."""
        x = r.inputs[0]
        axes = set(r.attrs["axes"])
        keep = r.attrs["keepdims"]
        out_index = tuple("0" if a in axes else i for a, i in enumerate(element_index(x.shape))
                          if a not in axes or keep)
        acc_dtype = _accumulator_dtype(r)
        name = self.k.name_of(r)
        start = _accumulator_depth(r)
        if start is not None:
            if r.shape != ():
                self.k.alloc(r)
            acc = name if r.shape == () and acc_dtype == r.dtype else \
                self.k.namer.fresh(f"{name}_acc")
            return _Reduction(r, start, acc, acc_dtype, out_index)
        on_stack = not parallel and stack.fits(r.shape)
        # a heap accumulator of the result's dtype is the result itself
        acc = name if acc_dtype == r.dtype and not on_stack else self.k.namer.fresh(f"{name}_acc")
        self._array_accumulator(r, acc, acc_dtype, on_stack)
        return _Reduction(r, None, acc, acc_dtype, out_index)

    def _array_accumulator(self, r: Node, acc: str, dtype: np.dtype, on_stack: bool) -> None:
        shape, init = shape_text(r.shape), _initial_value(r.op, dtype)
        if on_stack and r.op == "sum":
            self.k.line(f"{acc} = {self.k.helpers.stack_array('zeros')}({shape}, "
                        f"{dtype_name(dtype)})")
        elif on_stack:
            self.k.line(f"{acc} = {self.k.helpers.stack_array('full')}({shape}, {init}, "
                        f"{dtype_name(dtype)})")
        elif r.op in ("sum", "prod"):
            self.k.alloc(r, fill="zeros" if r.op == "sum" else "ones", dtype=dtype, name=acc)
        else:
            self.k.line(f"{acc} = np.full({shape}, {init}, {dtype_name(dtype)})")

    def _accumulate(self, nest: LoopNest, r: _Reduction) -> None:
        x = r.node.inputs[0]
        value = self._operand(nest, r.node, x, element_index(x.shape)).text
        target = r.acc if r.start is not None else subscript(r.acc, r.out_index)
        if r.node.op == "sum":
            update = f"{target} += {value}"
        elif r.node.op == "prod":
            update = f"{target} *= {value}"
        else:
            helper = self.k.helpers.use("_maximum" if r.node.op == "max" else "_minimum",
                                      r.acc_dtype)
            update = f"{target} = {helper}({target}, {value})"
        self.k.line(update, comment_of(r.node))

    def _finish(self, r: _Reduction) -> None:
        name = self.k.names[r.node.id]
        if r.acc == name:
            return
        value = Operand(r.acc, r.acc_dtype).as_dtype(r.node.dtype)
        target = name if r.node.shape == () else subscript(name, r.out_index)
        self.k.line(f"{target} = {value}", comment_of(r.node))

    def _scatter(self, nest: LoopNest, s: Node) -> None:
        g = s.inputs[0]
        index = element_index(g.shape)
        value = self._operand(nest, s, g, index).text
        name = self.k.names[s.id]
        if s.op == "pad_slice":
            target = tuple(offset(start, step, i) for (start, _, step), i
                           in zip(s.attrs["index"], index))
            self.k.line(f"{subscript(name, target)} = {value}", comment_of(s))
            return
        indices, axis, shape = s.inputs[1], s.attrs["axis"], s.attrs["shape"]
        if s.op == "take_grad":
            k = indices.type.ndim
            position = self.k.reader.gathered(indices, index[axis:axis + k], shape[axis])
            target = index[:axis] + (position,) + index[axis + k:]
        else:  # take_along_axis_grad: g broadcasts over the size-1 axes of the result
            position = self.k.reader.gathered(indices, broadcast_index(indices.shape, index),
                                            shape[axis])
            target = tuple(position if a == axis else ("0" if d == 1 else index[a])
                           for a, d in enumerate(shape))
        self.k.line(f"{subscript(name, target)} += {value}", comment_of(s))


def _accumulator_depth(r: Node) -> int | None:
    """The loop depth from which every remaining loop of reduction `r`'s nest is reduced, where
    a scalar accumulator opens; None when a kept axis lies inside a reduced one (the
    reduction accumulates into an array)."""
    axes = r.attrs["axes"]
    reduced = [a in axes for a, d in enumerate(r.inputs[0].shape) if d != 1]  # per loop depth
    start = reduced.index(True) if True in reduced else len(reduced)
    return start if all(reduced[start:]) else None


def _reduces_outer_loop(r: Node) -> bool:
    """Whether reduction `r` sums (or multiplies...) over its nest's outermost loop."""
    x = r.inputs[0]
    loops = [a for a, d in enumerate(x.shape) if d != 1]
    return bool(loops) and loops[0] in r.attrs["axes"]


def element_index(shape) -> Index:
    """The index of a nest's current element in a value of `shape`: its non-1 axes take the
    loop indices in order, its size-1 axes index 0."""
    loops = iter(range(len(shape)))
    return tuple("0" if d == 1 else loop_index(next(loops)) for d in shape)


def _accumulator_dtype(r: Node) -> np.dtype:
    """Float sums and products accumulate in float64 (rounded once at the end), as the
    interpreter does; integer ones in int64; max/min in the value's own dtype."""
    x = r.inputs[0]
    if r.op in ("sum", "prod"):
        return np.dtype(np.float64) if x.type.is_float else np.dtype(np.int64)
    return r.dtype


def _initial_value(op: str, dtype: np.dtype) -> str:
    if op == "sum":
        return literal(0, dtype)
    if op == "prod":
        return literal(1, dtype)
    if dtype == np.bool_:
        return literal(op == "min", dtype)
    if dtype.kind == "f":
        return literal(-np.inf if op == "max" else np.inf, dtype)
    info = np.iinfo(dtype)
    return literal(info.min if op == "max" else info.max, dtype)


def _initial(r: _Reduction) -> str:
    return _initial_value(r.node.op, r.acc_dtype)
