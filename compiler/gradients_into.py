"""The backward kernel that stores gradients straight into `.grad`, and what runs it.

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
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from compiler.codegen import generate
from compiler.errors import KernelShapeError
from compiler.ir import Graph, Node, TensorType
from compiler.packing import pack, result_rows
from compiler.timings import KernelBuild
from compiler.verify import verify
from runtime.anomaly_mode import _anomaly

BOOL = np.dtype(bool)


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
