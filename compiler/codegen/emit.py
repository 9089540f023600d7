"""Writing a kernel's Python source from a fusion plan: signature, calls, return.

One statement per value, in the plan's order; loop nests are written by
`nests.py`. Every statement that computes a value carries the user's
file:line, and backward statements also name the forward op they
differentiate: `h_grad = ...  # d maximum @ model.py:12`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np

from compiler.codegen import stack
from compiler.codegen.fusion import Call, LoopNest, Plan, calls_blas
from compiler.codegen.index_bounds import in_range
from compiler.codegen.loops import MinibatchLoop
from compiler.codegen.nests import INDENT, NestWriter, comment_of, header_of
from compiler.codegen.prelude import HelperSet
from compiler.codegen.reading import Reader, dim_text, shape_text, subscript
from compiler.codegen.scalars import dtype_name
from compiler.codegen.scans import BodyFunctions
from compiler.codegen.writes import aliases_input, input_memory, stored_in_place
from compiler.ir import Node, Sym, constant_value, walk
from compiler.names import Namer, function_name, is_generated, loop_index
from compiler.ops.lowering import View, lowering_of

FASTMATH_VARIABLE = "GRADFUSE_FASTMATH"
# Fast-math flags let LLVM vectorize loops that reduce (W3 ran 5-18x slower without them,
# measured), at a price: sums are reassociated, so results may differ from NumPy's in the last
# bits, and code that relies on the order of rounding (Kahan summation, `(x + c) - c`) is not
# kept exact. GRADFUSE_FASTMATH=0 compiles every kernel without them. Never nnan/ninf: NaN and
# inf are data.
FASTMATH = "False" if os.environ.get(FASTMATH_VARIABLE, "1").strip() == "0" \
    else '{"reassoc", "contract", "arcp", "nsz"}'
DECORATOR = f"@numba.njit(cache=True, error_model=\"numpy\", fastmath={FASTMATH})"
# Only kernels with a numba.prange loop compile with parallel=True: it costs compile time.
PARALLEL_DECORATOR = DECORATOR.replace("cache=True,", "cache=True, parallel=True,")


class KernelWriter:
    """Writes one kernel function (and learns which helpers and constants it needs).

    `writes` (output index -> input index) stores those outputs into the input arrays
    instead of returning them (compiler/codegen/writes.py); `loop` runs the whole body
    once per minibatch (compiler/codegen/loops.py) and records its loss. Results are a
    tuple of arrays (0-d for scalars), unless `bare_scalars`: then scalars are returned as
    they are, and a single result by itself, for callers that call the kernel directly
    (boxing a tuple and a 0-d array cost 0.6 us per call here).
    """

    def __init__(self, plan: Plan, writes: Mapping[int, int] | None = None,
                 loop: MinibatchLoop | None = None, helpers: HelperSet | None = None,
                 bare_scalars: bool = False, bodies: BodyFunctions | None = None,
                 is_body: bool = False, syms: tuple[Sym, ...] = (),
                 inlined_in: KernelWriter | None = None,
                 bound: Mapping[int, str] | None = None) -> None:
        self.plan = plan
        self.graph = plan.graph
        self.writes = dict(writes or {})
        self.loop = loop
        self.bare_scalars = bare_scalars
        # A scan's body (compiler/codegen/scans.py) takes 0-d values as scalars, trusts its
        # caller with shapes, and takes the symbolic dims `syms` as ints.
        self.is_body = is_body or inlined_in is not None
        self.inlined = inlined_in is not None
        self.sym_params = syms
        # A body written into its caller's loop (compiler/codegen/scans.py) takes its names
        # from the caller's namer, so that none clashes with the caller's; its inputs are the
        # caller's names `bound` (input position -> name), and the dims the caller has read.
        self.namer = inlined_in.namer if inlined_in is not None else Namer()
        self.bound = dict(bound or {})
        self.syms_in_scope: frozenset[Sym] = frozenset() if inlined_in is None else \
            inlined_in.syms_in_scope | inlined_in._syms.keys() | set(inlined_in.sym_params)
        self.helpers = helpers or HelperSet()
        self.bodies = bodies or BodyFunctions(self.helpers)
        self.names: dict[int, str] = {}
        self.reader = Reader(self.names, plan.views, self.helpers)
        self.lines: list[str] = []
        self.depth = 1
        self._open_indices = 0  # loops that `loops` has open (their indices are taken)
        self.nests = NestWriter(self)
        self.calls_blas = any(calls_blas(n) for n in walk(self.graph))
        self.escaping = self._escaping()
        self.stack_temporaries = not any(self.nests.parallel_loop(u) for u in plan.units
                                         if isinstance(u, LoopNest))
        if inlined_in is not None:
            self.depth = inlined_in.depth
            self._open_indices = inlined_in._open_indices
            self.stack_temporaries = self.stack_temporaries and inlined_in.stack_temporaries
        self._stack_left = stack.TEMPORARIES_MAX_BYTES
        # A value may share the function's name (`loss = ...` in `def loss`): the
        # kernel never calls itself, so the local shadows nothing it uses.
        self.function_name = function_name(self.graph.name)
        if loop is not None:
            self.function_name = f"{self.function_name}_{loop.suffix}"
            loop.reserve(self.namer)
        self.constants = [n for n in plan.nodes
                          if constant_value(n) is not None and n.shape != ()]
        self._syms = self._sym_sources()
        for sym in [*self._syms, *self.sym_params]:
            self.namer.reserve(sym.name)
        # Values named beforehand (compiler/names.py) keep their names: the IR printer and the
        # other kernels of the function call them the same.
        bound_ids = {self.graph.inputs[j].id for j in self.bound}
        self._claimed = {n.id: n.name for n in [*self.graph.inputs, *plan.nodes]
                         if n.name is not None and n.id not in bound_ids
                         and self.namer.claim(n.name)}
        self.arrays = self._name_arguments()
        self.in_place, self.preallocated = self._place_written_outputs()

    def _name_arguments(self) -> dict[int, str]:
        """Name the inputs and constant arrays; returns the names of the arrays the kernel is
        called with. A 0-d input is read into a scalar of its own name, unless the kernel
        writes into it: then the array keeps the name and the scalar gets another."""
        for j, node in enumerate(self.graph.inputs):
            self.names[node.id] = self.bound.get(j) or self._claimed.get(node.id) or \
                self._fresh(node.name or f"arg{node.attrs['index']}")
        for k, node in enumerate(self.constants, start=1):
            self.names[node.id] = self._claimed.get(node.id) or \
                self.namer.fresh(node.name or f"c{k}")
        arrays = {n.id: self.names[n.id] for n in self.graph.inputs + self.constants}
        for j in self.writes.values():
            target = self.graph.inputs[j]
            if target.shape == () and not self.is_body:
                self.names[target.id] = self.namer.fresh(f"{self.names[target.id]}_value")
        return arrays

    def _place_written_outputs(self) -> tuple[set[int], set[int]]:
        """(outputs stored in place, their node ids): they live in their input's array, with
        no allocation and no copy; the other written outputs are copied at the end."""
        in_place = stored_in_place(self.plan, self.writes) if self.writes else set()
        for k in in_place:
            out, target = self.graph.outputs[k], self.graph.inputs[self.writes[k]]
            self.names[out.id] = self.arrays[target.id]
        return in_place, {self.graph.outputs[k].id for k in in_place}

    # --- whole function --------------------------------------------------------------------
    def write(self) -> str:
        inputs = self.graph.inputs + self.constants
        params = [self.arrays[n.id] for n in inputs] + [s.name for s in self.sym_params]
        if self.loop is not None:
            params = self.loop.open(self, params)
        self._prologue()
        self._units()
        self._finish()
        decorator = PARALLEL_DECORATOR if self.nests.parallel else DECORATOR
        head = [decorator, f"def {self.function_name}({', '.join(params)}):"]
        return "\n".join(head + self.lines) + "\n"

    def write_inlined(self) -> list[str]:
        """The statements of a scan's body written into its caller's loop (`inlined_in`), in
        `lines`; returns the expressions of the outputs that are not stored into inputs."""
        assert not self.constants, "a scan body's constant arrays are hoisted into its caller"
        self._prologue()
        self._units()
        results = self._results([k for k in range(len(self.graph.outputs))
                                 if k not in self.writes])
        self._store_written()
        return results

    def _units(self) -> None:
        heading = None
        for unit in self.plan.units:
            lead = unit.node if isinstance(unit, Call) else unit.body[0]
            header = header_of(lead)
            if header is not None and header != heading:
                self.line(f"# {header}")
                heading = header
            if isinstance(unit, Call):
                self._call(unit.node)
            else:
                self._check_scalar_positions(unit)
                self.nests.write(unit)

    def _check_scalar_positions(self, nest: LoopNest) -> None:
        """Check the computed scalar positions (`xs[i + 1]`) that `nest` gathers at, before it
        runs: checked inside, each read would raise from within the loop, which numba then
        cannot run in parallel."""
        seen, stack = set(), list(nest.body)
        while stack:
            node = stack.pop()
            found = lowering_of(node).checked_indices(node)
            if found is not None:
                indices, n = found
                key = (indices.id, dim_text(n))
                if indices.shape == () and indices.id not in nest.member_ids and \
                        key not in self.reader.checked and not in_range(indices, n):
                    check = self.helpers.use("_check_scalar_index", np.int64)
                    site = self.helpers.index_site(node, node.attrs.get("axis", 0))
                    self.line(f"{check}({self.reader.read(indices, ())}, {key[1]}, {site})")
                    self.reader.checked.add(key)
            for x in node.inputs:
                if x.id in self.plan.views and x.id not in seen:
                    seen.add(x.id)
                    stack.append(x)

    def _sym_sources(self) -> dict[Sym, tuple[Node, int]]:
        sources: dict[Sym, tuple[Node, int]] = {}
        for node in self.graph.inputs:
            for axis, d in enumerate(node.shape):
                if isinstance(d, Sym):
                    sources.setdefault(d, (node, axis))
        return sources

    def _prologue(self) -> None:
        for sym, (node, axis) in self._syms.items():
            if sym not in self.syms_in_scope:
                self.line(f"{sym.name} = {self.arrays[node.id]}.shape[{axis}]")
        if not self.is_body:  # a body's caller passes what its own checks allowed
            self._check_shapes()
        checked = set()
        for node in self.plan.nodes:
            target = self._checked_indices(node)
            if target is None:
                continue
            read, name, n, is_scalar = target
            self.reader.checked.add((read, n))  # its reads need no check of their own
            if (name, n) not in checked:
                checked.add((name, n))
                check = self.helpers.use("_check_scalar_index" if is_scalar else "_check_index",
                                         np.int64)
                site = self.helpers.index_site(node, node.attrs.get("axis", 0))
                self.line(f"{check}({name}, {n}, {site})")
        for node in self.graph.inputs:
            if node.shape == () and not self.is_body:  # 0-d arrays: read once, as a scalar
                self.line(f"{self.names[node.id]} = {self.arrays[node.id]}[()]")

    def _check_shapes(self) -> None:
        """Refuse arrays of other shapes than the graph's before touching memory (numba's
        dispatcher checks dtypes and ranks; shapes are the kernel's to check).

        A symbolic dim of size 1 is refused too where the trace took it for another size
        (`Sym.not_one`: `x.squeeze()` kept the axis, which NumPy drops at 1), so a call with
        a batch of 1 goes to the general path and a trace of its own (compiler/specialize.py
        gives a leading axis of size 1 a static signature). A minibatch loop (fit) checks
        nothing of the kind: fit runs step by step where a batch would have 1 row."""
        inputs = [n for n in self.graph.inputs if n.shape != ()]
        if not inputs:
            return
        closing = "," if len(inputs) == 1 else ""
        got = [f"{self.arrays[n.id]}.shape" for n in inputs]
        expected = [shape_text(n.shape) for n in inputs]
        ones = [] if self.loop is not None else \
            [f"{sym.name} == 1 or" for sym in self._syms if sym.not_one]
        pieces = [f"{p}," for p in got[:-1]] + [f"{got[-1]}{closing}) != ("] + \
            [f"{p}," for p in expected[:-1]] + [f"{expected[-1]}{closing}):"]
        if ones:  # if (N == 1 or (shapes) != (expected)):
            pieces = [*ones, "(", *pieces[:-1], pieces[-1][:-1] + "):"]
        error = self.helpers.use_error("KernelShapeError")
        first, *rest = _wrapped(["if (", *pieces], 100 - len(INDENT) * (self.depth + 2))
        self.line(first)
        for text in rest:
            self.line(f"{INDENT * 2}{text}")
        self.line(f"{INDENT}raise {error}(\"arrays of other shapes than the kernel's\")")

    def _checked_indices(self, node: Node) -> tuple[int, str, str, bool] | None:
        """For a gather or scatter whose indices come from the caller, or are a constant array
        indexing an axis of symbolic length (the binding checked a constant against a static
        axis when it was traced): the id of the indices node it reads, the name of the value
        checked, the axis length, and whether that value is a scalar local (a loop body's 0-d
        inputs are: its caller read them; a kernel's are 0-d arrays until the prologue reads
        them, after the checks).

        Every value of the argument is checked, so only views that keep them all (reshapes,
        transposes, broadcasts) are looked through. Positions that the kernel computes itself
        are checked where they are read (`Reader.gathered`), unless they are in range by
        construction (compiler/codegen/index_bounds.py).
        """
        found = lowering_of(node).checked_indices(node)
        if found is None:
            return None
        indices, n = found
        read = indices.id
        while True:
            lowering = lowering_of(indices)
            if not (isinstance(lowering, View) and lowering.keeps_all):
                break
            indices = indices.inputs[0]
        argument = indices.id in {x.id for x in self.graph.inputs}
        constant = isinstance(n, Sym) and any(c.id == indices.id for c in self.constants)
        if not (argument or constant):
            return None
        return read, self.names[indices.id], dim_text(n), indices.shape == () and self.is_body

    def _finish(self) -> None:
        """Store the written outputs, then return the others (or, in a loop, record the loss)."""
        if self.loop is None:
            results = self._results([k for k in range(len(self.graph.outputs))
                                     if k not in self.writes])
        self._store_written()
        if self.loop is not None:
            self.loop.close(self, self.reader.read(self.graph.outputs[self.loop.loss], ()))
            return
        if self.bare_scalars and len(results) == 1:
            self.line(f"return {results[0]}")
            return
        closing = "," if len(results) == 1 else ""
        self.line(f"return ({', '.join(results)}{closing})")

    def _store_written(self) -> None:
        """Copy the written outputs that were not stored in place into their input arrays.

        An output may read an input that another output is stored into (a loop body that
        hands out the carry it was given, as a residual, and stores the new carry into the
        same array): such a read goes first. Where reads go round in a circle (x, y = y, x),
        one output is first copied to an array of its own.
        """
        pending = [(k, j) for k, j in sorted(self.writes.items()) if k not in self.in_place]
        reads = {k: input_memory(self.plan, self.graph.outputs[k]) for k, _ in pending}
        staged: dict[int, str] = {}
        while pending:
            targets_read = {i for k, _ in pending if k not in staged for i in reads[k]}
            ready = [(k, j) for k, j in pending
                     if self.graph.inputs[j].id not in targets_read - self._own(k, j)]
            if not ready:  # a circle: take one output out of it
                k, _ = pending[0]
                out = self.graph.outputs[k]
                staged[k] = self.namer.fresh(f"{self.names.get(out.id, 'out')}_staged")
                self.line(f"{staged[k]} = np.empty({shape_text(out.shape)}, "
                          f"{dtype_name(out.dtype)})")
                self._copy_into(staged[k], out)
                continue
            for k, j in ready:
                target = self.arrays[self.graph.inputs[j].id]
                if k in staged:
                    self._copy_array(target, staged[k], self.graph.outputs[k].shape)
                else:
                    self._copy_into(target, self.graph.outputs[k])
            pending = [w for w in pending if w not in ready]

    def _own(self, k: int, j: int) -> set[int]:
        """Input j, when output k is that very input (copying it into itself reads nothing
        that was changed)."""
        target = self.graph.inputs[j]
        return {target.id} if self.graph.outputs[k] is target else set()

    def _copy_array(self, target: str, source: str, shape) -> None:
        with self.loops(shape) as index:
            self.line(f"{subscript(target, index)} = {subscript(source, index)}")

    def _results(self, indices: list[int]) -> list[str]:
        """The expressions of the outputs at `indices`, read before any written output is stored:
        a copy of an input that is written into is taken here, while it holds the old value."""
        results, returned = [], set()
        targets = {self.graph.inputs[j].id for j in self.writes.values()}
        for k in indices:
            node = self.graph.outputs[k]
            if node.shape == ():
                scalar = self.reader.read(node, ())
                if input_memory(self.plan, node) & targets:  # c[0] of a carry stored below
                    before = self.namer.fresh(f"{self.names.get(node.id, 'out')}_before")
                    self.line(f"{before} = {scalar}")
                    scalar = before
                results.append(scalar if self.bare_scalars else f"np.asarray({scalar})")
                continue
            storage = self._storage(node)
            text = self.names[node.id]
            if storage.id in self.arrays or storage.id in returned:
                text += ".copy()"  # callers own their results: never hand out an alias
                if storage.id in targets:
                    copy = self.namer.fresh(f"{text[:-len('.copy()')]}_before")
                    self.line(f"{copy} = {text}")
                    text = copy
            returned.add(storage.id)
            results.append(text)
        return results

    def _copy_into(self, array: str, node: Node) -> None:
        """`array[...] = node`, element by element (node may be a view or a scalar)."""
        if node.shape == ():
            self.line(f"{array}[()] = {self.reader.read(node, ())}")
            return
        with self.loops(node.shape) as index:
            self.line(f"{subscript(array, index)} = {self.reader.read(node, index)}")

    def _storage(self, node: Node) -> Node:
        while aliases_input(self.plan, node):
            node = node.inputs[0]
        return node

    # --- helpers -------------------------------------------------------------------------
    def line(self, text: str, comment: str | None = None) -> None:
        code = INDENT * self.depth + text
        self.lines.append(f"{code}  # {comment}" if comment else code)

    def name_of(self, node: Node) -> str:
        if node.id not in self.names:
            self.names[node.id] = self._claimed.get(node.id) or self._fresh(node.name)
        return self.names[node.id]

    def _fresh(self, name: str | None) -> str:
        """A new name for a value named `name` beforehand, whose name is taken: in a body
        written into its caller's loop, a made-up `t3` is the caller's next `tN`."""
        if self.inlined and name is not None and is_generated(name):
            name = None
        return self.namer.fresh(name)

    def alloc(self, node: Node, fill: str = "empty", dtype=None, name: str | None = None) -> None:
        if node.id in self.preallocated and name is None:
            return  # stored in an input's array
        dtype = np.dtype(node.dtype if dtype is None else dtype)
        target = name or self.name_of(node)
        shape, dtype_text = shape_text(node.shape), dtype_name(dtype)
        if self._on_stack(node, dtype):
            if fill == "ones":
                self.line(f"{target} = {self.helpers.stack_array('full')}({shape}, 1, "
                          f"{dtype_text})")
            else:
                self.line(f"{target} = {self.helpers.stack_array(fill)}({shape}, {dtype_text})")
            return
        self.line(f"{target} = np.{fill}({shape}, {dtype_text})")

    def _on_stack(self, node: Node, dtype: np.dtype) -> bool:
        """Whether the array of `node` is a temporary on the stack (compiler/codegen/stack.py):
        static and small, seen by nothing outside this function, in a kernel with no
        parallel loop."""
        if not self.stack_temporaries or node.id in self.escaping:
            return False
        size = stack.temporary_bytes(node.shape, dtype.itemsize)
        if size is None or size > self._stack_left:
            return False
        self._stack_left -= size
        return True

    def _escaping(self) -> set[int]:
        """The nodes whose arrays outlive the call: results, and what they reshape."""
        found = set()
        for node in self.graph.outputs:
            found.add(node.id)
            while aliases_input(self.plan, node):
                node = node.inputs[0]
                found.add(node.id)
        return found

    # --- calls ---------------------------------------------------------------------------
    def _call(self, node: Node) -> None:
        lowering_of(node).as_call().emit(self, node)

    # --- what op lowerings use (compiler/ops/lowering.py) --------------------------------------
    def comment(self, node: Node) -> str | None:
        """The comment for a statement computing `node`: where in the user's code it is from."""
        return comment_of(node)

    @contextmanager
    def loops(self, shape):
        """Loops over the non-1 axes of `shape`; yields the element's index inside them (size-1
        axes index 0). Loops opened inside others take the next loop indices."""
        first = self._open_indices
        dims = [d for d in shape if d != 1]
        names = iter(loop_index(first + k) for k in range(len(dims)))
        index = tuple("0" if d == 1 else next(names) for d in shape)
        for k, d in enumerate(dims):
            self.line(f"for {loop_index(first + k)} in range({dim_text(d)}):")
            self.depth += 1
        self._open_indices += len(dims)
        try:
            yield index
        finally:
            self._open_indices -= len(dims)
            self.depth -= len(dims)


def _wrapped(pieces: list[str], width: int) -> list[str]:
    """`pieces` joined into lines of at most about `width` characters, with a space after
    each comma and none after an opening parenthesis."""
    lines, current = [], ""
    for piece in pieces:
        glue = "" if not current or current.endswith("(") else " "
        if current and len(current) + len(glue) + len(piece) > width:
            lines.append(current)
            current, glue = "", ""
        current += glue + piece
    return lines + [current]
