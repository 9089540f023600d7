"""Scans in generated code: a `for` loop with the body written into it.

A scan (compiler/ops/control.py) becomes

    h = h0.copy()
    t12 = np.empty((20, 16, 32), np.float64)
    for t in range(20):
        x = xs[t]
        h_out = t12[t]
        ...  # the body's statements (fused loop nests, BLAS calls), reading Wz, h and x

The body is written like any kernel, by a `KernelWriter` that takes its names from the
caller's: its consts and carries are the caller's arrays, each step's slices of `xs` and of
the stacks it writes get names of their own, it stores its new array carries into the
carries' arrays (the loop's own copies) and its array outputs into its slices, and its
new scalar carries and scalar outputs are assigned at the end of the step. numba
type-infers and compiles the loop once, however many steps run.

A body with a parallel loop nest is instead a function of the module (`BodyFunctions`),
called in the loop, so that the caller keeps compiling without `parallel=True`.

Constant arrays in a body are hoisted out as consts of its scan first
(`hoist_constants`), so every array a body reads is an argument of its caller.
Symbolic dims that a body cannot read off its arguments' shapes are the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from compiler import ops
from compiler.codegen.accumulate import accumulated_products
from compiler.codegen.fusion import Plan, plan
from compiler.codegen.reading import dim_text, shape_text
from compiler.codegen.scalars import dtype_name
from compiler.ir import Graph, Node, Sym, TensorType, TupleType, constant_value, rebuild, walk
from compiler.ops.control import Loop
from compiler.ops.lowering import Alias, lowering_of

if TYPE_CHECKING:
    from compiler.codegen.emit import KernelWriter
    from compiler.codegen.prelude import HelperSet


# --- constants out of bodies ---------------------------------------------------------
def hoist_constants(graph: Graph) -> Graph:
    """`graph` with every constant array inside a scan body made a const input of its scan
    (scalars stay: they are literals in the code)."""
    # One pass in topological order, each node rebuilt on its inputs' new nodes: a scan that
    # reads another's results must read the rebuilt scan, not the one whose body still holds
    # constants (rebuild() with scans replaced beforehand would keep their old inputs).
    new: dict[int, Node] = {}
    for node in graph.nodes():
        inputs = tuple(new.get(x.id, x) for x in node.inputs)
        if isinstance(node.attrs.get("loop"), Loop):
            hoisted = _hoisted(node, inputs)
        elif any(a is not b for a, b in zip(inputs, node.inputs)):
            hoisted = Node(node.op, inputs, node.attrs, node.type, node.name, node.loc,
                           node.grad_of)
        else:
            continue
        if hoisted is not node:
            new[node.id] = hoisted
    if not new:
        return graph
    return Graph(list(graph.inputs), [new.get(x.id, x) for x in graph.outputs], graph.name)


def _hoisted(node: Node, operands: tuple[Node, ...]) -> Node:
    """`node`, a scan, on `operands` (its inputs, rebuilt), with its body's constant arrays
    made consts."""
    loop: Loop = node.attrs["loop"]
    body = hoist_constants(loop.body)
    arrays = [n for n in body.nodes() if constant_value(n) is not None and n.shape != ()]
    if not arrays and body is loop.body:
        if all(a is b for a, b in zip(operands, node.inputs)):
            return node
        return Node("scan", operands, node.attrs, node.type, node.name, node.loc, node.grad_of)
    nc = loop.n_consts
    sources = body.inputs[:nc] + arrays + body.inputs[nc:]
    inputs = [Node("input", (), {"index": k, "type": x.type}, x.type, name=x.name)
              for k, x in enumerate(sources)]
    outputs = rebuild(body.outputs, {x.id: i for x, i in zip(sources, inputs)})
    # `grad` is left behind: it numbers the old inputs, and reverse mode is done by now
    new_loop = Loop(Graph(inputs, outputs, body.name), nc + len(arrays), loop.n_carries,
                    loop.length, loop.reverse, name=loop.name)
    scan_inputs = tuple(operands[:nc]) + tuple(arrays) + tuple(operands[nc:])
    out_type = ops.get("scan").infer(*(x.type for x in scan_inputs), loop=new_loop)
    return Node("scan", scan_inputs, {"loop": new_loop}, out_type, node.name, node.loc,
                node.grad_of)


# --- a body as the caller sees it ------------------------------------------------------
@dataclass(frozen=True)
class BodySignature:
    """A body's graph as written, with a slot input for each array output that it writes into
    the slice of its stack it is handed: which carries it updates in place and which outputs
    it writes (the others it returns), and the symbolic dims its caller must supply."""

    graph: Graph
    writes: dict[int, int]  # output index -> input index
    updated: tuple[int, ...]  # array carries, stored into the carry's own array
    written: tuple[int, ...]  # indices of array ys, written into slices of their stacks
    syms: tuple[Sym, ...]


def signature(loop: Loop) -> BodySignature:
    body = loop.body
    nc, nk = loop.n_consts, loop.n_carries
    updated = tuple(k for k in range(nk) if body.outputs[k].shape != ())
    written = tuple(j for j, y in enumerate(body.outputs[nk:]) if y.shape != ())
    slots = [Node("input", (), {"index": len(body.inputs) + k, "type": y.type}, y.type,
                  name=f"{y.name or 'y'}_out")
             for k, y in enumerate(body.outputs[nk + j] for j in written)]
    graph = Graph(body.inputs + slots, body.outputs, f"{loop.name}_body")
    # New array carries go into the carry's own array (in the loop nest that computes them
    # when nothing reads the old values after, else copied at the end): a step allocates
    # nothing for its carries.
    writes = {k: nc + k for k in updated}
    writes.update({nk + j: len(body.inputs) + k for k, j in enumerate(written)})
    syms = tuple(sorted(_syms_of(body) - _syms_of_inputs(body), key=lambda s: s.name))
    return BodySignature(graph, writes, updated, written, syms)


# --- bodies with a parallel loop: functions of the module -------------------------------
class BodyFunctions:
    """The body functions of one generated module, written once each, in order of first use.

    A body is written into its loop, unless one of its loop nests runs in parallel: a
    `prange` inside the caller's loop would make the whole caller compile with
    `parallel=True` (and lose its stack temporaries), so such a body is a function of its own.
    """

    def __init__(self, helpers: HelperSet) -> None:
        self.helpers = helpers
        self.sources: list[str] = []
        self._plans: dict[int, tuple[BodySignature, Plan]] = {}
        self._parallel: dict[int, bool] = {}
        self._by_loop: dict[int, str] = {}
        self._by_text: dict[str, str] = {}
        self._names: set[str] = set()

    def planned(self, loop: Loop) -> tuple[BodySignature, Plan]:
        found = self._plans.get(id(loop))
        if found is None:
            sig = signature(loop)
            body = accumulated_products(sig.graph, sig.writes)
            found = self._plans[id(loop)] = (sig, plan(body))
        return found

    def runs_parallel(self, loop: Loop) -> bool:
        """Whether a loop nest of `loop`'s body runs in parallel (asked of a writer that is
        not used to write: it has helpers of its own)."""
        from compiler.codegen.emit import KernelWriter
        from compiler.codegen.prelude import HelperSet

        found = self._parallel.get(id(loop))
        if found is None:
            sig, body_plan = self.planned(loop)
            found = self._parallel[id(loop)] = not KernelWriter(
                body_plan, sig.writes, helpers=HelperSet(), is_body=True,
                syms=sig.syms).stack_temporaries
        return found

    def function(self, loop: Loop) -> str:
        """The name of the function of `loop`'s body, written on first use."""
        found = self._by_loop.get(id(loop))
        if found is None:
            found = self._by_loop[id(loop)] = self._write(loop)
        return found

    def _write(self, loop: Loop) -> str:
        from compiler.codegen.emit import KernelWriter

        sig, body_plan = self.planned(loop)
        writer = KernelWriter(body_plan, sig.writes, helpers=self.helpers, bare_scalars=True,
                              bodies=self, is_body=True, syms=sig.syms)
        text = writer.write()
        known = self._by_text.get(text)
        if known is None:
            name, k = writer.function_name, 1
            while name in self._names:  # the same name, another body: number it
                k += 1
                name = f"{writer.function_name}_{k}"
            text = text.replace(f"def {writer.function_name}(", f"def {name}(", 1)
            self._names.add(name)
            self._by_text[text] = name
            self.sources.append(text)
            known = name
        return known


