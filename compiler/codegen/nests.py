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
scatter-adds and ordered scatters keep the nest serial. A parallel loop costs ~1.8 us per call
to start the threads, so only nests of at least `PARALLEL_MIN_ELEMENTS`
elements, all static, qualify (measured below); symbolic extents (a batch
size) stay serial, because a training step on a batch of 20 cannot afford it.
Kernels that call BLAS stay serial throughout (see `parallel_loop`).

A short static innermost loop whose elements are independent takes its bound through
`vm.extent(...)`, which LLVM cannot see through: it vectorizes the loop instead of
unrolling it into scalar code (see `VECTORIZE_MIN`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from compiler.codegen import stack
from compiler.codegen.fusion import LoopNest, is_view
from compiler.codegen.reading import Index, broadcast_index, dim_text, shape_text, subscript
from compiler.codegen.scalars import Operand, dtype_name, elementwise, literal
from compiler.ir import Node
from compiler.names import loop_index
from compiler.ops.lowering import Member, Reduction, Scatter, lowering_of

if TYPE_CHECKING:
    from compiler.codegen.emit import KernelWriter

INDENT = "    "

# Nests with at least this many elements (static extents) run their outer loop with
# numba.prange. Measured on 2 threads, float32: a light loop (a few flops per element)
# takes ~0.3 ns per element serially, so the ~1.8 us that starting the threads costs is
# repaid from about 10,000 elements; W3's fused loop (3 transcendentals per element)
# went from 0.46 to 0.25 ms at 1e5 elements and from 4.6 to 2.5 ms at 1e6.
PARALLEL_MIN_ELEMENTS = 1 << 15

# A static innermost loop of VECTORIZE_MIN to VECTORIZE_MAX elements that no reduction runs
# along takes its bound at run time (`vm.extent(14)`), so that LLVM vectorizes it instead of
# unrolling it (see NestWriter._vectorizable). Loops of fewer than 12 fill one AVX2 vector of
# float32 at most, and gained nothing measurable (W4's rows of 10); from about 64 elements
# LLVM no longer unrolls small bodies completely, and vectorizes them as they are.
VECTORIZE_MIN, VECTORIZE_MAX = 12, 64


def comment_of(node: Node) -> str | None:
    """Where a statement comes from: the NumPy call the user wrote (`np.mean`, `@`) and the
    user's file:line; `d` marks a backward statement (`d np.maximum (model.py:12)`), and a
    statement inside a library helper names it (`np.exp in softmax, functional.py:75`)."""
    loc = node.loc
    if loc is None:
        return f"d {node.grad_of.op}" if node.grad_of is not None else None
    what = loc.call or (node.grad_of.op if node.grad_of is not None else "")
    if what and loc.helper:
        what = f"{what} in {loc.helper.replace(' (', ', ').rstrip(')')}"
    if node.grad_of is not None:
        what = f"d {what}" if what else "d"
    return f"{what} ({loc})" if what else str(loc)


def header_of(node: Node) -> str | None:
    """The line heading the code of one user statement: the statement itself, and where it is
    (`--- grad of: pred = h @ W2 + b2   (model.py:11)` for its derivative)."""
    loc = node.loc
    if loc is None or not loc.text.strip():
        return None
    grad = "grad of: " if node.grad_of is not None else ""
    return f"--- {grad}{loc.text.strip()}   ({loc})"


@dataclass
class _Reduction:
    node: Node
    start: int | None  # loop depth that opens its scalar accumulator; None: an array one
    acc: str
    acc_dtype: np.dtype
    out_index: Index  # where the result goes, in terms of the nest's index
    # An array accumulator whose innermost loops are all reduced sums them in a scalar first,
    # opened at this depth and added into the array when they end (None: no such loops).
    partial: int | None = None
    partial_acc: str = ""


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
        for s in nest.sinks:
            self._check_not_empty(s)
        parallel = self.parallel_loop(nest)
        reductions = {s.id: self._reduction(s, parallel) for s in nest.sinks
                      if isinstance(lowering_of(s), Reduction)}
        for s in nest.sinks:
            if s.id not in reductions:  # a scatter writes into zeros of its shape
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
            if m.id in self.k.plan.local_reads or isinstance(lowering_of(m), Member):
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
        sinks = [(s, lowering_of(s)) for s in nest.sinks]
        if any(isinstance(lowering, Scatter) and (lowering.adds or lowering.ordered)
               for _, lowering in sinks):
            return False  # two threads may write one element (adding, or the last must win)
        # numba privatizes `acc += v` and `acc *= v` per thread; nothing else is safe
        return all(not _reduces_outer_loop(r)
                   or (_accumulator_depth(r) == 0 and lowering.privatized)
                   for r, lowering in sinks if isinstance(lowering, Reduction))

    def _loops(self, nest: LoopNest, depth: int, reductions: dict[int, _Reduction],
               parallel: bool = False) -> None:
        """Loop `depth` of the nest, with the reductions whose accumulators live at it;
        `parallel` makes it a `numba.prange` (the outermost loop only)."""
        opening = [r for r in reductions.values() if r.start == depth]
        for r in opening:
            self.k.line(f"{r.acc} = {_initial(r)}")
        partials = [r for r in reductions.values() if r.partial == depth]
        for r in partials:
            self.k.line(f"{r.partial_acc} = {_initial(r)}")
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
            extent = dim_text(nest.domain[depth])
            if self._vectorizable(nest, depth, reductions):
                extent = f"{self.k.helpers.vector_math('extent')}({extent})"
            self.k.line(f"for {loop_index(depth)} in {loop}({extent}):")
            self.k.depth += 1
            self._loops(nest, depth + 1, reductions)
            self.k.depth -= 1
        for r in partials:  # the inner loops' sum into the array
            update = lowering_of(r.node).update(subscript(r.acc, r.out_index), r.partial_acc,
                                                self.k.helpers, r.acc_dtype)
            self.k.line(update, comment_of(r.node))
        for r in opening:
            self._finish(r)

    @staticmethod
    def _vectorizable(nest: LoopNest, depth: int, reductions: dict[int, _Reduction]) -> bool:
        """Whether the nest's loop at `depth` is a short innermost loop of independent elements
        that LLVM should vectorize rather than unroll: its bound goes through `vm.extent`
        (compiler/codegen/vecmath.py). Measured: W8's 3x3 convolution, whose innermost loop
        runs over 14 columns, went from 235 to 124 us; W2's sums of 10 columns got slower, so
        nests that reduce into arrays, and loops that a reduction runs along, keep theirs."""
        extent = nest.domain[depth]
        if depth != len(nest.domain) - 1 or not isinstance(extent, int) \
                or not VECTORIZE_MIN <= extent <= VECTORIZE_MAX:
            return False
        # an accumulator array of a few columns lives in registers only when LLVM unrolls the
        # loop over them (compiler/codegen/stack.py): W2's gradient is such a column sum
        return not any(_reduces_axis(r.node, depth) or r.start is None
                       for r in reductions.values())

    def _operand(self, nest: LoopNest, consumer: Node, x: Node, index: Index) -> Operand:
        """Input `x` of `consumer`, read at the element `index` of the consumer's shape."""
        if self.k.plan.reads_locally(consumer, x, nest):
            source = self.k.plan.element_source(x)
            return Operand(self.locals[source.id], x.dtype)
        return self.k.reader.operand(x, broadcast_index(x.shape, index))

    def _member(self, nest: LoopNest, m: Node) -> None:
        index = element_index(m.shape)
        local = self.locals.get(m.id)
        lowering = lowering_of(m)
        if isinstance(lowering, Member):
            lowering.write(self, m, index, local)
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

    # --- sinks ---------------------------------------------------------------------------
    def _check_not_empty(self, s: Node) -> None:
        """The user's max or min over an axis empty at run time raises NumPy's ValueError at
        their line (compiler.errors.KernelEmptyReductionError), before the nest."""
        lowering = lowering_of(s)
        dims = lowering.nonempty_dims(s) if isinstance(lowering, Reduction) else []
        if not dims:
            return
        site = self.k.helpers.empty_site(s, lowering.no_identity)
        test = " or ".join(f"{dim_text(d)} == 0" for d in dict.fromkeys(dims))
        self.k.line(f"if {test}:")
        self.k.line(f"{INDENT}raise EmptyReduction({site})", comment_of(s))

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
        acc_dtype = lowering_of(r).accumulator_dtype(r)
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
        partial = _inner_reduced_depth(r)
        partial_acc = self.k.namer.fresh(f"{name}_part") if partial is not None else ""
        return _Reduction(r, None, acc, acc_dtype, out_index, partial, partial_acc)

    def _array_accumulator(self, r: Node, acc: str, dtype: np.dtype, on_stack: bool) -> None:
        identity = lowering_of(r).identity(dtype)
        shape, init = shape_text(r.shape), literal(identity, dtype)
        if on_stack and identity == 0:
            self.k.line(f"{acc} = {self.k.helpers.stack_array('zeros')}({shape}, "
                        f"{dtype_name(dtype)})")
        elif on_stack:
            self.k.line(f"{acc} = {self.k.helpers.stack_array('full')}({shape}, {init}, "
                        f"{dtype_name(dtype)})")
        elif identity in (0, 1) and not isinstance(identity, bool):
            self.k.alloc(r, fill="zeros" if identity == 0 else "ones", dtype=dtype, name=acc)
        else:
            self.k.line(f"{acc} = np.full({shape}, {init}, {dtype_name(dtype)})")

    def _accumulate(self, nest: LoopNest, r: _Reduction) -> None:
        x = r.node.inputs[0]
        value = self._operand(nest, r.node, x, element_index(x.shape)).text
        target = r.acc if r.start is not None else \
            r.partial_acc if r.partial is not None else subscript(r.acc, r.out_index)
        update = lowering_of(r.node).update(target, value, self.k.helpers, r.acc_dtype)
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
        lowering = lowering_of(s)
        target = subscript(self.k.names[s.id], lowering.target(self.k.reader, s, index))
        self.k.line(f"{target} {'+=' if lowering.adds else '='} {value}", comment_of(s))


def _accumulator_depth(r: Node) -> int | None:
    """The loop depth from which every remaining loop of reduction `r`'s nest is reduced, where
    a scalar accumulator opens; None when a kept axis lies inside a reduced one (the
    reduction accumulates into an array)."""
    axes = r.attrs["axes"]
    reduced = [a in axes for a, d in enumerate(r.inputs[0].shape) if d != 1]  # per loop depth
    start = reduced.index(True) if True in reduced else len(reduced)
    return start if all(reduced[start:]) else None


def _inner_reduced_depth(r: Node) -> int | None:
    """For a reduction into an array: the depth from which every loop of its nest is reduced
    (the conv bias gradient's sum over (N, 8, 14, 14) along axes 0, 2, 3: depth 2), where
    a scalar can sum them before the array is updated once; None if the innermost loop is
    kept. A load and a store per element become one per row: 68 to 23 us on W8's CNN."""
    axes = r.attrs["axes"]
    reduced = [a in axes for a, d in enumerate(r.inputs[0].shape) if d != 1]
    depth = len(reduced)
    while depth > 0 and reduced[depth - 1]:
        depth -= 1
    return depth if 0 < depth < len(reduced) else None


def _reduces_axis(r: Node, depth: int) -> bool:
    """Whether reduction `r` sums (or ...) over its nest's loop at `depth`."""
    loops = [a for a, d in enumerate(r.inputs[0].shape) if d != 1]
    return depth < len(loops) and loops[depth] in r.attrs["axes"]


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


def _initial(r: _Reduction) -> str:
    return literal(lowering_of(r.node).identity(r.acc_dtype), r.acc_dtype)
