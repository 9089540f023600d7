"""A compiled call recorded for the runtime's `backward()`: its call site, its backward, and the
backward that stores gradients straight into `.grad`.

`RecordedKernels` links one specialization's forward_save and backward kernels
into the runtime's graph. A call site repeats: the same Parameters come back
call after call, so it keeps a `runtime.graph.CallSite` (the edges and the
Tensors whose versions are checked) and recording a call only stamps versions.
For a loss (one 0-d output) the whole call, from claiming the residual arrays to
the Node and the Tensor, is generated Python (`loss_body`), which the fast path of
repeated calls writes into its own function (compiler/fastpath.py).

`backward_into` is the backward kernel made to store each gradient into an
array it is given (compiler/codegen/writes.py), adding it to what the array
holds where the runtime says so (a `.grad` that gradients accumulate in): the
runtime's `_backward_one_node` hands it the leaves' `.grad` arrays, or the
arrays they held before `zero_grad()` (`Tensor._own_grad`), and makes the
arrays it returns the new `.grad`s. So a training loop's step boxes no
gradient, copies none, and its gradients keep their arrays from step to step.
Gradients that the kernel makes as rows of one stack (the per-layer weights of
a rolled loop, compiler/packing.py) are stored into one stack whose rows
become the `.grad`s.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from types import MethodType
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler import pytree
from compiler.codegen import generate
from compiler.errors import KernelShapeError
from compiler.ir import Graph, Node, TensorType
from compiler.packing import pack, result_rows
from compiler.residuals import FREE_REFCOUNT, SETS_PER_SIZE, BufferedForward, picker
from compiler.settled_backward import settled_backward
from compiler.timings import KernelBuild
from compiler.verify import verify
from runtime import Tensor
from runtime.anomaly_mode import _anomaly
from runtime.graph import CallSite
from runtime.graph import Node as GraphNode

if TYPE_CHECKING:
    from compiler.specialization import Specialization

BOOL = np.dtype(bool)
_new_tensor = Tensor.__new__
_new_node = GraphNode.__new__


class RecordedKernels:
    """forward_save and backward of one specialization, linked into the runtime's graph.

    `call(arrays, leaves)` runs forward_save on the leaves' arrays and hands the runtime the
    outputs and a backward over the residuals, returning the user's Tensors; TypeError or
    KernelShapeError from the kernel, for arrays it does not take, come before anything is
    recorded. With the numba backend (and no finite checks) the residuals go into arrays
    kept per call site (compiler/residuals.py).
    """

    def __init__(self, name: str, spec: Specialization, tensor_positions: tuple[int, ...],
                 checked: bool = False):
        self.name = name
        spec.graph_of("forward_save")  # the split: sets spec.residual_sources
        self._checked = checked
        self._spec = spec
        self._backward: Callable | None = None  # built on first use: backward_into is usual
        self._into: GradientsInto | None = None
        # A loss's backward() for its sites, made with `_into` (compiler/settled_backward.py)
        self._settled_backward: Callable | None = None
        self._into_possible = spec.backend.name == "numba" and not checked
        self._buffered = BufferedForward.build(spec, tensor_positions) \
            if self._into_possible else None
        if self._buffered is None:
            self._forward = spec.kernel_for("forward_save", checked).call
        n_inputs = len(spec.graph_of("forward_save").inputs)
        # Without buffers (the interpreter, checked kernels): residuals index the inputs, then
        # forward_save's results. Inputs that backward needs are the caller's own arrays; a
        # plain array among them is copied (`_kept`), because nothing tells backward that the
        # caller refilled it (a batch buffer, say), while a Tensor's version counter does.
        self._residuals = picker([i if where == "input" else n_inputs + i
                                   for where, i in spec.residual_sources])
        self._plain_inputs = [(k, i) for k, (where, i) in enumerate(spec.residual_sources)
                              if where == "input" and i not in tensor_positions]
        self._n_outputs = len(spec.graph.outputs)
        self._n_differentiated = spec.n_differentiated
        # The Tensors the call records: those that require grad (differentiated), then those
        # that need no gradient but whose arrays backward reads (their versions count).
        saved = [i for where, i in spec.residual_sources if where == "input"
                 and i in tensor_positions and i not in spec.wrt_leaves]
        self._n_needs = len(spec.wrt_leaves)
        self._tensor_indices = list(spec.wrt_leaves) + saved
        self._tensors = picker(self._tensor_indices)
        self._single = spec.out_tree.kind == "leaf"
        self._out_tree = spec.out_tree
        differentiated = spec.graph.outputs[:spec.n_differentiated]
        self._output_meta = [(tuple(o.shape), o.dtype) for o in differentiated] \
            if all(isinstance(d, int) for o in differentiated for d in o.shape) else None
        # The last call's site (it holds the caller's Tensors weakly).
        self._site: CallSite | None = None
        self.site_flags_seen = -1  # see `_new_site`
        # A loss (one 0-d output, differentiated) whose residuals are pooled by one batch
        # size: a training loop's call, which `call` runs in one function.
        buffered = self._buffered
        self._loss = buffered is not None and buffered._scalar is not None \
            and buffered._pool.sym_at is not None and self._single \
            and self._n_differentiated == 1 == self._n_outputs and self._output_meta is not None
        self.records_loss = self._loss  # `loss_body` can be asked for
        if self._loss:  # callers hold `call`: the loss's own, generated (see `loss_body`)
            self._pool = buffered._pool
            self._last_size, self._last_free = -1, None  # the pool's list for that size
            self.call = self._call_loss = self._generated_call_loss()

    def call(self, arrays: list, leaves: list) -> Any:
        if self._buffered is not None:
            results, residuals = self._buffered.run(arrays)
        else:
            results = self._forward(*arrays)
            residuals = self._residuals([*arrays, *results])
            if self._plain_inputs:
                residuals = self._kept(residuals, arrays, leaves)
        inputs = self._tensors(leaves)
        site = self._site
        # The site's Tensors by identity are all there is to check: which of them require
        # grad is this specialization's (it was chosen by that), so it cannot differ.
        if site is None or not (site.alive and tuple(map(id, inputs)) == site.ids):
            site = self._new_site(inputs)
        # One callable serves as the node's backward and its backward_into (see `either`).
        backward = MethodType(self._into or self.either, residuals)
        into = backward if self._into_possible else None
        n_diff = self._n_differentiated
        if self._single and n_diff == 1:  # a loss: one output, differentiated
            return site.record_one(inputs, results[0], backward, into, self._output_meta)
        tensors = site.record(inputs, results[:n_diff], backward, trusted=True,
                              backward_into=into, output_meta=self._output_meta)
        if n_diff < self._n_outputs:  # aux: not differentiated
            tensors += [Tensor(o) for o in results[n_diff:self._n_outputs]]
        return tensors[0] if self._single else pytree.unflatten(self._out_tree, tensors)

    # --- a loss: the hot path of a training loop's forward --------------------------------
    def loss_body(self, arrays: list[str], leaves: list[str], indent: str = "    ",
                  site_found: bool = False) -> tuple[list[str], dict[str, Any]]:
        """What `call` does for a loss, as statements of a generated function whose variables
        `arrays` and `leaves` hold the call's arrays and leaves (names), ending in `return`;
        and the names those statements read. `BufferedForward.run` and
        `CallSite.record_one`, written out: every step of a training loop runs them, and a
        Python call or a list costs about what one of the comparisons below costs. A
        caller that has the leaves in variables of its own (compiler/fastpath.py) puts these
        statements after its checks: the whole call is then one function. With
        `site_found`, that caller has set `site` to the call site if the call's Tensors are
        its own (`site_check`), else to None."""
        buffered = self._buffered
        pool = buffered._pool
        at, axis = pool.sym_at
        n_buffers = len(pool._types)
        names = [*arrays, *(f"buffer{b}" for b in range(n_buffers))]
        residuals = "".join(f"{names[i]}, " for i in buffered.residual_indices)
        inputs = "".join(f"{leaves[i]}, " for i in self._tensor_indices)
        versions = ", ".join(f"{leaves[i]}._version" for i in self._tensor_indices)
        lines = [
            # len() reads the first axis without making the shape's tuple
            f"size = len({arrays[at]})" if axis == 0 else f"size = {arrays[at]}.shape[{axis}]",
            "if size == recorded._last_size:  # the pool's list for the last batch size",
            "    free = recorded._last_free",
            "else:",
            "    free = recorded._free_list(size)",
            "try:",
            "    buffers = free.pop()  # atomic: no other thread can take this set now",
            "except (AttributeError, IndexError):  # no list for this size yet, or it is empty",
            "    buffers = pool.claim_at((size,))",
            "else:",
            "    if list(map(getrefcount, buffers)) != FREE_COUNTS:",
            "        free.append(buffers)  # a graph still holds it: the pool looks further",
            "        buffers = pool.claim_at((size,))",
            f"{''.join(f'buffer{b}, ' for b in range(n_buffers))}= buffers" if n_buffers
            else "pass  # no residual needs an array",
            "try:",
            f"    returned = forward({', '.join(names)})",
            "except BaseException:",
            "    pool.give_back((size,), buffers)",
            "    raise",
            f"residuals = ({residuals})",
            "if free is not None and len(free) < SETS_PER_SIZE:  # in use while residuals is",
            "    free.append(buffers)",
            "else:",
            "    pool.give_back((size,), buffers)",
            "output = array(returned, DTYPE)",
            f"inputs = ({inputs})",
            *([] if site_found else [
                "site = recorded._site",
                f"if not ({self.site_check(leaves)}):",
                "    site = None"]),
            "if site is None:",
            "    site = recorded._new_site(inputs)",
            # Grad mode is on: every caller has checked (TensorCall.run, the general path).
            "if not site.needs_grad:" if buffered._scalar.kind == "f" else "if True:",
            "    return Tensor(output)  # what record_one gives: nothing to backpropagate",
            # The backward bound to its residuals, serving as backward_into too (`either`);
            # a method object is the cheapest such binding (a partial costs twice as much).
            "backward = MethodType(recorded._into or recorded.either, residuals)",
            # GraphNode(backward, site, inputs, OUTPUT_META, True, backward), written out:
            # half the cost of the call (tests/test_tensor_fastpath.py compares the two)
            "node = new_node(GraphNode)",
            "node._backward = node.backward_into = backward",
            "node.site = site",
            "node.tensors = inputs",
            f"node.versions = [{versions}]",
            "node.output_meta = OUTPUT_META",
            "node.trusted = True",
            "node._tensor_hooks = node._retained = None",
            "tensor = new_tensor(Tensor)",
            "tensor.data = output",
            "tensor._requires_grad = True",
            "tensor.grad_fn = node",
            "return tensor",
        ]
        namespace = {
            "recorded": self, "pool": pool, "forward": buffered._call,
            "getrefcount": sys.getrefcount, "FREE_COUNTS": [FREE_REFCOUNT] * n_buffers,
            "SETS_PER_SIZE": SETS_PER_SIZE, "array": np.array, "DTYPE": buffered._scalar,
            "Tensor": Tensor, "new_tensor": _new_tensor, "MethodType": MethodType,
            "GraphNode": GraphNode, "new_node": _new_node, "OUTPUT_META": self._output_meta,
        }
        return [indent + line.replace("\n", "\n" + indent) for line in lines], namespace

    def site_check(self, leaves: list[str]) -> str:
        """An expression, over the variables `leaves`, saying whether the call's Tensors are
        those of `self._site` (bound to `site`, None if there is none): their ids while the
        site watches that they all live."""
        ids = "".join(f"id({leaves[i]}), " for i in self._tensor_indices)
        return f"site is not None and site.alive and ({ids}) == site.ids"

    def _generated_call_loss(self) -> Callable[[list, list], Tensor]:
        """`call(arrays, leaves)` for a loss: `loss_body` over the lists' items."""
        n_arrays = len(self._spec.graph_of("forward_save").inputs)
        arrays = [f"array{k}" for k in range(n_arrays)]
        leaves = {i: f"leaf{i}" for i in self._tensor_indices}
        body, namespace = self.loss_body(arrays, [leaves.get(i, "") for i in
                                                  range(max(leaves, default=-1) + 1)])
        source = "\n".join([
            "def call_loss(arrays, leaves):",
            f"    {''.join(f'{a}, ' for a in arrays)}= arrays" if arrays else "",
            *(f"    {name} = leaves[{i}]" for i, name in leaves.items()),
            *body, ""])
        exec(compile(source, f"<{self.name}: a loss recorded>", "exec"), namespace)  # noqa: S102
        call_loss = namespace["call_loss"]
        call_loss.source = source  # for people reading a profile
        return call_loss

    def _free_list(self, size: int) -> list | None:
        """The pool's list of sets for a batch size, remembered for the next call."""
        free = self._pool.free.get((size,))
        if free is not None:
            self._last_size, self._last_free = size, free
        return free

    def _new_site(self, inputs: tuple) -> CallSite:
        site = CallSite(self.name, inputs[:self._n_needs], inputs[self._n_needs:])
        if site.into_ready:
            site.settled_backward = self._settled_backward
        if site.reusable:  # kept for the next calls, which check it by the Tensors' ids
            site.watch()
            self._site = site
            # Tensor._leaf_changes when a caller last found the site's Tensors with the flags
            # its pattern wants (compiler/fastpath.py); none yet.
            self.site_flags_seen = -1
        return site

    def either(self, residuals: tuple, cotangents: list[np.ndarray], accumulate: Any = None,
               reuse: list | None = None) -> Any:
        """The node's backward (`accumulate` left out) and its backward_into in one callable,
        so that a call makes one partial, not two; `GradientsInto` takes over once built."""
        if accumulate is None:
            return self.backward(residuals, cotangents)
        return self.backward_into(residuals, cotangents, accumulate, reuse)

    def backward(self, residuals: tuple, cotangents: list[np.ndarray]) -> tuple:
        """The gradients, as fresh arrays (the usual path of the runtime's backward)."""
        if _anomaly.enabled and not self._checked:  # backward() under detect_anomaly()
            return self._spec.checked_kernel("backward").call(*residuals, *cotangents)
        if self._backward is None:
            self._backward = self._spec.kernel_for("backward", self._checked).call
        return self._backward(*residuals, *cotangents)

    def backward_into(self, residuals: tuple, cotangents: list[np.ndarray], accumulate: list,
                      reuse: list) -> list[np.ndarray] | None:
        """The gradients stored into arrays (see the module doc), or None where the usual
        path must run (the first call; later ones go to `GradientsInto` directly)."""
        if _anomaly.enabled:  # the usual path, with its checked kernel; nothing to build
            return None
        if self._into is None:
            self._into = GradientsInto(*self._spec.into_kernel(), self.backward)
            if self._loss:  # a training loop's backward(), written for its sites
                self._settled_backward = settled_backward(
                    self._into, self._n_needs, len(self._tensor_indices),
                    self._output_meta[0][1])
                if self._site is not None and self._site.into_ready:
                    self._site.settled_backward = self._settled_backward
        return self._into(residuals, cotangents, accumulate, reuse)

    def _kept(self, residuals: tuple, arrays: list, leaves: list) -> tuple:
        """`residuals` with a copy of each of the caller's own plain arrays among them (an
        array made from a scalar or a non-contiguous argument is ours already)."""
        kept = list(residuals)
        for k, i in self._plain_inputs:
            if arrays[i] is leaves[i]:
                kept[k] = kept[k].copy()
        return tuple(kept)