def _syms_of(graph: Graph) -> set[Sym]:
    found: set[Sym] = set()
    for node in walk(graph):
        types = node.type.items if isinstance(node.type, TupleType) else (node.type,)
        for t in types:
            found.update(d for d in t.shape if isinstance(d, Sym))
        loop = node.attrs.get("loop")
        if isinstance(loop, Loop) and isinstance(loop.length, Sym):
            found.add(loop.length)
    return found


def _syms_of_inputs(graph: Graph) -> set[Sym]:
    return {d for x in graph.inputs for d in x.shape if isinstance(d, Sym)}


# --- the loop in the calling kernel -----------------------------------------------------
def write_scan(k: KernelWriter, node: Node) -> None:
    """The statements of a scan in kernel `k`: carries and stacks set up, then the loop."""
    from compiler.codegen.nests import comment_of

    loop: Loop = node.attrs["loop"]
    sig, _ = k.bodies.planned(loop)
    nc, nk = loop.n_consts, loop.n_carries
    body = loop.body
    results = _result_names(k, node)
    consts = [_argument(k, x) for x in node.inputs[:nc]]
    carries = results[:nk]
    k.line(f"# {loop.name}: {dim_text(loop.length)} steps"
           f"{', last to first' if loop.reverse else ''}", None)
    for name, init in zip(carries, node.inputs[nc:nc + nk]):
        # an array carry is the loop's own array, which every step updates
        copy = ".copy()" if init.shape != () else ""
        k.line(f"{name} = {_argument(k, init)}{copy}", comment_of(node))
    ys = results[nk:]
    for y, out in zip(ys, body.outputs[nk:]):
        t = TensorType(out.dtype, (loop.length,) + out.shape)
        k.line(f"{y} = np.empty({shape_text(t.shape)}, {dtype_name(t.dtype)})")
    inline = not k.bodies.runs_parallel(loop)
    if inline:  # the body reads each constant scalar from a name of its own
        consts = [c if c.isidentifier() else _bound(k, c, x.name)
                  for c, x in zip(consts, body.inputs)]
    step = k.namer.fresh("t")
    length = dim_text(loop.length)
    steps = f"range({length} - 1, -1, -1)" if loop.reverse else f"range({length})"
    k.line(f"for {step} in {steps}:")
    xs = [f"{_argument(k, x)}[{step}]" for x in node.inputs[nc + nk:]]
    slots = [f"{ys[j]}[{step}]" for j in sig.written]
    returned_ys = [j for j in range(loop.n_ys) if j not in sig.written]
    scalar_carries = [c for i, c in enumerate(carries) if i not in sig.updated]
    k.depth += 1
    if inline:
        values = _inlined_body(k, loop, consts + carries, xs + slots)
        # storing a step's scalar outputs changes no scalar, so the new carries may follow
        for j, value in zip(returned_ys, values[len(scalar_carries):]):
            k.line(f"{ys[j]}[{step}] = {value}", comment_of(node))
        changed = [(c, v) for c, v in zip(scalar_carries, values) if c != v]
        if changed:  # together: a new carry may read another's old value
            k.line(f"{', '.join(c for c, _ in changed)} = {', '.join(v for _, v in changed)}",
                   comment_of(node))
    else:
        arguments = consts + carries + xs + slots + [s.name for s in sig.syms]
        call = f"{k.bodies.function(loop)}({', '.join(arguments)})"
        targets = scalar_carries + [k.namer.fresh(f"{ys[j]}_step") for j in returned_ys]
        k.line(f"{', '.join(targets)} = {call}" if targets else call, comment_of(node))
        for j, value in zip(returned_ys, targets[len(scalar_carries):]):
            k.line(f"{ys[j]}[{step}] = {value}")
    k.depth -= 1


