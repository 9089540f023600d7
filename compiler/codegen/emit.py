"""Writing a kernel's Python source from a fusion plan: signature, loop nests, calls, return.

Statement per value, in the plan's order. Inside a loop nest each member is
one assignment to a scalar local (or straight into its array when nothing in
the nest reads it again); reductions accumulate in float64 (floats) and round
once when their loops close. Every statement that computes a value carries
the user's file:line, and backward statements also name the forward op they
differentiate: `h_grad = ...  # d maximum @ model.py:12`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.codegen.fusion import GATHERS, REDUCTIONS, Call, LoopNest, Plan, is_view
from compiler.codegen.names import Namer, contraction_index, function_name, loop_index
from compiler.codegen.prelude import HelperSet
from compiler.codegen.reading import (
    Index,
    Reader,
    broadcast_index,
    dim_text,
    offset,
    shape_text,
    subscript,
)
from compiler.codegen.scalars import Operand, dtype_name, elementwise, literal
from compiler.ir import Node, Sym

FASTMATH = '{"reassoc", "contract", "arcp", "nsz"}'  # never nnan/ninf: NaN and inf are data
DECORATOR = f"@numba.njit(cache=True, error_model=\"numpy\", fastmath={FASTMATH})"
INDENT = "    "


def comment_of(node: Node) -> str | None:
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


class KernelWriter:
    """Writes one kernel function (and learns which helpers and constants it needs)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.graph = plan.graph
        self.namer = Namer()
        self.helpers = HelperSet()
        self.names: dict[int, str] = {}
        self.locals: dict[int, str] = {}
        self.reader = Reader(self.names, plan.views, self.helpers)
        self.lines: list[str] = []
        self.depth = 1
        # A value may share the function's name (`loss = ...` in `def loss`): the
        # kernel never calls itself, so the local shadows nothing it uses.
        self.function_name = function_name(self.graph.name)
        self.constants = [n for n in plan.nodes if n.op == "const" and n.shape != ()]
        self._syms = self._sym_sources()
        for sym in self._syms:
            self.namer.reserve(sym.name)
        for node in self.graph.inputs:
            self.names[node.id] = self.namer.fresh(node.name or f"arg{node.attrs['index']}")
        for k, node in enumerate(self.constants, start=1):
            self.names[node.id] = self.namer.fresh(node.name or f"c{k}")

    # --- whole function --------------------------------------------------------------------
    def write(self) -> str:
        params = [self.names[n.id] for n in self.graph.inputs + self.constants]
        head = [DECORATOR, f"def {self.function_name}({', '.join(params)}):"]
        self._prologue()
        for unit in self.plan.units:
            if isinstance(unit, Call):
                self._call(unit.node)
            else:
                self._nest(unit)
        self._return()
        return "\n".join(head + self.lines) + "\n"

    def _sym_sources(self) -> dict[Sym, tuple[Node, int]]:
        sources: dict[Sym, tuple[Node, int]] = {}
        for node in self.graph.inputs:
            for axis, d in enumerate(node.shape):
                if isinstance(d, Sym):
                    sources.setdefault(d, (node, axis))
        return sources

    def _prologue(self) -> None:
        for sym, (node, axis) in self._syms.items():
            self.line(f"{sym.name} = {self.names[node.id]}.shape[{axis}]")
        for node in self.graph.inputs:
            if node.shape == ():  # 0-d arrays: read once, then used as a scalar
                name = self.names[node.id]
                self.line(f"{name} = {name}[()]")
        checked = set()
        for node in self.plan.nodes:
            target = self._checked_indices(node)
            if target is not None and target not in checked:
                checked.add(target)
                check = self.helpers.use("_check_index", np.int64)
                self.line(f"{check}({target[0]}, {target[1]})")

    def _checked_indices(self, node: Node) -> tuple[str, str] | None:
        """(indices, axis length) for a gather or scatter whose indices come from the caller."""
        if node.op not in GATHERS and node.op not in ("take_grad", "take_along_axis_grad"):
            return None
        indices = node.inputs[1]
        if indices.op != "input":
            return None
        axis = node.attrs["axis"]
        n = node.inputs[0].shape[axis] if node.op in GATHERS else node.attrs["shape"][axis]
        return self.names[indices.id], dim_text(n)

    def _return(self) -> None:
        results, returned = [], set()
        for node in self.graph.outputs:
            if node.shape == ():
                results.append(f"np.asarray({self.reader.read(node, ())})")
                continue
            storage = self._storage(node)
            text = self.names[node.id]
            if storage.op in ("input", "const") or storage.id in returned:
                text += ".copy()"  # callers own their results: never hand out an alias
            returned.add(storage.id)
            results.append(text)
        closing = "," if len(results) == 1 else ""
        self.line(f"return ({', '.join(results)}{closing})")

    def _storage(self, node: Node) -> Node:
        while node.op == "reshape" and isinstance(self.plan.unit_of.get(node.id), Call):
            node = node.inputs[0]
        return node

    # --- helpers -------------------------------------------------------------------------
    def line(self, text: str, comment: str | None = None) -> None:
        code = INDENT * self.depth + text
        self.lines.append(f"{code}  # {comment}" if comment else code)

    def name_of(self, node: Node) -> str:
        if node.id not in self.names:
            self.names[node.id] = self.namer.fresh(node.name)
        return self.names[node.id]

    def _alloc(self, node: Node, fill: str = "empty", dtype=None, name: str | None = None) -> None:
        dtype = node.dtype if dtype is None else dtype
        target = name or self.name_of(node)
        self.line(f"{target} = np.{fill}({shape_text(node.shape)}, {dtype_name(dtype)})")

    # --- calls ---------------------------------------------------------------------------
    def _call(self, node: Node) -> None:
        if node.op == "matmul":
            a, b = (self._blas_operand(x) for x in node.inputs)
            self.line(f"{self.name_of(node)} = np.dot({a}, {b})", comment_of(node))
        elif node.op == "reshape":
            source = self.names[node.inputs[0].id]
            self.line(f"{self.name_of(node)} = {source}.reshape({shape_text(node.shape)})",
                      comment_of(node))
        elif node.op == "concatenate":
            self._concatenate(node)
        else:
            raise AssertionError(f"no call for {node.op}")

    def _blas_operand(self, x: Node) -> str:
        if x.id in self.plan.views:  # a 2-D transpose: np.dot takes the F-ordered view
            return f"{self._blas_operand(x.inputs[0])}.T"
        return self.names[x.id]

    def _concatenate(self, node: Node) -> None:
        self._alloc(node)
        axis, start = node.attrs["axis"], 0
        for part in node.inputs:
            index = element_index(part.shape)
            self._open_loops(part.shape)
            target = index[:axis] + (offset(start, 1, index[axis]),) + index[axis + 1:]
            value = self.reader.operand(part, index).as_dtype(node.dtype)
            self.line(f"{subscript(self.names[node.id], target)} = {value}", comment_of(node))
            self._close_loops(part.shape)
            start += part.shape[axis]

    def _open_loops(self, shape) -> None:
        for depth, d in enumerate(d for d in shape if d != 1):
            self.line(f"for {loop_index(depth)} in range({dim_text(d)}):")
            self.depth += 1

    def _close_loops(self, shape) -> None:
        self.depth -= sum(1 for d in shape if d != 1)

    # --- loop nests ----------------------------------------------------------------------
    def _nest(self, nest: LoopNest) -> None:
        self.locals = {}
        for m in nest.members:
            self._name_member(m)
        for m in nest.members:
            if m.id in self.plan.arrays:
                self._alloc(m)
        reductions = {s.id: self._reduction(s) for s in nest.sinks if s.op in REDUCTIONS}
        for s in nest.sinks:
            if s.op not in REDUCTIONS:
                self._alloc(s, fill="zeros")
        self._loops(nest, 0, reductions)
        for r in reductions.values():
            if r.start is None and r.acc != self.names[r.node.id]:
                self.line(f"{self.names[r.node.id]} = {r.acc}.astype({dtype_name(r.node.dtype)})",
                          comment_of(r.node))

    def _name_member(self, m: Node) -> None:
        if m.shape == ():
            self.locals[m.id] = self.name_of(m)
        elif m.id not in self.plan.arrays:
            self.locals[m.id] = self.name_of(m)
        else:
            name = self.name_of(m)
            if m.id in self.plan.local_reads or m.op == "matmul":
                self.locals[m.id] = self.namer.fresh(f"{name}_val")

    def _loops(self, nest: LoopNest, depth: int, reductions: dict[int, _Reduction]) -> None:
        """Loop `depth` of the nest, with the reductions whose accumulators live at it."""
        opening = [r for r in reductions.values() if r.start == depth]
        for r in opening:
            self.line(f"{r.acc} = {_initial(r)}")
        if depth == len(nest.domain):
            for node in nest.body:
                if node.id in reductions:
                    self._accumulate(nest, reductions[node.id])
                elif node.id in nest.member_ids:
                    self._member(nest, node)
                else:
                    self._scatter(nest, node)
        else:
            self.line(f"for {loop_index(depth)} in range({dim_text(nest.domain[depth])}):")
            self.depth += 1
            self._loops(nest, depth + 1, reductions)
            self.depth -= 1
        for r in opening:
            self._finish(r)

    def _operand(self, nest: LoopNest, consumer: Node, x: Node, index: Index) -> Operand:
        """Input `x` of `consumer`, read at the element `index` of the consumer's shape."""
        if self.plan.reads_locally(consumer, x, nest):
            source = self.plan.element_source(x)
            return Operand(self.locals[source.id], x.dtype)
        return self.reader.operand(x, broadcast_index(x.shape, index))

    def _member(self, nest: LoopNest, m: Node) -> None:
        index = element_index(m.shape)
        local = self.locals.get(m.id)
        if m.op == "matmul":
            self._contraction(m, index, local)
        else:
            if is_view(m):  # a view that something needs as an array: copied here
                expr = self.reader.through(m, index)
            else:
                operands = [self._operand(nest, m, x, index) for x in m.inputs]
                expr = elementwise(m, operands, self.helpers)
            target = local or subscript(self.names[m.id], index)
            self.line(f"{target} = {expr}", comment_of(m))
        if local is not None and m.id in self.plan.arrays:
            self.line(f"{subscript(self.names[m.id], index)} = {local}")

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
        product = (f"{self.reader.operand(a, a_index).as_dtype(m.dtype)} * "
                   f"{self.reader.operand(b, b_index).as_dtype(m.dtype)}")
        if length == 1:
            self.line(f"{acc} = {product}", comment_of(m))
            return
        self.line(f"{acc} = {literal(0, m.dtype)}")
        self.line(f"for {k} in range({dim_text(length)}):")
        self.line(f"{INDENT}{acc} += {product}", comment_of(m))

    # --- sinks ---------------------------------------------------------------------------
    def _reduction(self, r: Node) -> _Reduction:
        """Where a reduction accumulates: a scalar opened at the loop depth from which all
        remaining loops are reduced (row sums, full sums), else an array of the result's shape."""
        x = r.inputs[0]
        axes = set(r.attrs["axes"])
        index = element_index(x.shape)
        reduced = [a in axes for a, d in enumerate(x.shape) if d != 1]  # per loop depth
        start = reduced.index(True) if True in reduced else len(reduced)
        keep = r.attrs["keepdims"]
        out_index = tuple("0" if a in axes else i for a, i in enumerate(index)
                          if a not in axes or keep)
        acc_dtype = _accumulator_dtype(r)
        name = self.name_of(r)
        if all(reduced[start:]):
            if r.shape != ():
                self._alloc(r)
            acc = name if r.shape == () and acc_dtype == r.dtype else \
                self.namer.fresh(f"{name}_acc")
            return _Reduction(r, start, acc, acc_dtype, out_index)
        acc = name if acc_dtype == r.dtype else self.namer.fresh(f"{name}_acc")
        fill = {"sum": "zeros", "prod": "ones"}.get(r.op)
        if fill is not None:
            self._alloc(r, fill=fill, dtype=acc_dtype, name=acc)
        else:
            init = _initial_value(r.op, acc_dtype)
            self.line(f"{acc} = np.full({shape_text(r.shape)}, {init}, {dtype_name(acc_dtype)})")
        return _Reduction(r, None, acc, acc_dtype, out_index)

    def _accumulate(self, nest: LoopNest, r: _Reduction) -> None:
        x = r.node.inputs[0]
        value = self._operand(nest, r.node, x, element_index(x.shape)).text
        target = r.acc if r.start is not None else subscript(r.acc, r.out_index)
        if r.node.op == "sum":
            update = f"{target} += {value}"
        elif r.node.op == "prod":
            update = f"{target} *= {value}"
        else:
            helper = self.helpers.use("_maximum" if r.node.op == "max" else "_minimum",
                                      r.acc_dtype)
            update = f"{target} = {helper}({target}, {value})"
        self.line(update, comment_of(r.node))

    def _finish(self, r: _Reduction) -> None:
        name = self.names[r.node.id]
        if r.acc == name:
            return
        value = Operand(r.acc, r.acc_dtype).as_dtype(r.node.dtype)
        target = name if r.node.shape == () else subscript(name, r.out_index)
        self.line(f"{target} = {value}", comment_of(r.node))

    def _scatter(self, nest: LoopNest, s: Node) -> None:
        g = s.inputs[0]
        index = element_index(g.shape)
        value = self._operand(nest, s, g, index).text
        name = self.names[s.id]
        if s.op == "pad_slice":
            target = tuple(offset(start, step, i) for (start, _, step), i
                           in zip(s.attrs["index"], index))
            self.line(f"{subscript(name, target)} = {value}", comment_of(s))
            return
        indices, axis, shape = s.inputs[1], s.attrs["axis"], s.attrs["shape"]
        if s.op == "take_grad":
            k = indices.type.ndim
            position = self.reader.gathered(indices, index[axis:axis + k], shape[axis])
            target = index[:axis] + (position,) + index[axis + k:]
        else:  # take_along_axis_grad: g broadcasts over the size-1 axes of the result
            position = self.reader.gathered(indices, broadcast_index(indices.shape, index),
                                            shape[axis])
            target = tuple(position if a == axis else ("0" if d == 1 else index[a])
                           for a, d in enumerate(shape))
        self.line(f"{subscript(name, target)} += {value}", comment_of(s))


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