# --- backward into .grad -------------------------------------------------------------------
@dataclass(frozen=True)
class Into:
    """Where some gradients go: one array (`positions` has one gradient), or the rows of one
    stack, row m holding gradient `positions[m]`."""

    positions: tuple[int, ...]
    shape: tuple[int, ...]  # of the array the kernel writes: a gradient's, or the stack's
    dtype: np.dtype
    stacked: bool


def backward_into_graph(backward: Graph) -> tuple[Graph, dict[int, int], list[Into]]:
    """`backward` made to store its gradients into arrays: per gradient (or per stack of
    gradients, compiler/packing.py) an input for the array and an output
    `where(add, array + gradient, gradient)` written into it (compiler/codegen/writes.py).
    Whether to add comes in one bool vector, an element per single gradient (the first input
    after the cotangents), and in a vector per stack, an element per row (after the stack's
    array). Returns the graph, its writes (output -> input) and where each gradient goes."""
    inputs = list(backward.inputs)

    def add_input(t: TensorType, name: str) -> Node:
        node = Node("input", (), {"index": len(inputs), "type": t}, t, name=name)
        inputs.append(node)
        return node

    rows = result_rows(backward)
    by_stack: dict[int, dict[int, int]] = {}  # stack id -> row -> gradient position
    for k, g in enumerate(backward.outputs):
        if g.id in rows:
            stack, m = rows[g.id]
            by_stack.setdefault(stack.id, {})[m] = k
    entries, done = [], set()  # (positions, the value stored, its stack or None)
    for k, g in enumerate(backward.outputs):
        if k in done:
            continue
        stack, _ = rows.get(g.id, (None, None))
        found = by_stack.get(stack.id) if stack is not None else None
        if found is not None and sorted(found) == list(range(stack.shape[0])):
            entries.append((tuple(found[m] for m in range(stack.shape[0])), stack, True))
        else:
            entries.append(((k,), g, False))
        done.update(entries[-1][0])
    n_single = sum(1 for _, _, stacked in entries if not stacked)
    adds = add_input(TensorType(BOOL, (n_single,)), "add") if n_single else None
    outputs, writes, plan, single = [], {}, [], 0
    for positions, value, stacked in entries:
        name = value.name or f"grad{positions[0]}"
        array = add_input(value.type, f"{name}_into")
        if stacked:  # a flag per row, broadcast against the rows' axes
            shape = (value.shape[0],) + (1,) * (len(value.shape) - 1)
            row_flags = add_input(TensorType(BOOL, (value.shape[0],)), f"{name}_add")
            flag = Node("reshape", (row_flags,), {"shape": shape}, TensorType(BOOL, shape))
        else:
            flag = Node("slice", (adds,), {"index": ((single, single + 1, 1),)},
                        TensorType(BOOL, (1,)))
            flag = Node("reshape", (flag,), {"shape": ()}, TensorType(BOOL, ()))
            single += 1
        total = Node("add", (array, value), {}, value.type)
        writes[len(outputs)] = array.attrs["index"]
        outputs.append(Node("where", (flag, total, value), {}, value.type, f"{name}_total"))
        plan.append(Into(positions, tuple(value.shape), value.dtype, stacked))
    graph = Graph(inputs, outputs, f"{backward.name}_into")
    verify(graph)
    return graph, writes, plan


