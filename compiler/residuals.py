"""Residuals written into arrays kept per call site: forward_save without fresh arrays.

A recorded call's forward kernel hands backward its residuals. Returned as fresh
arrays, each costs an allocation, numba's boxing (a microsecond for a W1 step's
three), and freeing it after backward; a plain input array that backward reads must
moreover be copied, since nothing tells backward that the caller refilled it.
`BufferedForward` runs forward_save made to write every such residual (the
computed ones, and copies of those inputs) into arrays it is given
(compiler/codegen/writes.py), and returns only the function's outputs.

The arrays come from a `ResidualPool` per call site: a set of arrays per batch
size (symbolic dims), reused as soon as no graph holds them. A set is taken off
the pool with one atomic `list.pop` and put back right after the call, so two
threads never write one set; it counts as free when nothing but the pool refers
to its arrays (`sys.getrefcount`): a graph that has not run backward yet (or kept
with retain_graph=True) holds them through its backward, so a call made meanwhile
gets another set.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from compiler.codegen import generate
from compiler.ir import Graph, Sym
from compiler.packing import pack
from compiler.timings import KernelBuild

if TYPE_CHECKING:
    from compiler.specialization import Specialization

MAX_ARGUMENTS = 64  # a kernel with more (per-row residuals of a stack) keeps fresh arrays
SETS_PER_SIZE = 4  # more graphs alive at once than this get arrays that are not kept
SIZES = 4  # batch sizes kept


def _references_when_free() -> int:
    """What `sys.getrefcount`, mapped over a set, counts for an array held by that set only:
    measured the way `claim` counts, not assumed, so that it follows the interpreter."""
    held = (np.empty(0),)
    return next(map(sys.getrefcount, held))


FREE_REFCOUNT = _references_when_free()


class ResidualPool:
    """Sets of residual arrays, per batch size: `claim_at(key)` a free set (or a new one),
    `give_back(key, set)` after the call. Callers take the usual case inline
    (`BufferedForward.run`, compiler/recording.py `loss_body`): one symbolic dim (`sym_at`),
    a free set on top of its list (`free`)."""

    def __init__(self, types: list, graph: Graph) -> None:
        self._types = types
        self._syms: list[tuple[Sym, int, int]] = []  # where each symbolic dim is read from
        for i, node in enumerate(graph.inputs):
            for axis, d in enumerate(node.shape):
                if isinstance(d, Sym) and all(d != s for s, _, _ in self._syms):
                    self._syms.append((d, i, axis))
        self.free: dict[tuple, list[tuple[np.ndarray, ...]]] = {}
        # Where the one symbolic dim is read from (the usual batch size), else None.
        self.sym_at: tuple[int, int] | None = None
        if not self._syms:
            self._key = lambda arrays: ()
        elif len(self._syms) == 1:  # a batch size: the usual case
            (_, i, axis), = self._syms
            self.sym_at = (i, axis)
            self._key = lambda arrays: (arrays[i].shape[axis],)
        else:
            self._key = lambda arrays: tuple([arrays[i].shape[axis]
                                              for _, i, axis in self._syms])

    def claim_at(self, key: tuple) -> tuple[np.ndarray, ...]:
        """A free set of the batch size `key`, or a new one."""
        free = self.free.get(key)
        busy = []
        while free:
            try:
                found = free.pop()  # atomic: no other thread can take this set now
            except IndexError:
                break
            if all(map(FREE_REFCOUNT.__eq__, map(sys.getrefcount, found))):
                free += busy
                return found
            busy.append(found)  # a graph still holds it
        if busy:
            free += busy
        return self._new(key)

    def give_back(self, key: tuple, found: tuple[np.ndarray, ...]) -> None:
        free = self.free.get(key)
        if free is None:
            if len(self.free) >= SIZES:
                return  # a batch size too many: its arrays go with its graph
            free = self.free.setdefault(key, [])
        if len(free) < SETS_PER_SIZE:
            free.append(found)

    def _new(self, key: tuple) -> tuple[np.ndarray, ...]:
        dims = {sym: n for (sym, _, _), n in zip(self._syms, key)}
        return tuple(np.empty(tuple(dims.get(d, d) for d in t.shape), t.dtype)
                     for t in self._types)


class BufferedForward:
    """`run(arrays) -> (outputs, residuals)`: forward_save writing its residuals into pooled
    arrays. Raises TypeError or KernelShapeError, having written nothing the caller can see,
    for arrays the kernel does not take."""

    def __init__(self, kernel, pool: ResidualPool, outputs: Callable, residuals: Callable,
                 packing=None):
        # The kernel's results are the outputs alone, as it returns them (bare scalars): the
        # stacks of its packed arguments are made here, and nothing is unpacked.
        dispatcher, constants = kernel.dispatcher, kernel._constants

        def run(*args):
            return dispatcher(*args, *constants)

        run = run if constants else dispatcher
        self._call = run if packing is None else \
            (lambda *args: run(*packing.arguments(args)))
        self.kernel = kernel
        self._pool = pool
        self._outputs = outputs
        self._residuals = residuals
        # What `residuals` picks from [*arguments, *buffers], in backward's order.
        self.residual_indices: list[int] = []
        self._scalar: np.dtype | None = None

    @staticmethod
    def build(spec: Specialization, tensor_positions: tuple[int, ...]) -> BufferedForward | None:
        """None where buffers do not pay: a kernel with too many arguments."""
        from compiler.jit import NumbaKernel

        forward = spec.graph_of("forward_save")
        n_in, n_out = len(forward.inputs), len(spec.graph.outputs)
        # Residuals that need an array: the computed ones, and copies of plain inputs (a
        # Tensor's array is read as it is: its version counter guards it).
        buffered = [(where, i) for where, i in spec.residual_sources
                    if where == "output" or i not in tensor_positions]
        values = [forward.outputs[i] if where == "output" else forward.inputs[i]
                  for where, i in buffered]
        buffers = [_input(n_in + b, v) for b, v in enumerate(values)]
        graph = Graph([*forward.inputs, *buffers], [*forward.outputs[:n_out], *values],
                      forward.name)
        writes = {n_out + b: n_in + b for b in range(len(buffers))}
        packed, packing, packed_writes = pack(graph, writes)
        if len(packed.inputs) > MAX_ARGUMENTS or packing is not None and any(
                where[0] == "row" for where in packing.results):
            return None
        build = KernelBuild()
        with build.times.phase("codegen"):
            generated = generate(packed, "forward_save", packed_writes, bare_scalars=True)
        kernel = NumbaKernel(packed, generated, packing=packing, build=build)
        spec.kernels.setdefault("forward_save", kernel)  # what compile_report and source show
        # Residuals in backward's order: a Tensor's array, or buffer b.
        slot = {source: b for b, source in enumerate(buffered)}
        picks = [n_in + slot[(where, i)] if (where, i) in slot else i
                 for where, i in spec.residual_sources]
        buffered_forward = BufferedForward(kernel, ResidualPool([v.type for v in values], forward),
                                           _output_maker(spec.graph.outputs), picker(picks),
                                           packing)
        buffered_forward.residual_indices = picks
        outputs = spec.graph.outputs
        if len(outputs) == 1 and outputs[0].shape == ():
            buffered_forward._scalar = outputs[0].dtype
        return buffered_forward

    def run(self, arrays: list) -> tuple[tuple, tuple]:
        pool = self._pool
        # The pool's usual case inline (a training loop's every call): the set on top of the
        # batch size's list, free when only the pool refers to its arrays.
        at = pool.sym_at
        key = (arrays[at[0]].shape[at[1]],) if at is not None else pool._key(arrays)
        free = pool.free.get(key)
        try:
            buffers = free.pop()  # atomic: no other thread can take this set now
        except (AttributeError, IndexError):  # no list for this size yet, or an empty one
            buffers = pool.claim_at(key)
        else:
            if not all(map(FREE_REFCOUNT.__eq__, map(sys.getrefcount, buffers))):
                free.append(buffers)  # a graph still holds it: the pool looks further
                buffers = pool.claim_at(key)
        try:
            returned = self._call(*arrays, *buffers)
        except BaseException:
            pool.give_back(key, buffers)
            raise
        residuals = self._residuals([*arrays, *buffers])
        if free is not None and len(free) < SETS_PER_SIZE:  # in use while `residuals` is
            free.append(buffers)
        else:
            pool.give_back(key, buffers)
        if self._scalar is not None:  # one 0-d output, returned as a number: the usual loss
            return (np.array(returned, self._scalar),), residuals
        return self._outputs(returned), residuals


def _input(index: int, like):
    from compiler.ir import Node

    return Node("input", (), {"index": index, "type": like.type}, like.type,
                name=f"{like.name or 'saved'}_saved")


def _output_maker(outputs: list) -> Callable:
    """The outputs as arrays, from what a kernel with bare scalars returns: one output by
    itself, several as a tuple, 0-d ones as numbers."""
    scalars = [(k, o.dtype) for k, o in enumerate(outputs) if o.shape == ()]
    if len(outputs) == 1:
        if scalars:
            dtype = scalars[0][1]
            return lambda value: (np.array(value, dtype),)
        return lambda value: (value,)

    def arrays(values: tuple) -> tuple:
        values = list(values)
        for k, dtype in scalars:
            values[k] = np.array(values[k], dtype)
        return tuple(values)
    return arrays


def picker(indices: list[int]) -> Callable[[list], tuple]:
    """seq -> (seq[i] for i in indices) as a tuple; itemgetter, which runs in C, when it can."""
    if len(indices) >= 2:
        return operator.itemgetter(*indices)
    if indices:
        only = indices[0]
        return lambda seq: (seq[only],)
    return lambda seq: ()