def _inlined_body(k: KernelWriter, loop: Loop, names: list[str], slices: list[str]
                  ) -> list[str]:
    """Write `loop`'s body into `k`'s loop: its consts and carries are the caller's `names`,
    each step's slices of xs and of the stacks it writes are bound to names of their own.
    Returns the expressions of what the body returns (scalar carries, scalar outputs).

    Written into the loop rather than called, a body is type-inferred and lowered by numba
    once, in its caller (a function, even with `inline="always"`, is compiled alone first):
    a GRU step's first call took 8-11% less time. It reads as the rest of the kernel does."""
    from compiler.codegen.emit import KernelWriter

    sig, body_plan = k.bodies.planned(loop)
    inputs = sig.graph.inputs
    bound = dict(enumerate(names))
    for j, text in enumerate(slices, start=len(names)):
        bound[j] = _bound(k, text, inputs[j].name)
    writer = KernelWriter(body_plan, sig.writes, helpers=k.helpers, bare_scalars=True,
                          bodies=k.bodies, syms=sig.syms, inlined_in=k, bound=bound)
    values = writer.write_inlined()
    k.lines.extend(writer.lines)
    k.nests.parallel |= writer.nests.parallel
    return values


def _bound(k: KernelWriter, expression: str, hint: str | None) -> str:
    """A new name in `k` for the value of `expression`."""
    name = k.namer.fresh(hint)
    k.line(f"{name} = {expression}")
    return name


def _result_names(k: KernelWriter, node: Node) -> list[str]:
    """One name per result of the scan: its tuple_get's where it has one (that node then
    names the carry or stack itself), else a fresh one."""
    loop: Loop = node.attrs["loop"]
    readers = {n.attrs["index"]: n for n in k.plan.nodes
               if isinstance(lowering_of(n), Alias) and n.inputs[0] is node}
    names = []
    for index, out in enumerate(loop.body.outputs):
        reader = readers.get(index)
        if reader is not None:
            names.append(k.name_of(reader))
        else:
            names.append(k.namer.fresh(out.name))
    return names


def _argument(k: KernelWriter, x: Node) -> str:
    """How the kernel passes `x` to a body: a scalar expression, or the name of its array."""
    if x.shape == ():
        return k.reader.read(x, ())
    return k.names[x.id]