def compile_backward_into(into: tuple[Graph, dict[int, int], list[Into]]):
    """The numba kernel of a `backward_into_graph`, and where each gradient goes."""
    from compiler.jit import NumbaKernel  # the numba backend, which only this path needs

    graph, writes, plan = into
    packed, packing, packed_writes = pack(graph, writes)
    build = KernelBuild()
    with build.times.phase("codegen"):
        generated = generate(packed, "backward_into", packed_writes, bare_scalars=True)
    return NumbaKernel(packed, generated, packing=packing, build=build), plan


_NOTHING = object()


class GradientsInto:
    """Runs a backward_into kernel, choosing the arrays the gradients go to.

    Each gradient goes into the leaf's `.grad` where it has one (`accumulate`: added to),
    else into the array it held before zero_grad() (`reuse`, overwritten) when that is the
    one this call site handed out, else into a fresh array. A stack's rows are reused only
    all together, as the rows of the stack handed out last.
    """

    def __init__(self, kernel, plan: list[Into], usual: Callable) -> None:
        self.kernel = kernel
        self._usual = usual  # the usual backward, for calls without `accumulate` (`either`)
        self._call = kernel.call
        self._plan = plan
        self._n = sum(len(into.positions) for into in plan)
        self._singles = [into.positions[0] for into in plan if not into.stacked]
        self._single = {into.positions[0]: into for into in plan if not into.stacked}
        self._stacked = [e for e, into in enumerate(plan) if into.stacked]
        # The flags of the single gradients when none, or all, are added to (never written).
        self._store_all = np.zeros(len(self._singles), BOOL)
        self._add_all = np.ones(len(self._singles), BOOL)
        # What was handed out last: per single gradient its array, per stack (stack, rows);
        # before the first call, nothing any leaf can hold (not even None).
        self._arrays: list = [_NOTHING] * self._n
        self._stacks: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}

    # What compiler/settled_backward.py writes its function over.
    has_stacks = property(lambda self: bool(self._stacked))
    kernel_call = property(lambda self: self._call)
    store_all = property(lambda self: self._store_all)
    add_all = property(lambda self: self._add_all)

    def __call__(self, residuals: tuple, cotangents: list, accumulate: list | None = None,
                 reuse: list | None = None) -> Any:
        """The arrays holding the gradients, or None where the usual path must run: anomaly
        mode (it checks every op), or arrays the kernel does not take. Without `accumulate`,
        the usual backward's gradients (`RecordedKernels.either`)."""
        if accumulate is None:
            return self._usual(residuals, cotangents)
        if _anomaly.enabled:
            return None
        handed = self._arrays
        adds = None
        if not self._stacked:  # the usual steps of a training loop, checked at C speed
            if not accumulate or all(map(operator.is_, accumulate, repeat(None))):
                if all(map(operator.is_, reuse, handed)):
                    adds = self._store_all
            elif all(map(operator.is_, accumulate, handed)):
                adds = self._add_all
        if adds is None:
            return self._general(residuals, cotangents, accumulate or [None] * self._n, reuse)
        try:
            self._call(*residuals, *cotangents, adds, *handed)
        except (TypeError, KernelShapeError):
            return None
        return handed

    def _general(self, residuals: tuple, cotangents: list, accumulate: list,
                 reuse: list) -> list[np.ndarray] | None:
        stored = list(accumulate)
        handed = self._arrays
        adds = []
        for k in self._singles:
            if stored[k] is not None:
                adds.append(True)
                continue
            adds.append(False)
            spare = reuse[k]
            if spare is None or spare is not handed[k]:
                into = self._single[k]
                spare = np.empty(into.shape, into.dtype)
            stored[k] = spare
        args = []
        if self._singles:
            args.append(self._store_all if not any(adds) else self._add_all if all(adds)
                        else np.array(adds))
        stacks = {}
        for e, into in enumerate(self._plan):
            if not into.stacked:
                args.append(stored[into.positions[0]])
                continue
            found = self._stack(e, into, accumulate, reuse)
            if found is None:
                return None
            stack, rows, flags = stacks[e] = found
            for k, row in zip(into.positions, rows):
                stored[k] = row
            args += (stack, flags)
        try:
            self._call(*residuals, *cotangents, *args)
        except (TypeError, KernelShapeError):  # an array the kernel does not take: usual path
            return None
        self._arrays = stored
        self._stacks.update((e, found[:2]) for e, found in stacks.items())
        return stored

    def _stack(self, e: int, into: Into, accumulate: list, reuse: list):
        """(stack, its rows, the add flags) for a stacked entry, or None if the leaves hold
        other arrays than rows of the stack handed out last (the usual path runs then)."""
        last = self._stacks.get(e)
        added = [accumulate[k] is not None for k in into.positions]
        if last is not None:
            stack, rows = last
            current = [accumulate[k] if add else reuse[k]
                       for k, add in zip(into.positions, added)]
            if all(map(operator.is_, current, rows)):
                return stack, rows, np.array(added)
        if any(added):
            return None
        stack = np.empty(into.shape, into.dtype)
        return stack, list(stack), np.zeros(into.shape[0], BOOL)
